"""The trainer end to end through `fit`: every method, XLA, EMA, trackers, per-example statistics."""

import numpy as np
import pytest
import tensorflow as tf

import tinydata
from ieg_tf import optim
from ieg_tf.config import TrainerConfig
from ieg_tf.model import TRAIN_METRICS, IEGTrainer


def _fit(method, steps=6, jit=False, **config):
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    px, py = tinydata.probe(centers)
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=method, **config), num_train_examples=len(x))
    trainer.compile(jit_compile=jit)
    history = trainer.fit(tinydata.train_dataset(x, noisy, true, px, py, batch_size=16), steps_per_epoch=steps // 2,
                          epochs=2, validation_data=tinydata.eval_dataset(x, true), verbose=0)
    return trainer, history


@pytest.mark.parametrize("method", ["supervised", "l2r", "ieg"])
def test_fit_runs_every_method_and_reports_its_trackers(method):
    trainer, history = _fit(method)
    for name in TRAIN_METRICS[method] + ("val_accuracy", "val_loss"):
        assert name in history.history, name
        assert np.all(np.isfinite(history.history[name])), name
    assert int(trainer.optimizer.iterations) == 6
    stats = trainer.example_stats.result()
    if method == "supervised":
        assert stats["visits"].sum() == 0
    else:
        assert stats["visits"].sum() == 6 * 16
        assert np.all(stats["omega_mean"] >= 0) and stats["omega_mean"].max() > 0
        assert stats["guess_sum"].shape == (64, 4)


def test_ieg_step_compiles_with_xla_and_matches_the_graph_step():
    _, history = _fit("ieg", jit=True)
    assert np.all(np.isfinite(history.history["loss"]))
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg"))
    trainer.compile()
    batch = next(iter(tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=16)))
    seed = tf.constant([1, 2])

    def step(data, s):
        step = trainer.compute_gradients(data, s)
        return step.grads, {k: v[0] for k, v in step.logs.items()}, step.per_example

    graph = tf.function(step)(batch, seed)
    xla = tf.function(step, jit_compile=True)(batch, seed)
    for a, b in zip(graph[0], xla[0]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    for name in graph[1]:
        np.testing.assert_allclose(graph[1][name], xla[1][name], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(graph[2][0], xla[2][0], rtol=1e-3, atol=1e-6)


def test_ema_follows_the_ramped_decay():
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    px, py = tinydata.probe(centers)
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="supervised"))
    trainer.compile()
    ds = iter(tinydata.train_dataset(x, noisy, true, px, py, batch_size=16))
    expected = [v.numpy() for v in trainer.network.trainable_variables]
    for step in range(1, 4):
        trainer.train_on_batch(next(ds))
        decay = min(0.999, (1 + step) / (10 + step))
        expected = [decay * e + (1 - decay) * v.numpy() for e, v in zip(expected, trainer.network.trainable_variables)]
    for e, shadow in zip(expected, trainer.ema_weights):
        np.testing.assert_allclose(shadow.numpy(), e, rtol=1e-5, atol=1e-6)
    images = tf.constant(x[:8])
    assert not np.allclose(trainer.ema_logits(images), trainer.network(images, training=False))


def test_missing_batch_keys_give_a_clear_error():
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg"))
    trainer.compile()
    batch = {"weak": tf.zeros([4, 4, 4, 1]), "label": tf.zeros([4], tf.int32)}
    with pytest.raises(ValueError, match="missing"):
        trainer.train_on_batch(batch)


def test_unbuilt_network_and_bad_config_are_rejected():
    import keras
    with pytest.raises(ValueError, match="not built"):
        IEGTrainer(keras.Sequential([keras.layers.Dense(3)]), 3)
    with pytest.raises(ValueError, match="method"):
        TrainerConfig(method="mentornet")
    with pytest.raises(ValueError, match="grad_eps_init"):
        TrainerConfig(grad_eps_init=1.0)


def test_a_network_that_does_not_end_in_class_logits_is_rejected():
    import keras

    def net(outputs, activation=None, softmax_layer=False):
        inputs = keras.Input((5,))
        x = keras.layers.Dense(outputs, activation=activation)(keras.layers.Dense(8, activation="relu")(inputs))
        return keras.Model(inputs, keras.layers.Softmax()(x) if softmax_layer else x)

    IEGTrainer(net(4), 4)  # logits of 4 classes
    IEGTrainer(keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                                 keras.layers.Dense(4)]), 4)
    with pytest.raises(ValueError, match=r"outputs 3 values per image but there are 4 classes.*Dense\(4\)"):
        IEGTrainer(net(3), 4)
    with pytest.raises(ValueError, match="outputs 4 values per image but there are 5 classes"):
        IEGTrainer(net(4), 5)
    for kwargs in ({"activation": "softmax"}, {"softmax_layer": True}, {"activation": "sigmoid"}):
        with pytest.raises(ValueError, match="IEGTrainer needs logits"):
            IEGTrainer(net(4, **kwargs), 4)
    with pytest.raises(ValueError, match="applies softmax"):
        IEGTrainer(keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="softmax")]), 4)


def test_fit_stops_at_the_first_non_finite_loss_and_reports_refuse_broken_weights():
    from ieg_tf import model
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    px, py = tinydata.probe(centers)
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="supervised"), num_train_examples=len(x))
    trainer.compile(optimizer=optim.TF1Momentum(1e30), jit_compile=False)
    with pytest.raises(model.NonFiniteLossError, match=r"at step \d+; lower the learning rate"):
        trainer.fit(tinydata.train_dataset(x, noisy, true, px, py, batch_size=16), steps_per_epoch=20, epochs=1,
                    verbose=0)
    assert trainer.optimizer.iterations.numpy() < 20  # stopped at the blow-up, not at the end of the epoch
    with pytest.raises(ValueError, match="holds NaN or Inf: the training diverged"):
        trainer.check_finite()


def test_schedule_and_optimizer_state_are_variables_for_checkpoints():
    trainer, _ = _fit("ieg", steps=4)
    trainer.compile(optimizer=optim.TF1Momentum(0.1))
    names = {v.path for v in trainer.optimizer.variables}
    assert any("accumulator" in n for n in names)


def test_ce_rampup_scales_the_unlabeled_mixup_term_linearly():
    trainer, _ = _fit("ieg", steps=2, ce_factor=4.0, consistency_factor=3.0, ce_rampup_steps=10)
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    batch = next(iter(tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=16)))
    for step, weight in [(0, 0.0), (5, 2.0), (10, 4.0), (25, 4.0)]:
        trainer.optimizer.iterations.assign(step)
        logs = {k: float(v[0]) for k, v in trainer.compute_gradients(batch, tf.constant([1, 2])).logs.items()}
        assert logs["mix_unl_loss"] > 0
        rest = logs["sup_loss"] + logs["mix_probe_loss"] + 3.0 * logs["kl_loss"] + logs["l2_loss"]
        np.testing.assert_allclose(logs["loss"] - rest, weight * logs["mix_unl_loss"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="ce_rampup_steps"):
        TrainerConfig(ce_rampup_steps=-1)


def test_custom_fit_reports_per_epoch_means_like_keras_fit():
    """distribute.custom_fit (the multi-worker loop) against Keras' fit on the same trainer and data, under the
    default strategy: same per-epoch training and evaluation figures (trackers reset at every epoch)."""
    from ieg_tf import distribute
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    px, py = tinydata.probe(centers)
    histories = []
    for loop in ("keras", "custom"):
        trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg"), num_train_examples=len(x))
        trainer.compile(jit_compile=False)
        train_ds = tinydata.train_dataset(x, noisy, true, px, py, batch_size=16)
        eval_ds = tinydata.eval_dataset(x, true)
        args = dict(epochs=3, steps_per_epoch=2, verbose=0)
        if loop == "keras":
            histories.append(trainer.fit(train_ds, validation_data=eval_ds, **args).history)
        else:
            strategy = tf.distribute.get_strategy()
            histories.append(distribute.custom_fit(
                trainer, strategy, strategy.experimental_distribute_dataset(train_ds),
                validation_data=strategy.experimental_distribute_dataset(eval_ds), **args).history)
    keras_history, custom_history = histories
    for name in ("loss", "sup_loss", "kl_loss", "val_accuracy"):
        np.testing.assert_allclose(custom_history[name], keras_history[name], rtol=1e-4, err_msg=name)
    assert len(set(np.round(keras_history["loss"], 5))) == 3  # three different epochs, not one figure repeated
