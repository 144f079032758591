"""The meta step: second-order gradients against finite differences, and BatchNorm statistics (SPEC 1.2, 1.6)."""

import keras
import numpy as np
import tensorflow as tf

from ieg_tf import losses, meta
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

B, C, D = 4, 3, 5


def _net(dtype="float32", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,), dtype=dtype)
    h = keras.layers.Dense(6, dtype=dtype)(inputs)
    h = keras.layers.BatchNormalization(dtype=dtype, momentum=0.9)(h)
    h = keras.layers.Activation("tanh", dtype=dtype)(h)
    return keras.Model(inputs, keras.layers.Dense(C, dtype=dtype)(h))


def test_meta_gradients_match_central_finite_differences_in_float64():
    net = _net("float64")
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(B, D)))
    x_strong = tf.constant(rng.normal(size=(B, D)))
    y = tf.one_hot([0, 1, 2, 1], C, dtype=tf.float64)
    xp = tf.constant(rng.normal(size=(C, D)))
    yp = tf.one_hot([0, 1, 2], C, dtype=tf.float64)
    accumulators = [tf.constant(rng.normal(size=v.shape)) for v in net.trainable_variables]
    params, non_trainable = net.trainable_variables, net.non_trainable_variables

    def forward():
        # stateless weak view too, so the finite differences see the same BN state at every evaluation
        z, _ = net.stateless_call(params, non_trainable, x, training=True)
        zs, _ = net.stateless_call(params, non_trainable, x_strong, training=True)
        return z, losses.guess_label([z, zs])

    def look_loss(outputs, omega, lam):
        z, guess = outputs   # guess keeps its gradient, as the reference (SPEC 8.3)
        target = lam[:, None] * y + (1 - lam[:, None]) * guess
        return tf.reduce_sum(omega * losses.cross_entropy(target, z)) + losses.l2_penalty(params, 5e-4)

    def run(omega, lam):
        return meta.meta_gradients(
            network=net, forward_fn=forward, look_loss_fn=look_loss, omega0=tf.constant(omega),
            lambda0=tf.constant(lam), probe_images=xp, probe_labels_onehot=yp, accumulators=accumulators,
            step_size=0.1, momentum=0.9, probe_weight_decay=5e-4)

    omega0, lambda0 = np.full(B, 1.0 / B), np.full(B, 0.9)
    m = run(omega0, lambda0)
    h = 1e-5
    fd_omega, fd_lambda = np.zeros(B), np.zeros(B)
    for i in range(B):
        e = np.eye(B)[i] * h
        loss = lambda omega, lam: float(run(omega, lam).probe_loss)  # noqa: E731
        fd_omega[i] = (loss(omega0 + e, lambda0) - loss(omega0 - e, lambda0)) / (2 * h)
        fd_lambda[i] = (loss(omega0, lambda0 + e) - loss(omega0, lambda0 - e)) / (2 * h)
    assert np.max(np.abs(fd_omega)) > 1e-3 and np.max(np.abs(fd_lambda)) > 1e-4  # a real, non-trivial signal
    np.testing.assert_allclose(m.grad_omega.numpy(), fd_omega, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(m.grad_lambda.numpy(), fd_lambda, rtol=1e-5, atol=1e-8)


def test_look_ahead_is_a_tf1_momentum_step():
    p, g, a = [tf.constant([1.0, 2.0])], [tf.constant([0.5, -1.0])], [tf.constant([2.0, 0.0])]
    np.testing.assert_allclose(meta.look_ahead(p, g, a, 0.1, 0.9)[0], [1 - 0.1 * (1.8 + 0.5), 2 + 0.1], rtol=1e-6)
    np.testing.assert_allclose(meta.look_ahead(p, g, None, 0.1, 0.9)[0], [0.95, 2.1], rtol=1e-6)


def _batch(seed=0, b=8, d=D, num_classes=C):
    rng = np.random.default_rng(seed)
    return {"weak": tf.constant(rng.normal(size=(b, d)), tf.float32),
            "strong": tf.constant(rng.normal(size=(b, d)), tf.float32),
            "label": tf.constant(rng.integers(0, num_classes, b), tf.int32),
            "id": tf.range(b), "true_label": tf.constant(rng.integers(0, num_classes, b), tf.int32),
            "probe_image": tf.constant(rng.normal(size=(b, d)) + 3.0, tf.float32),
            "probe_label": tf.constant(np.arange(b) % num_classes, tf.int32)}


def _trainer(method, **config):
    net = _net()
    trainer = IEGTrainer(net, C, TrainerConfig(method=method, **config), num_train_examples=16)
    trainer.compile(optimizer=TF1Momentum(0.1))
    return trainer


def test_batchnorm_statistics_move_only_through_the_weak_view():
    for method in ("ieg", "l2r", "supervised"):
        trainer = _trainer(method)
        data = _batch()
        reference = _net()
        reference.set_weights(trainer.network.get_weights())
        reference(data["weak"], training=True)      # exactly one weak-view update
        before = [v.numpy() for v in trainer.network.non_trainable_variables]
        step = trainer.compute_gradients(data, trainer.step_seed())
        for got, want in zip(trainer.network.non_trainable_variables, before):
            np.testing.assert_array_equal(got, want)    # computing a step assigns nothing
        trainer.commit_state(step.state)
        bn = [v.numpy() for v in trainer.network.non_trainable_variables]
        expected = [v.numpy() for v in reference.non_trainable_variables]
        assert any(np.max(np.abs(e - r)) > 1e-4 for e, r in
                   zip(expected, [v.numpy() for v in _net().non_trainable_variables])), "the update must be visible"
        for got, want in zip(bn, expected):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=method)


def test_ieg_gradient_reaches_every_variable_through_all_loss_terms():
    trainer = _trainer("ieg")
    grads, logs, (omega, lam, guess), _ = trainer.compute_gradients(_batch(), trainer.step_seed())
    assert all(g is not None and np.all(np.isfinite(g)) and np.any(g.numpy() != 0) for g in grads)
    for name in ("sup_loss", "mix_probe_loss", "mix_unl_loss", "kl_loss", "l2_loss", "probe_loss"):
        assert np.isfinite(logs[name][0]) and float(logs[name][0]) > 0, name
    np.testing.assert_allclose(np.sum(omega), 1.0, atol=1e-4)  # omega* sums to 1 unless all gradients are >= 0
    assert set(np.unique(lam.numpy())) <= {0.0, 1.0}
    np.testing.assert_allclose(np.sum(guess, axis=1), 1.0, rtol=1e-5)


def test_total_loss_is_the_sum_of_the_reference_terms():
    trainer = _trainer("ieg")
    logs = trainer.compute_gradients(_batch(), trainer.step_seed()).logs
    value = {k: float(v[0]) for k, v in logs.items()}
    expected = (value["sup_loss"] + value["mix_probe_loss"] + 5.0 * value["mix_unl_loss"]
                + 20.0 * value["kl_loss"] + value["l2_loss"])
    np.testing.assert_allclose(value["loss"], expected, rtol=1e-5)


def test_clean_threshold_split_keeps_given_labels_for_high_weight_examples():
    trainer = _trainer("ieg", clean_threshold=1.0)
    step = trainer.compute_gradients(_batch(), trainer.step_seed())
    logs, omega = step.logs, step.per_example[0]
    expected = np.mean(omega.numpy() * 8 < 1.0)
    np.testing.assert_allclose(float(logs["noisy_frac"][0]), expected)
    assert 0.0 < expected < 1.0


def test_guess_views_weak_guesses_from_the_weak_view_alone():
    data = _batch()
    guesses = {}
    for views in ("weak_strong", "weak"):
        trainer = _trainer("ieg", guess_views=views)
        z = trainer.network(data["weak"], training=True)     # the step's weak forward (training-mode BN)
        zs = trainer.network(data["strong"], training=True)
        guesses[views] = trainer.compute_gradients(data, trainer.step_seed()).per_example[2].numpy()
        expected = losses.guess_label([z, zs] if views == "weak_strong" else [z])
        np.testing.assert_allclose(guesses[views], expected, rtol=1e-5, atol=1e-6, err_msg=views)
    assert np.max(np.abs(guesses["weak"] - guesses["weak_strong"])) > 1e-3   # the strong view does count by default
    with np.testing.assert_raises_regex(ValueError, "guess_views"):
        TrainerConfig(guess_views="strong")
