"""Throughput of ieg_tf.augment in a tf.data pipeline against what the ieg train step consumes.

    python bench/augment.py --kind cifar --batch 100 --seconds 5 --policy autoaug     # against a WRN-28-2 step
    python bench/augment.py --kind small --network none                              # throughput only
    python bench/augment.py --step_time_json /tmp/ieg_bench/step_time.json           # step time from step_time.py

prints JSON with images per second for the weak view alone and for weak + strong (what an IEG step needs per
training image), then times the ieg train step of `--network` on the same batch size in a child process
(bench/step_time.py; XLA per `--jit`) and reports the images per second it consumes (batch / step time) and
`headroom` = augmentation images per second / step images per second. With `--step_time_json` the ieg step time
is read from a bench/step_time.py report (same network, XLA setting and batch) instead of measured again.
Headroom above 1 means the pipeline keeps up; both share the CPU here, so on an accelerator, where the step
leaves the CPU to tf.data, it is larger.
"""

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import step_time  # noqa: E402
from ieg_tf import augment  # noqa: E402

NETWORK_FOR_KIND = {"cifar": "wrn28-2", "small": "small_cnn", "imagenet": "none"}

SHAPES = {"cifar": (32, 32, 3), "small": (8, 8, 1), "imagenet": (224, 224, 3)}


def _rate(dataset, batch, seconds):
    """Images per second of `dataset` after two warm-up batches (tracing, buffer fill)."""
    it = iter(dataset)
    for _ in range(2):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(it)
        count += batch
    return count / (time.perf_counter() - start)


def measure(kind="cifar", batch=100, seconds=5.0, policy="autoaug"):
    """Measures augmentation throughput on random uint8 images of the kind's size.

    Args:
      kind: "cifar" (32x32x3), "small" (8x8x1) or "imagenet" (224x224x3).
      batch: images per batch.
      seconds: measuring time per pipeline.
      policy: strong policy, "autoaug", "randaug" or "none".

    Returns:
      dict with images_per_second (weak + strong views, as an IEG step needs them), weak_images_per_second,
      and the settings.
    """
    if kind not in SHAPES:
        raise ValueError(f"kind must be one of {tuple(SHAPES)}, got {kind!r}")
    augmenter = augment.augmenter_for(kind, policy)
    images = np.random.default_rng(0).integers(0, 256, (batch,) + SHAPES[kind], dtype=np.uint8)
    source = tf.data.Dataset.from_tensors(images).repeat().enumerate()

    def weak(j, x):
        return augmenter.weak(x, tf.stack([j, 0]))

    def both(j, x):
        w = weak(j, x)
        return w, augmenter.strong(w, tf.stack([j, 1]))

    def pipeline(fn):
        return source.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False).prefetch(tf.data.AUTOTUNE)

    return dict(kind=kind, policy=policy, batch=batch, images_per_second=round(_rate(pipeline(both), batch, seconds)),
                weak_images_per_second=round(_rate(pipeline(weak), batch, seconds)))


def reported_ieg_ms(report, network, jit, batch):
    """The ieg (exact, every step) step time of `network` / `jit` / `batch` in a bench/step_time.py report."""
    for entry in report["summary"]:
        if (entry["network"], entry["jit"], entry["batch"]) == (network, jit, batch) and entry["ieg_ms"]:
            return entry["ieg_ms"]
    have = [(e["network"], e["jit"], e["batch"]) for e in report["summary"] if e["ieg_ms"]]
    raise ValueError(f"the step_time report has no ieg time for network={network} jit={jit} batch={batch} "
                     f"(it has {have}); run bench/step_time.py with those settings or drop --step_time_json")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="cifar", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--policy", default="autoaug", choices=augment.POLICIES)
    parser.add_argument("--network", default=None, choices=sorted(step_time.NETWORKS) + ["none"],
                        help="ieg step to compare with (default: wrn28-2 for cifar, small_cnn for small, none)")
    parser.add_argument("--jit", choices=("off", "on"), default="on", help="XLA for the compared step")
    parser.add_argument("--step_time_json", default=None, help="take the ieg step time from this step_time.py report")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.seconds <= 0:
        parser.error(f"--batch must be >= 1 and --seconds > 0, got {args.batch} and {args.seconds}")
    result = measure(args.kind, args.batch, args.seconds, args.policy)
    network = args.network or NETWORK_FOR_KIND[args.kind]
    if network != "none":
        if step_time.NETWORKS[network] != SHAPES[args.kind]:
            parser.error(f"--network {network} takes {step_time.NETWORKS[network]} images, --kind {args.kind} "
                         f"makes {SHAPES[args.kind]}")
        if args.step_time_json:
            step_ms = reported_ieg_ms(json.loads(pathlib.Path(args.step_time_json).read_text()), network,
                                      args.jit == "on", args.batch)
        else:
            step_ms = step_time.run_child(dict(network=network, jit=args.jit == "on", method="ieg", mode=None,
                                               meta_every=1, batch=args.batch, warmup=3, steps=5, breakdown=False),
                                          args)["step_ms"]
        consumed = args.batch / (step_ms / 1000.0)
        result.update(network=network, jit=args.jit, ieg_step_ms=step_ms,
                      step_images_per_second=round(consumed, 1),
                      headroom=round(result["images_per_second"] / consumed, 1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
