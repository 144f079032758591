"""One step on one device equals one step on MirroredStrategy over 2 logical CPUs (each in a subprocess:
only one strategy may exist per process)."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("method", ["supervised", "l2r", "ieg"])
def test_mirrored_two_replicas_equal_the_same_steps_by_hand(method):
    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE), "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, os.path.join(HERE, "mirrored_check.py"), method], env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["moved"] > 1e-2 and out["bn_moved"] > 1e-3  # the steps really changed the weights
    for key in ("trainable", "bn_statistics", "ema", "accumulators", "logs", "eval"):
        assert out[key] < 1e-5, (key, out)
    if method != "supervised":
        assert out["visits"] == [32.0, 32.0]
        assert out["stats"] < 1e-5
