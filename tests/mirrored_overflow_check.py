"""Subprocess body of test_meta_loss_scale's replica test: mixed_float16 on MirroredStrategy(2 logical CPUs),
meta_every=2, and a global batch whose second half (replica 1's) holds images 1000 times brighter: its float16
forward stays finite, its gradients are ~1000 times replica 0's, so at a loss scale of 4096 only replica 1's
meta step overflows. Prints JSON: whether either replica recorded the step (meta cache, visits) and
whether the step was applied.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tinydata  # noqa: E402
from ieg_tf import model  # noqa: E402
from ieg_tf.config import TrainerConfig  # noqa: E402
from ieg_tf.model import IEGTrainer  # noqa: E402
from ieg_tf.optim import TF1Momentum  # noqa: E402

METHOD = sys.argv[1]
GLOBAL, N = 16, 64
keras.mixed_precision.set_global_policy("mixed_float16")
x, noisy, true, centers = tinydata.blobs(per_class=16)
batch = {k: v.numpy() for k, v in next(iter(tinydata.train_dataset(
    x, noisy, true, *tinydata.probe(centers, per_class=4), batch_size=GLOBAL))).items()}
for key in ("weak", "strong"):
    batch[key][GLOBAL // 2:] *= 1000.0  # replica 1's half
model.IMAGE_LIMIT = float("inf")  # these inputs are not 0..255 pixels: the unscaled-image check is off
batch["probe_image"] = np.tile(batch["probe_image"][:4], (GLOBAL // 4, 1, 1, 1))  # every replica: the 4 probes

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    inputs = keras.Input(tinydata.SHAPE)
    hidden = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    network = keras.Model(inputs, keras.layers.Dense(4, dtype="float32")(hidden))  # no BatchNorm to absorb the 1000
    config = TrainerConfig(method=METHOD, meta_every=1 if METHOD == "supervised" else 2)
    trainer = IEGTrainer(network, 4, config, num_train_examples=N)
    trainer.compile(optimizer=keras.optimizers.LossScaleOptimizer(TF1Momentum(0.1), initial_scale=4096.0),
                    jit_compile=False)
before = [v.numpy() for v in trainer.network.trainable_variables]
trainer.fit(tf.data.Dataset.from_tensors(batch), steps_per_epoch=1, epochs=1, verbose=0)
cache = trainer.meta_cache
print("RESULT " + json.dumps({
    "iterations": int(trainer.optimizer.iterations.numpy()),
    "scale": float(trainer.optimizer.dynamic_scale.numpy()),
    "moved": max(float(np.abs(v.numpy() - b).max()) for v, b in zip(trainer.network.trainable_variables, before)),
    "visits": None if trainer.example_stats is None else float(trainer.example_stats.visits.numpy().sum()),
    "cache_written": None if cache is None else [int(np.sum(t.numpy() >= 0)) for t in
                                                 cache.relative_weight.value.values],
}))
