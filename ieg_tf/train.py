"""A training run end to end: data, strategy, network, trainer, `fit` with resume, then the run's outputs.

The run directory receives the split (noisy labels, probe ids), checkpoints, TensorBoard logs, results.json,
label_issues.csv, test_confusion.csv (the EMA model on the test set) and plots. Starting the same command again
resumes from the last checkpoint.
"""

import dataclasses
import json
import os
import sys
import time
import uuid

import keras
import numpy as np
import tensorflow as tf

from ieg_tf import checkpoints, datasets, distribute, export, model, networks, optim, pipeline, plots, report
from ieg_tf.config import RunConfig, TrainerConfig
from ieg_tf.model import IEGTrainer

# Per data set: the default network and budget. CIFAR follows the reference (WRN-28-10, 200k steps at B = 100);
# the embedded digits run is sized to finish in a few minutes on a 2-core CPU.
DATASET_DEFAULTS = {
    # consistency_factor 5 on digits: the KL weight the paper tuned on CIFAR (20) costs the 8x8 digits 2.3 points
    # even on clean labels (BUILD_NOTES "KL weight on the digits", BENCHMARKS.md).
    # 1246 steps: the end of the 10th SGDR cycle (one-epoch first cycle of 11 steps, t_mul 1.5, restarts at
    # 823 and 1246), so the run ends at the bottom of the learning-rate cosine, not mid-cycle.
    "digits": {"network": "small_cnn", "max_iteration": 1246, "consistency_factor": 5.0},
    "cifar10": {"network": "wrn28-10", "max_iteration": 200000},
    "cifar100": {"network": "wrn28-10", "max_iteration": 200000},
}
GENERIC_DEFAULTS = {"epochs": 200}  # other data: the network follows the image size (`default_network`)
# RunConfig fields a resumed run may change: the budget, evaluation, output and device settings. Every other
# setting shapes the trained weights, so a resume with another value is refused (`check_run_config`).
RESUMABLE_CHANGES = ("model_dir", "max_iteration", "epochs", "eval_freq", "val_batch_size", "strategy", "tpu",
                     "jit_compile", "export_dir", "keep_checkpoints")
RUN_CONFIG_FILE = "run_config.json"
# run_config.json's name for max_iteration under --lr_schedule=cosine_one, whose cosine it sets: not resumable there.
COSINE_LENGTH = "max_iteration (the length of --lr_schedule=cosine_one)"
RESULT_KEYS = ("dataset", "method", "network", "noise_type", "noise_ratio", "noise_rate_realized", "probe_size",
               "train_examples", "steps", "epochs", "test_accuracy", "best_test_accuracy", "seconds",
               "label_issue_precision", "label_issue_recall")


def default_consistency_factor(dataset):
    """k of the KL consistency loss when --consistency_factor is unset: the paper's 20, except where
    DATASET_DEFAULTS sets a value for the data set."""
    return DATASET_DEFAULTS.get(dataset, {}).get("consistency_factor", TrainerConfig.consistency_factor)


NonFiniteLossError = model.NonFiniteLossError  # training stops without saving the broken weights


class _Guard(model.StopOnNonFiniteLoss):
    """Stops at max_iteration, refuses non-finite losses, and accumulates wall time across resumed sessions."""

    def __init__(self, max_iteration, model_dir, seconds_before):
        super().__init__(f"nothing after the last checkpoint in {model_dir} was saved. Lower --learning_rate or "
                         "check the input data, then run again")
        self.max_iteration = max_iteration
        self.start, self.seconds_before = time.time(), seconds_before

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if int(self.model.optimizer.iterations.numpy()) >= self.max_iteration:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = self.seconds_before + time.time() - self.start


def check_writable(model_dir, flag="--model_dir"):
    """Creates model_dir and proves it writable, or raises a ValueError naming it (and the flag that set it).

    The probe file's name is unique to the process: workers sharing one model_dir must not remove each other's.
    """
    try:
        tf.io.gfile.makedirs(model_dir)
        probe = os.path.join(model_dir, f".write_test.{os.getpid()}.{uuid.uuid4().hex}")
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("ok")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        raise ValueError(f"{flag} {model_dir} is not writable ({error.__class__.__name__}); "
                         "choose a directory you can write to") from None


def resolve(run_cfg, data, replicas=1, dataset=None):
    """Fills the data-set dependent defaults: network, total steps, evaluation period, decay steps.

    `dataset` is the kind of data loaded (DataSpec.dataset) and selects DATASET_DEFAULTS; None takes data.name
    (data built in Python). The user's own data (folder, list, arrays) get GENERIC_DEFAULTS whatever their name:
    a file named digits.npz is not the embedded digits.
    Refuses a global batch (batch_size x replicas) larger than the training set: batches would repeat examples.
    """
    global_batch = run_cfg.batch_size * replicas
    if global_batch > len(data.train_labels):
        raise ValueError(f"--batch_size={run_cfg.batch_size}" + (f" x {replicas} replicas" if replicas > 1 else "")
                         + f" is more than the {len(data.train_labels)} training examples; lower --batch_size")
    defaults = DATASET_DEFAULTS.get(data.name if dataset is None else dataset, GENERIC_DEFAULTS)
    network = run_cfg.network or defaults.get("network") or default_network(data.image_shape)
    iter_epoch = steps_per_epoch(data, run_cfg, replicas)
    if run_cfg.max_iteration is not None:
        max_iteration = run_cfg.max_iteration
    elif run_cfg.epochs is not None:
        max_iteration = run_cfg.epochs * iter_epoch
    else:
        max_iteration = defaults.get("max_iteration") or defaults["epochs"] * iter_epoch
    return dataclasses.replace(run_cfg, network=network, max_iteration=max_iteration,
                               eval_freq=min(run_cfg.eval_freq or iter_epoch, max_iteration),
                               decay_steps=run_cfg.decay_steps or iter_epoch), iter_epoch


def default_network(image_shape):
    """The network for images of `image_shape` (H, W, C) when --network is not given: the digits CNN up to 16
    pixels (a WRN-28-10 on 8x8 images is slow and gains nothing), the paper's CIFAR network (WRN-28-10) up to 64,
    and its WebVision / Food-101N network (ResNet-50) above."""
    side = min(image_shape[:2])
    return "small_cnn" if side <= 16 else "wrn28-10" if side <= 64 else "resnet50"


def steps_per_epoch(data, run_cfg, replicas=1):
    """The reference's iter_epoch, the unit of --epochs: len(train) // global batch steps (at least 1).

    A step takes batch_size examples per replica, so with R replicas an epoch is len(train) // (R x batch_size)
    steps (the IEG-era reference divides its epoch-based periods by the number of GPUs the same way).
    """
    return max(len(data.train_labels) // (run_cfg.batch_size * replicas), 1)


def run_settings(run_cfg, trainer_cfg, replicas):
    """The settings that shape the trained weights, as JSON-compatible values (what run_config.json holds)."""
    run = {k: v for k, v in dataclasses.asdict(run_cfg).items() if k not in RESUMABLE_CHANGES}
    if run_cfg.lr_schedule == "cosine_one":  # its cosine spans max_iteration: another length jumps the rate
        run[COSINE_LENGTH] = run_cfg.max_iteration
    settings = {"run": run, "trainer": dataclasses.asdict(trainer_cfg),
                "global_batch": run_cfg.batch_size * replicas}
    return json.loads(json.dumps(settings))  # tuples become lists, as they come back from the file


def has_checkpoint(model_dir):
    """Whether the run in model_dir saved a checkpoint (the chief's): one that did not has trained nothing to keep."""
    return tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is not None


def check_run_config(settings, model_dir, write, replace=False):
    """Refuses to resume a run whose saved settings (run_config.json) differ from `settings`.

    A run directory without the file (a fresh run, or one written before it existed) gets it when `write`
    (the chief), as does one whose run saved no checkpoint yet when `replace`. Only the RESUMABLE_CHANGES may
    differ on resume: a changed method, batch, learning rate or seed would continue the saved weights as another
    run, and results.json would report the new settings.
    """
    path = os.path.join(model_dir, RUN_CONFIG_FILE)
    if not tf.io.gfile.exists(path) or replace:
        if write:
            checkpoints.write_atomically(path, json.dumps(settings, indent=2))
        return
    with tf.io.gfile.GFile(path) as f:
        saved = json.load(f)
    changed = [f"{name} {saved_value!r} there, {value!r} here"
               for part in ("run", "trainer") for name, value in settings[part].items()
               if (saved_value := saved.get(part, {}).get(name)) != value
               and (name != COSINE_LENGTH or name in saved.get(part, {}))]  # not kept before session 14
    if saved.get("global_batch") != settings["global_batch"]:
        changed.append(f"global batch (batch_size x replicas) {saved.get('global_batch')} there, "
                       f"{settings['global_batch']} here")
    saved_batch = saved.get("run", {}).get("batch_size")
    replicas = settings["global_batch"] // settings["run"]["batch_size"]
    if saved_batch and saved.get("global_batch") and saved["global_batch"] // saved_batch != replicas:
        # Each replica's batch sets its BN statistics and omega* normalisation: the replica count is part of the run.
        changed.append(f"{saved['global_batch'] // saved_batch} replica(s) there, {replicas} here (--strategy may "
                       "change only to one with as many replicas)")
    if changed:
        raise ValueError(f"{model_dir} holds a run trained with other settings ({'; '.join(changed)}); run the "
                         "same command to resume it (only --" + ", --".join(RESUMABLE_CHANGES[1:]) +
                         " may change), or use a new --model_dir")


def build_trainer(run_cfg, trainer_cfg, data, network=None, replicas=1):
    """The network (by name unless given), the trainer, and its optimizer with the schedule."""
    if network is None:
        network = networks.build_network(run_cfg.network, data.num_classes, data.image_shape,
                                         weight_decay=run_cfg.weight_decay)
        spec = network.network_spec
        trainer_cfg = dataclasses.replace(trainer_cfg, weight_decay=spec.weight_decay,
                                          decay_kernels_only=spec.decay_kernels_only)
    trainer = IEGTrainer(network, data.num_classes, trainer_cfg, num_train_examples=len(data.train_labels))
    schedule = optim.make_schedule(
        run_cfg.lr_schedule, run_cfg.learning_rate, decay_steps=run_cfg.decay_steps,
        max_iteration=run_cfg.max_iteration, t_mul=run_cfg.t_mul, m_mul=run_cfg.m_mul,
        decay_rate=run_cfg.decay_rate, boundaries=run_cfg.lr_boundaries,
        warmup_steps=int(run_cfg.warmup_epochs * steps_per_epoch(data, run_cfg, replicas)))
    return trainer, schedule


def run(run_cfg: RunConfig, trainer_cfg: TrainerConfig, data_spec=None, data=None):
    """Trains (or resumes) and writes the run's outputs.

    Args:
      run_cfg: RunConfig.
      trainer_cfg: TrainerConfig (weight decay is taken from the network's spec when the network is built here).
      data_spec: DataSpec to load; or
      data: an already loaded NoisyData.

    Returns:
      The results dict also written to results.json.
    """
    fresh = not tf.io.gfile.exists(run_cfg.model_dir)
    try:
        return _run(run_cfg, trainer_cfg, data_spec, data)
    except BaseException:
        # A run that fails before writing anything (bad data, a refused flag) leaves no empty model directory.
        if fresh and tf.io.gfile.isdir(run_cfg.model_dir) and not tf.io.gfile.listdir(run_cfg.model_dir):
            tf.io.gfile.rmtree(run_cfg.model_dir)
        raise


def _run(run_cfg, trainer_cfg, data_spec, data):
    """`run`'s work; `run` removes the model directory it created when this fails before writing into it."""
    check_writable(run_cfg.model_dir)
    if run_cfg.export_dir:  # an unwritable export directory fails now, not after the training
        # Its parent, not the directory: the SavedModel is written beside it and renamed into place at the end,
        # so a server watching the parent never sees an empty or half-written version (export.export_serving).
        export_dir = export.check_export_dir(run_cfg.export_dir)
        check_writable(os.path.dirname(export_dir) or ".", f"--export_dir {export_dir}: its parent")
    if run_cfg.network:
        networks.get_spec(run_cfg.network)  # an unknown name fails before the data are read
    data = data if data is not None else datasets.load_dataset(data_spec)
    split_dir = os.path.join(run_cfg.model_dir, "split")
    resuming = tf.io.gfile.exists(os.path.join(split_dir, "split.json"))
    started = has_checkpoint(run_cfg.model_dir)
    if resuming:
        try:
            datasets.check_split(data, split_dir)
        except ValueError:
            if started:
                raise
            # A start stopped before its first checkpoint (often on purpose, to fix a flag) left only its split and
            # settings: nothing trained is lost by starting over with the new ones.
            print(f"ieg_tf: {run_cfg.model_dir} holds the split of a run stopped before its first checkpoint, drawn "
                  "with other settings; starting over with these", file=sys.stderr, flush=True)
            resuming = False
    strategy = distribute.make_strategy(run_cfg.strategy, run_cfg.tpu)
    replicas = strategy.num_replicas_in_sync
    run_cfg, iter_epoch = resolve(run_cfg, data, replicas, None if data_spec is None else data_spec.dataset)
    if run_cfg.mixed_precision:
        keras.mixed_precision.set_global_policy(run_cfg.mixed_precision)
    chief = distribute.is_chief(strategy)
    if chief and not resuming:
        _save_split_atomically(data, split_dir)
    jit = run_cfg.jit_compile if run_cfg.jit_compile is not None else replicas == 1
    keras.utils.set_random_seed(run_cfg.seed)  # the initial weights: a fresh run is a function of the seed
    with strategy.scope():
        trainer, schedule = build_trainer(run_cfg, trainer_cfg, data, replicas=replicas)
        trainer.compile(optimizer=optim.TF1Momentum(schedule, momentum=run_cfg.momentum), jit_compile=jit)
    check_run_config(run_settings(run_cfg, trainer.config, replicas), run_cfg.model_dir, write=chief,
                     replace=not started)
    save_dir, restore_dir = checkpoint_dirs(run_cfg.model_dir, chief, getattr(strategy, "cluster_resolver", None))
    saver = checkpoints.RunCheckpoint(trainer, save_dir, run_cfg.keep_checkpoints, restore_directory=restore_dir)
    start_step, history = saver.restore()
    if start_step > run_cfg.max_iteration:
        print(f"ieg_tf: the checkpoint in {run_cfg.model_dir} is at step {start_step}, past --max_iteration="
              f"{run_cfg.max_iteration}; nothing to train, the outputs describe the run at step {start_step}",
              file=sys.stderr, flush=True)
    if start_step < run_cfg.max_iteration:
        _fit(trainer, strategy, data, run_cfg, history, saver)
    results = _results(trainer, data, run_cfg, iter_epoch, history)
    # Every worker reads the per-example sums (a cross-worker reduction); only the chief writes files.
    issues = report.report_for(trainer, data, batch_size=run_cfg.val_batch_size)
    results["label_issue_precision"], results["label_issue_recall"] = issues.precision, issues.recall
    results["label_issues_flagged"] = int(np.sum(issues.label_believed_wrong))
    confusion = report.confusion_on_test_set(trainer, data, batch_size=run_cfg.val_batch_size)
    results["test_per_class_accuracy"] = None if confusion is None else report.per_class_accuracy(confusion)
    # The training seed and the seed of the probe split and noise (None when the data came in already loaded).
    results["seed"], results["data_seed"] = run_cfg.seed, None if data_spec is None else data_spec.seed
    # Steps whose float16 gradients overflowed: skipped by the LossScaleOptimizer, their batches used up.
    results["skipped_steps"] = int(saver.batches.numpy()) - results["steps"]
    if chief:
        _write_outputs(trainer, data, run_cfg, results, history, issues, confusion)
    print(summary_line(results), flush=True)
    return results


def checkpoint_dirs(model_dir, chief, cluster_resolver=None):
    """(where this process saves, where it restores from).

    Every worker must save (the save runs collective ops), but only the chief's copy is kept; a non-chief worker
    saves to its own scratch directory. Every worker restores from the chief's checkpoints: the copies can differ
    after a kill between two workers' saves, and workers resumed at different steps would train from different
    weights in lockstep.
    """
    chief_dir = os.path.join(model_dir, "checkpoints")
    if chief:
        return chief_dir, chief_dir
    return os.path.join(model_dir, f"worker_tmp_{cluster_resolver.task_id}"), chief_dir


def _save_split_atomically(data, split_dir):
    """Writes the split into a scratch directory, then renames it: a kill never leaves a half-written split."""
    scratch = split_dir + ".partial"
    if tf.io.gfile.exists(scratch):
        tf.io.gfile.rmtree(scratch)
    if tf.io.gfile.exists(split_dir):  # an earlier, interrupted rename attempt cannot leave one; a user's copy can
        tf.io.gfile.rmtree(split_dir)
    datasets.save_split(data, scratch)
    tf.io.gfile.rename(scratch, split_dir)


def input_options(trainer_cfg, run_cfg, start_step):
    """Keyword arguments of `pipeline.train_dataset` for a run that starts (or resumes) after `start_step` batches."""
    return dict(strong=trainer_cfg.method == "ieg", seed=run_cfg.seed, start_step=start_step,
                augment_policy=run_cfg.aug_type, probe_affine=run_cfg.probe_affine)


def fit_callbacks(run_cfg, chief, saver, history):
    """The step guard, the checkpoint per evaluation and, on the chief only, TensorBoard: Keras' callback
    writes from every worker, which would leave one set of curves per worker in logs/."""
    seconds_before = history[-1].get("seconds", 0.0) if history else 0.0
    callbacks = [_Guard(run_cfg.max_iteration, run_cfg.model_dir, seconds_before),
                 checkpoints.CheckpointCallback(saver, history)]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_cfg.model_dir, "logs")))
    return callbacks


# Consecutive skipped (overflowed) mixed_float16 steps after which a run is stopped: each halves the loss scale,
# and float16's range is 40 binades, so by then the scale has left it.
MAX_SKIPPED_IN_A_ROW = 200


def _progress_verbosity(chief):
    """Keras' `verbose`: a progress bar on a terminal, one line per epoch in a log file, nothing off the chief.

    Keras redraws its bar with carriage returns after every step; written to a file or a pipe, that is one
    unbroken line of every step's metrics per epoch.
    """
    if not chief:
        return 0
    return 1 if sys.stdout.isatty() else 2


def _fit(trainer, strategy, data, run_cfg, history, saver):
    """Trains from the restored state to max_iteration steps, evaluating and saving every eval_freq batches.

    The input stream starts after the batches consumed so far (`saver.batches`), which are more than the steps
    where mixed_float16 skipped overflowed steps; such skips also leave a `fit` of the remaining steps' epochs
    short of max_iteration, so `fit` is called again until it is reached.
    """
    replicas = strategy.num_replicas_in_sync
    callbacks = fit_callbacks(run_cfg, distribute.is_chief(strategy), saver, history)
    eval_ds = pipeline.eval_dataset(data, run_cfg.val_batch_size * replicas)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker:
        eval_ds = strategy.experimental_distribute_dataset(eval_ds)
    skipped_in_a_row = 0
    while (step := int(trainer.optimizer.iterations.numpy())) < run_cfg.max_iteration:
        batches = int(saver.batches.numpy())
        first_epoch = batches // run_cfg.eval_freq
        common = dict(epochs=first_epoch + -(-(run_cfg.max_iteration - step) // run_cfg.eval_freq),
                      steps_per_epoch=run_cfg.eval_freq, initial_epoch=first_epoch, callbacks=callbacks,
                      verbose=_progress_verbosity(distribute.is_chief(strategy)))
        options = input_options(trainer.config, run_cfg, batches)
        if multi_worker:
            train_ds = pipeline.distributed_train_dataset(strategy, data, run_cfg.batch_size * replicas, **options)
            distribute.custom_fit(trainer, strategy, train_ds, validation_data=eval_ds, **common)
        else:
            train_ds = pipeline.train_dataset(data, run_cfg.batch_size * replicas, **options)
            trainer.fit(train_ds, validation_data=eval_ds, **common)
        applied = int(trainer.optimizer.iterations.numpy()) - step
        skipped_in_a_row = skipped_in_a_row + int(saver.batches.numpy()) - batches if applied == 0 else 0
        if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
            raise NonFiniteLossError(f"the last {skipped_in_a_row} steps all overflowed in float16 and were skipped; "
                                     "train with --mixed_precision=mixed_bfloat16 or without --mixed_precision")


def _results(trainer, data, run_cfg, iter_epoch, history):
    steps = int(trainer.optimizer.iterations.numpy())
    accuracies = [h["val_accuracy"] for h in history if "val_accuracy" in h]
    return {
        "dataset": data.name, "method": trainer.config.method, "network": run_cfg.network,
        "noise_type": data.noise_type, "noise_ratio": data.noise_ratio,
        "noise_rate_realized": data.noise_rate_realized, "probe_size": int(len(data.probe_labels)),
        "train_examples": int(len(data.train_labels)), "steps": steps, "epochs": round(steps / iter_epoch, 3),
        "test_accuracy": accuracies[-1] if accuracies else None,
        "best_test_accuracy": max(accuracies) if accuracies else None,
        "seconds": round(history[-1].get("seconds", 0.0), 1) if history else 0.0,
        "label_issue_precision": None, "label_issue_recall": None,
    }


def _write_outputs(trainer, data, run_cfg, results, history, issues, confusion):
    model_dir = run_cfg.model_dir
    report.write_label_issues_csv(issues, os.path.join(model_dir, "label_issues.csv"))
    if confusion is not None:
        report.write_confusion_csv(confusion, os.path.join(model_dir, "test_confusion.csv"), data.class_names)
    with tf.io.gfile.GFile(os.path.join(model_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    if history:
        evaluated = [h for h in history if "val_accuracy" in h]
        plots.plot_accuracy({"val_accuracy": [h["val_accuracy"] for h in evaluated]},
                            os.path.join(model_dir, "test_accuracy.png"), steps=[h["step"] for h in evaluated])
    if issues.true_label is not None and np.any(issues.visits > 0):
        plots.plot_omega_distribution(issues.omega_mean, issues.given_label, issues.true_label,
                                      os.path.join(model_dir, "omega_distribution.png"), visits=issues.visits,
                                      batch_size=run_cfg.batch_size)
    if run_cfg.export_dir:
        # File data sets are evaluated on centre crops of the files (pipeline.eval_dataset); arrays as stored.
        export.export_serving(trainer, run_cfg.export_dir, image_shape=data.image_shape,
                              class_names=data.class_names, center_crop=data.augment_kind == "imagenet")


def summary_line(results):
    """The one-line summary printed last."""
    def fmt(value):
        return "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
    return ("ieg_tf result: " + " ".join(f"{k}={fmt(results.get(k))}" for k in RESULT_KEYS))
