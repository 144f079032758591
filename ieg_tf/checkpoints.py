"""Checkpoints that make resume exact, and a clear error when a checkpoint does not fit the run.

Everything a step depends on is a variable: network weights and BN statistics, EMA shadows, the optimizer's
step and momentum accumulators, and the per-example statistics. The step's randomness is stateless, seeded by
(seed, step), and the input pipeline restarts at the batch after the last one consumed, so a resumed run continues
exactly. Batches consumed and the optimizer's step differ under mixed_float16: a step whose gradients overflow is
skipped (the LossScaleOptimizer halves its scale and does not count it), but its batch is used up, so the count
of batches is checkpointed beside the step (`RunCheckpoint.batches`; a checkpoint written before it existed is
read as having skipped none).
`tf.train.CheckpointManager` writes the data files first and then replaces the small `checkpoint` index file
atomically, so a kill during a save leaves the previous checkpoint as the latest one.
"""

import json
import os

import keras
import tensorflow as tf

HISTORY_FILE = "history.json"
BATCHES = "batches_consumed"  # the checkpoint's name of RunCheckpoint.batches


def trainer_variables(trainer):
    """{stable name: tf variable} of all state: the trainer's (network, EMA, statistics) and the optimizer's.

    Names are positions plus the variable's short name: Keras' layer paths carry process-dependent counters
    ("dense_3"), while the order of a model's variables depends only on how the model is built.
    """
    metric_ids = {id(v) for v in trainer.metrics_variables}  # per-epoch running means, not training state
    named = {}
    for prefix, variables in (("trainer", trainer.variables), ("optimizer", trainer.optimizer.variables)):
        state = [v for v in variables if id(v) not in metric_ids]
        for index, variable in enumerate(state):
            named[f"{prefix}_{index:04d}_{variable.name}"] = variable.value
    return named


class RunCheckpoint:
    """A CheckpointManager over `trainer_variables` and the count of training batches consumed (`batches`, kept
    by `CheckpointCallback`), plus the per-evaluation history (a small JSON beside it)."""

    def __init__(self, trainer, directory, max_to_keep=4, restore_directory=None):
        """`restore_directory` (default: `directory`) is where `restore` looks: a multi-worker run's non-chief
        workers save to scratch directories but resume from the chief's checkpoints."""
        self.trainer = trainer
        self.directory = directory
        self.restore_directory = restore_directory or directory
        self.variables = trainer_variables(trainer)
        self.batches = tf.Variable(0, dtype=tf.int64, trainable=False, name=BATCHES)
        self.checkpoint = tf.train.Checkpoint(**self.variables, **{BATCHES: self.batches})
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self):
        """Restores the latest checkpoint of `restore_directory`, if any, and `batches`. Returns (step, history
        list)."""
        path = tf.train.latest_checkpoint(self.restore_directory)
        if path is None:
            self.batches.assign(0)
            return 0, []
        if BATCHES in self._check_compatible(path):
            self.checkpoint.restore(path).assert_existing_objects_matched()
        else:  # written before the count was kept: as if no step had been skipped
            tf.train.Checkpoint(**self.variables).restore(path).assert_existing_objects_matched()
            self.batches.assign(self.trainer.optimizer.iterations)
        step, batches = int(self.trainer.optimizer.iterations.numpy()), int(self.batches.numpy())
        # Entries past the checkpoint are those of a save that a kill interrupted (`save` writes them first).
        history = [h for h in _read_history(self.restore_directory) if h.get("batches", h["step"]) <= batches]
        return step, history

    def save(self, history):
        """Writes `history`, then the state as ckpt-<batches consumed>: the step, unless mixed_float16 skipped
        some (numbered by the step, a skipped epoch would overwrite the checkpoint it resumes from)."""
        tf.io.gfile.makedirs(self.directory)
        write_atomically(os.path.join(self.directory, HISTORY_FILE), json.dumps(history))
        self.manager.save(checkpoint_number=int(self.batches.numpy()))

    def _check_compatible(self, path):
        """Raises ValueError if the checkpoint at `path` holds other state than this run's; returns its names."""
        saved = {name.split("/.ATTRIBUTES")[0]: shape for name, shape in tf.train.list_variables(path)
                 if name.endswith(".ATTRIBUTES/VARIABLE_VALUE")}
        extra = sorted(set(saved) - set(self.variables) - {"save_counter", BATCHES})
        if extra:
            raise ValueError(f"the checkpoint {path} holds {len(extra)} variable(s) this run does not have (e.g. "
                             f"{extra[0]}): it was written by a different network or method (or meta_every > 1 "
                             "against 1); use a new --model_dir (or the flags of the run that wrote it)")
        for name, variable in self.variables.items():
            if name not in saved:
                raise ValueError(f"the checkpoint {path} has no variable {name}: it was written by a different network "
                                 "or method; use a new --model_dir (or the flags of the run that wrote it)")
            if list(saved[name]) != list(variable.shape):
                raise ValueError(f"the checkpoint {path} was written by a different network or number of classes: "
                                 f"{name} has shape {saved[name]} there, {list(variable.shape)} here; use a new "
                                 "--model_dir (or the flags of the run that wrote it)")
        return saved


class CheckpointCallback(keras.callbacks.Callback):
    """Counts the training batches consumed and saves a checkpoint and the evaluation history at the end of every
    `fit` epoch (eval_freq batches: eval_freq steps, fewer where mixed_float16 skipped some)."""

    def __init__(self, run_checkpoint, history):
        super().__init__()
        self.run_checkpoint, self.history = run_checkpoint, history

    def on_train_batch_end(self, batch, logs=None):
        self.run_checkpoint.batches.assign_add(1)  # fit runs one step per batch (steps_per_execution 1)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        entry = {"step": step, "batches": int(self.run_checkpoint.batches.numpy()), "epoch": epoch + 1}
        entry.update({k: float(v) for k, v in (logs or {}).items()})
        self.history.append(entry)
        self.run_checkpoint.save(self.history)


def _read_history(directory):
    path = os.path.join(directory, HISTORY_FILE)
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def write_atomically(path, text):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
