"""Subprocess body of test_distribute's refusals: what IEGTrainer refuses under MirroredStrategy(2 logical CPUs),
and the messages. Prints RESULT {case: the ValueError's message, or None where nothing was refused}."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tinydata  # noqa: E402
from ieg_tf import datasets, pipeline  # noqa: E402
from ieg_tf.config import TrainerConfig  # noqa: E402
from ieg_tf.model import IEGTrainer  # noqa: E402


def refusal(action):
    try:
        action()
    except ValueError as error:
        return str(error)
    return None


strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (64, *tinydata.SHAPE), dtype=np.uint8), np.arange(64) % 4
data = datasets.from_arrays(images, labels, images[:8], labels[:8], probe_per_class=2)
with strategy.scope():
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="l2r"), num_train_examples=len(data.train_labels))
    jit = refusal(lambda: trainer.compile(jit_compile=True))
    trainer.compile(jit_compile=False)
distributed = pipeline.distributed_train_dataset(strategy, data, 16, strong=False)
odd = pipeline.train_dataset(data, 15, strong=False)
even = pipeline.train_dataset(data, 16, strong=False)
results = {
    "jit": jit,
    "distributed": refusal(lambda: trainer.fit(distributed, steps_per_epoch=1, epochs=1, verbose=0)),
    "odd": refusal(lambda: trainer.fit(odd, steps_per_epoch=1, epochs=1, verbose=0)),
    "even": refusal(lambda: trainer.fit(even, steps_per_epoch=1, epochs=1, verbose=0)),
}
print("RESULT " + json.dumps(results))
