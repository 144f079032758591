"""Bad runs fail clearly and early; numerically hard cases stay finite (issue 5)."""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from ieg_tf import datasets, train
from ieg_tf.config import RunConfig, TrainerConfig
from ieg_tf.model import IEGTrainer

TINY = RunConfig(network="small_cnn", batch_size=32, val_batch_size=300, max_iteration=3, eval_freq=3,
                 jit_compile=False)


def _arrays(num_classes, n=60, seed=0, noise_ratio=0.5):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    labels = (np.arange(n) % num_classes).astype(np.int32)
    return datasets.from_arrays(images, labels, images[:20], labels[:20], probe_per_class=1, noise_type="uniform",
                                noise_ratio=noise_ratio)


def _checkpoint_tensors(path):
    reader = tf.train.load_checkpoint(path)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _forget_run_config(model_dir):
    """Makes model_dir look written before run_config.json existed, so that a resume with changed settings
    reaches the checks behind it (the checkpoint's variables, the loss guard)."""
    os.remove(os.path.join(model_dir, train.RUN_CONFIG_FILE))


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # 3 good steps end with a checkpoint; the resumed run's learning rate then blows the weights up.
    good = dataclasses.replace(TINY, model_dir=str(tmp_path))
    train.run(good, TrainerConfig(method="supervised"), data=_arrays(4))
    results = (tmp_path / "results.json").read_text()
    latest = tf.train.latest_checkpoint(str(tmp_path / "checkpoints"))
    assert latest is not None
    saved = _checkpoint_tensors(latest)
    _forget_run_config(tmp_path)  # the resume below changes the learning rate on purpose
    with pytest.raises(train.NonFiniteLossError, match=r"at step \d+") as error:
        train.run(dataclasses.replace(good, learning_rate=1e30, max_iteration=12), TrainerConfig(method="supervised"),
                  data=_arrays(4))
    assert int(re.search(r"at step (\d+)", str(error.value)).group(1)) > 3  # it resumed, then broke
    # Nothing of the broken run was saved: the same checkpoint, unchanged and finite, and the old results.
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")) == latest
    after = _checkpoint_tensors(latest)
    assert set(after) == set(saved)
    for name, value in after.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
            np.testing.assert_array_equal(value, saved[name], err_msg=name)
    assert (tmp_path / "results.json").read_text() == results


def test_checkpoint_of_another_network_or_class_count_is_refused(tmp_path):
    train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "a")), TrainerConfig(method="supervised"),
              data=_arrays(4))
    _forget_run_config(tmp_path / "a")
    with pytest.raises(ValueError, match="different network"):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "a"), network="mlp"),
                  TrainerConfig(method="supervised"), data=_arrays(4))
    train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "b")), TrainerConfig(method="supervised"),
              data=_arrays(4))
    os.remove(tmp_path / "b" / "split" / "split.json")  # get past the split check to reach the checkpoint
    with pytest.raises(ValueError, match="number of classes"):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path / "b")), TrainerConfig(method="supervised"),
                  data=_arrays(5))


@pytest.mark.parametrize("first, second", [(1, 4), (4, 1)])
def test_resuming_with_meta_every_on_against_off_is_refused_both_ways(tmp_path, first, second):
    # k > 1 adds the meta cache's variables to the checkpoint; either direction must be refused, not half-restored.
    def run(k):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path), network="mlp", max_iteration=3 if k == first
                                      else 6), TrainerConfig(method="l2r", meta_every=k), data=_arrays(4))
    run(first)
    _forget_run_config(tmp_path)
    with pytest.raises(ValueError, match="different network or method"):
        run(second)


def test_resuming_with_other_data_or_noise_is_refused(tmp_path):
    train.run(dataclasses.replace(TINY, model_dir=str(tmp_path)), TrainerConfig(method="supervised"),
              data=_arrays(4))
    with pytest.raises(ValueError, match="split differs"):
        train.run(dataclasses.replace(TINY, model_dir=str(tmp_path)), TrainerConfig(method="supervised"),
                  data=_arrays(4, noise_ratio=0.9))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_ieg_run_stays_finite(tmp_path, policy):
    try:
        results = train.run(dataclasses.replace(TINY, model_dir=str(tmp_path), mixed_precision=policy,
                                                max_iteration=4, eval_freq=2),
                            TrainerConfig(method="ieg"), data=_arrays(4, n=80))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    with open(tmp_path / "checkpoints" / "history.json") as f:
        history = json.load(f)
    assert len(history) == 2
    for entry in history:
        for key in ("loss", "sup_loss", "mix_unl_loss", "kl_loss", "probe_loss", "val_loss"):
            assert np.isfinite(entry[key]), (key, entry)
    assert 0.0 <= results["test_accuracy"] <= 1.0


def test_meta_step_is_finite_with_extreme_logits():
    network = tinydata.mlp()
    last = network.layers[-1]
    last.kernel.assign(last.kernel * 1e4)
    trainer = IEGTrainer(network, 4, TrainerConfig(method="ieg"))
    trainer.compile()
    x, noisy, true, centers = tinydata.blobs(per_class=8)
    batch = next(iter(tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=16)))
    step = trainer.compute_gradients(batch, trainer.step_seed())
    assert all(np.all(np.isfinite(g)) for g in step.grads)
    assert all(np.all(np.isfinite(v[0])) for v in step.logs.values())
    omega, lam, guess = step.per_example
    assert np.all(np.isfinite(omega)) and np.all(np.isfinite(guess))


@pytest.mark.parametrize("method", ["l2r", "ieg"])
def test_all_zero_omega_gives_a_finite_step(method):
    # Each training image is a probe image (one-hot inputs, a bias-free linear classifier at zero) with another
    # label: up-weighting any example raises the probe loss, so every d L_probe / d omega_i is > 0 and every
    # omega* is exactly 0, the case normalize_weights divides by its epsilon alone.
    classes = 4
    network = keras.Sequential([keras.Input((classes,)),
                                keras.layers.Dense(classes, use_bias=False, kernel_initializer="zeros")])
    trainer = IEGTrainer(network, classes, TrainerConfig(method=method))
    trainer.compile()
    eye = tf.eye(classes)
    batch = {"weak": eye, "strong": eye, "label": (tf.range(classes) + 1) % classes, "id": tf.range(classes),
             "probe_image": eye, "probe_label": tf.range(classes)}
    step = trainer.compute_gradients(batch, trainer.step_seed())
    omega = step.per_example[0].numpy()
    np.testing.assert_array_equal(omega, np.zeros(classes))
    assert all(np.all(np.isfinite(g)) for g in step.grads)
    assert all(np.all(np.isfinite(v[0])) for v in step.logs.values())
    if method == "l2r":  # its loss is sum(omega * CE) + L2 of a zero kernel: nothing to learn from this batch
        assert all(np.all(g.numpy() == 0) for g in step.grads)

def test_results_take_the_last_evaluation_the_best_one_and_the_accumulated_seconds():
    import types
    trainer = types.SimpleNamespace(optimizer=types.SimpleNamespace(iterations=tf.Variable(6)),
                                    config=TrainerConfig(method="l2r"))
    data = _arrays(4)
    history = [{"step": 3, "val_accuracy": 0.5, "seconds": 1.0}, {"step": 6, "val_accuracy": 0.4, "seconds": 2.04}]
    results = train._results(trainer, data, dataclasses.replace(TINY, network="mlp"), 3, history)
    assert (results["test_accuracy"], results["best_test_accuracy"], results["seconds"]) == (0.4, 0.5, 2.0)
    assert (results["steps"], results["epochs"], results["method"]) == (6, 2.0, "l2r")
    assert results["train_examples"] == len(data.train_labels) and results["probe_size"] == 4
