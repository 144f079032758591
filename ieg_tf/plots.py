"""PNG figures a run writes to its model dir: test accuracy per epoch, and omega* for clean vs mislabeled data.

Figures are drawn on `matplotlib.figure.Figure` objects, which render through Agg without pyplot: no display
is needed and the process-wide backend of an interactive user is left alone.
"""

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def accuracy_axis(count, steps=None):
    """(x values, x label) of the accuracy plot: the evaluations' training steps when known, else epochs."""
    if steps is None:
        return np.arange(1, count + 1), "epoch"
    if len(steps) != count:
        raise ValueError(f"{len(steps)} steps for {count} accuracies; give one step per evaluation")
    return np.asarray(steps), "training step"


def plot_accuracy(history, path, steps=None):
    """Plots the EMA test accuracy per epoch (or against the training step) and the best so far.

    Args:
      history: `keras.callbacks.History.history`; reads its `val_accuracy` list (one value per epoch).
      path: PNG file to write.
      steps: the training step of each evaluation (a run evaluates every --eval_freq steps, not per epoch);
        None = number the evaluations as epochs.

    Returns:
      `path`.

    Raises:
      ValueError: `val_accuracy` is missing or empty (fit without validation data).
    """
    accuracy = np.asarray(history.get("val_accuracy", ()), np.float64)
    if accuracy.ndim != 1 or accuracy.size == 0:
        raise ValueError(f"history has no val_accuracy (keys: {sorted(history)}); pass validation_data to fit")
    epochs, xlabel = accuracy_axis(accuracy.size, steps)
    best = np.maximum.accumulate(accuracy)
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    ax.plot(epochs, 100 * accuracy, marker="o", markersize=3, label="test accuracy (EMA)")
    ax.plot(epochs, 100 * best, linestyle="--", label="best so far")
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"final {100 * accuracy[-1]:.2f}%, best {100 * best[-1]:.2f}%")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def plot_omega_distribution(omega_mean, given_labels, true_labels, path, visits=None, batch_size=None):
    """Histograms of the average omega* of truly clean vs truly mislabeled training examples.

    Each group's bars sum to 1, so the shapes compare even when one group is much larger (80% noise).

    Args:
      omega_mean: float [N], average omega* per example (`ExampleStats.result()["omega_mean"]`).
      given_labels: int [N], the labels trained on.
      true_labels: int [N], clean labels; -1 = unknown (left out).
      path: PNG file to write.
      visits: optional int [N]; examples with 0 visits are left out (their omega_mean is no measurement).
      batch_size: optional B; omega* is then shown in units of the uniform weight 1/B (1 = uniform, the scale
        of the paper's threshold T), otherwise raw.

    Returns:
      `path`.

    Raises:
      ValueError: inconsistent lengths, or no visited example with a known true label.
    """
    omega = np.asarray(omega_mean, np.float64)
    given, true = np.asarray(given_labels), np.asarray(true_labels)
    if given.shape != omega.shape or true.shape != omega.shape or omega.ndim != 1:
        raise ValueError(f"omega_mean {omega.shape}, given_labels {given.shape} and true_labels {true.shape} "
                         "must have one entry per training example")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (the train batch B) or None, got {batch_size}")
    keep = true >= 0
    if visits is not None:
        visits = np.asarray(visits)
        if visits.shape != omega.shape:
            raise ValueError(f"visits has shape {visits.shape}, omega_mean {omega.shape}; give one per example")
        keep &= visits > 0
    if not np.any(keep):
        raise ValueError("no visited training example with a known true label: nothing to plot")
    if batch_size is not None:
        omega = omega * batch_size
    groups = [("truly clean", keep & (given == true)), ("truly mislabeled", keep & (given != true))]
    bins = np.histogram_bin_edges(omega[keep], bins=30)
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for name, mask in groups:
        if np.any(mask):
            values = omega[mask]
            ax.hist(values, bins=bins, weights=np.full(values.size, 1.0 / values.size), alpha=0.6,
                    label=f"{name} (n={values.size})")
    if batch_size is not None:
        ax.axvline(1.0, color="black", linestyle=":", label="uniform weight 1/B")
    ax.set_xlabel("average omega*" + (" x B" if batch_size is not None else ""))
    ax.set_ylabel("fraction of group")
    ax.set_title("meta weights of clean vs mislabeled examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path
