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


def test_what_several_cpu_replicas_cannot_do_is_refused_with_the_fix():
    """XLA on several CPU replicas failed at the first step with a Graph execution error about a variable on
    another device; fit on pipeline.distributed_train_dataset crashed inside the batch check (PerReplicaSpec has no
    shape); the uneven-batch message pointed at a per-replica batch that fit users cannot give."""
    out = run_result([os.path.join(HERE, "mirrored_refusals_check.py")])
    assert out["jit"].startswith("jit_compile=True (--jit_compile=true) cannot run 2 replicas on CPU devices")
    assert "jit_compile=False (--jit_compile=false, the default with several replicas)" in out["jit"]
    assert out["distributed"].startswith("IEGTrainer.fit takes the global-batch tf.data.Dataset of "
                                         "ieg_tf.pipeline.train_dataset(data, batch_size=GLOBAL)")
    assert out["odd"] == ("the global batch of 15 examples does not split evenly over 2 replicas (each replica's "
                          "mean would weigh its examples differently); use a global batch size divisible by 2, "
                          "e.g. 14 (the batch sizes given to ieg_tf.pipeline.train_dataset are global ones)")
    assert out["even"] is None  # the same trainer trains on the global-batch dataset
