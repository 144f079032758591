"""Subprocess body of test_distribute: 2 steps under MirroredStrategy(2 logical CPUs) vs the same by hand.

The reference runs on one device and reproduces what two replicas do: each half of the global batch is a
replica's batch (its own batch statistics, omega* normalisation and MixUp), gradients are summed, and the
BatchNorm moving statistics take the mean of the two replicas' updates. Prints JSON with the max differences.
"""

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
from ieg_tf.config import TrainerConfig  # noqa: E402
from ieg_tf.model import IEGTrainer  # noqa: E402

METHOD = sys.argv[1]
STEPS, GLOBAL, N = 2, 16, 64
EVAL = 15  # one evaluation batch, split 8 / 7 over the replicas


def make():
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=METHOD), num_train_examples=N)
    trainer.compile()
    return trainer


def batches():
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    ds = tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers, per_class=4), batch_size=GLOBAL)
    return [{k: v.numpy() for k, v in b.items()} for b in ds.take(STEPS)]


def by_hand(data):
    ref = make()
    net = ref.network
    for batch in data:
        total, states = None, []
        for r in range(2):
            half = {k: tf.constant(v[r * GLOBAL // 2:(r + 1) * GLOBAL // 2]) for k, v in batch.items()}
            step = ref.compute_gradients(half, ref.step_seed(replica_id=r))
            total = step.grads if total is None else [a + b for a, b in zip(total, step.grads)]
            states.append(step.state)
            if step.per_example is not None:
                ref.example_stats.update(half["id"], *step.per_example)
            for name, value in step.logs.items():  # the logs pooled over both halves
                ref.trackers[name].update_state(value[0], sample_weight=value[1])
        ref.commit_state([(a + b) / 2 for a, b in zip(*states)])
        # On one device the trainer divides by num_replicas_in_sync = 1; two replicas each divide by 2.
        ref.optimizer.apply([g / 2 for g in total], net.trainable_variables)
        ref.update_ema()
    return ref


def mirrored(data):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        trainer = make()
    stacked = {k: np.concatenate([b[k] for b in data]) for k in data[0]}
    ds = tf.data.Dataset.from_tensor_slices(stacked).batch(GLOBAL, drop_remainder=True)
    history = trainer.fit(ds, steps_per_epoch=STEPS, epochs=1, verbose=0)
    return trainer, {name: values[-1] for name, values in history.history.items()}


def evaluation(ref, mir):
    """evaluate() under the strategy on EVAL examples (one batch split unevenly over the 2 replicas) against the
    pooled loss and accuracy of the same EMA logits by hand."""
    x, _, true, _ = tinydata.blobs(per_class=16)
    x, y = x[:EVAL], true[:EVAL].astype(np.int32)
    logits = ref.ema_logits(tf.constant(x))
    accuracy = float(np.mean(np.argmax(logits.numpy(), -1) == y))
    loss = float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits)))
    got = mir.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL), return_dict=True, verbose=0)
    return max(abs(got["accuracy"] - accuracy), abs(got["loss"] - loss))


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


data = batches()
ref, (mir, logs) = by_hand(data), mirrored(data)
out = {
    # fit's logs and evaluate's results are the values over both replicas, not a mean of per-replica means
    "logs": max(abs(logs[name] - float(tracker.result())) for name, tracker in ref.trackers.items()),
    "eval": evaluation(ref, mir),
    "trainable": max_diff(ref.network.trainable_variables, mir.network.trainable_variables),
    "bn_statistics": max_diff(ref.network.non_trainable_variables, mir.network.non_trainable_variables),
    "ema": max_diff([v.numpy() for v in ref.ema_weights], [v.numpy() for v in mir.ema_weights]),
    "accumulators": max_diff([ref.optimizer.accumulator(v).numpy() for v in ref.network.trainable_variables],
                             [mir.optimizer.accumulator(v).numpy() for v in mir.network.trainable_variables]),
    "moved": max_diff(ref.network.trainable_variables, make().network.trainable_variables),
    "bn_moved": max_diff(ref.network.non_trainable_variables, make().network.non_trainable_variables),
}
if ref.example_stats is not None and METHOD != "supervised":
    a, b = ref.example_stats.result(), mir.example_stats.result()
    out["visits"] = [float(a["visits"].sum()), float(b["visits"].sum())]
    out["stats"] = max_diff([a["omega_mean"], a["pseudo_fraction"], a["guess_sum"]],
                            [b["omega_mean"], b["pseudo_fraction"], b["guess_sum"]])
print("RESULT " + json.dumps(out))
