"""One step on one device equals one step on MirroredStrategy over 2 logical CPUs (each in a subprocess:
only one strategy may exist per process)."""

import os

import pytest

from subprocess_result import run_result

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("method", ["supervised", "l2r", "ieg"])
def test_mirrored_two_replicas_equal_the_same_steps_by_hand(method):
    out = run_result([os.path.join(HERE, "mirrored_check.py"), method])
    assert out["moved"] > 1e-2 and out["bn_moved"] > 1e-3  # the steps really changed the weights
    for key in ("trainable", "bn_statistics", "ema", "accumulators", "logs", "eval"):
        assert out[key] < 1e-5, (key, out)
    if method != "supervised":
        assert out["visits"] == [32.0, 32.0]
        assert out["stats"] < 1e-5
