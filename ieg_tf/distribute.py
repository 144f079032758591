"""tf.distribute strategies by name, and the custom training loop multi-worker runs need.

Keras 3.15's `fit` fails under MultiWorkerMirroredStrategy ("PerReplica ... to a Tensor"), so `custom_fit` drives
`trainer.train_step` / `test_step` through `strategy.run` itself. It calls the same Keras callbacks as `fit`
(checkpointing, TensorBoard, NaN guard) and returns a keras History, so a run does not care which loop trained it.
"""

import json
import os

import keras
import tensorflow as tf


def make_strategy(name, tpu=None):
    """Returns the tf.distribute strategy for `--strategy`.

    Args:
      name: "default" (one device), "mirrored" (all local GPUs, or CPU), "multi_worker" (cluster from TF_CONFIG),
        "tpu" (TPUClusterResolver on `tpu`).
      tpu: TPU name or grpc address; None lets the resolver find a local TPU.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        # On a CPU-only machine use every logical CPU (see --logical_cpus); by default TF mirrors over one CPU.
        return tf.distribute.MirroredStrategy(None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        if not config.get("cluster") or not config.get("task"):
            raise ValueError("--strategy=multi_worker needs TF_CONFIG with 'cluster' and 'task' set on every worker "
                             '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": '
                             '"worker", "index": 0}})')
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy '{name}'; choose one of: default, mirrored, multi_worker, tpu")


def is_chief(strategy):
    """True on the worker that writes files (results, report, export); every worker still saves checkpoints."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    return resolver.task_type in (None, "chief") or (resolver.task_type == "worker" and resolver.task_id == 0)


def custom_fit(trainer, strategy, train_data, *, epochs, steps_per_epoch, initial_epoch=0, validation_data=None,
               callbacks=(), verbose=1):
    """`trainer.fit` written as a `strategy.run` loop (for MultiWorkerMirroredStrategy).

    Args:
      trainer: a compiled IEGTrainer built under `strategy.scope()`.
      strategy: the strategy.
      train_data: a tf.distribute.DistributedDataset of training dict batches (see pipeline.distributed_train_dataset).
      epochs, steps_per_epoch, initial_epoch: as in `fit`.
      validation_data: a DistributedDataset of (images, labels), evaluated with the EMA weights each epoch.
      callbacks: Keras callbacks.
      verbose: 1 shows a progress bar.

    Returns:
      keras.callbacks.History.
    """
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history], add_history=False, add_progbar=verbose != 0, model=trainer, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch)
    iterator = iter(train_data)

    @tf.function
    def train_step(it):
        strategy.run(trainer.train_step, args=(next(it),))
        return {name: tracker.result() for name, tracker in trainer.trackers.items()}

    @tf.function
    def test_step(batch):
        strategy.run(trainer.test_step, args=(batch,))
        return {"loss": trainer.eval_loss.result(), "accuracy": trainer.eval_accuracy.result()}

    trainer.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for metric in trainer.metrics:
            metric.reset_state()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_step(iterator).items()}
            callback_list.on_train_batch_end(step, logs)
            if trainer.stop_training:
                break
        if validation_data is not None:
            trainer.eval_loss.reset_state()
            trainer.eval_accuracy.reset_state()
            result = {}
            for batch in validation_data:
                result = test_step(batch)
            logs.update({f"val_{k}": float(v) for k, v in result.items()})
        callback_list.on_epoch_end(epoch, logs)
        if trainer.stop_training:
            break
    callback_list.on_train_end(logs)
    return history
