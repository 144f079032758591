"""The meta step: second-order gradients against finite differences, and BatchNorm statistics (SPEC 1.2, 1.6)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ieg_tf import losses, meta, random_ops
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
    grads, logs, (omega, lam, guess) = trainer.compute_gradients(_batch(), trainer.step_seed())[:3]
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


def _softmax_ce(targets, logits):
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=-1)


def _rms_normalized(logits):
    return logits / tf.sqrt(tf.reduce_mean(tf.square(logits)) + 1e-8)


@pytest.mark.parametrize("threshold", [None, 1.0])
def test_ieg_step_losses_and_gradient_match_a_hand_computation(threshold):
    """Every term of the training loss (SPEC 1.3-1.7) written out again from the formulas, with omega*, lambda*
    taken from the step (the meta step has its own tests), and the gradient of their sum against the step's."""
    trainer = _trainer("ieg", clean_threshold=threshold)
    cfg, net, data, b = trainer.config, trainer.network, _batch(), 8
    seed = trainer.step_seed()
    step = trainer.compute_gradients(data, seed)
    omega, lam, step_guess = (t.numpy().astype(np.float32) for t in step.per_example)
    x, xs, xp = data["weak"], data["strong"], data["probe_image"]
    y, yp = tf.one_hot(data["label"], C), tf.one_hot(data["probe_label"], C)
    # The step's random draws, from its seed: B probe rows with replacement, then one MixUp permutation and
    # coefficient m = max(a, 1 - a), a = u^(1 / beta) / 2, over the 3B rows.
    draw_seed, mix_seed = random_ops.split(seed, 2)
    rows = random_ops.randint([b], draw_seed, 0, b)
    perm_seed, coef_seed = random_ops.split(mix_seed, 2)
    perm = tf.argsort(random_ops.uniform([3 * b], perm_seed))
    a = random_ops.uniform([3 * b], coef_seed) ** (1.0 / cfg.mixup_beta) / 2.0
    m = tf.maximum(a, 1.0 - a)[:, None]
    with tf.GradientTape() as tape:
        z, zs = net(x, training=True), net(xs, training=True)
        mean_probs = (tf.nn.softmax(_rms_normalized(z)) + tf.nn.softmax(_rms_normalized(zs))) / 2
        sharp = mean_probs ** (1.0 / cfg.sharpen_temperature)
        guess = tf.stop_gradient(sharp / tf.reduce_sum(sharp, axis=1, keepdims=True))
        lam_c = lam[:, None]
        sup = 0.5 * (tf.reduce_mean(_softmax_ce(lam_c * y + (1 - lam_c) * guess, z))
                     + tf.reduce_sum(omega * _softmax_ce(cfg.grad_eps_init * y + (1 - cfg.grad_eps_init) * guess, z)))
        keep_label = np.zeros(b, bool) if threshold is None else omega * b >= threshold
        unlabeled = tf.where(keep_label[:, None], y, guess)
        images = tf.concat([tf.gather(xp, rows), x, xs], 0)
        targets = tf.concat([tf.gather(yp, rows), unlabeled, unlabeled], 0)
        logits = net(m * images + (1 - m) * tf.gather(images, perm), training=True)
        mixed_targets = m * targets + (1 - m) * tf.gather(targets, perm)
        mix_probe = tf.reduce_mean(_softmax_ce(mixed_targets[:b], _rms_normalized(logits[:b])))
        mix_unl = tf.reduce_mean(_softmax_ce(mixed_targets[b:], tf.concat(
            [_rms_normalized(logits[b:2 * b]), _rms_normalized(logits[2 * b:])], 0)))
        p_weak = tf.nn.softmax(tf.stop_gradient(z))
        kl = tf.reduce_mean(tf.reduce_sum(p_weak * (tf.math.log(p_weak) - tf.nn.log_softmax(zs)), axis=1))
        l2 = cfg.weight_decay * 0.5 * tf.add_n([tf.reduce_sum(v ** 2) for v in net.trainable_variables])
        total = sup + mix_probe + cfg.ce_factor * mix_unl + cfg.consistency_factor * kl + l2
    expected = dict(sup_loss=sup, mix_probe_loss=mix_probe, mix_unl_loss=mix_unl, kl_loss=kl, l2_loss=l2, loss=total)
    for name, value in expected.items():
        np.testing.assert_allclose(float(step.logs[name][0]), float(value), rtol=2e-5, err_msg=name)
    np.testing.assert_allclose(step_guess, guess, rtol=1e-5, atol=1e-6)
    if threshold is not None:
        assert 0 < keep_label.sum() < b  # both sides of the split are exercised
    for got, want in zip(step.grads, tape.gradient(total, net.trainable_variables)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_meta_probe_loss_is_read_at_the_hand_built_look_ahead_point():
    """L_probe(theta') with theta' = theta - eta (mu a + G), G = d L_look / d theta at (omega0, lambda0), and the
    probe objective CE + wd_p / 2 sum ||theta'||^2, written out again by hand."""
    net = _net()
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(B, D)), tf.float32)
    y = tf.one_hot([0, 1, 2, 1], C)
    xp, yp = tf.constant(rng.normal(size=(C, D)), tf.float32), tf.one_hot([0, 1, 2], C)
    params, non_trainable = net.trainable_variables, net.non_trainable_variables
    accumulators = [tf.constant(rng.normal(size=v.shape), tf.float32) for v in params]
    omega0, lambda0 = tf.fill([B], 1.0 / B), tf.fill([B], 0.9)
    eta, mu, wd_look, wd_probe = 0.1, 0.9, 5e-4, 3e-2

    def forward():
        return net.stateless_call(params, non_trainable, x, training=True)[0]

    def look_loss(z, omega, lam):
        target = lam[:, None] * y + (1 - lam[:, None]) * tf.nn.softmax(z)
        return tf.reduce_sum(omega * losses.cross_entropy(target, z)) + losses.l2_penalty(params, wd_look)

    m = meta.meta_gradients(network=net, forward_fn=forward, look_loss_fn=look_loss, omega0=omega0, lambda0=lambda0,
                            probe_images=xp, probe_labels_onehot=yp, accumulators=accumulators, step_size=eta,
                            momentum=mu, probe_weight_decay=wd_probe)
    with tf.GradientTape() as tape:
        z = net(x, training=True)
        target = lambda0[:, None] * y + (1 - lambda0[:, None]) * tf.nn.softmax(z)
        look = tf.reduce_sum(omega0 * _softmax_ce(target, z)) + wd_look * 0.5 * tf.add_n(
            [tf.reduce_sum(v ** 2) for v in params])
    grads = tape.gradient(look, params)
    theta_prime = [p - eta * (mu * acc + g) for p, acc, g in zip(params, accumulators, grads)]
    probe_logits, _ = net.stateless_call(theta_prime, non_trainable, xp, training=True)
    want = (tf.reduce_mean(_softmax_ce(yp, probe_logits))
            + wd_probe * 0.5 * tf.add_n([tf.reduce_sum(v ** 2) for v in theta_prime]))
    np.testing.assert_allclose(float(m.probe_loss), float(want), rtol=1e-5)
    np.testing.assert_allclose(m.probe_logits, probe_logits, rtol=1e-5, atol=1e-6)
    # The momentum and the probe's L2 term each move the figure: the check above can see either one missing.
    without_momentum = [p - eta * g for p, g in zip(params, grads)]
    assert abs(float(want) - float(tf.reduce_mean(_softmax_ce(yp, net.stateless_call(
        without_momentum, non_trainable, xp, training=True)[0])))) > 1e-2
    assert wd_probe * 0.5 * sum(float(tf.reduce_sum(v ** 2)) for v in theta_prime) > 1e-2


def test_meta_stop_guess_gradient_cuts_the_guess_out_of_the_look_ahead_gradient():
    """The step's probe loss is read at theta' = theta - eta G (fresh optimizer: no momentum yet), G taken with
    the guess differentiable (the reference) or stop-gradiented (--meta_stop_guess_gradient), rebuilt by hand."""
    data, probe_losses = _batch(), {}
    for stop in (False, True):
        trainer = _trainer("ieg", meta_stop_guess_gradient=stop)
        cfg, net = trainer.config, trainer.network
        step = trainer.compute_gradients(data, trainer.step_seed())
        y = tf.one_hot(data["label"], C)
        with tf.GradientTape() as tape:
            z, zs = net(data["weak"], training=True), net(data["strong"], training=True)
            guess = losses.guess_label([z, zs], cfg.sharpen_temperature)
            guess = tf.stop_gradient(guess) if stop else guess
            target = cfg.grad_eps_init * y + (1 - cfg.grad_eps_init) * guess
            look = tf.reduce_mean(_softmax_ce(target, z)) + losses.l2_penalty(net.trainable_variables,
                                                                             cfg.weight_decay)
        grads = tape.gradient(look, net.trainable_variables)
        theta_prime = [p - cfg.meta_stepsize * g for p, g in zip(net.trainable_variables, grads)]
        logits, _ = net.stateless_call(theta_prime, net.non_trainable_variables, data["probe_image"], training=True)
        want = (tf.reduce_mean(_softmax_ce(tf.one_hot(data["probe_label"], C), logits))
                + losses.l2_penalty(theta_prime, cfg.weight_decay))
        probe_losses[stop] = float(step.logs["probe_loss"][0])
        np.testing.assert_allclose(probe_losses[stop], float(want), rtol=1e-5, err_msg=f"stop={stop}")
    assert abs(probe_losses[True] - probe_losses[False]) > 1e-4  # the flag changes the look-ahead


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
