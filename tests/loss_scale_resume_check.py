"""Subprocess body of test_resume's mixed_float16 test: `python -m ieg_tf.main` with --mixed_precision=mixed_float16
and the LossScaleOptimizer started at a larger loss scale than Keras' 2**15, so that the first steps'
float16 gradients overflow and are skipped (each halving the scale) as they do now and then in a long run.

Usage: loss_scale_resume_check.py CRASH_AFTER_EPOCH SCALE_EXPONENT MAIN_FLAGS...: the initial scale is
2**SCALE_EXPONENT; CRASH_AFTER_EPOCH >= 0 ends the process with status 3 (os._exit, no clean-up, as a kill) right
after the checkpoint of that `fit` epoch is written. A run that ends prints RESULT with its step and skipped step
counts from results.json.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from absl import app  # noqa: E402

from ieg_tf import checkpoints, main, optim, train  # noqa: E402

CRASH_AFTER_EPOCH, SCALE_EXPONENT = int(sys.argv[1]), int(sys.argv[2])


def momentum_with_large_loss_scale(*args, **kwargs):
    return keras.optimizers.LossScaleOptimizer(optim.TF1Momentum(*args, **kwargs), initial_scale=2.0 ** SCALE_EXPONENT)


class _Optim:
    """ieg_tf.optim as `train` sees it, with the optimizer wrapped."""
    TF1Momentum = staticmethod(momentum_with_large_loss_scale)

    def __getattr__(self, name):
        return getattr(optim, name)


train.optim = _Optim()
save_on_epoch_end = checkpoints.CheckpointCallback.on_epoch_end


def on_epoch_end(self, epoch, logs=None):
    save_on_epoch_end(self, epoch, logs)
    if epoch == CRASH_AFTER_EPOCH:
        os._exit(3)


checkpoints.CheckpointCallback.on_epoch_end = on_epoch_end


def run(argv):
    main.main(argv)
    with open(os.path.join(main.FLAGS.model_dir, "results.json")) as f:
        results = json.load(f)
    print("RESULT " + json.dumps({k: results[k] for k in ("steps", "skipped_steps")}), flush=True)


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *sys.argv[3:]]
    app.run(run)
