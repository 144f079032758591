"""Throughput of ieg_tf.augment in a tf.data pipeline (map on batches, then prefetch), as training runs it.

    python bench/augment.py --kind cifar --batch 100 --seconds 5 --policy autoaug

prints JSON with images per second for the weak view alone and for weak + strong (what an IEG step consumes).
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

from ieg_tf import augment  # noqa: E402

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="cifar", choices=sorted(SHAPES))
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--policy", default="autoaug", choices=augment.POLICIES)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.kind, args.batch, args.seconds, args.policy)))


if __name__ == "__main__":
    main()
