"""The command line as users run it: a subprocess on the embedded digits data with few steps."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from ieg_tf import report, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--batch_size=32", "--val_batch_size=200", "--jit_compile=false", "--network=small_cnn"]


def run_cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # FAST first: a flag given twice takes the last value, so the test's own flags win
    return subprocess.run([sys.executable, "-m", "ieg_tf.main", *FAST, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ieg_run(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("run")
    export_dir = os.path.join(model_dir, "serving")
    out = run_cli(f"--model_dir={model_dir}", "--max_iteration=6", "--eval_freq=3", f"--export_dir={export_dir}")
    assert out.returncode == 0, out.stderr[-4000:]
    return str(model_dir), export_dir, out


def test_run_writes_results_report_plots_split_and_prints_the_summary_last(ieg_run):
    model_dir, _, out = ieg_run
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    for key in train.RESULT_KEYS:
        assert key in results, key
    assert results["dataset"] == "digits" and results["method"] == "ieg" and results["steps"] == 6
    assert results["probe_size"] == 10 and results["noise_ratio"] == 0.8
    assert 0.6 < results["noise_rate_realized"] < 0.85
    assert 0.0 <= results["test_accuracy"] <= 1.0
    assert results["best_test_accuracy"] >= results["test_accuracy"]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("ieg_tf result:") and "test_accuracy=" in last and "steps=6" in last
    # written to a pipe, progress is one line per epoch (Keras' verbose=2), not a bar redrawn after every step
    assert "\r" not in out.stdout and "\x08" not in out.stdout
    assert len([line for line in out.stdout.splitlines() if "val_accuracy" in line]) == 2
    with open(os.path.join(model_dir, "label_issues.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == results["train_examples"]
    assert {"id", "given_label", "suggested_label", "omega_mean", "pseudo_fraction", "label_believed_wrong",
            "true_label"} <= set(rows[0])
    # the EMA model's test-set confusion matrix agrees with the last evaluation of fit
    confusion, names = report.read_confusion_csv(os.path.join(model_dir, "test_confusion.csv"))
    assert names == [str(k) for k in range(10)] and confusion.sum() == 599
    assert abs(np.trace(confusion) / confusion.sum() - results["test_accuracy"]) < 1e-6
    assert results["test_per_class_accuracy"] == report.per_class_accuracy(confusion)
    assert len(results["test_per_class_accuracy"]) == 10
    for name in ("test_accuracy.png", "omega_distribution.png", "split/split.json", "split/noisy_labels.npy",
                 "split/probe_ids.npy", "checkpoints/checkpoint", "checkpoints/history.json"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    assert os.listdir(os.path.join(model_dir, "logs"))


def test_exported_savedmodel_serves_uint8_images(ieg_run):
    model_dir, export_dir, _ = ieg_run
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    images = np.load(os.path.join(ROOT, "data", "digits.npz"))["images"][:5]
    images = (images.astype(np.float32) * 255 / 16).round().astype(np.uint8)[..., None]
    probs = served(images=tf.constant(images))["probabilities"].numpy()
    assert probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # The served model is the evaluated (EMA) one: on the test split it gives the run's confusion matrix.
    from ieg_tf import sources
    test = sources.read_digits()
    predicted = np.argmax(served(images=tf.constant(test.test_images))["probabilities"].numpy(), axis=1)
    confusion, _ = report.read_confusion_csv(os.path.join(model_dir, "test_confusion.csv"))
    expected = np.zeros_like(confusion)
    np.add.at(expected, (test.test_labels, predicted), 1)
    np.testing.assert_array_equal(expected, confusion)


def test_same_command_resumes_and_a_longer_budget_continues(ieg_run):
    model_dir, _, _ = ieg_run
    again = run_cli(f"--model_dir={model_dir}", "--max_iteration=6", "--eval_freq=3")
    assert again.returncode == 0, again.stderr[-4000:]
    assert "steps=6" in again.stdout.strip().splitlines()[-1]
    assert "Epoch" not in again.stdout  # nothing left to train
    longer = run_cli(f"--model_dir={model_dir}", "--max_iteration=9", "--eval_freq=3")
    assert longer.returncode == 0, longer.stderr[-4000:]
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    assert results["steps"] == 9
    with open(os.path.join(model_dir, "checkpoints", "history.json")) as f:
        history = json.load(f)
    # The resumed session continues the epoch count and the wall time of the first one.
    assert [h["step"] for h in history] == [3, 6, 9] and [h["epoch"] for h in history] == [1, 2, 3]
    assert history[2]["seconds"] > history[1]["seconds"] > history[0]["seconds"] > 0
    assert results["seconds"] == round(history[-1]["seconds"], 1)
    assert results["test_accuracy"] == history[-1]["val_accuracy"]
    assert results["best_test_accuracy"] == max(h["val_accuracy"] for h in history)


@pytest.mark.parametrize("method, seeds", [("supervised --seed=3 --data_seed=5", (3, 5)),
                                           ("l2r --meta_grad_mode=approx_vjp --meta_every=2", (12345, 12345))])
def test_other_methods_run_from_the_command_line(tmp_path, method, seeds):
    method, *extra = method.split()
    out = run_cli(f"--model_dir={tmp_path}", f"--method={method}", "--max_iteration=2", *extra)
    assert out.returncode == 0, out.stderr[-4000:]
    with open(os.path.join(tmp_path, "results.json")) as f:
        results = json.load(f)
    assert results["method"] == method and (results["seed"], results["data_seed"]) == seeds


@pytest.mark.parametrize("args, message", [
    (["--noise_ratio=1.5"], "not a number in the range [0.0, 1.0]"),
    (["--network=resnet1000"], "unknown network"),
    (["--probe_per_class=500"], "probe"),
    (["--noise_type=file"], "needs --noise_file"),
    (["--batch_size=0"], "batch_size"),
    (["--method=mentornet"], "method"),
    (["--probe_affine=15,0.3"], "probe_affine takes three numbers DEGREES,SHEAR,SCALE"),
    (["--probe_affine=200,0,0"], "out of range"),
])
def test_bad_flags_fail_with_one_line_reasons(tmp_path, args, message):
    out = run_cli(f"--model_dir={tmp_path}", *args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert message in out.stderr, out.stderr[-2000:]


def test_missing_cifar_fails_fast_without_download(tmp_path):
    start = time.time()
    out = run_cli(f"--model_dir={tmp_path}", "--dataset=cifar100", f"--data_dir={tmp_path}")
    assert time.time() - start < 120
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cifar100 not found" in out.stderr and "--download" in out.stderr


def test_unwritable_model_dir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli(f"--model_dir={blocker}/run")
    assert out.returncode == 2 and "not writable" in out.stderr


def _configs(*args):
    """(DataSpec, TrainerConfig, RunConfig) of `python -m ieg_tf.main *args`, with FLAGS reset afterwards."""
    from absl import flags
    from ieg_tf import main
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["ieg_tf", *args])
        return main.configs_from_flags()
    finally:
        flags.FLAGS.unparse_flags()


def test_every_flagfile_parses_into_valid_configs():
    folder = os.path.join(ROOT, "flags")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".cfg"))
    assert len(files) >= 25
    for name in files:
        text = open(os.path.join(folder, name)).read()
        assert text.startswith("# ") and "Expected" in text, name
        _, _, run_cfg = _configs(f"--flagfile={os.path.join(folder, name)}")
        assert run_cfg.max_iteration == 200000 or name == "digits_default.cfg"


@pytest.mark.parametrize("args, data_seed, run_seed", [([], 12345, 12345), (["--seed=3"], 3, 3),
                                                       (["--seed=3", "--data_seed=7"], 7, 3)])
def test_data_seed_fixes_the_split_while_seed_varies_the_training(args, data_seed, run_seed):
    data_spec, trainer_cfg, run_cfg = _configs(*args)
    assert (data_spec.seed, trainer_cfg.seed, run_cfg.seed) == (data_seed, run_seed, run_seed)


def test_probe_affine_flag_reaches_the_input_pipeline():
    _, trainer_cfg, default = _configs()
    _, _, given = _configs("--probe_affine=15,0.3,0.15")
    assert default.probe_affine is None and given.probe_affine == (15.0, 0.3, 0.15)
    assert train.input_options(trainer_cfg, default, 0)["probe_affine"] is None
    options = train.input_options(trainer_cfg, given, 7)
    assert options["probe_affine"] == (15.0, 0.3, 0.15) and options["start_step"] == 7 and options["strong"]


@pytest.mark.parametrize("args, expected", [([], 5.0), (["--dataset=cifar10"], 20.0),
                                            (["--consistency_factor=20"], 20.0),
                                            (["--dataset=cifar100", "--consistency_factor=0"], 0.0)])
def test_kl_weight_default_is_per_data_set_and_a_given_flag_wins(args, expected):
    _, trainer_cfg, _ = _configs(*args)
    assert trainer_cfg.consistency_factor == expected


def test_every_trainer_flag_reaches_the_trainer_config():
    """Each TrainerConfig field has a flag of its name, and a non-default value given there arrives unchanged.
    weight_decay and decay_kernels_only come from the network's spec (train.build_trainer, --weight_decay)."""
    import dataclasses
    from ieg_tf import datasets
    from ieg_tf.config import TrainerConfig
    given = {"method": ("l2r", "l2r"), "ce_factor": ("2.5", 2.5), "ce_rampup_steps": ("7", 7),
             "consistency_factor": ("3", 3.0), "meta_stepsize": ("0.2", 0.2), "meta_momentum": ("0.5", 0.5),
             "grad_eps_init": ("0.4", 0.4), "clean_threshold": ("1.5", 1.5), "probe_weight_decay": ("0.01", 0.01),
             "ema_decay": ("0.99", 0.99), "mixup_beta": ("0.75", 0.75), "sharpen_temperature": ("1", 1.0),
             "guess_views": ("weak", "weak"), "meta_stop_guess_gradient": ("true", True), "seed": ("7", 7),
             "meta_grad_mode": ("approx_vjp", "approx_vjp"), "meta_every": ("3", 3)}
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    assert fields - set(given) == {"weight_decay", "decay_kernels_only"}
    _, cfg, run_cfg = _configs(*(f"--{name}={flag}" for name, (flag, _) in given.items()), "--weight_decay=0.002")
    reference = TrainerConfig()
    for name, (_, value) in given.items():
        assert getattr(cfg, name) == value != getattr(reference, name), name
    assert run_cfg.weight_decay == 0.002
    images, labels = np.zeros((40, 8, 8, 1), np.uint8), np.arange(40) % 4
    data = datasets.from_arrays(images, labels, images[:8], labels[:8], probe_per_class=1)
    trainer = train.build_trainer(dataclasses.replace(run_cfg, network="small_cnn", decay_steps=10), cfg, data)[0]
    assert trainer.config.weight_decay == 0.002 and trainer.config.meta_every == 3


def test_custom_step_boundaries_and_warmup_epochs_reach_the_schedule():
    """--lr_boundaries are custom_step's steps (SPEC 2: lr * decay_rate^k), and --warmup_epochs counts epochs of
    len(train) // batch steps (not --decay_steps)."""
    import dataclasses
    from ieg_tf import datasets
    images, labels = np.zeros((40, 8, 8, 1), np.uint8), np.arange(40) % 4
    data = datasets.from_arrays(images, labels, images[:8], labels[:8], probe_per_class=1)  # 36 train images
    _, cfg, run_cfg = _configs("--lr_schedule=custom_step", "--lr_boundaries=5,10", "--decay_rate=0.5",
                               "--learning_rate=0.2")
    assert run_cfg.lr_boundaries == (5, 10)
    schedule = train.build_trainer(dataclasses.replace(run_cfg, network="small_cnn", decay_steps=7), cfg, data)[1]
    # TF1 piecewise_constant: the old rate up to and including a boundary step, the new one after it.
    np.testing.assert_allclose([float(schedule(s)) for s in (0, 5, 6, 10, 11, 50)], [0.2, 0.2, 0.1, 0.1, 0.05, 0.05],
                               rtol=1e-6)
    _, cfg, run_cfg = _configs("--lr_schedule=cosine_warmup", "--warmup_epochs=2", "--batch_size=6",
                               "--learning_rate=0.3")
    schedule = train.build_trainer(dataclasses.replace(run_cfg, network="small_cnn", decay_steps=100), cfg, data)[1]
    # 36 // 6 = 6 steps per epoch, so the warm-up is 12 steps long: half the rate at step 6, all of it at 12.
    np.testing.assert_allclose([float(schedule(6)), float(schedule(12))], [0.15, 0.3], rtol=1e-6)
    for args, message in ((["--lr_schedule=custom_step"], "custom_step needs lr_boundaries"),
                          (["--lr_boundaries=5"], "other schedules take none"),
                          (["--lr_schedule=custom_step", "--lr_boundaries=10,5"], "ascending steps"),
                          (["--lr_schedule=custom_step", "--lr_boundaries=5,x"], "ascending steps")):
        with pytest.raises(ValueError, match=message):
            _configs(*args)


def test_algorithm_constants_reach_the_trainer_config_and_default_to_the_reference():
    from ieg_tf.config import TrainerConfig
    _, default, _ = _configs()
    _, given, _ = _configs("--sharpen_temperature=1", "--mixup_beta=0.75", "--probe_weight_decay=0",
                           "--guess_views=weak")
    reference = TrainerConfig()
    assert (default.sharpen_temperature, default.mixup_beta, default.probe_weight_decay, default.guess_views) == (
        reference.sharpen_temperature, reference.mixup_beta, None, "weak_strong")
    assert (given.sharpen_temperature, given.mixup_beta, given.probe_weight_decay, given.guess_views) == (
        1.0, 0.75, 0.0, "weak")
