"""The meta step under mixed_float16: both of its differentiations are seeded with the optimizer's loss scale, as
the main step's is, and an overflow of that scale skips the step instead of turning omega* into NaN."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from subprocess_result import run_result
from ieg_tf import losses, meta
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

B, C, D, PROBE_COPIES = 16, 4, 16, 8


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.mixed_precision.set_global_policy("float32")


def _problem(input_scale):
    """Blobs whose inputs are `input_scale` times larger than usual: the first Dense layer is followed by BN, so
    the forward is unchanged, but the cotangents reaching that layer are `input_scale` times smaller."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(C, D)) * 2
    true = np.arange(B) % C
    x = (input_scale * (centers[true] + 0.5 * rng.normal(size=(B, D)))).astype(np.float32)
    probe = (input_scale * (centers + 0.5 * rng.normal(size=(C, D)))).astype(np.float32)
    noisy = np.where(rng.random(B) < 0.5, (true + 1) % C, true)
    return x, true, noisy, np.tile(probe, (PROBE_COPIES, 1)), np.tile(np.arange(C), PROBE_COPIES)


def _network(policy, weights=None, freeze_top=False):
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((D,))
    h = keras.layers.Dense(32, use_bias=False)(inputs)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
    h = keras.layers.ReLU()(keras.layers.Dense(32)(h))
    net = keras.Model(inputs, keras.layers.Dense(C, dtype="float32")(h))
    if weights is not None:
        net.set_weights(weights)
    if freeze_top:  # only the first layer, whose cotangents are smallest, takes the look-ahead step
        for layer in net.layers[4:]:
            layer.trainable = False
    return net


def _confident_weights(x, true):
    """Weights of a float32 network trained until its probe loss is small (its cotangents too)."""
    net = _network("float32")
    optimizer = keras.optimizers.SGD(0.5)
    for _ in range(300):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(losses.cross_entropy(tf.one_hot(true, C), net(x, training=True)))
        optimizer.apply(tape.gradient(loss, net.trainable_variables), net.trainable_variables)
    assert float(loss) < 1e-3
    return net.get_weights()


def _meta_gradients(net, x, noisy, probe, probe_labels, loss_scale, mode="exact"):
    params, non_trainable = net.trainable_variables, net.non_trainable_variables
    y = tf.one_hot(noisy, C)

    def forward():
        z, _ = net.stateless_call(params, non_trainable, x, training=True)
        return (tf.cast(z, tf.float32),)

    def look_loss(outputs, omega, lam):
        target = lam[:, None] * y + (1.0 - lam[:, None]) * tf.nn.softmax(outputs[0])
        return tf.reduce_sum(omega * losses.cross_entropy(target, outputs[0]))

    result = meta.meta_gradients(
        network=net, forward_fn=forward, look_loss_fn=look_loss, omega0=tf.fill([B], 1.0 / B),
        lambda0=tf.fill([B], 0.9), probe_images=tf.constant(probe), probe_labels_onehot=tf.one_hot(probe_labels, C),
        accumulators=None, step_size=0.1, momentum=0.0, probe_weight_decay=0.0, mode=mode,
        loss_scale=None if loss_scale is None else tf.constant(loss_scale))
    return result.grad_omega.numpy(), result.grad_lambda.numpy()


def _relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_loss_scaled_meta_step_matches_float32_where_the_unscaled_float16_one_underflows():
    x, true, noisy, probe, probe_labels = _problem(input_scale=6000.0)
    weights = _confident_weights(x, true)
    want = _meta_gradients(_network("float32", weights, True), x, noisy, probe, probe_labels, None)
    unscaled = _meta_gradients(_network("mixed_float16", weights, True), x, noisy, probe, probe_labels, None)
    scaled = _meta_gradients(_network("mixed_float16", weights, True), x, noisy, probe, probe_labels, 32768.0)
    for got_unscaled, got_scaled, wanted in zip(unscaled, scaled, want):  # d/d omega, then d/d lambda
        # Without the scale the float16 probe backward underflows (measured: 69% error, a quarter of the signs,
        # i.e. of omega* > 0 and lambda*, wrong); with it what is left is float16 rounding (4%).
        assert _relative_error(got_unscaled, wanted) > 0.3
        assert np.any(np.sign(got_unscaled) != np.sign(wanted))
        assert _relative_error(got_scaled, wanted) < 0.1
        np.testing.assert_array_equal(np.sign(got_scaled), np.sign(wanted))


@pytest.mark.parametrize("mode", ["exact", "last_layer", "approx_vjp"])
def test_a_loss_scale_in_float32_changes_nothing_but_rounding(mode):
    """Scaling and unscaling are exact inverses in every mode (a missed unscale would show as a factor S)."""
    x, true, noisy, probe, probe_labels = _problem(input_scale=1.0)
    net = _network("float32", _confident_weights(x, true))
    plain = _meta_gradients(net, x, noisy, probe, probe_labels, None, mode)
    scaled = _meta_gradients(net, x, noisy, probe, probe_labels, 1024.0, mode)
    for got, want in zip(scaled, plain):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def _solve(loss_scale, images):
    net = tinydata.mlp()
    params, non_trainable = net.trainable_variables, net.non_trainable_variables
    y = tf.one_hot(np.arange(8) % 4, 4)

    def forward():
        return (net.stateless_call(params, non_trainable, images, training=True)[0],)

    def look_loss(outputs, omega, lam):
        return tf.reduce_sum(omega * losses.cross_entropy(lam[:, None] * y, outputs[0]))

    return meta.solve_weights(
        "exact", None, tf.constant(0, tf.int64), tf.range(8), network=net, forward_fn=forward,
        look_loss_fn=look_loss, omega0=tf.fill([8], 1.0 / 8), lambda0=tf.fill([8], 0.9),
        probe_images=tf.zeros([4, *tinydata.SHAPE]), probe_labels_onehot=tf.eye(4), accumulators=None,
        step_size=0.1, momentum=0.0, probe_weight_decay=0.0, loss_scale=tf.constant(loss_scale))


def test_non_finite_meta_gradients_are_an_overflow_only_while_the_scale_is_above_one():
    finite = _solve(4.0, tf.random.stateless_normal([8, *tinydata.SHAPE], [1, 2]))
    assert not bool(finite.overflow) and float(finite.solved) == 1.0
    assert np.all(np.isfinite(finite.omega)) and float(tf.reduce_sum(finite.omega)) > 0.5
    inf = tf.fill([8, *tinydata.SHAPE], np.float32(np.inf))
    overflowed = _solve(4.0, inf)
    assert bool(overflowed.overflow) and float(overflowed.solved) == 0.0
    np.testing.assert_array_equal(overflowed.omega, 0.0)
    np.testing.assert_array_equal(overflowed.label_mix, 0.0)
    diverged = _solve(1.0, inf)  # at S = 1 the scale is not the cause: NaN must reach the loss and stop the run
    assert not bool(diverged.overflow)
    assert np.all(np.isnan(diverged.omega))


@pytest.mark.parametrize("method", ["ieg", "l2r"])
def test_an_overflowed_step_is_skipped_lowers_the_scale_and_records_nothing(method):
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    batch = next(iter(tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=16)))
    keras.mixed_precision.set_global_policy("mixed_float16")
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=method), num_train_examples=64)
    trainer.compile(optimizer=keras.optimizers.LossScaleOptimizer(TF1Momentum(0.1), initial_scale=2.0 ** 100),
                    jit_compile=False)
    assert float(trainer._loss_scale()) == 2.0 ** 100  # the meta step reads the optimizer's current scale
    # weights, BN moving statistics and EMA shadows: a skipped step changes none of them
    state = [*trainer.network.trainable_variables, *trainer.network.non_trainable_variables, *trainer.ema_weights]
    assert any("moving" in v.path for v in state)
    for shadow in trainer.ema_weights:  # shadows away from the weights, so an EMA pull would show
        shadow.assign(shadow + 1.0)
    before = [v.numpy() for v in state]
    logs = trainer.train_on_batch(batch, return_dict=True)
    assert np.isfinite(logs["loss"]), logs  # omega* stayed finite: NaN would stop the run as diverged
    assert float(trainer.optimizer.dynamic_scale) == 2.0 ** 99
    assert int(trainer.optimizer.iterations) == 0
    for variable, value in zip(state, before):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    np.testing.assert_array_equal(trainer.example_stats.visits.numpy(), 0.0)
    assert np.isnan(logs["probe_loss"])  # no weight: the step solved nothing, so it has no probe loss to report
    for _ in range(3):  # once the scale has come down, steps apply and are recorded
        trainer.optimizer.dynamic_scale.assign(2.0 ** 10)
        logs = trainer.train_on_batch(batch, return_dict=True)
    assert int(trainer.optimizer.iterations) == 3 and np.isfinite(logs["loss"])
    assert float(trainer.example_stats.visits.numpy().sum()) == 3 * 16
    moved = [not np.array_equal(v.numpy(), value) for v, value in zip(state, before)]
    assert all(moved[len(trainer.network.trainable_variables):]), moved  # the applied steps did move them


def test_float32_trainers_have_no_loss_scale():
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method="ieg"), num_train_examples=64)
    trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=False)
    assert trainer._loss_scale() is None


@pytest.mark.parametrize("method", ["supervised", "ieg"])
def test_one_replica_overflowing_skips_the_step_on_every_replica(method):
    """Only replica 1 overflows. Keras' LossScaleOptimizer tests replica 0's gradients alone, so the summed inf
    gradients were applied (supervised included). The step must be skipped everywhere and recorded nowhere:
    replica 0 alone writing its meta cache (which holds replica 1's omega*, zeroed by the overflow) or its visits
    would leave wrong values behind. Runs in a subprocess (one strategy per process)."""
    out = run_result([os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirrored_overflow_check.py"), method])
    assert out["iterations"] == 0 and out["moved"] == 0.0 and out["scale"] == 2048.0, out
    if method == "ieg":
        assert out["visits"] == 0.0, out
        assert out["cache_written"] == [0, 0], out  # both replicas' copies
