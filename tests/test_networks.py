"""Tests for ieg_tf.networks: parameter counts, structure, init, dtypes and the stateless meta-step call."""

import math
import pathlib

import keras
import numpy as np
import pytest

from ieg_tf import networks
from ieg_tf.networks import wrn


def _trainable_count(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def _layers_of(model, kind):
    return [layer for layer in model.layers if isinstance(layer, kind)]


@pytest.fixture
def policy():
    """Lets a test switch the global dtype policy and always restores float32."""
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy("float32")


def test_names_and_specs():
    assert networks.names() == ["wrn28-10", "wrn28-2", "resnet29", "resnet50", "small_cnn", "mlp"]
    assert networks.DEFAULT_NETWORK == "wrn28-10"
    assert networks.get_spec("wrn28-10") == networks.NetworkSpec("wrn28-10", 5e-4, False)
    assert networks.get_spec("wrn16-4") == networks.NetworkSpec("wrn16-4", 5e-4, False)
    assert networks.get_spec("resnet29") == networks.NetworkSpec("resnet29", 1e-4, True)
    assert networks.get_spec("resnet50") == networks.NetworkSpec("resnet50", 4e-4, False)
    assert networks.get_spec("small_cnn").decay_kernels_only is False


def test_unknown_and_malformed_names_raise_value_error():
    with pytest.raises(ValueError, match=r"unknown network 'vgg16'; choose one of: wrn28-10, .*small_cnn, mlp"):
        networks.get_spec("vgg16")
    with pytest.raises(ValueError, match="unknown network"):
        networks.build_network("resnet18", 10, (32, 32, 3))
    with pytest.raises(ValueError, match="6n\\+4"):
        networks.get_spec("wrn27-10")


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_classes"):
        networks.build_network("mlp", 0, (8, 8, 1))
    with pytest.raises(ValueError, match="input_shape"):
        networks.build_network("mlp", 10, (8, 8))
    with pytest.raises(ValueError, match="reference_quirk"):
        networks.build_network("mlp", 10, (8, 8, 1), reference_quirk=False)


def test_wrn28_10_count_and_structure():
    keras.utils.set_random_seed(0)
    model = networks.build_network("wrn28-10", 100, (32, 32, 3))
    # 36,196,272 conv weights + 8,976 BN betas + 64,100 FC.
    assert _trainable_count(model) == 36_269_348
    assert abs(model.count_params() / 36.5e6 - 1) < 0.01
    assert len(model.trainable_variables) == 52

    bns = _layers_of(model, keras.layers.BatchNormalization)
    assert bns and all(not bn.scale and bn.center for bn in bns)
    assert all(bn.momentum == 0.999 and bn.epsilon == 1e-3 for bn in bns)
    assert not [v for v in model.variables if "gamma" in v.path]

    convs = _layers_of(model, keras.layers.Conv2D)
    assert len(convs) == 1 + 3 * 4 * 2
    assert all(conv.kernel_size == (3, 3) and not conv.use_bias for conv in convs)

    kernel = model.get_layer("unit_3_2_conv1").kernel.numpy()
    assert kernel.shape == (3, 3, 640, 640)
    expected_std = math.sqrt(2.0 / (9 * 640))
    assert abs(kernel.std() / expected_std - 1) < 0.01
    assert np.abs(kernel).max() > 4 * expected_std  # untruncated: a truncated normal stops at 2 std

    fc = model.get_layer("fc")
    assert np.abs(fc.kernel.numpy()).max() <= 0.1 and np.abs(fc.kernel.numpy()).max() > 0.099
    assert not fc.bias.numpy().any()
    assert networks.decayed_variables(model, networks.get_spec("wrn28-10")) == model.trainable_variables


def test_wrn28_2_count_and_initial_conv_skip():
    model = networks.build_network("wrn28-2", 100, (32, 32, 3))
    assert _trainable_count(model) == 1_466_660
    assert abs(_trainable_count(model) / 1.47e6 - 1) < 0.01
    # At 32x32 the initial-conv output is pooled 4x4/4 to stage 3's 8x8 and padded 16 -> 128 channels.
    assert model.get_layer("init_skip_pool").pool_size == (4, 4)
    assert tuple(model.get_layer("init_skip_as2d").output.shape) == (None, 8, 8, 128)


def test_wrn_shortcut_is_avg_pool_then_symmetric_channel_padding():
    inputs = keras.Input((4, 4, 2))
    shortcut = keras.Model(inputs, wrn._shortcut(inputs, 2, 6, 2, "s"))
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 2)).astype("float32")
    pooled = x.reshape(1, 2, 2, 2, 2, 2).mean(axis=(2, 4))
    expected = np.concatenate([np.zeros_like(pooled), pooled, np.zeros_like(pooled)], axis=-1)
    np.testing.assert_allclose(shortcut(x).numpy(), expected, atol=1e-6)


def test_resnet29_count_quirk_and_decayed_kernels():
    quirk = networks.build_network("resnet29", 10, (32, 32, 3))
    plain = networks.build_network("resnet29", 10, (32, 32, 3), reference_quirk=False)
    assert _trainable_count(quirk) == _trainable_count(plain) == 840_730
    assert quirk.count_params() == 845_946
    # Stem + 2 per block + head = 20 ReLUs; the Keras example adds one in each of the 8 later blocks.
    assert len(_layers_of(quirk, keras.layers.ReLU)) == 20
    assert len(_layers_of(plain, keras.layers.ReLU)) == 28
    convs = _layers_of(quirk, keras.layers.Conv2D)
    assert all(not conv.use_bias for conv in convs)
    assert sum(conv.kernel_size == (1, 1) for conv in convs) == 9 * 2 + 3

    spec = networks.get_spec("resnet29")
    decayed = networks.decayed_variables(quirk, spec)
    assert len(decayed) == len(convs) + 1 == 32
    assert all(v.path.endswith("/kernel") for v in decayed)
    assert len(quirk.trainable_variables) == 89  # + BN gammas/betas and the Dense bias, not decayed


def test_resnet50_counts_and_small_input():
    big = networks.build_network("resnet50", 1000, (224, 224, 3))
    assert _trainable_count(big) == 25_549_352
    assert abs(_trainable_count(big) / 25.5e6 - 1) < 0.01
    small = networks.build_network("resnet50", 50, (32, 32, 3))
    assert _trainable_count(small) == 23_602_802
    assert all(bn.momentum == 0.997 for bn in _layers_of(small, keras.layers.BatchNormalization))
    logits = small(np.zeros((2, 32, 32, 3), "float32"), training=False)
    assert logits.shape == (2, 50)
    assert networks.decayed_variables(small, networks.get_spec("resnet50")) == small.trainable_variables


@pytest.mark.parametrize("name,shape", [
    ("wrn28-2", (16, 16, 3)),
    ("wrn10-1", (12, 12, 3)),
    ("resnet29", (32, 32, 3)),
    ("resnet29", (16, 16, 3)),
    ("small_cnn", (8, 8, 1)),
    ("mlp", (8, 8, 1)),
])
def test_output_shape_and_dtype(name, shape):
    model = networks.build_network(name, 7, shape)
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, *shape)).astype("float32")
    for training in (False, True):
        logits = model(x, training=training)
        assert logits.shape == (2, 7)
        assert logits.dtype == "float32"
        assert np.isfinite(logits.numpy()).all()


def test_stateless_call_returns_bn_updates_and_leaves_model_untouched():
    model = networks.build_network("small_cnn", 10, (8, 8, 1))
    x = np.random.default_rng(1).uniform(-1, 1, size=(4, 8, 8, 1)).astype("float32")
    trainable = [v.value for v in model.trainable_variables]
    before = [v.numpy().copy() for v in model.non_trainable_variables]
    logits, updated = model.stateless_call(trainable, [v.value for v in model.non_trainable_variables],
                                           x, training=True)
    assert logits.shape == (4, 10)
    assert any(not np.allclose(new, old) for new, old in zip(updated, before))
    for var, old in zip(model.non_trainable_variables, before):
        np.testing.assert_array_equal(var.numpy(), old)

    # The substituted trainable values are the ones used: a zero head gives zero logits.
    zeroed = [np.zeros(v.shape, "float32") if v.path.startswith("fc/") else v.value
              for v in model.trainable_variables]
    logits, _ = model.stateless_call(zeroed, before, x, training=True)
    np.testing.assert_array_equal(logits.numpy(), 0.0)


def test_mixed_precision_gives_float32_logits(policy):
    policy("mixed_float16")
    model = networks.build_network("small_cnn", 10, (8, 8, 1))
    assert model.get_layer("conv1_conv").compute_dtype == "float16"
    assert model.get_layer("conv1_conv").kernel.dtype == "float32"
    logits = model(np.zeros((2, 8, 8, 1), "float32"), training=True)
    assert logits.dtype == "float32"


def test_float64_policy_keeps_float64_logits(policy):
    policy("float64")
    model = networks.build_network("mlp", 3, (4, 4, 1))
    assert model(np.zeros((1, 4, 4, 1)), training=False).dtype == "float64"


def test_weight_decay_override_is_attached_to_the_model():
    model = networks.build_network("resnet29", 10, (16, 16, 3), weight_decay=2e-4)
    assert model.network_spec == networks.NetworkSpec("resnet29", 2e-4, True)
    assert networks.build_network("mlp", 10, (8, 8, 1)).network_spec == networks.get_spec("mlp")


def test_small_cnn_learns_clean_digits():
    keras.utils.set_random_seed(0)
    data = np.load(pathlib.Path(__file__).parents[1] / "data" / "digits.npz")
    images = ((data["images"].astype("float32") / 16.0 - 0.5) * 2.0)[..., None]
    labels = data["labels"].astype("int32")
    order = np.random.default_rng(0).permutation(len(labels))
    test, train = order[:360], order[360:]
    model = networks.build_network("small_cnn", 10, (8, 8, 1))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(images[train], labels[train], batch_size=100, epochs=4, verbose=0)
    _, accuracy = model.evaluate(images[test], labels[test], verbose=0)
    assert accuracy > 0.95
