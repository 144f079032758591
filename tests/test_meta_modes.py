"""Cheaper meta steps (issue 7): last_layer and approx_vjp against exact, and reusing omega*, lambda* (meta_every)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from subprocess_result import run_result
from ieg_tf import losses, meta
from ieg_tf.config import META_GRAD_MODES, TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

B, C, D = 4, 3, 5


def _mlp64(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,), dtype="float64")
    h = keras.layers.Dense(6, dtype="float64")(inputs)
    h = keras.layers.BatchNormalization(dtype="float64", momentum=0.9)(h)
    h = keras.layers.Activation("tanh", dtype="float64")(h)
    return keras.Model(inputs, keras.layers.Dense(C, dtype="float64")(h))


def _linear64(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,), dtype="float64")
    return keras.Model(inputs, keras.layers.Dense(C, dtype="float64")(inputs))


class _Problem:
    """IEG's look-ahead loss on a float64 network: guess kept differentiable (SPEC 8.3), momentum accumulators."""

    def __init__(self, net, seed=1):
        rng = np.random.default_rng(seed)
        self.net = net
        self.x, self.x_strong = (tf.constant(rng.normal(size=(B, D))) for _ in range(2))
        self.y = tf.one_hot([0, 1, 2, 1], C, dtype=tf.float64)
        self.xp, self.yp = tf.constant(rng.normal(size=(C, D))), tf.one_hot([0, 1, 2], C, dtype=tf.float64)
        self.accumulators = [tf.constant(rng.normal(size=v.shape)) for v in net.trainable_variables]

    def forward(self):
        params, non_trainable = self.net.trainable_variables, self.net.non_trainable_variables
        z, _ = self.net.stateless_call(params, non_trainable, self.x, training=True)
        zs, _ = self.net.stateless_call(params, non_trainable, self.x_strong, training=True)
        return z, losses.guess_label([z, zs])

    def look_loss(self, outputs, omega, lam):
        z, guess = outputs
        target = lam[:, None] * self.y + (1 - lam[:, None]) * guess
        return (tf.reduce_sum(omega * losses.cross_entropy(target, z))
                + losses.l2_penalty(self.net.trainable_variables, 5e-4))

    def run(self, mode, step_size=0.1, omega=None, lam=None):
        omega = np.full(B, 1.0 / B) if omega is None else omega
        lam = np.full(B, 0.9) if lam is None else lam
        return meta.meta_gradients(
            network=self.net, forward_fn=self.forward, look_loss_fn=self.look_loss, omega0=tf.constant(omega),
            lambda0=tf.constant(lam), probe_images=self.xp, probe_labels_onehot=self.yp,
            accumulators=self.accumulators, step_size=step_size, momentum=0.9, probe_weight_decay=5e-4, mode=mode)


def test_last_layer_is_exact_when_the_network_is_its_classifier():
    problem = _Problem(_linear64())
    assert meta.classifier_indices(problem.net) == [0, 1]
    exact, last = problem.run("exact"), problem.run("last_layer")
    assert np.max(np.abs(exact.grad_omega)) > 1e-3 and np.max(np.abs(exact.grad_lambda)) > 1e-5
    np.testing.assert_allclose(last.grad_omega, exact.grad_omega, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(last.grad_lambda, exact.grad_lambda, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(last.probe_loss, exact.probe_loss, rtol=1e-12)


def test_last_layer_is_the_exact_gradient_of_a_classifier_only_look_ahead():
    problem = _Problem(_mlp64())
    assert meta.classifier_indices(problem.net) == [4, 5]  # the output Dense, not the hidden one
    omega0, lambda0 = np.full(B, 1.0 / B), np.full(B, 0.9)
    last, exact = problem.run("last_layer"), problem.run("exact")
    assert abs(float(last.probe_loss) - float(exact.probe_loss)) > 1e-4  # the body really keeps its weights
    h = 1e-5
    for i in range(B):
        e = np.eye(B)[i] * h
        fd_omega = (float(problem.run("last_layer", omega=omega0 + e).probe_loss)
                    - float(problem.run("last_layer", omega=omega0 - e).probe_loss)) / (2 * h)
        fd_lambda = (float(problem.run("last_layer", lam=lambda0 + e).probe_loss)
                     - float(problem.run("last_layer", lam=lambda0 - e).probe_loss)) / (2 * h)
        np.testing.assert_allclose(last.grad_omega[i], fd_omega, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(last.grad_lambda[i], fd_lambda, rtol=1e-5, atol=1e-9)
    assert np.max(np.abs(last.grad_omega - exact.grad_omega)) > 1e-3  # a different (cheaper) quantity


def test_approx_vjp_is_minus_eta_times_per_example_gradients_against_the_probe_gradient():
    problem = _Problem(_mlp64())
    net, eta = problem.net, 0.1
    params = net.trainable_variables
    omega0, lambda0 = tf.fill([B], tf.constant(1.0 / B, tf.float64)), tf.fill([B], tf.constant(0.9, tf.float64))
    with tf.GradientTape() as tape:
        probe_loss, _ = meta.probe_objective(net, params, net.non_trainable_variables, problem.xp, problem.yp, 5e-4)
    v = tape.gradient(probe_loss, params)
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            inner.watch([omega0, lambda0])
            look = problem.look_loss(problem.forward(), omega0, lambda0)
        d_omega, d_lambda = inner.gradient(look, [omega0, lambda0])  # per-example CE_i and omega_i dCE_i/dlambda_i

    def pulled_back(d):
        jacobian = outer.jacobian(d, params)
        return -eta * sum(np.tensordot(j.numpy(), g.numpy(), axes=g.shape.rank) for j, g in zip(jacobian, v))

    approx = problem.run("approx_vjp", step_size=eta)
    assert np.max(np.abs(approx.grad_omega)) > 1e-3 and np.max(np.abs(approx.grad_lambda)) > 1e-5
    np.testing.assert_allclose(approx.grad_omega, pulled_back(d_omega), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(approx.grad_lambda, pulled_back(d_lambda), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(approx.probe_loss, probe_loss, rtol=1e-12)  # the probe loss is read at theta


@pytest.mark.parametrize("make_net", [_linear64, _mlp64])
def test_approx_vjp_agrees_with_exact_to_first_order_in_the_step_size(make_net):
    problem = _Problem(make_net())

    def relative_errors(eta):
        exact, approx = problem.run("exact", eta), problem.run("approx_vjp", eta)
        return [np.max(np.abs(e - a)) / np.max(np.abs(e)) for e, a in
                ((exact.grad_omega, approx.grad_omega), (exact.grad_lambda, approx.grad_lambda))]

    coarse, fine = relative_errors(1e-2), relative_errors(1e-4)
    for c, f in zip(coarse, fine):
        assert f < 2e-3 and f < c / 30  # the gap shrinks like eta: the gradients agree to first order
    assert max(coarse) > 1e-4  # and at a finite step they are really different


# ----------------------------------------------------------------------------------------------- the trainer
def _blobs(n_per_class=8):
    x, noisy, true, centers = tinydata.blobs(per_class=n_per_class)
    return x, noisy, true, tinydata.probe(centers)


def _trainer(network=None, num_examples=32, **config):
    trainer = IEGTrainer(network or tinydata.mlp(), 4, TrainerConfig(**config), num_train_examples=num_examples)
    trainer.compile(optimizer=TF1Momentum(0.1))
    return trainer


def _batch(ids, seed=0):
    x, noisy, true, (px, py) = _blobs()
    rng = np.random.default_rng(seed)
    ids = np.asarray(ids)
    return {"weak": tf.constant(x[ids]), "strong": tf.constant(x[ids] + 0.3 * rng.normal(size=x[ids].shape),
                                                               tf.float32),
            "label": tf.constant(noisy[ids]), "id": tf.constant(ids, tf.int32), "true_label": tf.constant(true[ids]),
            "probe_image": tf.constant(np.tile(px, (2, 1, 1, 1))), "probe_label": tf.constant(np.tile(py, 2))}


@pytest.mark.parametrize("method", ["ieg", "l2r"])
def test_every_mode_gives_finite_nontrivial_weights_on_a_hidden_layer_network(method):
    data = _batch(np.arange(8))
    results = {}
    for mode in META_GRAD_MODES:
        trainer = _trainer(method=method, meta_grad_mode=mode)
        step = trainer.compute_gradients(data, trainer.step_seed())
        omega, lam, _ = step.per_example
        assert all(np.all(np.isfinite(g)) for g in step.grads), mode
        assert float(step.logs["probe_loss"][0]) > 0 and np.isfinite(float(step.logs["probe_acc"][0])), mode
        np.testing.assert_allclose(np.sum(omega), 1.0, atol=1e-4, err_msg=mode)  # some example has weight > 0
        assert np.all(omega.numpy() >= 0) and np.ptp(omega.numpy()) > 1e-3, mode  # and they are not uniform
        assert set(np.unique(lam.numpy())) <= {0.0, 1.0}, mode
        results[mode] = omega.numpy()
    assert not np.allclose(results["exact"], results["last_layer"])
    if method == "l2r":
        # L2R takes the gradient at omega0 = 0 with no momentum, where theta' = theta: first order is exact.
        np.testing.assert_allclose(results["approx_vjp"], results["exact"], rtol=1e-4, atol=1e-6)
    else:
        assert not np.allclose(results["exact"], results["approx_vjp"])


def test_last_layer_needs_a_dense_classifier():
    inputs = keras.Input(tinydata.SHAPE)
    conv = keras.layers.Conv2D(4, 3)(inputs)
    net = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(conv))
    with pytest.raises(ValueError, match="last_layer needs .*Dense"):
        IEGTrainer(net, 4, TrainerConfig(meta_grad_mode="last_layer"))
    IEGTrainer(net, 4, TrainerConfig(meta_grad_mode="approx_vjp"))  # the other modes do not care


def test_config_rejects_unknown_modes_and_bad_meta_every():
    with pytest.raises(ValueError, match="meta_grad_mode"):
        TrainerConfig(meta_grad_mode="first_order")
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="meta_every"):
            TrainerConfig(meta_every=bad)
    assert TrainerConfig(meta_every=np.int64(3)).meta_every == 3


def _omega_used(trainer, data):
    """omega* the step applied, read from the per-example sums it adds to."""
    before = trainer.example_stats.omega_sum.numpy().copy()
    trainer.train_on_batch(data)
    return (trainer.example_stats.omega_sum.numpy() - before)[data["id"].numpy()]


def test_meta_every_solves_on_multiples_of_k_and_reuses_the_stored_weights_in_between():
    trainer = _trainer(meta_every=3)
    data = _batch(np.arange(8))
    cache = trainer.meta_cache
    used = [_omega_used(trainer, data)]
    assert np.ptp(used[0]) > 1e-3
    np.testing.assert_allclose(cache.relative_weight.numpy()[:8], used[0] * 8, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cache.relative_weight.numpy()[8:], -1.0)  # never solved
    used += [_omega_used(trainer, data) for _ in range(3)]
    for reused in used[1:3]:  # steps 1 and 2: the stored weights, renormalized
        np.testing.assert_allclose(reused, used[0] / np.sum(used[0]), rtol=1e-5, atol=1e-7)
    assert np.max(np.abs(used[3] - used[0])) > 1e-4  # step 3 solves again, on the updated network
    np.testing.assert_allclose(cache.relative_weight.numpy()[:8], used[3] * 8, rtol=1e-5, atol=1e-6)


def test_reused_steps_take_stored_values_by_id_and_the_last_batch_means_for_new_examples():
    trainer = _trainer(meta_every=4, meta_grad_mode="last_layer")  # the cheapest mode; the cache is the same
    trainer.train_on_batch(_batch(np.arange(8)))  # step 0 solves ids 0..7
    cache = trainer.meta_cache
    rel, lam = cache.relative_weight.numpy(), cache.label_mix.numpy()
    mean_rel, mean_lam = float(cache.mean_relative_weight.numpy()), float(cache.mean_label_mix.numpy())
    np.testing.assert_allclose(mean_rel, np.mean(rel[:8]), rtol=1e-6)
    np.testing.assert_allclose(mean_lam, np.mean(lam[:8]), rtol=1e-6)
    ids = np.array([0, 1, 2, 3, 20, 21, 22, 23])  # half solved at step 0, half never seen
    step = trainer.compute_gradients(_batch(ids), trainer.step_seed())  # iteration 1: reuse
    omega, label_mix, _ = step.per_example
    expected_rel = np.concatenate([rel[:4], np.full(4, mean_rel)])
    np.testing.assert_allclose(omega, expected_rel / expected_rel.sum(), rtol=1e-6)
    np.testing.assert_allclose(label_mix, np.concatenate([lam[:4], np.full(4, mean_lam)]), rtol=1e-6)
    assert float(step.logs["probe_loss"][1]) == 0.0 and float(step.logs["probe_acc"][1]) == 0.0  # no probe batch
    before = cache.relative_weight.numpy().copy()
    trainer.train_on_batch(_batch(ids))  # a reuse step stores nothing: the new ids stay "never solved"
    np.testing.assert_array_equal(cache.relative_weight.numpy(), before)


def test_without_example_ids_reuse_steps_take_the_last_batch_means():
    trainer = _trainer(num_examples=None, meta_every=2, meta_grad_mode="last_layer")
    trainer.train_on_batch(_batch(np.arange(8)))
    assert not hasattr(trainer.meta_cache, "relative_weight")
    step = trainer.compute_gradients(_batch(np.arange(8, 16)), trainer.step_seed())
    omega, label_mix, _ = step.per_example
    np.testing.assert_allclose(omega, np.full(8, 1 / 8), rtol=1e-6)
    np.testing.assert_allclose(label_mix, np.full(8, trainer.meta_cache.mean_label_mix.numpy()), rtol=1e-6)


def test_cache_is_trainer_state_only_when_weights_are_reused():
    names = {v.path for v in _trainer(meta_every=2).variables}
    assert any("relative_weight" in n for n in names)
    assert not any("meta_cache" in n for n in (v.path for v in _trainer().variables))
    assert _trainer(method="supervised", meta_every=2).meta_cache is None


@pytest.mark.parametrize("mode,every", [("exact", 2), ("approx_vjp", 2), ("last_layer", 1)])
def test_fit_with_each_mode_under_xla(mode, every):
    x, noisy, true, (px, py) = _blobs(n_per_class=16)
    # ce_factor=0 drops the MixUp forward, which no mode touches, to keep the XLA compile short.
    trainer = _trainer(num_examples=len(x), meta_grad_mode=mode, meta_every=every, ce_factor=0.0)
    trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=True)
    history = trainer.fit(tinydata.train_dataset(x, noisy, true, px, py, batch_size=16), steps_per_epoch=3,
                          epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 3
    for name in ("loss", "probe_loss", "probe_acc", "omega_max", "train_acc"):
        assert np.all(np.isfinite(history.history[name])), name
    # With reuse, probe_loss averages the solving steps (0 and 2) only: reuse steps enter with weight 0.
    assert history.history["probe_loss"][0] > 0.5
    if every > 1:
        solved = np.sum(trainer.meta_cache.relative_weight.numpy() >= 0)
        assert 16 <= solved <= 32, solved  # 16 ids per solving step, fewer if the two batches share ids


@pytest.mark.parametrize("mode", ["approx_vjp", "last_layer"])
def test_xla_step_with_a_conditional_meta_step_matches_the_graph_step(mode):
    # l2r: the same meta-step code as ieg, compiles faster. Dense layers only, so XLA:CPU's conditional is fast.
    trainer = _trainer(method="l2r", meta_grad_mode=mode, meta_every=2)
    data, seed = _batch(np.arange(8)), tf.constant([1, 2])

    def step(batch, s):
        result = trainer.compute_gradients(batch, s)
        return result.grads, result.per_example[0]

    graph, xla = tf.function(step), tf.function(step, jit_compile=True)
    for iteration in (0, 1):  # solve, then reuse
        trainer.optimizer.iterations.assign(iteration)
        want, got = graph(data, seed), xla(data, seed)
        for a, b in zip(want[0], got[0]):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(want[1], got[1], rtol=1e-3, atol=1e-6)


def test_selecting_cached_weights_without_a_cond_gives_the_same_step():
    trainer = _trainer(meta_every=2, meta_grad_mode="last_layer")
    trainer.train_on_batch(_batch(np.arange(8)))  # fills the cache for ids 0..7
    data = _batch(np.array([0, 1, 2, 3, 20, 21, 22, 23]), seed=1)
    for iteration in (1, 2):  # reuse, then solve
        trainer.optimizer.iterations.assign(iteration)
        results = []
        for jit in (False, True):  # jit_compile=True on a CPU-only machine selects instead of branching
            trainer.jit_compile = jit
            assert trainer._skip_meta_by_cond() is not jit
            results.append(trainer.compute_gradients(data, tf.constant([1, 2])))
        by_cond, by_select = results
        for a, b in zip(by_cond.per_example[:2], by_select.per_example[:2]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
        for a, b in zip(by_cond.grads, by_select.grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert float(by_select.logs["probe_loss"][1]) == float(iteration % 2 == 0)


_MIRRORED = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import tinydata
from subprocess_result import run_result
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer
x, noisy, true, centers = tinydata.blobs(per_class=16)
ds = tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers, per_class=4), batch_size=16)
batch = {k: v.numpy() for k, v in next(iter(ds)).items()}
config = TrainerConfig(meta_grad_mode="approx_vjp", meta_every=2)
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    trainer = IEGTrainer(tinydata.mlp(), 4, config, num_train_examples=64)
    trainer.compile()
reference = IEGTrainer(tinydata.mlp(), 4, config, num_train_examples=64)
reference.compile()
reference.network.set_weights(trainer.network.get_weights())
want = np.full(64, -1.0)
for r in range(2):  # each replica solves its half of the global batch
    half = {k: v[8 * r:8 * (r + 1)] for k, v in batch.items()}
    want[half["id"]] = reference.compute_gradients(half, reference.step_seed(replica_id=r)).per_example[0] * 8
trainer.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=2, epochs=1, verbose=0)
copies = [v.numpy() for v in trainer.meta_cache.relative_weight.value.values]
print("RESULT " + json.dumps({"diff": float(max(np.max(np.abs(c - want)) for c in copies)),
                              "copies": len(copies), "solved": int(np.sum(copies[0] >= 0))}))
"""


def test_cache_under_two_replicas_holds_every_replicas_examples():
    out = run_result(["-c", _MIRRORED])
    # Step 0 solved 16 ids, 8 per replica; step 1 reused and wrote nothing; both replicas hold the same store.
    assert out["copies"] == 2 and out["solved"] == 16, out
    assert out["diff"] < 1e-5, out
