"""IEGTrainer's guards against inputs and uses that used to train wrongly or fail deep in Keras: mixed_float16 loss
scaling, uint8 evaluation images, out-of-range or one-hot labels and ids, .keras saving, subclassed networks,
`trainable` changed after building, uneven replica batches, and Keras arguments the trainer would ignore."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tinydata
from ieg_tf import export, model
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum


def _data(batch_size=16):
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    return x, true, tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=batch_size)


def _trainer(method="supervised", network=None, **config):
    trainer = IEGTrainer(network or tinydata.mlp(), 4, TrainerConfig(method=method, **config), num_train_examples=64)
    trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=False)
    return trainer


def _max_change(before, variables):
    return max(float(np.max(np.abs(v.numpy() - b))) for v, b in zip(variables, before))


def test_mixed_float16_steps_move_the_weights_like_float32_and_the_look_ahead_reads_the_momentum():
    """Keras wraps the optimizer in a LossScaleOptimizer that divides the gradients by the loss scale (32768): an
    unscaled loss left the weights almost still, and the wrapper hid the TF1Momentum accumulators."""
    batch = next(iter(_data()[2]))
    moved = {}
    try:
        for policy in ("float32", "mixed_float16"):
            keras.mixed_precision.set_global_policy(policy)
            trainer = _trainer()
            before = [v.numpy() for v in trainer.network.trainable_variables]
            trainer.train_on_batch(batch)
            moved[policy] = _max_change(before, trainer.network.trainable_variables)
        assert type(trainer.optimizer).__name__ == "LossScaleOptimizer"
        assert isinstance(trainer.base_optimizer, TF1Momentum)
        slots = trainer._accumulators()
        assert slots is not None
        variables = trainer.network.trainable_variables
        assert all(a is trainer.base_optimizer.accumulator(v) for a, v in zip(slots, variables))
        assert any(np.abs(a.numpy()).max() > 0 for a in slots)  # the step's gradient, unscaled, is in the slots
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert moved["float32"] > 1e-2
    assert 0.5 < moved["mixed_float16"] / moved["float32"] < 2.0, moved


def test_predict_and_evaluate_scale_uint8_images_like_the_exported_model():
    trainer = _trainer()
    images = np.random.default_rng(0).integers(0, 256, size=(24, *tinydata.SHAPE)).astype(np.uint8)
    labels = np.arange(24, dtype=np.int32) % 4
    scaled = tinydata.eval_dataset(export.scale_images(images).numpy(), labels)
    history = trainer.fit(_data()[2], steps_per_epoch=1, epochs=1, verbose=0, validation_data=(images, labels))
    np.testing.assert_allclose(trainer.predict(images, verbose=0), trainer.predict(scaled, verbose=0), atol=1e-6)
    on_scaled = trainer.evaluate(scaled, verbose=0, return_dict=True)
    on_uint8 = trainer.evaluate(images, labels, verbose=0, return_dict=True)
    np.testing.assert_allclose(on_uint8["loss"], on_scaled["loss"], rtol=1e-5)
    np.testing.assert_allclose(history.history["val_loss"], [on_scaled["loss"]], rtol=1e-5)


def test_out_of_range_labels_and_ids_stop_the_step_with_the_key_and_range():
    trainer = _trainer()
    batch = next(iter(_data()[2]))
    cases = [("label", lambda v: v + 1, r"\blabel holds values outside \[0, 4\)"),
             ("label", lambda v: v - 4, r"\blabel holds values outside \[0, 4\)"),
             ("probe_label", lambda v: v + 4, r"probe_label holds values outside \[0, 4\)"),
             ("id", lambda v: v + 64, r"\bid holds values outside \[0, 64\)"),
             ("id", lambda v: v - 64, r"\bid holds values outside \[0, 64\)")]
    for key, corrupt, message in cases:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            trainer.train_on_batch({**batch, key: corrupt(batch[key])})
    x, true, _ = _data()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"evaluation label holds values outside \[0, 4\)"):
        trainer.evaluate(x[:8], true[:8] + 4, verbose=0)


@pytest.mark.parametrize("method", ["supervised", "ieg"])
def test_out_of_range_labels_stop_an_xla_fit_that_cannot_assert_them(method):
    """XLA drops the asserts above: the bad values are counted instead, the logged loss becomes NaN and fit stops
    at that step naming the cause. Before, the labels silently became all-zero targets."""
    x, noisy, true, centers = tinydata.blobs(per_class=16)
    bad = noisy.copy()
    bad[5] = 7  # one label of 64 outside [0, 4)
    trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=method), num_train_examples=64)
    trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=True)
    data = tinydata.train_dataset(x, bad, true, *tinydata.probe(centers), batch_size=16)
    with pytest.raises(ValueError, match=r"1 labels or example ids outside their range reached the training step by "
                                         r"step \d+: labels must lie in \[0, 4\)"):
        trainer.fit(data, steps_per_epoch=8, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) <= 4  # stopped at the batch holding example 5, within the first epoch
    good = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=method), num_train_examples=64)
    good.compile(optimizer=TF1Momentum(0.1), jit_compile=True)
    history = good.fit(tinydata.train_dataset(x, noisy, true, *tinydata.probe(centers), batch_size=16),
                       steps_per_epoch=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1]) and "input_errors" not in history.history


def test_one_hot_labels_and_uint8_training_images_are_refused_naming_the_remedy():
    trainer = _trainer()
    batch = next(iter(_data()[2]))
    for key in ("label", "probe_label"):
        with pytest.raises(ValueError, match=rf"'{key}' must be class labels of shape \[batch\].*tf.argmax"):
            trainer.train_on_batch({**batch, key: tf.one_hot(batch[key], 4)})
    with pytest.raises(ValueError, match="'weak' must be float.*got uint8.*scale_images"):
        trainer.train_on_batch({**batch, "weak": tf.zeros(batch["weak"].shape, tf.uint8)})
    x, true, _ = _data()
    with pytest.raises(ValueError, match=r"'evaluation label' must be class labels.*tf.argmax"):
        trainer.evaluate(x[:8], np.eye(4)[true[:8]], verbose=0)


def test_keras_arguments_the_trainer_would_ignore_are_refused():
    trainer = _trainer()
    data = _data()[2]
    for argument in ({"class_weight": {0: 2.0, 1: 1.0, 2: 1.0, 3: 1.0}}, {"sample_weight": np.ones(16)}):
        with pytest.raises(ValueError, match=f"does not take {next(iter(argument))}"):
            trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0, **argument)
    for argument in ({"loss": "sparse_categorical_crossentropy"}, {"metrics": ["accuracy"]}):
        with pytest.raises(ValueError, match=f"compile does not take {next(iter(argument))}.*optimizer"):
            trainer.compile(optimizer=TF1Momentum(0.1), **argument)
    assert int(trainer.optimizer.iterations) == 0


def test_an_optimizer_without_a_momentum_accumulator_warns_that_the_look_ahead_drops_meta_momentum(recwarn):
    def compile_with(optimizer, method="ieg", **config):
        trainer = IEGTrainer(tinydata.mlp(), 4, TrainerConfig(method=method, **config), num_train_examples=64)
        trainer.compile(optimizer=optimizer, jit_compile=False)
        return [str(w.message) for w in recwarn.list if "meta_momentum" in str(w.message)]

    messages = compile_with(keras.optimizers.SGD(0.1, momentum=0.9))
    assert len(messages) == 1 and "SGD has no momentum accumulator" in messages[0], messages
    assert "TF1Momentum" in messages[0] and "meta_momentum=0.0" in messages[0]
    recwarn.clear()
    assert compile_with(keras.optimizers.Adam(1e-3), method="l2r")
    recwarn.clear()
    # the reference's optimizer (also under the mixed_float16 wrapper), a plain look-ahead asked for, supervised
    assert not compile_with(TF1Momentum(0.1))
    assert not compile_with(keras.optimizers.LossScaleOptimizer(TF1Momentum(0.1)))
    assert not compile_with(keras.optimizers.SGD(0.1), meta_momentum=0.0)
    assert not compile_with(keras.optimizers.Adam(1e-3), method="supervised")


def _assert_same_trainer(loaded, trainer):
    assert isinstance(loaded, IEGTrainer)
    assert (loaded.num_classes, loaded.config, loaded.num_train_examples) == (4, trainer.config, 64)
    for name in ("ema_weights", "weights"):
        got, want = getattr(loaded, name), getattr(trainer, name)
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{name}: {b.path}")
    assert len(loaded.optimizer.variables) == len(trainer.optimizer.variables)
    for a, b in zip(loaded.optimizer.variables, trainer.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)


# Keras' .keras writer converts the sum-synchronised per-example variables with np.array(copy=False).
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_save_keras_and_model_checkpoint_restore_a_trainer_that_trains_on(tmp_path):
    """Every state variable is checked: EMA shadows (distinct from the live weights after training), the
    per-example sums, the meta cache, the trackers and the optimizer's step and momentum."""
    x, true, data = _data()
    trainer = _trainer("l2r", meta_every=2)
    best = os.path.join(tmp_path, "best.keras")
    trainer.fit(data, steps_per_epoch=2, epochs=1, verbose=0, validation_data=tinydata.eval_dataset(x, true),
                callbacks=[keras.callbacks.ModelCheckpoint(best)])
    assert trainer.example_stats.visits.numpy().sum() == 32
    assert np.any(trainer.meta_cache.relative_weight.numpy() >= 0)
    assert not np.allclose(trainer.ema_weights[0].numpy(), trainer.network.trainable_variables[0].numpy())
    _assert_same_trainer(keras.models.load_model(best), trainer)

    path = os.path.join(tmp_path, "trainer.keras")
    trainer.save(path)
    loaded = keras.models.load_model(path)
    _assert_same_trainer(loaded, trainer)
    batch = next(iter(data))
    for t in (trainer, loaded):
        t.train_on_batch(batch)
    _assert_same_trainer(loaded, trainer)  # same next step: optimizer state and step seed were restored


class _GatedLogits(keras.Model):
    """Valid logits; the last layer assigned (so `layers[-1]`) is an internal softmax gate."""

    def __init__(self, outputs=4):
        super().__init__()
        self.flatten = keras.layers.Flatten()
        self.head = keras.layers.Dense(outputs)
        self.gate = keras.layers.Dense(16, activation="softmax")

    def call(self, x, training=False):
        h = self.flatten(x)
        return self.head(h * self.gate(h))


def _built(network):
    network(np.zeros((1, *tinydata.SHAPE), np.float32))
    return network


def test_subclassed_networks_are_checked_by_their_logits_not_their_last_attribute(monkeypatch):
    trainer = _trainer(network=_built(_GatedLogits()))
    trainer.train_on_batch(next(iter(_data()[2])))
    with pytest.raises(ValueError, match=r"outputs 10 values per image but there are 4 classes.*Dense\(4\)"):
        IEGTrainer(_built(_GatedLogits(10)), 4)
    # Where no symbolic call can tell the size, the traced step does.
    monkeypatch.setattr(model, "_symbolic_logits_size", lambda network: None)
    trainer = _trainer(network=_built(_GatedLogits(10)))
    with pytest.raises(ValueError, match="outputs 10 values per image but there are 4 classes"):
        trainer.train_on_batch(next(iter(_data()[2])))
    with pytest.raises(ValueError, match="outputs 10 values per image but there are 4 classes"):
        trainer.predict(np.zeros((2, *tinydata.SHAPE), np.float32), verbose=0)


def test_changing_trainable_after_building_the_trainer_is_refused():
    network = tinydata.mlp()
    trainer = _trainer(network=network)
    first_dense = next(layer for layer in network.layers if isinstance(layer, keras.layers.Dense))
    first_dense.trainable = False  # frozen after the EMA shadows were made
    x, true, data = _data()
    message = "changed afterwards. Set layer.trainable before building the IEGTrainer"
    with pytest.raises(ValueError, match=message):
        trainer.compile(optimizer=TF1Momentum(0.01))
    with pytest.raises(ValueError, match=message):
        trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        trainer.evaluate(x[:8], true[:8], verbose=0)
    _trainer(network=network)  # a new trainer around the frozen network is the way


class _TwoReplicas:
    num_replicas_in_sync = 2


def test_a_global_batch_the_replicas_cannot_split_evenly_is_refused(monkeypatch):
    """Two replicas would split 15 examples 8 + 7 and weight both means equally (MirroredStrategy itself is
    covered in test_distribute.py; here the check and its wiring into fit)."""
    _, _, data = _data(batch_size=15)
    with pytest.raises(ValueError, match="global batch of 15 examples does not split evenly over 2 replicas"):
        model.check_replica_batch(data, 2)
    model.check_replica_batch(data, 1)
    model.check_replica_batch(_data(batch_size=16)[2], 2)
    even = _data(batch_size=16)[2]
    for unknown in (data.unbatch().batch(16), even.map(lambda d: {
            **d, "probe_image": tf.boolean_mask(d["probe_image"], d["probe_label"] >= 0)})):
        # A size not known before the data are read might split unevenly (a last batch of 1: one replica empty).
        with pytest.raises(ValueError, match=r"the (global|probe) batch size \('(weak|probe_image)'\) of the "
                                             r"training dataset is not static, so 2 replicas might split a batch "
                                             r"unevenly.*\.batch\(size, drop_remainder=True\)"):
            model.check_replica_batch(unknown, 2)
    model.check_replica_batch(data.unbatch().batch(16, drop_remainder=True), 2)
    with pytest.raises(ValueError, match="the probe batch of 16 examples does not split evenly over 3 replicas"):
        model.check_replica_batch(_data(batch_size=18)[2].map(lambda d: {**d, "probe_image": d["probe_image"][:16],
                                                                      "probe_label": d["probe_label"][:16]}), 3)
    trainer = _trainer()
    monkeypatch.setattr(IEGTrainer, "distribute_strategy", property(lambda self: _TwoReplicas()))
    with pytest.raises(ValueError, match="does not split evenly over 2 replicas"):
        trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    assert int(trainer.optimizer.iterations) == 0


def _dropout_mlp(num_classes=4, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(tinydata.SHAPE)
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Dropout(0.5)(h)))


def test_each_forward_pass_and_replica_draws_its_own_dropout_mask():
    trainer = _trainer("ieg", network=_dropout_mlp())
    net, x = trainer.network, tf.random.stateless_normal([16, *tinydata.SHAPE], [1, 2])

    def logits(seed, index):
        return net.stateless_call(net.trainable_variables, trainer.pass_state(seed, index), x, training=True)[0]
    seed0, seed1 = trainer.step_seed(replica_id=0), trainer.step_seed(replica_id=1)
    np.testing.assert_array_equal(logits(seed0, 1), logits(seed0, 1))  # a function of (step, replica, pass)
    assert not np.allclose(logits(seed0, 0), logits(seed0, 1))  # weak vs strong pass
    assert not np.allclose(logits(seed0, 0), logits(seed1, 0))  # replica 0 vs 1
    # A network without random layers runs on its own variables, as before.
    plain = _trainer("ieg")
    assert all(a is b for a, b in zip(plain.pass_state(seed0, 2), plain.network.non_trainable_variables))


@pytest.mark.parametrize("jit", [False, True])
def test_weak_and_strong_passes_of_one_image_differ_by_their_dropout(jit):
    # With the strong view equal to the weak one, only Dropout can tell the passes apart: one shared mask made
    # the KL consistency term exactly 0.
    trainer = IEGTrainer(_dropout_mlp(), 4, TrainerConfig(method="ieg"), num_train_examples=64)
    trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=jit)
    x, _, dataset = _data()
    batch = next(iter(dataset))
    batch = {**batch, "strong": batch["weak"]}
    state = [v.numpy() for v in trainer.network.non_trainable_variables]
    logs = trainer.train_on_batch(batch, return_dict=True)
    assert logs["kl_loss"] > 1e-4 and np.isfinite(logs["loss"])
    for variable, before in zip(trainer.network.non_trainable_variables, state):
        np.testing.assert_array_equal(variable.numpy(), before)  # the stored seed state is not used, nor moved


class _SoftmaxInCall(keras.Model):
    """A subclassed network that applies softmax inside `call`: no layer to inspect says so."""

    def __init__(self, log=False):
        super().__init__()
        self.flatten, self.head, self.log = keras.layers.Flatten(), keras.layers.Dense(4), log

    def call(self, x, training=False):
        logits = self.head(self.flatten(x))
        return keras.ops.log_softmax(logits) if self.log else keras.ops.softmax(logits)


def test_softmax_inside_a_subclassed_call_or_a_lambda_is_refused():
    with pytest.raises(ValueError, match="the network outputs softmax probabilities.*needs logits"):
        IEGTrainer(_built(_SoftmaxInCall()), 4)
    with pytest.raises(ValueError, match="outputs log_softmax probabilities.*needs logits"):
        IEGTrainer(_built(_SoftmaxInCall(log=True)), 4)
    inputs = keras.Input(tinydata.SHAPE)
    logits = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    for end in (keras.layers.Lambda(lambda z: keras.ops.softmax(z)), keras.ops.softmax):
        with pytest.raises(ValueError, match=r"last layer \(.*\) outputs softmax probabilities"):
            IEGTrainer(keras.Model(inputs, end(logits)), 4)
    # Logits pass, including a network whose outputs at initialisation are small and positive.
    IEGTrainer(_built(_GatedLogits()), 4)
    IEGTrainer(keras.Model(inputs, logits), 4)
    positive = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer="zeros", bias_initializer="ones")(
        keras.layers.Flatten()(inputs)))
    IEGTrainer(positive, 4)  # every output 1.0: rows sum to 4, not 1
    try:  # float16 outputs of a softmax sum to 1 only to ~1e-3: still caught
        keras.mixed_precision.set_global_policy("mixed_float16")
        with pytest.raises(ValueError, match="outputs softmax probabilities"):
            IEGTrainer(_built(_SoftmaxInCall()), 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _pooling_cnn(pool_dtype=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(tinydata.SHAPE)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    h = keras.layers.MaxPooling2D(2, dtype=pool_dtype)(h)
    return keras.Model(inputs, keras.layers.Dense(4, dtype="float32")(keras.layers.Flatten()(h)))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_xla_meta_steps_of_16_bit_networks_differentiate_max_pooling_twice(policy):
    """XLA registers MaxPoolGradGrad for float32 only: the digits CNN's step failed under --mixed_precision (and
    ResNet-50's would on TPU). Our networks pool in float32; a user network pooling in 16 bits is refused with the
    fix at compile, not deep in the compiler at its first step."""
    from ieg_tf import networks
    batch = next(iter(_data()[2]))
    try:
        keras.mixed_precision.set_global_policy(policy)
        trainer = _trainer("ieg", network=networks.build_network("small_cnn", 4, tinydata.SHAPE))
        trainer.compile(optimizer=TF1Momentum(0.1), jit_compile=True)
        logs = trainer.train_on_batch(batch, return_dict=True)
        assert np.isfinite(logs["loss"]) and int(trainer.optimizer.iterations) == 1
        with pytest.raises(ValueError, match=r"max-pools in 16 bits \(max_pooling2d.*\).*dtype='float32'.*"
                                             r"jit_compile=False"):
            _trainer("ieg", network=_pooling_cnn()).compile(optimizer=TF1Momentum(0.1), jit_compile=True)
        _trainer("ieg", network=_pooling_cnn()).compile(optimizer=TF1Momentum(0.1), jit_compile=False)
        _trainer("supervised", network=_pooling_cnn()).compile(optimizer=TF1Momentum(0.1), jit_compile=True)
        fixed = _trainer("ieg", network=_pooling_cnn("float32"))
        fixed.compile(optimizer=TF1Momentum(0.1), jit_compile=True)
        assert np.isfinite(fixed.train_on_batch(batch, return_dict=True)["loss"])
    finally:
        keras.mixed_precision.set_global_policy("float32")
