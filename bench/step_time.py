"""Median time of a training step, supervised against ieg, on the same network and batch, and where ieg spends it.

    nice -n 10 python bench/step_time.py                                   # small_cnn and wrn28-2, XLA on and off
    python bench/step_time.py --networks small_cnn --jit on --warmup 5 --steps 20

Each configuration (network, XLA, method, meta mode) runs in its own process, so its peak resident memory
(`ru_maxrss`) is its own. The batch is synthetic, in the trainer's dict format (`IEGTrainer` docstring): random
images in [-1, 1] of the network's input shape, random labels, a probe batch of the same size (the pipeline's
default Bp = B); the input pipeline is not measured (bench/augment.py measures it). Times are medians over
`--steps` calls after `--warmup` calls (the first call traces and, with XLA, compiles).

The stage breakdown times five tf.functions built on the trainer's own code, each computing a prefix of the step.
A graph (and XLA) runs only the ops its outputs need, so returning more of `compute_gradients`' results runs
more of the step:
  1. guess:    per-example guessed label only -> the weak and strong forwards and label guessing;
  2. meta:     + omega*, lambda* -> the meta step (look-ahead gradient, probe forward at theta', second-order
               backward) [ieg, l2r];
  3. losses:   + the total loss -> supervised CE terms, the MixUp forward, KL and L2 (forward only);
  4. backward: + the parameter gradients (`compute_gradients`) -> the backward pass of the total loss;
  5. update:   the whole `train_step` -> optimizer, BN statistics, EMA, per-example statistics, metrics.
Each stage's time is the difference of consecutive medians; the stage functions are timed interleaved (one call
of each per round) so a load change on the shared machine shifts all of them alike. For supervised only 3 (its
forward), 4 and 5 exist. Differences of a few milliseconds are within the noise of a shared 2-core machine.

With a TrainerConfig that has `meta_grad_mode` / `meta_every` (issue 7), ieg is timed once per mode
(`--meta_grad_mode`, default every mode) and per `--meta_every` value; with k > 1 the figure is the mean over
whole k-step cycles (solve steps and reuse steps differ) and no breakdown is taken. Peak memory is the child's
`ru_maxrss` after the whole-step timing: the TF runtime (~600 MiB, `rss_before_step_mb`), the traced or
XLA-compiled step and its buffers; `tf.config.experimental.get_memory_info("CPU:0")` is recorded where the TF
build tracks CPU memory (TF 2.21's CPU build does not: null).
"""

import argparse
import dataclasses
import json
import pathlib
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NETWORKS = {"small_cnn": (8, 8, 1), "wrn28-2": (32, 32, 3), "wrn28-10": (32, 32, 3), "resnet29": (32, 32, 3)}
STAGES = ("guess", "meta", "losses", "backward", "update")
KNOWN_MODES = ("exact", "approx_vjp", "last_layer")  # issue 7; used when TrainerConfig has meta_grad_mode


def available_modes():
    """The meta_grad_mode values this checkout's TrainerConfig accepts; () when it has no such field."""
    from ieg_tf.config import TrainerConfig
    if "meta_grad_mode" not in {f.name for f in dataclasses.fields(TrainerConfig)}:
        return ()
    modes = []
    for mode in KNOWN_MODES:
        try:
            TrainerConfig(meta_grad_mode=mode)
            modes.append(mode)
        except ValueError:
            pass
    return tuple(modes)


# ------------------------------------------------------------------ one configuration (child process)
def _synthetic_batch(shape, batch, num_classes):
    import numpy as np
    import tensorflow as tf
    rng = np.random.default_rng(0)
    labels = rng.integers(0, num_classes, batch).astype(np.int32)

    def images():
        return tf.constant(rng.uniform(-1.0, 1.0, (batch,) + shape).astype(np.float32))

    return {"weak": images(), "strong": images(), "label": tf.constant(labels),
            "id": tf.range(batch, dtype=tf.int32),
            "true_label": tf.constant(np.where(rng.random(batch) < 0.5, labels, (labels + 1) % num_classes)),
            "probe_image": images(), "probe_label": tf.range(batch, dtype=tf.int32) % num_classes}


def _stage_functions(trainer, method, jit):
    """Stage name -> tf.function computing the step up to and including that stage (see the module docstring)."""
    import tensorflow as tf

    def prefix(select):
        def fn(data):
            step = trainer.compute_gradients(data, trainer.step_seed())
            return select(step)
        return tf.function(fn, jit_compile=jit)

    stages = {}
    if method != "supervised":
        stages["guess"] = prefix(lambda s: s.per_example[2])
        stages["meta"] = prefix(lambda s: s.per_example)
    stages["losses"] = prefix(lambda s: (s.per_example, s.logs["loss"][0]))
    stages["backward"] = prefix(lambda s: (s.per_example, s.logs["loss"][0], s.grads))
    stages["update"] = tf.function(trainer.train_step, jit_compile=jit)
    return stages


def _timer(fn, batch):
    """A callable that runs fn(batch), waits for its values and returns the milliseconds it took."""
    import tensorflow as tf

    def call():
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, fn(batch))
        return 1000.0 * (time.perf_counter() - start)
    return call


def _medians(fns, batch, warmup, steps):
    """name -> (median ms, mean ms, first call ms). Timed calls are interleaved (one call of each function per
    round), so a load change on the shared machine shifts every stage alike instead of one of them."""
    calls = {name: _timer(fn, batch) for name, fn in fns.items()}
    first = {name: call() for name, call in calls.items()}
    for _ in range(warmup - 1):
        for call in calls.values():
            call()
    times = {name: [] for name in calls}
    for _ in range(steps):
        for name, call in calls.items():
            times[name].append(call())
    return {name: (statistics.median(t), statistics.mean(t), first[name]) for name, t in times.items()}


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def measure_config(network, jit, method, mode, meta_every, batch, warmup, steps, breakdown, stop_guess=False,
                   without_meta=False):
    """Times one configuration in this process; returns a dict (milliseconds, MiB).

    `without_meta` (ieg, XLA off) times the ieg step with the meta step skipped: every step reuses omega*, lambda*
    from the cache (meta_every so large that no timed step is due), so what is left is the objective's own work,
    the weak and strong forwards, label guessing, the MixUp forward, KL and the backward of it all. It is the
    floor of any meta-step variant of the reference's objective.
    """
    import keras
    import tensorflow as tf

    from ieg_tf import networks
    from ieg_tf.config import TrainerConfig
    from ieg_tf.model import IEGTrainer

    shape, num_classes = NETWORKS[network], 10
    keras.utils.set_random_seed(0)
    net = networks.build_network(network, num_classes, shape)
    spec = net.network_spec
    options = dict(method=method, weight_decay=spec.weight_decay, decay_kernels_only=spec.decay_kernels_only,
                   meta_stop_guess_gradient=stop_guess)
    if without_meta:
        if method != "ieg" or jit:
            raise ValueError("without_meta times ieg with XLA off (under XLA:CPU the skipped branch still runs)")
        mode, meta_every = mode or "exact", 2**31 - 1
    if mode is not None:
        options.update(meta_grad_mode=mode, meta_every=meta_every)
    trainer = IEGTrainer(net, num_classes, TrainerConfig(**options), num_train_examples=batch)
    trainer.compile(jit_compile=jit)
    data = _synthetic_batch(shape, batch, num_classes)
    if without_meta:
        trainer.optimizer.iterations.assign(1)  # due only at multiples of meta_every: never while timed
    else:
        steps = -(-steps // meta_every) * meta_every  # whole meta_every cycles, so the mean is the amortised cost
    baseline = _peak_rss_mb()
    stages = _stage_functions(trainer, method, jit)
    # The whole step alone first, so the process's peak memory is the step's (plus the runtime and compiler).
    median, mean, first = _medians({"update": stages["update"]}, data, warmup, steps)["update"]
    result = dict(network=network, jit=jit, method=method, meta_grad_mode=mode, meta_every=meta_every,
                  meta_stop_guess_gradient=stop_guess, without_meta=without_meta,
                  batch=batch, warmup=warmup, steps=steps, step_ms=round(median, 2), step_mean_ms=round(mean, 2),
                  first_call_s=round(first / 1000.0, 1), peak_rss_mb=round(_peak_rss_mb()),
                  rss_before_step_mb=round(baseline))
    if trainer.meta_cache is not None:  # written on solved steps only: shows whether any ran
        result["meta_solved_while_timed"] = bool((trainer.meta_cache.relative_weight.numpy() >= 0).any())
    try:
        result["tf_peak_memory_mb"] = round(tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20)
    except (ValueError, tf.errors.OpError):
        result["tf_peak_memory_mb"] = None  # not tracked for CPU devices in this TF build
    if breakdown:
        cumulative = {name: m[0] for name, m in _medians(stages, data, warmup, steps).items()}
        result["cumulative_ms"] = {k: round(v, 2) for k, v in cumulative.items()}
        previous, parts = 0.0, {}
        for name in STAGES:
            if name in cumulative:
                parts[name] = round(cumulative[name] - previous, 2)
                previous = cumulative[name]
        result["breakdown_ms"] = parts
    return result


# ------------------------------------------------------------------ driver
def run_child(config, args):
    """Runs `measure_config(**config)` in a new process and returns its dict."""
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", json.dumps(config)]
    done = subprocess.run(command, cwd=common.REPO, env=common.child_env(), capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"step_time child {config} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _typical_ms(row):
    """The median step; with meta_every = k > 1 the mean over whole k-step cycles (solve and reuse steps differ)."""
    return row["step_ms"] if row["meta_every"] == 1 else row["step_mean_ms"]


def _config_name(row):
    if row.get("without_meta"):
        return "ieg/without_meta"
    return row["method"] if row["meta_grad_mode"] is None else f"ieg/{row['meta_grad_mode']}/every{row['meta_every']}"


def summarize(rows):
    """One entry per (network, jit): supervised_ms, ieg_ms (exact meta step), ratio, breakdowns, modes."""
    summary = []
    for network, jit in dict.fromkeys((r["network"], r["jit"]) for r in rows):
        group = [r for r in rows if (r["network"], r["jit"]) == (network, jit)]
        sup = next((r for r in group if r["method"] == "supervised"), None)
        iegs = [r for r in group if r["method"] == "ieg" and not r.get("without_meta")]
        floor = next((r for r in group if r.get("without_meta")), None)
        ieg = next((r for r in iegs if r["meta_grad_mode"] in (None, "exact") and r["meta_every"] == 1), None)
        entry = dict(network=network, jit=jit, batch=group[0]["batch"],
                     supervised_ms=sup and sup["step_ms"], ieg_ms=ieg and ieg["step_ms"])
        entry["ratio"] = round(ieg["step_ms"] / sup["step_ms"], 2) if sup and ieg else None
        if floor:  # the objective without its meta step: the floor of every meta-step variant
            entry["ieg_without_meta_ms"] = floor["step_ms"]
            entry["ratio_without_meta"] = round(floor["step_ms"] / sup["step_ms"], 2) if sup else None
        entry["ieg_breakdown_ms"] = ieg and ieg.get("breakdown_ms")
        entry["supervised_breakdown_ms"] = sup and sup.get("breakdown_ms")
        entry["peak_rss_mb"] = {_config_name(r): r["peak_rss_mb"] for r in group}
        entry["modes"] = {f"{r['meta_grad_mode']}/every{r['meta_every']}": dict(
            ieg_ms=_typical_ms(r), ratio=round(_typical_ms(r) / sup["step_ms"], 2) if sup else None,
            peak_rss_mb=r["peak_rss_mb"], breakdown_ms=r.get("breakdown_ms"))
            for r in iegs if r["meta_grad_mode"] is not None}
        summary.append(entry)
    return summary


def table(rows):
    header = ["network", "XLA", "method", "meta mode", "step ms"] + [f"{s} ms" for s in STAGES] + [
        "peak RSS MiB"]
    cells = []
    for r in rows:
        parts = r.get("breakdown_ms") or {}
        mode = ("none (skipped)" if r.get("without_meta") else "-" if r["meta_grad_mode"] is None else
                f"{r['meta_grad_mode']} (every {r['meta_every']})")
        cells.append([r["network"], "on" if r["jit"] else "off", r["method"], mode, common.fmt(_typical_ms(r))]
                     + [common.fmt(parts.get(s)) for s in STAGES] + [common.fmt(r["peak_rss_mb"], 0)])
    return common.markdown_table(header, cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=["small_cnn", "wrn28-2"])
    parser.add_argument("--jit", nargs="+", choices=("off", "on"), default=["off", "on"])
    parser.add_argument("--methods", nargs="+", choices=("supervised", "l2r", "ieg"), default=["supervised", "ieg"])
    parser.add_argument("--meta_grad_mode", nargs="+", default=None,
                        help="ieg meta modes to time (default: every mode TrainerConfig accepts)")
    parser.add_argument("--meta_every", type=int, nargs="+", default=[1], help="ieg meta_every values to time")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (tracing, XLA compile)")
    parser.add_argument("--steps", type=int, default=5, help="timed calls per function")
    parser.add_argument("--no_breakdown", action="store_true", help="time the whole step only")
    parser.add_argument("--meta_stop_guess_gradient", action="store_true",
                        help="ieg with the guess stop-gradiented in the look-ahead (no strong-view second order)")
    parser.add_argument("--without_meta", action="store_true",
                        help="also time ieg with its meta step skipped (XLA off only): the objective's own cost")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_config(**json.loads(args.child))))
        return
    for name in ("batch", "warmup", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    modes = available_modes()
    if args.meta_grad_mode is not None:
        unknown = sorted(set(args.meta_grad_mode) - set(modes))
        if unknown:
            parser.error(f"--meta_grad_mode {unknown} not available in this checkout (available: {list(modes)})")
        modes = tuple(args.meta_grad_mode)
    if not modes and args.meta_every != [1]:
        parser.error("--meta_every needs a TrainerConfig with meta_every (issue 7); this checkout has none")
    configs = []
    for network in args.networks:
        for jit in (j == "on" for j in args.jit):
            base = dict(network=network, jit=jit, batch=args.batch, warmup=args.warmup, steps=args.steps)
            for method in args.methods:
                variants = [(m, k) for m in modes for k in args.meta_every] if method == "ieg" and modes else [
                    (None, 1)]
                configs += [dict(base, method=method, mode=mode, meta_every=every,
                                 breakdown=not args.no_breakdown and every == 1,
                                 stop_guess=args.meta_stop_guess_gradient and method == "ieg")
                            for mode, every in variants]
                if method == "ieg" and args.without_meta and not jit:
                    configs.append(dict(base, method="ieg", mode=None, meta_every=1, breakdown=False,
                                        without_meta=True))
    rows = []
    for config in configs:
        print(f"[step_time] {config}", file=sys.stderr, flush=True)
        rows.append(run_child(config, args))
    report = dict(summary=summarize(rows), rows=rows)
    print(table(rows), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.out:
        pathlib.Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
