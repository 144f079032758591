"""A run directory keeps the settings it was trained with; multi-worker resume, epochs under replicas, early
refusals (batch larger than the data, unwritable export directory)."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from ieg_tf import checkpoints, datasets, train
from ieg_tf.config import RunConfig, TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

TINY = RunConfig(network="mlp", batch_size=16, val_batch_size=300, max_iteration=2, eval_freq=2, jit_compile=False)


def _data_arrays(n=64):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = (np.arange(n) % 4).astype(np.int32)
    return images, labels, images[:20], labels[:20]


def _data(n=64):
    return datasets.from_arrays(*_data_arrays(n), probe_per_class=1, noise_type="uniform", noise_ratio=0.5)


def test_run_settings_keep_what_shapes_the_weights_and_leave_out_the_budget():
    settings = train.run_settings(TINY, TrainerConfig(method="ieg"), replicas=2)
    assert settings["global_batch"] == 32
    assert settings["run"]["learning_rate"] == TINY.learning_rate and settings["run"]["seed"] == TINY.seed
    assert settings["trainer"]["method"] == "ieg"
    assert not set(train.RESUMABLE_CHANGES) & set(settings["run"])
    json.dumps(settings)  # what run_config.json holds


def test_a_resume_on_another_number_of_replicas_says_that_the_replica_count_is_kept(tmp_path):
    two = dataclasses.replace(TINY, batch_size=8)
    train.check_run_config(train.run_settings(two, TrainerConfig(), 2), str(tmp_path), write=True)
    train.check_run_config(train.run_settings(two, TrainerConfig(), 2), str(tmp_path), write=True)  # mirrored again
    with pytest.raises(ValueError, match=r"batch_size 8 there, 16 here; 2 replica\(s\) there, 1 here \(--strategy "
                                         r"may change only to one with as many replicas\)"):
        train.check_run_config(train.run_settings(TINY, TrainerConfig(), 1), str(tmp_path), write=True)


@pytest.mark.parametrize("change, named", [
    (dict(run=dict(learning_rate=0.5)), "learning_rate 0.1 there, 0.5 here"),
    (dict(run=dict(seed=7)), "seed 12345 there, 7 here"),
    (dict(trainer=dict(method="supervised")), "method 'ieg' there, 'supervised' here"),
    (dict(run=dict(batch_size=8)), "global batch"),
])
def test_resume_with_a_setting_that_shapes_the_weights_is_refused(tmp_path, change, named):
    run_cfg, trainer_cfg = TINY, TrainerConfig(method="ieg")
    train.check_run_config(train.run_settings(run_cfg, trainer_cfg, 1), str(tmp_path), write=True)
    assert (tmp_path / train.RUN_CONFIG_FILE).exists()
    # The budget, evaluation and outputs may change; the same settings pass.
    resumable = dataclasses.replace(run_cfg, max_iteration=50, eval_freq=5, export_dir="x", keep_checkpoints=1)
    train.check_run_config(train.run_settings(resumable, trainer_cfg, 1), str(tmp_path), write=True)
    run_cfg = dataclasses.replace(run_cfg, **change.get("run", {}))
    trainer_cfg = dataclasses.replace(trainer_cfg, **change.get("trainer", {}))
    with pytest.raises(ValueError, match="other settings") as error:
        train.check_run_config(train.run_settings(run_cfg, trainer_cfg, 1), str(tmp_path), write=True)
    assert named in str(error.value) and "new --model_dir" in str(error.value)


def test_a_cosine_one_run_refuses_another_length_on_resume_and_older_run_configs_still_resume(tmp_path):
    """--lr_schedule=cosine_one decays over max_iteration: a resume with another budget would jump the learning
    rate (e.g. from near 0 back up), so for it the budget is a setting that shapes the weights."""
    cosine_one = dataclasses.replace(TINY, lr_schedule="cosine_one", max_iteration=100)
    train.check_run_config(train.run_settings(cosine_one, TrainerConfig(), 1), str(tmp_path), write=True)
    train.check_run_config(train.run_settings(dataclasses.replace(cosine_one, eval_freq=7), TrainerConfig(), 1),
                           str(tmp_path), write=True)
    longer = dataclasses.replace(cosine_one, max_iteration=200)
    with pytest.raises(ValueError, match=r"max_iteration \(the length of --lr_schedule=cosine_one\) 100 there, "
                                         r"200 here"):
        train.check_run_config(train.run_settings(longer, TrainerConfig(), 1), str(tmp_path), write=True)
    saved = json.loads((tmp_path / train.RUN_CONFIG_FILE).read_text())
    del saved["run"][train.COSINE_LENGTH]  # as written before session 14
    (tmp_path / train.RUN_CONFIG_FILE).write_text(json.dumps(saved))
    train.check_run_config(train.run_settings(longer, TrainerConfig(), 1), str(tmp_path), write=True)
    sgdr = dataclasses.replace(TINY, max_iteration=100)  # the default SGDR schedule does not depend on the budget
    assert train.COSINE_LENGTH not in train.run_settings(sgdr, TrainerConfig(), 1)["run"]


def test_defaults_follow_the_kind_of_data_not_its_name_and_the_network_the_image_size():
    data = dataclasses.replace(_data(), name="digits")  # e.g. --dataset=arrays --array_file=digits.npz
    unset = dataclasses.replace(TINY, network=None, max_iteration=None)
    resolved, iter_epoch = train.resolve(unset, data, dataset="arrays")
    assert resolved.max_iteration == train.GENERIC_DEFAULTS["epochs"] * iter_epoch == 200 * 3
    assert train.resolve(unset, data, dataset="digits")[0].max_iteration == 1246
    assert train.resolve(unset, data)[0].max_iteration == 1246  # data built in Python: by name
    for shape, network in (((8, 8, 1), "small_cnn"), ((16, 20, 3), "small_cnn"), ((32, 32, 3), "wrn28-10"),
                           ((64, 64, 3), "wrn28-10"), ((224, 224, 3), "resnet50")):
        sized = dataclasses.replace(data, name="mine", image_shape=shape)
        assert train.resolve(unset, sized, dataset="folder")[0].network == network, shape
    assert train.resolve(unset, dataclasses.replace(data, image_shape=(32, 32, 3)), dataset="digits")[0].network \
        == "small_cnn"  # a data set's own default network wins


def test_a_worker_does_not_write_the_run_config():
    settings = train.run_settings(TINY, TrainerConfig(), 1)
    directory = os.path.join(tf.compat.v1.test.get_temp_dir(), "no_config")
    train.check_run_config(settings, directory, write=False)
    assert not tf.io.gfile.exists(os.path.join(directory, train.RUN_CONFIG_FILE))


def test_train_run_refuses_a_changed_method_on_resume_and_records_nothing(tmp_path):
    run_cfg = dataclasses.replace(TINY, model_dir=str(tmp_path))
    first = train.run(run_cfg, TrainerConfig(method="ieg"), data=_data())
    results = (tmp_path / "results.json").read_text()
    with pytest.raises(ValueError, match="method 'ieg' there, 'supervised' here"):
        train.run(run_cfg, TrainerConfig(method="supervised"), data=_data())
    assert (tmp_path / "results.json").read_text() == results  # the old run's results are not overwritten
    # A longer budget resumes.
    longer = train.run(dataclasses.replace(run_cfg, max_iteration=4), TrainerConfig(method="ieg"), data=_data())
    assert (first["steps"], longer["steps"], longer["method"]) == (2, 4, "ieg")


def test_every_worker_restores_the_chiefs_checkpoint(tmp_path):
    chief_dir, chief_restore = train.checkpoint_dirs(str(tmp_path), chief=True)
    worker_dir, worker_restore = train.checkpoint_dirs(
        str(tmp_path), chief=False, cluster_resolver=tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec({"worker": ["a:1", "b:2"]}), task_type="worker", task_id=1))
    assert chief_dir == chief_restore == worker_restore == str(tmp_path / "checkpoints")
    assert worker_dir == str(tmp_path / "worker_tmp_1")

    def trainer():
        keras.backend.clear_session()  # the optimizer's slot names carry the layers' process-wide counters
        model = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="supervised"), num_train_examples=64)
        model.compile(optimizer=TF1Momentum(0.1))
        return model
    saver = checkpoints.RunCheckpoint(trainer(), chief_dir)
    saver.trainer.optimizer.iterations.assign(7)
    saver.batches.assign(9)  # two steps skipped (mixed_float16)
    saver.save([{"step": 7}])
    # A worker's own (stale) copy must not be what it resumes from.
    stale = checkpoints.RunCheckpoint(trainer(), worker_dir)
    stale.trainer.optimizer.iterations.assign(3)
    stale.batches.assign(3)
    stale.save([{"step": 3}])
    resumed = checkpoints.RunCheckpoint(trainer(), worker_dir, restore_directory=worker_restore)
    assert resumed.restore() == (7, [{"step": 7}]) and int(resumed.batches.numpy()) == 9


def test_a_checkpoint_without_the_batch_count_resumes_as_if_no_step_was_skipped(tmp_path):
    """Checkpoints written before the count of batches consumed was kept (session 14) still resume, at their step;
    history entries past the restored checkpoint (a kill between the history and the checkpoint write) are
    dropped."""
    keras.backend.clear_session()
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="supervised"), num_train_examples=64)
    trainer.compile(optimizer=TF1Momentum(0.1))
    saver = checkpoints.RunCheckpoint(trainer, str(tmp_path))
    trainer.optimizer.iterations.assign(5)
    old_layout = tf.train.Checkpoint(**saver.variables)
    tf.train.CheckpointManager(old_layout, str(tmp_path), max_to_keep=2).save(checkpoint_number=5)
    checkpoints.write_atomically(str(tmp_path / checkpoints.HISTORY_FILE),
                                 json.dumps([{"step": 5}, {"step": 8, "batches": 8}]))
    trainer.optimizer.iterations.assign(0)
    saver.batches.assign(123)
    assert saver.restore() == (5, [{"step": 5}]) and int(saver.batches.numpy()) == 5


def test_an_epoch_counts_global_batches():
    data = _data(n=644)  # 640 training examples once the 4 probe images are taken
    assert train.steps_per_epoch(data, dataclasses.replace(TINY, batch_size=10)) == 64
    assert train.steps_per_epoch(data, dataclasses.replace(TINY, batch_size=10), replicas=2) == 32
    resolved, iter_epoch = train.resolve(dataclasses.replace(TINY, batch_size=10, max_iteration=None, epochs=3,
                                                             eval_freq=None), data, replicas=2)
    assert (iter_epoch, resolved.max_iteration, resolved.eval_freq, resolved.decay_steps) == (32, 96, 32, 32)


def test_a_batch_larger_than_the_training_set_is_refused():
    data = _data()
    with pytest.raises(ValueError, match=r"--batch_size=40 x 2 replicas is more than the 60 training examples"):
        train.resolve(dataclasses.replace(TINY, batch_size=40), data, replicas=2)
    train.resolve(dataclasses.replace(TINY, batch_size=30), data, replicas=2)


def test_an_unwritable_export_dir_is_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="--export_dir .* is not writable"):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "run"), export_dir=str(blocker / "serving")),
                  TrainerConfig(method="supervised"), data=_data())
    assert not (tmp_path / "run" / "checkpoints").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("not a SavedModel")
    with pytest.raises(ValueError, match="export directory .*mine holds files that are not a SavedModel"):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "run"), export_dir=str(mine)),
                  TrainerConfig(method="supervised"), data=_data())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_export_dir_appears_only_when_its_savedmodel_is_complete(tmp_path, monkeypatch):
    """A server watching --export_dir's parent loads each version directory it sees; the run's start used to create
    it empty, and the SavedModel was written into it in place at the end."""
    seen = []
    real_run = train._fit
    monkeypatch.setattr(train, "_fit", lambda *args: seen.append(os.listdir(tmp_path)) or real_run(*args))
    train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "1")),
              TrainerConfig(method="supervised"), data=_data())
    assert seen == [["run"]]  # during training: no version directory yet
    assert sorted(os.listdir(tmp_path)) == ["1", "run"] and (tmp_path / "1" / "saved_model.pb").exists()


def test_a_run_stopped_before_its_first_checkpoint_starts_over_with_other_settings(tmp_path, capsys):
    """A user stops a start to fix a flag: only its split and run_config.json exist, and nothing trained is lost by
    replacing them. Once a checkpoint exists, other settings are refused as before."""
    model_dir = str(tmp_path / "run")
    first = dataclasses.replace(TINY, model_dir=model_dir)
    train.run(first, TrainerConfig(method="supervised"), data=_data())
    tf.io.gfile.rmtree(os.path.join(model_dir, "checkpoints"))  # as if interrupted before the first checkpoint
    other_data = datasets.from_arrays(*_data_arrays(), probe_per_class=1, noise_type="none")
    fixed = dataclasses.replace(first, seed=7)
    results = train.run(fixed, TrainerConfig(method="supervised"), data=other_data)
    assert "stopped before its first checkpoint" in capsys.readouterr().err
    assert results["noise_type"] == "none" and results["steps"] == 2
    np.testing.assert_array_equal(datasets.load_split(os.path.join(model_dir, "split"))["noisy_labels"],
                                  other_data.train_labels)
    with open(os.path.join(model_dir, train.RUN_CONFIG_FILE)) as f:
        assert json.load(f)["run"]["seed"] == 7
    # now it has a checkpoint: refused, naming what the saved split was drawn with
    with pytest.raises(ValueError, match=r"data split differs .*noise_type 'none' there, 'uniform' here; "
                                         r"noise_ratio 0.0 there, 0.5 here\); use the seed, noise and data flags"):
        train.run(fixed, TrainerConfig(method="supervised"), data=_data())
    reseeded = datasets.from_arrays(*_data_arrays(), probe_per_class=1, noise_type="none", seed=3)
    with pytest.raises(ValueError, match="the same noise and sizes: another --seed or --data_seed"):
        train.run(fixed, TrainerConfig(method="supervised"), data=reseeded)
    with pytest.raises(ValueError, match="seed 7 there, 12345 here"):
        train.run(first, TrainerConfig(method="supervised"), data=other_data)


def test_a_run_refused_before_writing_leaves_no_model_dir_and_an_existing_one_stays(tmp_path):
    spec = datasets.DataSpec(dataset="folder", train_dir=str(tmp_path / "no_such_folder"))
    for model_dir in (tmp_path / "new" / "run", tmp_path):
        with pytest.raises(ValueError, match="does not exist"):
            train.run(dataclasses.replace(TINY, model_dir=str(model_dir)), TrainerConfig(), data_spec=spec)
    assert not (tmp_path / "new" / "run").exists() and tmp_path.exists()


def test_the_write_probe_is_unique_to_the_process(tmp_path, monkeypatch):
    # Workers sharing a model_dir each write and remove a probe file: one name for all let one remove another's.
    opened = []
    real_gfile = tf.io.gfile.GFile
    monkeypatch.setattr(tf.io.gfile, "GFile", lambda path, mode="r": opened.append(path) or real_gfile(path, mode))
    train.check_writable(str(tmp_path))
    train.check_writable(str(tmp_path))
    assert len(set(opened)) == 2 and all(str(os.getpid()) in os.path.basename(p) for p in opened)
    assert os.listdir(tmp_path) == []


def test_callbacks_of_a_worker_write_no_tensorboard_logs():
    names = {c.__class__.__name__ for c in train.fit_callbacks(TINY, chief=False, saver=None, history=[])}
    assert "TensorBoard" not in names and "CheckpointCallback" in names
    assert "TensorBoard" in {c.__class__.__name__ for c in train.fit_callbacks(TINY, True, None, [])}


def test_no_injected_noise_records_a_zero_noise_ratio():
    data = datasets.load_dataset(datasets.DataSpec(noise_type="none", probe_per_class=1))
    assert data.noise_ratio == 0.0 and data.noise_rate_realized == 0.0


def test_the_accuracy_plot_counts_training_steps_when_it_has_them(tmp_path):
    from ieg_tf import plots
    np.testing.assert_array_equal(plots.accuracy_axis(3)[0], [1, 2, 3])
    x, label = plots.accuracy_axis(3, steps=[50, 100, 150])
    assert label == "training step" and list(x) == [50, 100, 150]
    with pytest.raises(ValueError, match="2 steps for 3 accuracies"):
        plots.accuracy_axis(3, steps=[50, 100])
    path = plots.plot_accuracy({"val_accuracy": [0.3, 0.7, 0.6]}, str(tmp_path / "a.png"), steps=[50, 100, 150])
    assert os.path.getsize(path) > 5000


def test_a_checkpoint_past_the_budget_is_reported_not_trained(tmp_path, capsys):
    run_cfg = dataclasses.replace(TINY, model_dir=str(tmp_path), max_iteration=4)
    train.run(run_cfg, TrainerConfig(method="supervised"), data=_data())
    capsys.readouterr()
    results = train.run(dataclasses.replace(run_cfg, max_iteration=2), TrainerConfig(method="supervised"),
                        data=_data())
    assert results["steps"] == 4 and "at step 4, past --max_iteration=2" in capsys.readouterr().err
