"""Test accuracy and label-issue quality of supervised, l2r, ieg and ieg with the threshold-T split on digits.

    nice -n 10 python bench/accuracy.py --jobs 2             # 10 runs of 1246 steps, about 60 min on 2 cores
    python bench/accuracy.py --steps 200 --methods ieg supervised --noise uniform80

Every run trains the same network (small_cnn) on the embedded digits data (1 probe image per class), with the
same budget and seed, as a separate `python -m ieg_tf.main` process (Keras keeps global state). The runs:

* clean / supervised: the clean labels (noise_type none), the ceiling;
* uniform80: 80% uniform noise (a label is redrawn from all 10 classes with prob 0.8, so ~72% are wrong);
* asym40: 40% asymmetric noise with the digits mapping ieg_tf.noise.DIGITS_ASYMMETRIC, 1->8, 8->1, 3->9, 9->3,
  7->1 (each image of those five classes takes the mapped label with prob 0.4; 0, 2, 4, 5, 6 stay clean);
* under each noise: supervised, l2r, ieg (reference: no split) and ieg_split = ieg with --clean_threshold=1.0.
  T = 1.0 is the uniform weight 1/B in the units of the split (omega* . B < T is "possibly mislabeled"): an
  example weighted below the average of a uniform re-weighting gets the guessed label as its MixUp target,
  the others keep their given label. It is the one threshold that needs no tuning to the batch size;
* clean / ieg: ieg on the clean labels, what the method's losses cost when nothing is wrong;
* oracle (only when asked for with --methods): supervised on just the training examples whose noisy label is
  right, i.e. a perfect label cleaner that drops the rest; same probe, test set, evaluation period and schedule.

Seeds (`--seed 12345 1 2`): every run is trained once per seed (the seed draws the probe, the noise, the input
order and the step's randomness; the test split is fixed). The targets are then checked per seed, with the mean
gap and whether every seed met them, and a second table gives mean / min / max over the seeds.

Data draws (`--data_seed 12345 2 3`): every run is trained once per seed and data seed; the data seed draws the
probe images and the noise (and the --holdout split), the seed the training run (ieg_tf's --data_seed). A run
whose data seed equals its seed is the default run, in its directory; the others get `_data<D>`. Each run is
compared with the ceiling of its own seed and data seed, and a table gives, per run and data draw, the accuracy
of every training seed, their mean, sd and mean gap, and the spread split into the training run's sd (pooled
within draws) and the draws' own (between draws). `--runs clean/supervised uniform80/ieg` trains exactly those
runs instead of every --methods x --noise pair.

Probe size and noise ratio, the paper's grid (SPEC section 5): `--probe_per_class 1 5 10` trains the methods
that learn from the probe (l2r, ieg, ieg_split) once per size, on the noisy settings (`_probe<K>` in run names;
same schedule as the 1-image runs), and `--noise uniform20 uniform40 uniform80` adds the paper's lower noise
ratios. A third table then gives, per run and noise, the mean test accuracy over the seeds and the mean gap to
each seed's ceiling, and `<out>/accuracy_grid.png` draws it against the noise ratio beside the paper's CIFAR-10
rows. The targets always read the 1-image runs.

Tuning without the test set (`--holdout`): each run trains on a stratified 2/3 of the digits training split
(drawn with the seed) and is scored on the other third with its true labels, same schedule and KL weight as the
digits default. `--flags='--ce_factor=2' --tag ce2` adds flags to every run and names them. Settings are chosen
on holdout figures over several seeds, then checked once on the test set.

Prints markdown tables and writes `<out>/accuracy.json` and `<out>/accuracy_curves.png` (test accuracy against
steps, one panel per noise, with several seeds their mean and min-max band; `holdout_` and `_<tag>` mark the
variants); each run's directory (`<out>/[holdout_]steps<N>_seed<S>/<noise>_<method>[_<tag>]`) holds its
results.json, label_issues.csv, test_confusion.csv and the plots test_accuracy.png / omega_distribution.png, and
for ieg runs suggestion_errors.png (`bench/errors.py`: the largest group of wrong suggested labels beside the
probe images). A finished run is not trained again (the package resumes from its checkpoints and rewrites its
outputs); delete `<out>` to start over.
"""

import argparse
import json
import pathlib
import shlex
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import common, errors  # noqa: E402

NOISE = {  # name -> (noise_type, noise_ratio)
    "clean": ("none", 0.0),
    "uniform20": ("uniform", 0.2),
    "uniform40": ("uniform", 0.4),
    "uniform80": ("uniform", 0.8),
    "asym40": ("asymmetric", 0.4),
}
DEFAULT_NOISE = ("clean", "uniform80", "asym40")  # the issue's table; uniform20/40 complete the paper's grid
METHODS = {  # name -> (--method, extra flags)
    "supervised": ("supervised", []),
    "l2r": ("l2r", []),
    "ieg": ("ieg", []),
    "ieg_split": ("ieg", ["--clean_threshold=1.0"]),
    "oracle": ("supervised", []),
}
DEFAULT_METHODS = ("supervised", "l2r", "ieg", "ieg_split")
CLEAN_METHODS = ("supervised", "ieg")
PROBE_METHODS = ("l2r", "ieg", "ieg_split")  # the methods that learn from the probe set
DEFAULT_STEPS = 1246  # ieg_tf.train.DATASET_DEFAULTS["digits"]["max_iteration"]: the end of an SGDR cycle
DIGITS_KL_WEIGHT = 5.0  # ieg_tf.train.DATASET_DEFAULTS["digits"]["consistency_factor"]
DIGITS_EPOCH = 11  # steps per epoch of the digits run: (1198 train - 10 probe) // 100, its eval period and 1st cycle
HOLDOUT_FRACTION = 1 / 3
HOLDOUT_NOISE = ("clean", "uniform20", "uniform40", "uniform80")  # asymmetric noise: a mapping for digits only


def planned_runs(methods, noises, probe_per_class=1, runs=None):
    """(noise, method) pairs in table order; on clean labels only supervised (the ceiling) and ieg.

    With more than 1 probe image per class only the methods that learn from the probe (l2r, ieg, ieg_split) on
    noisy labels: supervised never reads the probe (more images would only shrink its training split), and on
    clean labels the paper reports one figure for every probe size. `runs` (`--runs`), a list of (noise,
    method) pairs, replaces the product of `methods` and `noises`; the probe-size rule still applies.
    """
    pairs = runs if runs is not None else [(n, m) for n in noises for m in METHODS
                                           if m in methods and (m in CLEAN_METHODS if n == "clean" else True)]
    return [(n, m) for n, m in pairs if probe_per_class == 1 or (n != "clean" and m in PROBE_METHODS)]


def invocation_plan(seeds, methods, noises, probe_sizes, data_seeds=None, runs=None):
    """Every (seed, data seed, noise, method, probe size) an invocation trains, each once (a value given twice
    would train one run directory twice, at the same time with --jobs 2): per seed, data seed and probe size,
    `planned_runs`. Without `data_seeds` the data seed is None: each run draws its data with its own seed."""
    once = lambda values: list(dict.fromkeys(values))  # noqa: E731
    return [(seed, draw, noise, method, probe) for seed in once(seeds) for draw in once(data_seeds or [None])
            for probe in once(probe_sizes)
            for noise, method in planned_runs(methods, once(noises), probe, runs and once(runs))]


def parse_runs(values):
    """`--runs clean/supervised uniform80/ieg` as (noise, method) pairs; ValueError names a bad one."""
    pairs = []
    for value in values:
        noise, _, method = value.partition("/")
        if noise not in NOISE or method not in METHODS:
            raise ValueError(f"--runs takes noise/method pairs such as clean/supervised or uniform80/ieg, with "
                             f"noise in {', '.join(NOISE)} and method in {', '.join(METHODS)}; got {value!r}")
        pairs.append((noise, method))
    return pairs


def oracle_flags(noise, model_dir, seed):
    """Flags that train on the correctly labelled part of the noisy split only, written as an --array_file.

    The probe and test set are the digits run's; evaluation period and SGDR cycle stay one epoch of the FULL
    training set, so the schedule matches the other runs.
    """
    import numpy as np

    from ieg_tf import datasets
    noise_type, ratio = NOISE[noise]
    data = datasets.load_dataset(datasets.DataSpec(noise_type=noise_type, noise_ratio=ratio, seed=seed))
    keep = data.train_labels == data.train_true_labels
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "oracle_data.npz"
    np.savez(path, train_images=data.train_images[keep], train_labels=data.train_labels[keep],
             test_images=data.test_images, test_labels=data.test_labels, probe_images=data.probe_images,
             probe_labels=data.probe_labels)
    epoch = len(data.train_labels) // 100
    return ["--dataset=arrays", f"--array_file={path}", "--noise_type=none", "--noise_ratio=0",
            f"--eval_freq={epoch}", f"--decay_steps={epoch}"]


def holdout_flags(noise, model_dir, seed):
    """Flags of a tuning run that never sees the test set: it trains on a stratified 2/3 of the digits training
    split (drawn with `seed`) and is scored on the other third, with its true labels.

    The package splits the probe off and injects the noise as for digits (dataset=arrays, labels taken as clean).
    The schedule (evaluation period, first SGDR cycle) and the KL weight are the digits run's, so a setting
    chosen here transfers to the digits default unchanged but for the 1/3 smaller training set.
    """
    import numpy as np

    from ieg_tf import sources
    if noise not in HOLDOUT_NOISE:
        raise ValueError(f"--holdout supports the noise settings {HOLDOUT_NOISE}, not {noise!r}")
    raw = sources.read_digits()
    rest, held = sources.stratified_split(raw.train_labels, HOLDOUT_FRACTION, np.random.default_rng(seed))
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / "holdout_data.npz"
    np.savez(path, train_images=raw.train_images[rest], train_labels=raw.train_labels[rest],
             test_images=raw.train_images[held], test_labels=raw.train_labels[held])
    noise_type, ratio = NOISE[noise]
    return ["--dataset=arrays", f"--array_file={path}", f"--noise_type={noise_type}", f"--noise_ratio={ratio}",
            f"--eval_freq={DIGITS_EPOCH}", f"--decay_steps={DIGITS_EPOCH}", f"--consistency_factor={DIGITS_KL_WEIGHT}"]


def run_name(method, probe_per_class=1, tag=""):
    """A run's name in tables and its directory: the method, then `_probe<K>` unless K = 1 (the issue's setting),
    then the --tag."""
    return "_".join(filter(None, [method, f"probe{probe_per_class}" if probe_per_class != 1 else "", tag]))


def run_command(noise, method, steps, out, seed, jit, extra_flags=(), name=None, holdout=False, probe_per_class=1,
                data_seed=None):
    """(model dir, `python` arguments) of one run; see `run_one`. With K > 1 probe images per class the
    evaluation period and first SGDR cycle stay one epoch of the 1-probe run (DIGITS_EPOCH), so every probe size
    trains on the same schedule and its 1246 steps still end at the bottom of a cycle.

    A `data_seed` other than `seed` draws the data (probe, noise, and the holdout or oracle split) with it: the
    package gets `--data_seed` and the directory a `_data<D>` suffix. Equal to `seed` it is the default run,
    in the default run's directory."""
    noise_type, ratio = NOISE[noise]
    flag, extra = METHODS[method]
    extra = [*extra, *extra_flags]
    name = name or run_name(method, probe_per_class)
    own_draw = data_seed is None or data_seed == seed
    draw = seed if own_draw else data_seed
    model_dir = (out / f"{'holdout_' if holdout else ''}steps{steps}_seed{seed}" /
                 f"{noise}_{name}{'' if own_draw else f'_data{draw}'}")
    if method == "oracle" and (holdout or probe_per_class != 1):
        raise ValueError("the oracle is built from the digits run with 1 probe image per class; it has no "
                         "--holdout form and no other probe size")
    data_flags = (holdout_flags(noise, model_dir, draw) if holdout else
                  oracle_flags(noise, model_dir, draw) if method == "oracle" else
                  ["--dataset=digits", f"--noise_type={noise_type}", f"--noise_ratio={ratio}"])
    if probe_per_class != 1 and not holdout:  # holdout_flags already fix the schedule
        data_flags += [f"--eval_freq={DIGITS_EPOCH}", f"--decay_steps={DIGITS_EPOCH}"]
    if not own_draw:
        data_flags.append(f"--data_seed={draw}")
    args = ["-m", "ieg_tf.main", *data_flags, "--network=small_cnn", f"--probe_per_class={probe_per_class}",
            f"--method={flag}", *extra, f"--max_iteration={steps}", f"--seed={seed}", f"--jit_compile={jit}",
            f"--model_dir={model_dir}"]
    return model_dir, args


def run_one(noise, method, steps, out, seed, jit, extra_flags=(), name=None, holdout=False, probe_per_class=1,
            data_seed=None):
    """Trains one configuration (or finds it finished) and returns its results.json plus wall seconds.

    `extra_flags` are appended to the method's flags; `name` (default: `run_name`) names the run directory;
    `holdout` scores on a held-out third of the training split instead of the test set (`holdout_flags`);
    `probe_per_class` is the size of the trusted probe set per class (the issue's setting: 1); `data_seed`
    draws the data apart from `seed` (`run_command`) and is the row's "draw" (None: the run's own seed).
    """
    name = name or run_name(method, probe_per_class)
    model_dir, args = run_command(noise, method, steps, out, seed, jit, extra_flags, name, holdout, probe_per_class,
                                  data_seed)
    start = time.time()
    common.run_python(args, out / "logs" / f"{model_dir.parent.name}_{model_dir.name}.log")
    results = json.loads((model_dir / "results.json").read_text())
    # results.json's "method" is the trainer's (ieg for ieg_split); the row keeps the benchmark's name.
    wrong = errors.suggestion_errors(model_dir) if METHODS[method][0] == "ieg" else None
    if wrong:
        errors.error_gallery(model_dir)
    return {**results, "run": f"{noise}/{name}", "noise": noise, "method": method, "seed": seed,
            "draw": data_seed, "probe_per_class": probe_per_class, "suggestion_errors": wrong,
            "test_errors": errors.confusion_errors(model_dir), "holdout": holdout, "model_dir": str(model_dir),
            "command": "python " + " ".join(args), "wall_seconds": round(time.time() - start, 1)}


def row_name(row):
    """A result row's run name (method, probe size unless 1, tag): its "run" without the noise."""
    return row["run"].split("/", 1)[1]


def row_probe(row):
    """A result row's probe images per class; rows written before --probe_per_class existed had 1."""
    return row.get("probe_per_class", 1)


def row_key(row):
    """(seed, data seed) of a result row: the runs that share it share their data and can be compared; the data
    seed is None where the row's own seed drew the data (rows written before --data_seed have none)."""
    return row.get("seed"), row.get("draw")


def ceilings(rows):
    """{row_key: clean-label ceiling's final test accuracy} (clean/supervised, 1 probe image per class). Found by
    method and probe size, not by name: a --tag renames the supervised run too."""
    return {row_key(r): r["test_accuracy"] for r in rows
            if (r["noise"], r["method"], row_probe(r)) == ("clean", "supervised", 1)}


def check_targets(rows):
    """The issue's targets, on final test accuracy: ieg at uniform80 within 2 points of the clean ceiling and at
    least 10 points above supervised at uniform80. None where a run is missing.

    With several seeds: the targets of each seed under "seed<N>" (with data seeds: each seed and data seed under
    "seed<N>_data<D>"), the mean gap and gain over the seeds that have them, and whether every such seed met each
    target ("every_seed_...").
    """
    keys = list(dict.fromkeys(map(row_key, rows)))
    if len(keys) <= 1:
        return _seed_targets(rows)
    per_seed = {key: _seed_targets([r for r in rows if row_key(r) == key]) for key in keys}
    targets = {f"seed{seed}" + ("" if draw is None else f"_data{draw}"): t for (seed, draw), t in per_seed.items()}
    for key in ("ieg_u80_gap_to_ceiling_points", "ieg_u80_gain_over_supervised_points"):
        values = [t[key] for t in per_seed.values() if key in t]
        if values:
            targets[f"mean_{key}"] = round(sum(values) / len(values), 2)
    for key in ("ieg_u80_within_2_points_of_ceiling", "ieg_u80_at_least_10_points_above_supervised"):
        values = [t[key] for t in per_seed.values() if key in t]
        if values:
            targets[f"every_seed_{key}"] = all(values)
    return targets


def _seed_targets(rows):
    # The issue's setting: 1 probe image per class. Run names may carry a --tag; the method does not.
    acc = {f"{r['noise']}/{r['method']}": r["test_accuracy"] for r in rows if row_probe(r) == 1}
    ieg, ceiling, sup = acc.get("uniform80/ieg"), acc.get("clean/supervised"), acc.get("uniform80/supervised")
    targets = {}
    if ieg is not None and ceiling is not None:
        targets["ieg_u80_gap_to_ceiling_points"] = round(100 * (ceiling - ieg), 2)
        targets["ieg_u80_within_2_points_of_ceiling"] = ceiling - ieg <= 0.02
    if ieg is not None and sup is not None:
        targets["ieg_u80_gain_over_supervised_points"] = round(100 * (ieg - sup), 2)
        targets["ieg_u80_at_least_10_points_above_supervised"] = ieg - sup >= 0.10
    return targets


def issue_cells(row):
    if METHODS[row["method"]][0] != "ieg":
        return ["-", "-"]
    return [common.fmt(row["label_issue_precision"], 3), common.fmt(row["label_issue_recall"], 3)]


def table(rows):
    """The markdown table; supervised and l2r never relabel, so they flag nothing and get no issue columns. The
    method column is the run's name (the method, its probe size unless 1, its --tag); runs of --data_seed get
    a data seed column."""
    draws = any(r.get("draw") is not None for r in rows)
    header = ["noise", "method", "seed", *(["data seed"] if draws else []), "test acc % (final)", "best %",
              "issue precision", "issue recall", "train s", "wall s"]
    cells = [[r["noise"], row_name(r), r.get("seed", "-"), *([common.fmt(r.get("draw"))] if draws else []),
              common.fmt(r["test_accuracy"], 1, 100), common.fmt(r["best_test_accuracy"], 1, 100), *issue_cells(r),
              common.fmt(r["seconds"], 0), common.fmt(r["wall_seconds"], 0)] for r in rows]
    return common.markdown_table(header, cells)


def seed_summary(rows):
    """Markdown table per run (noise and name) over the seeds: final test accuracy (mean, min, max), mean best test
    accuracy, and for ieg runs the mean label-issue precision and recall (over the seeds that have them)."""
    groups = {}
    for r in rows:
        groups.setdefault((r["noise"], row_name(r)), []).append(r)

    def mean(values, digits, scale=1):
        values = [v for v in values if v is not None]
        return common.fmt(sum(values) / len(values), digits, scale) if values else "-"

    cells = []
    for (noise, name), group in groups.items():
        acc = [100 * r["test_accuracy"] for r in group]
        issues = [mean([r[f"label_issue_{k}"] for r in group], 3) for k in ("precision", "recall")]
        cells.append([noise, name, f"{sum(acc) / len(acc):.1f}", f"{min(acc):.1f}", f"{max(acc):.1f}",
                      mean([r["best_test_accuracy"] for r in group], 1, 100),
                      *(issues if METHODS[group[0]["method"]][0] == "ieg" else ["-", "-"]), len(group)])
    return common.markdown_table(["noise", "method", "mean %", "min %", "max %", "mean best %",
                                  "issue precision", "issue recall", "seeds"], cells)


def draw_summary(rows):
    """The data draw against the training run (`--data_seed`). Per run (noise and name) and data seed: the final
    test accuracy (%) of each training seed, their mean and sample sd, the mean gap to the ceiling of the same
    seed and data seed (None for the ceiling itself, or where a ceiling is missing), and the mean label-issue
    recall of relabelling runs. Per run: the training run's share of the spread, the pooled within-draw sd, and
    the draws' own, the between-draw sd of a one-way random-effects analysis, sqrt(max(0, (MSB - MSW) / n0))
    with n0 = (N - sum n_i^2 / N) / (k - 1) (None with fewer than 2 draws or no within-draw sd).

    Rows without a data seed are left out. Returns {"noise/name": {"draws": {D: {...}}, "within_sd": ...,
    "between_sd": ...}} in the order the runs first appear.
    """
    import numpy as np
    ceiling = ceilings(rows)
    groups = {}
    for r in rows:
        if r.get("draw") is not None:
            groups.setdefault(r["run"], {}).setdefault(r["draw"], []).append(r)
    summary = {}
    for run, draws in groups.items():
        cells = {}
        for draw, group in draws.items():
            acc = np.array([100 * r["test_accuracy"] for r in group])
            is_ceiling = (group[0]["noise"], group[0]["method"], row_probe(group[0])) == ("clean", "supervised", 1)
            gaps = [100 * ceiling[row_key(r)] - a for r, a in zip(group, acc) if row_key(r) in ceiling]
            recall = [r["label_issue_recall"] for r in group if r.get("label_issue_recall") is not None]
            cells[draw] = dict(accuracy={r["seed"]: round(float(a), 2) for r, a in zip(group, acc)},
                               mean=round(float(acc.mean()), 2),
                               sd=round(float(acc.std(ddof=1)), 2) if len(acc) > 1 else None,
                               gap=None if is_ceiling or len(gaps) < len(group) else round(float(np.mean(gaps)), 2),
                               recall=round(float(np.mean(recall)), 3) if METHODS[group[0]["method"]][0] == "ieg"
                               and recall else None)
        sizes = np.array([len(g) for g in draws.values()])
        means = np.array([np.mean([100 * r["test_accuracy"] for r in g]) for g in draws.values()])
        dof = int((sizes - 1).sum())
        within_var = (sum(float(np.var([100 * r["test_accuracy"] for r in g], ddof=1)) * (len(g) - 1)
                          for g in draws.values() if len(g) > 1) / dof) if dof else None
        between = None
        if within_var is not None and len(sizes) > 1:
            total, k = sizes.sum(), len(sizes)
            grand = (sizes * means).sum() / total
            msb = (sizes * (means - grand) ** 2).sum() / (k - 1)
            n0 = (total - (sizes ** 2).sum() / total) / (k - 1)
            between = round(float(np.sqrt(max(0.0, (msb - within_var) / n0))), 2)
        summary[run] = dict(draws=cells, within_sd=None if within_var is None else round(within_var ** 0.5, 2),
                            between_sd=between)
    return summary


def draw_table(summary):
    """`draw_summary` as markdown: a row per run and data seed, a column per training seed, then mean, sd, mean
    gap and issue recall; a second table gives each run's within-draw and between-draw sd."""
    seeds = list(dict.fromkeys(s for run in summary.values() for c in run["draws"].values() for s in c["accuracy"]))
    cells = [[run.split("/", 1)[0], run.split("/", 1)[1], draw,
              *(common.fmt(c["accuracy"].get(s), 2) for s in seeds), common.fmt(c["mean"], 2),
              common.fmt(c["sd"], 2), common.fmt(c["gap"], 2), common.fmt(c["recall"], 3)]
             for run, v in summary.items() for draw, c in v["draws"].items()]
    first = common.markdown_table(["noise", "method", "data seed", *(f"seed {s} %" for s in seeds), "mean %",
                                   "sd", "mean gap", "issue recall"], cells)
    spread = [[run, len(v["draws"]), common.fmt(v["within_sd"], 2), common.fmt(v["between_sd"], 2)]
              for run, v in summary.items()]
    return first + "\n\n" + common.markdown_table(
        ["run", "data draws", "training run sd (pooled within draws)", "data draw sd (between draws)"], spread)


def noise_grid(rows):
    """The paper's layout (SPEC section 5: a row per method and probe size M, a column per noise ratio): per run
    name and noise setting, the mean final test accuracy over the seeds and the mean gap to each seed's ceiling
    (clean/supervised with 1 probe image per class), in points.

    Returns {name: {"method": method, "probe_per_class": M, noise: {"mean": %, "gap": points or None, "seeds": n}}}
    in the order the names first appear; the columns follow NOISE.
    """
    ceiling = ceilings(rows)
    grid = {}
    for r in rows:
        cells = grid.setdefault(row_name(r), {"method": r["method"], "probe_per_class": row_probe(r)})
        cells.setdefault(r["noise"], []).append(r)
    for cells in grid.values():
        for noise in [n for n in NOISE if n in cells]:
            group = cells[noise]
            gaps = [100 * (ceiling[row_key(r)] - r["test_accuracy"]) for r in group if row_key(r) in ceiling]
            cells[noise] = dict(mean=round(100 * sum(r["test_accuracy"] for r in group) / len(group), 2),
                                gap=round(sum(gaps) / len(gaps), 2) if len(gaps) == len(group) else None,
                                seeds=len(group))
    return grid


def grid_table(grid):
    """`noise_grid` as markdown: "mean % (gap)" per noise column, "-" where a setting was not run."""
    noises = [n for n in NOISE if any(n in cells for cells in grid.values())]

    def cell(c):
        return "-" if c is None else f"{c['mean']:.1f}" + ("" if c["gap"] is None else f" ({c['gap']:.1f})")

    cells = [[name, c["probe_per_class"], *(cell(c.get(n)) for n in noises)] for name, c in grid.items()]
    return common.markdown_table(["run", "probe/class", *(f"{n}: mean % (gap)" for n in noises)], cells)


# SPEC section 5: the paper's IEG test accuracy (%) on CIFAR-10 (WRN-28-10) under uniform noise, per probe size
# per class (M = 10 / 50 / 100 images), at noise ratio 0 / 0.2 / 0.4 / 0.8. Drawn beside the digits grid.
PAPER_CIFAR10_IEG = {1: [96.8, 95.4, 94.5, 87.9], 5: [96.8, 96.4, 95.5, 91.8], 10: [96.8, 96.2, 95.9, 93.7]}
PAPER_NOISE_RATIOS = [0.0, 0.2, 0.4, 0.8]


def grid_series(grid):
    """{run name: (noise ratios, mean test accuracies %)} of the clean and uniform-noise cells of `noise_grid`,
    by increasing ratio; runs with fewer than two such cells are left out."""
    series = {}
    for name, cells in grid.items():
        points = sorted((NOISE[n][1], cells[n]["mean"]) for n in NOISE
                        if n in cells and NOISE[n][0] in ("none", "uniform"))
        if len(points) >= 2:
            series[name] = tuple(list(v) for v in zip(*points))
    return series


def grid_ceiling(grid):
    """The clean-label ceiling's cell of `noise_grid` (clean/supervised, 1 probe image per class), or None. Found by
    method and probe size, not by name: a --tag renames the supervised run too."""
    return next((c["clean"] for c in grid.values()
                 if c["method"] == "supervised" and c["probe_per_class"] == 1 and "clean" in c), None)


def plot_grid(grid, path):
    """Test accuracy against the uniform noise ratio: the digits runs of `noise_grid` that learn from the probe
    (mean over seeds, a line per run and probe size; the clean-label ceiling dotted) beside the paper's CIFAR-10
    IEG rows for 1, 5 and 10 probe images per class. The two panels have their own scales; what compares is the
    shape."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(11, 4), dpi=100)
    ours, paper = fig.subplots(1, 2)
    for name, (ratios, means) in grid_series(grid).items():
        if grid[name]["method"] not in PROBE_METHODS:  # supervised falls to ~30%: only its ceiling is drawn
            continue
        ours.plot(ratios, means, marker="o", label=f"{name} ({grid[name]['probe_per_class']}/class)")
    ceiling = grid_ceiling(grid)
    if ceiling:
        ours.axhline(ceiling["mean"], color="black", linestyle=":", label="clean/supervised (ceiling)")
    ours.set_title("digits (small_cnn), mean over seeds")
    for probe, accuracy in PAPER_CIFAR10_IEG.items():
        paper.plot(PAPER_NOISE_RATIOS, accuracy, marker="o", label=f"IEG, {probe}/class")
    paper.set_title("the paper: CIFAR-10 (WRN-28-10)")
    for ax in (ours, paper):
        ax.set_xlabel("uniform noise ratio")
        ax.set_ylabel("test accuracy %")
        ax.set_xticks(PAPER_NOISE_RATIOS)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def history_curve(model_dir):
    """(steps, test accuracies) of one run, from the per-evaluation history its checkpoints keep."""
    history = json.loads((pathlib.Path(model_dir) / "checkpoints" / "history.json").read_text())
    return [h["step"] for h in history], [h["val_accuracy"] for h in history]


def seed_bands(rows):
    """{run name: (steps, mean, min, max)} of the EMA test accuracy (%) over the seeds of each run, on the
    evaluation steps that all of its seeds have, in the order the runs first appear."""
    import numpy as np
    curves = {}
    for r in rows:
        curves.setdefault(r["run"], []).append(dict(zip(*history_curve(r["model_dir"]))))
    bands = {}
    for run, histories in curves.items():
        steps = sorted(set.intersection(*(set(h) for h in histories)))
        acc = 100 * np.array([[h[s] for s in steps] for h in histories])
        bands[run] = (steps, acc.mean(0), acc.min(0), acc.max(0))
    return bands


def plot_curves(rows, path):
    """One panel per noise setting: EMA test accuracy against steps, one line per run, or with several seeds the
    mean over the seeds with their min-max band; the clean-label ceiling (clean/supervised, final accuracy, mean
    over seeds) as a dotted line in every panel."""
    from matplotlib.figure import Figure
    noises = list(dict.fromkeys(r["noise"] for r in rows if r["noise"] != "clean"))
    ceilings = [r["test_accuracy"] for r in rows if (r["noise"], r["method"]) == ("clean", "supervised")]
    seeds = len({r.get("seed") for r in rows})
    bands = seed_bands(rows)
    fig = Figure(figsize=(5.5 * max(len(noises), 1), 4), dpi=100)
    axes = fig.subplots(1, max(len(noises), 1), squeeze=False)[0]
    for ax, noise in zip(axes, noises or ["clean"]):
        for run, (steps, mean, low, high) in bands.items():
            if run.split("/")[0] == noise or run == "clean/ieg":
                line, = ax.plot(steps, mean, linewidth=1.2,
                                label=f"{run} (mean of {seeds} seeds, min-max)" if seeds > 1 else run)
                if seeds > 1:
                    ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
        if ceilings:
            ax.axhline(100 * sum(ceilings) / len(ceilings), color="black", linestyle=":",
                       label="clean/supervised (ceiling)")
        ax.set_title(f"digits, {noise}")
        ax.set_xlabel("step")
        ax.set_ylabel("test accuracy (EMA) %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def report_stem(holdout, tag, report=""):
    """The file name stem of an invocation's report and figures: `report` if given, else
    [holdout_]accuracy[_<tag>]."""
    if report:
        if pathlib.Path(report).name != report or report.endswith(".json"):
            raise ValueError(f"--report names a file in --out without its extension, e.g. 'grid', not {report!r}")
        return report
    return "_".join(filter(None, ["holdout" if holdout else "", "accuracy", tag]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps of every run")
    parser.add_argument("--out", default="/tmp/ieg_bench/accuracy", help="run directories and accuracy.json")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=None,
                        help=f"default {' '.join(DEFAULT_METHODS)}; oracle is a diagnostic, off by default")
    parser.add_argument("--noise", nargs="+", choices=list(NOISE), default=None,
                        help=f"default {' '.join(DEFAULT_NOISE)}")
    parser.add_argument("--seed", type=int, nargs="+", default=[12345],
                        help="one or more seeds; every run is trained once per seed")
    parser.add_argument("--data_seed", type=int, nargs="+", default=None,
                        help="data draws: every run is trained once per seed and data seed, the data seed drawing "
                             "the probe and the noise (ieg_tf's --data_seed); adds the draw-against-run table")
    parser.add_argument("--runs", nargs="+", default=None, metavar="NOISE/METHOD",
                        help="exactly these runs, e.g. clean/supervised uniform80/ieg, instead of every "
                             "--methods x --noise pair")
    parser.add_argument("--probe_per_class", type=int, nargs="+", default=[1],
                        help="probe images per class, one or more (the paper's M/10); every run is trained once per "
                             "size; the targets read the 1-image runs")
    parser.add_argument("--holdout", action="store_true",
                        help="tuning mode: train on 2/3 of the training split and score on the other third "
                             f"(never the test set); noise {' or '.join(HOLDOUT_NOISE)} only")
    parser.add_argument("--flags", default="",
                        help="extra ieg_tf.main flags for every run, written with '=' as the value starts with "
                             "--: --flags='--ce_factor=2'; needs --tag")
    parser.add_argument("--tag", default="", help="names the runs and reports of a --flags variant")
    parser.add_argument("--report", default="",
                        help="names this invocation's report: <out>/<report>.json and its figures (default "
                             "[holdout_]accuracy[_<tag>], which the next invocation of the same kind overwrites)")
    parser.add_argument("--jit", choices=("auto", "true", "false"), default="auto",
                        help="XLA for the train step (auto = on, one device)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (each is its own process)")
    args = parser.parse_args(argv)
    try:
        runs = parse_runs(args.runs) if args.runs else None
    except ValueError as e:
        parser.error(str(e))
    if runs and (args.methods or args.noise):
        parser.error("--runs names every run to train; leave out --methods and --noise")
    if runs:  # the checks below read the methods and noise settings actually run
        args.methods, args.noise = [m for _, m in runs], [n for n, _ in runs]
    args.methods, args.noise = args.methods or list(DEFAULT_METHODS), args.noise or list(DEFAULT_NOISE)
    if args.steps < 1 or args.jobs < 1 or min(args.probe_per_class) < 1:
        parser.error(f"--steps, --jobs and --probe_per_class must be >= 1, got {args.steps}, {args.jobs} and "
                     f"{min(args.probe_per_class)}")
    if "oracle" in args.methods and args.probe_per_class != [1]:
        parser.error("the oracle is a 1-probe-image diagnostic: run it without --probe_per_class")
    if args.flags and not args.tag:
        parser.error("--flags changes what a run trains, so give it a --tag (it names the run directories)")
    if "--data_seed" in args.flags and args.data_seed:
        parser.error("give the data seeds once, as --data_seed of the benchmark, not in --flags")
    if args.holdout and (set(args.noise) - set(HOLDOUT_NOISE) or "oracle" in args.methods):
        parser.error(f"--holdout runs the noise settings {', '.join(HOLDOUT_NOISE)} and no oracle; pass "
                     f"--noise {' '.join(HOLDOUT_NOISE)} and leave oracle out of --methods")
    try:
        stem = report_stem(args.holdout, args.tag, args.report)
    except ValueError as e:
        parser.error(str(e))
    out = pathlib.Path(args.out)
    extra = shlex.split(args.flags)

    def one(seed, draw, noise, method, probe):
        name = run_name(method, probe, args.tag)
        label = f"seed {seed}{'' if draw is None else f' data {draw}'} {noise}/{name}"
        print(f"[accuracy] {label}: {args.steps} steps ...", flush=True)
        row = run_one(noise, method, args.steps, out, seed, args.jit, extra, name, args.holdout, probe, draw)
        print(f"[accuracy] {label}: {'holdout' if args.holdout else 'test'} accuracy "
              f"{common.fmt(row['test_accuracy'], 1, 100)}%, {row['wall_seconds']:.0f} s", flush=True)
        if row["suggestion_errors"]:
            print(f"[accuracy] {label}: suggested labels {row['suggestion_errors']}", flush=True)
        return row

    plan = invocation_plan(args.seed, args.methods, args.noise, args.probe_per_class, args.data_seed, runs)
    rows = common.run_parallel(one, plan, args.jobs)
    grid = noise_grid(rows)
    report = dict(steps=args.steps, seeds=args.seed, data_seeds=args.data_seed, holdout=args.holdout, flags=extra,
                  jit=args.jit, probe_per_class=args.probe_per_class, runs=rows, targets=check_targets(rows),
                  grid=grid, draws=draw_summary(rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2))
    plot_curves(rows, out / f"{stem}_curves.png")
    print(table(rows))
    if args.data_seed:
        print(draw_table(report["draws"]))
    elif len(args.seed) > 1:
        print(seed_summary(rows))
    if len(args.probe_per_class) > 1 or sum(n.startswith("uniform") for n in args.noise) > 1:
        print(grid_table(grid))
        print(f"written: {plot_grid(grid, out / f'{stem}_grid.png')}")
    print(json.dumps(report["targets"]))
    print(f"written: {out / f'{stem}.json'}, {out / f'{stem}_curves.png'}")


if __name__ == "__main__":
    main()
