"""Meta-step modes against cost: step time, peak memory, digits accuracy and label-issue quality, one run.

    nice -n 10 python bench/meta_modes.py --jobs 2           # 7 timings + 6 trainings of 1246 steps, ~1 h on 2 cores
    python bench/meta_modes.py --steps 100 --modes exact last_layer --every 1

For each `--meta_grad_mode` (exact, approx_vjp, last_layer) and `--meta_every` k (1, 4):
* step time: median milliseconds of a whole ieg train step (mean over whole k-step cycles when k > 1, since solve
  and reuse steps differ) on the digits network (small_cnn), batch 100, synthetic data, each configuration in its
  own process (bench/step_time.py's child), and the ratio to a supervised step timed the same way;
* peak memory: that process's peak resident set (`ru_maxrss`), and the part above the resident set before the
  first step (the TF runtime, ~600 MiB), i.e. what the traced step and its buffers add;
* accuracy: `python -m ieg_tf.main` on digits at 80% uniform noise, 1 probe image per class, same seed and budget
  as bench/accuracy.py (exact with k = 1 IS accuracy.py's uniform80/ieg run and shares its directory under the
  same --out), final and best test accuracy, label-issue precision and recall.
Step times are taken first, one process at a time, before any training starts, so `--jobs` never overlaps them.
XLA is off for the timings by default: under XLA on CPU the k > 1 step computes the meta step and selects (a
convolution inside tf.cond is 10-100x slower there, see BUILD_NOTES), so k shows its saving only without XLA;
`--time_jit on` times the XLA step instead. The trainings use the CLI default (`--jit auto`: XLA on one device).

Prints a markdown table and writes `<out>/meta_modes.json`.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import accuracy, common, step_time  # noqa: E402

MODES = step_time.KNOWN_MODES
NOISE = "uniform80"


def run_name(mode, every):
    """Run directory name; exact with k = 1 is the accuracy benchmark's plain `ieg` run."""
    return "ieg" if (mode, every) == ("exact", 1) else f"ieg_{mode}_k{every}"


def time_configs(modes, everies, jit, warmup, steps):
    """Step-time child configurations: supervised first, then ieg per (mode, k)."""
    base = dict(network="small_cnn", jit=jit, batch=100, warmup=warmup, steps=steps, breakdown=False)
    configs = [dict(base, method="supervised", mode=None, meta_every=1)]
    configs += [dict(base, method="ieg", mode=m, meta_every=k) for m in modes for k in everies]
    return configs


def train(mode, every, args):
    flags = [f"--meta_grad_mode={mode}", f"--meta_every={every}"]
    result = accuracy.run_one(NOISE, "ieg", args.steps, pathlib.Path(args.out), args.seed, args.jit, flags,
                              run_name(mode, every))
    print(f"[meta_modes] trained {(mode, every)}: test accuracy {common.fmt(result['test_accuracy'], 1, 100)}%",
          flush=True)
    return result


def combine(times, trainings):
    """Rows of the table: one per (mode, k), step time and memory from `times`, accuracy from `trainings`."""
    sup = next(t for t in times if t["method"] == "supervised")
    rows = []
    for t in times:
        if t["method"] != "ieg":
            continue
        key = (t["meta_grad_mode"], t["meta_every"])
        ms = step_time._typical_ms(t)
        r = trainings.get(key, {})
        rows.append(dict(
            meta_grad_mode=key[0], meta_every=key[1], step_ms=ms, ratio_to_supervised=round(ms / sup["step_ms"], 2),
            peak_rss_mb=t["peak_rss_mb"], step_rss_mb=t["peak_rss_mb"] - t["rss_before_step_mb"],
            test_accuracy=r.get("test_accuracy"), best_test_accuracy=r.get("best_test_accuracy"),
            label_issue_precision=r.get("label_issue_precision"), label_issue_recall=r.get("label_issue_recall"),
            train_seconds=r.get("seconds"), model_dir=r.get("model_dir"), command=r.get("command")))
    return dict(supervised=dict(step_ms=sup["step_ms"], peak_rss_mb=sup["peak_rss_mb"],
                                step_rss_mb=sup["peak_rss_mb"] - sup["rss_before_step_mb"]), rows=rows)


def table(report):
    sup = report["supervised"]
    header = ["meta_grad_mode", "k", "step ms", "x supervised", "peak RSS MiB", "step RSS MiB", "test acc %",
              "best %", "issue precision", "issue recall", "train s"]
    cells = [["supervised", "-", common.fmt(sup["step_ms"]), "1.00", sup["peak_rss_mb"], sup["step_rss_mb"],
              "-", "-", "-", "-", "-"]]
    for r in report["rows"]:
        cells.append([r["meta_grad_mode"], r["meta_every"], common.fmt(r["step_ms"]),
                      common.fmt(r["ratio_to_supervised"], 2), r["peak_rss_mb"], r["step_rss_mb"],
                      common.fmt(r["test_accuracy"], 1, 100), common.fmt(r["best_test_accuracy"], 1, 100),
                      common.fmt(r["label_issue_precision"], 3), common.fmt(r["label_issue_recall"], 3),
                      common.fmt(r["train_seconds"], 0)])
    return common.markdown_table(header, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--every", type=int, nargs="+", default=[1, 4], help="meta_every values k")
    parser.add_argument("--steps", type=int, default=accuracy.DEFAULT_STEPS, help="training steps of every run")
    parser.add_argument("--seed", type=int, default=12345)
    parser.add_argument("--jit", choices=("auto", "true", "false"), default="auto", help="XLA for the trainings")
    parser.add_argument("--time_jit", choices=("off", "on"), default="off", help="XLA for the step timings")
    parser.add_argument("--warmup", type=int, default=4, help="untimed step calls (tracing, compilation)")
    parser.add_argument("--time_steps", type=int, default=20, help="timed step calls (rounded up to whole k cycles)")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run at once (after the timings)")
    parser.add_argument("--no_train", action="store_true", help="timings and memory only")
    parser.add_argument("--out", default="/tmp/ieg_bench/accuracy", help="run directories and meta_modes.json")
    args = parser.parse_args(argv)
    for name in ("steps", "warmup", "time_steps", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if min(args.every) < 1:
        parser.error(f"--every values must be >= 1, got {args.every}")
    times = []
    for config in time_configs(args.modes, args.every, args.time_jit == "on", args.warmup, args.time_steps):
        print(f"[meta_modes] timing {config['method']} {config['mode']} k={config['meta_every']}", flush=True)
        times.append(step_time.run_child(config, args))
    trainings = {}
    if not args.no_train:
        keys = [(m, k) for m in args.modes for k in args.every]
        trainings = dict(zip(keys, common.run_parallel(lambda m, k: train(m, k, args), keys, args.jobs)))
    report = combine(times, trainings)
    report.update(steps=args.steps, seed=args.seed, noise=NOISE, time_jit=args.time_jit, train_jit=args.jit,
                  timings=times)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta_modes.json").write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"written: {out / 'meta_modes.json'}")


if __name__ == "__main__":
    main()
