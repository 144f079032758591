"""Where an ieg run's suggested labels are wrong: counts by (true, suggested) class and a gallery of the largest
group beside the probe images, for runs whose label_issues.csv holds the true labels (bench/accuracy.py runs);
and where its test predictions are wrong, from the run's test_confusion.csv.

    python bench/errors.py /tmp/ieg_bench/accuracy/steps1246_seed2/uniform80_ieg   # prints the counts, draws the PNG

`bench/accuracy.py` calls both for every ieg run; the gallery lands in the run's `suggestion_errors.png`.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def suggestion_errors(model_dir, top=5):
    """Where a run's suggested labels (label_issues.csv) are wrong: their accuracy against the true labels over
    the training set, and the most frequent (true, suggested) pairs among the wrong ones, as "t->s": count.

    Errors that concentrate on a few pairs are whole groups of look-alike images locked into one wrong class.
    Among the wrong suggestions, `kept_wrong_label` counts those equal to the given (wrong) label and
    `overrode_right_label` those whose given label was right. Under uniform noise a wrong suggestion drawn
    independently of the given label would equal it with probability ratio/C and find it right with probability
    1 - ratio + ratio/C. None when the run wrote no true labels.
    """
    from ieg_tf import report
    return _suggestion_errors(report.read_label_issues_csv(pathlib.Path(model_dir) / "label_issues.csv"), top)


def _suggestion_errors(issues, top=5):
    """`suggestion_errors` of a LabelIssues already read."""
    import numpy as np
    known = None if issues.true_label is None else issues.true_label >= 0
    if known is None or not known.any():
        return None
    true, suggested, given = (a[known] for a in (issues.true_label, issues.suggested_label, issues.given_label))
    wrong = suggested != true
    pairs = {}
    for t, s in zip(true[wrong].tolist(), suggested[wrong].tolist()):
        pairs[f"{t}->{s}"] = pairs.get(f"{t}->{s}", 0) + 1
    return dict(suggested_accuracy=round(1 - int(wrong.sum()) / len(true), 4), wrong=int(wrong.sum()),
                kept_wrong_label=int(np.sum(wrong & (given == suggested))),
                overrode_right_label=int(np.sum(wrong & (given == true))),
                top_pairs=_top_pairs(pairs, top))


def confusion_errors(model_dir, top=5):
    """The run's test-set errors from its test_confusion.csv: accuracy, count of wrong predictions and the most
    frequent (true, predicted) pairs among them, as "t->p": count; None when the run wrote no confusion matrix."""
    from ieg_tf import report
    path = pathlib.Path(model_dir) / "test_confusion.csv"
    if not path.exists():
        return None
    confusion, names = report.read_confusion_csv(path)
    pairs = {f"{names[t]}->{names[p]}": int(confusion[t, p]) for t in range(len(names)) for p in range(len(names))
             if t != p and confusion[t, p]}
    total, right = int(confusion.sum()), int(confusion.trace())
    return dict(accuracy=round(right / total, 4) if total else None, wrong=total - right,
                top_pairs=_top_pairs(pairs, top))


def _top_pairs(pairs, top):
    """The `top` most frequent of {"t->s": count}, most frequent first, ties in key order."""
    return dict(sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top])


def gallery_rows(model_dir, train_images, max_group=16, max_others=8):
    """What `error_gallery` draws: rows of (caption, image) and a title per row, or None when no suggestion is
    wrong (or the run has no true labels).

    Row 0: the probe images of the true and of the suggested class of the largest group of wrong suggestions
    (the first pair of `suggestion_errors`); then that group, 8 per row, captioned with their given labels; last,
    images of the true class whose suggestion is right. label_issues.csv's ids and the split's probe ids index
    `train_images` (the training images before the probe split).
    """
    from ieg_tf import datasets, report
    model_dir = pathlib.Path(model_dir)
    issues = report.read_label_issues_csv(model_dir / "label_issues.csv")
    errors = _suggestion_errors(issues)
    if not errors or not errors["top_pairs"]:
        return None
    pair, count = next(iter(errors["top_pairs"].items()))
    true_class, suggested = (int(c) for c in pair.split("->"))
    split = datasets.load_split(model_dir / "split")
    of_class = issues.true_label == true_class
    group = issues.id[of_class & (issues.suggested_label == suggested)][:max_group]
    others = issues.id[of_class & (issues.suggested_label == true_class)][:max_others]
    given = dict(zip(issues.id.tolist(), issues.given_label.tolist()))
    probes = [(f"probe {c}", train_images[i]) for c in (true_class, suggested)
              for i in split["probe_ids"][split["probe_labels"] == c] if i >= 0]
    rows = [probes, *[[(f"given {given[i]}", train_images[i]) for i in group[k:k + 8]]
                      for k in range(0, len(group), 8)],
            [(f"given {given[i]}", train_images[i]) for i in others]]
    titles = [f"probe images of class {true_class} and of class {suggested}",
              *[f"true {true_class}, suggested {suggested} ({count} in all)"] * (len(rows) - 2),
              f"true {true_class}, suggested {true_class}"]
    return rows, titles


def error_gallery(model_dir, path=None, train_images=None):
    """Draws `gallery_rows`: a run's largest group of wrong suggested labels beside the probe images of the two
    classes involved and images of the true class that it suggests right.

    It shows what a one-image probe can and cannot tell: whether the group looks like the probe image of the class
    it was taken for rather than that of its own class.

    Args:
      model_dir: an ieg run's directory (label_issues.csv with true labels, split/).
      path: PNG to write; default `<model_dir>/suggestion_errors.png`.
      train_images: the training images before the probe split ([N, H, W, C]); default: the run's
        holdout_data.npz if it has one, else the embedded digits training split.

    Returns:
      The path written, or None when the run has no true labels or no wrong suggestion.
    """
    import numpy as np
    from matplotlib.figure import Figure

    from ieg_tf import sources
    model_dir = pathlib.Path(model_dir)
    if train_images is None:
        holdout = model_dir / "holdout_data.npz"
        if holdout.exists():
            with np.load(holdout) as f:
                train_images = f["train_images"]
        else:
            train_images = sources.read_digits().train_images
    drawn = gallery_rows(model_dir, train_images)
    if drawn is None:
        return None
    rows, titles = drawn
    cols = max(8, *(len(r) for r in rows))
    fig = Figure(figsize=(cols * 0.9 + 1.5, len(rows) * 1.25 + 0.4), dpi=100)
    grid = fig.add_gridspec(len(rows), cols)
    for r, (row, title) in enumerate(zip(rows, titles)):
        for c, (caption, image) in enumerate(row):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(np.squeeze(image), cmap="gray_r" if image.shape[-1] == 1 else None, interpolation="nearest")
            ax.set_title(caption, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(title, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model_dir.parent.name}/{model_dir.name}: the largest group of wrong suggested labels",
                 fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path or model_dir / "suggestion_errors.png")
    fig.savefig(path, format="png")
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", nargs="+", help="ieg run directories (label_issues.csv with true labels, split/)")
    parser.add_argument("--top", type=int, default=5, help="most frequent (true, suggested) pairs to print")
    args = parser.parse_args(argv)
    for model_dir in args.model_dir:
        if not (pathlib.Path(model_dir) / "label_issues.csv").exists():
            parser.error(f"{model_dir} has no label_issues.csv: give the directory of a finished ieg run")
        print(f"{model_dir}: test set {json.dumps(confusion_errors(model_dir, args.top))}")
        counts = suggestion_errors(model_dir, args.top)
        print(f"{model_dir}: suggested labels {json.dumps(counts) if counts else 'no true labels in label_issues.csv'}")
        if counts:
            path = error_gallery(model_dir)
            print(f"{model_dir}: {'gallery ' + str(path) if path else 'every suggested label is right'}")


if __name__ == "__main__":
    main()
