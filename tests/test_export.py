import keras
import numpy as np
import pytest
import tensorflow as tf

from ieg_tf.config import TrainerConfig
from ieg_tf.export import export_serving, scale_images
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

SHAPE, C, N, B = (4, 4, 1), 3, 16, 8


def _net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(C)(x))


def _images(seed=0, n=N):
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained():
    """A trainer after two fit steps: EMA, live weights and BN statistics all differ from their start."""
    images = _images()
    scaled = (images.astype(np.float32) / 255.0 - 0.5) * 2.0
    labels = np.arange(N) % C
    ds = tf.data.Dataset.from_tensor_slices({
        "weak": scaled, "label": labels, "id": np.arange(N), "probe_image": scaled, "probe_label": labels,
    }).batch(B)
    trainer = IEGTrainer(_net(), C, TrainerConfig(method="supervised"), num_train_examples=N)
    trainer.compile(optimizer=TF1Momentum(0.5))
    trainer.fit(ds, epochs=1, steps_per_epoch=2, verbose=0)
    return trainer, images


def test_trained_fixture_has_ema_distinct_from_live_weights(trained):
    trainer, _ = trained
    gaps = [np.max(np.abs(e.numpy() - v.numpy())) for e, v in zip(trainer.ema_weights,
                                                                     trainer.network.trainable_variables)]
    assert max(gaps) > 1e-3


def test_uint8_signature_reproduces_the_trainer_ema_predictions(trained, tmp_path):
    trainer, images = trained
    live_before = [w.copy() for w in trainer.network.get_weights()]
    path = export_serving(trainer, str(tmp_path / "serving"), image_shape=SHAPE)
    assert path == str(tmp_path / "serving")
    for got, want in zip(trainer.network.get_weights(), live_before):
        np.testing.assert_array_equal(got, want)  # the user's network keeps its own weights

    serve = tf.saved_model.load(path).signatures["serving_default"]
    # It reads only the copies: EMA values for the trainables plus the BN statistics, nothing of the trainer.
    assert len(serve.captured_inputs) == len(trainer.ema_weights) + len(trainer.network.non_trainable_variables)
    spec = serve.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, *SHAPE]
    out = serve(images=tf.constant(images))
    assert set(out) == {"probabilities"}
    got = out["probabilities"].numpy()

    scaled = (images.astype(np.float32) / 255.0 - 0.5) * 2.0
    expected = tf.nn.softmax(trainer.ema_logits(scaled)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    live = tf.nn.softmax(trainer.network(scaled, training=False)).numpy()
    assert np.max(np.abs(got - live)) > 1e-3, "the export must carry the EMA weights, not the live ones"


def test_float_signature_takes_scaled_images(trained, tmp_path):
    trainer, images = trained
    path = export_serving(trainer, str(tmp_path / "float"), image_shape=SHAPE, input_dtype=tf.float32)
    scaled = (images.astype(np.float32) / 255.0 - 0.5) * 2.0
    got = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(scaled))["probabilities"]
    np.testing.assert_allclose(got.numpy(), tf.nn.softmax(trainer.ema_logits(scaled)).numpy(), atol=1e-5)


def test_scale_images_maps_0_255_to_minus_one_one():
    np.testing.assert_allclose(scale_images(np.array([0, 51, 255], np.uint8)).numpy(), [-1.0, -0.6, 1.0],
                               atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"image_shape": SHAPE, "input_dtype": tf.int32}, "input_dtype"),
    ({"image_shape": (5, 5, 1)}, "does not fit"),
    ({"image_shape": (4, 4)}, "image_shape"),
])
def test_bad_arguments_raise_value_error(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_serving(trained[0], str(tmp_path / "bad"), **kwargs)


def test_weights_that_are_not_finite_are_not_exported(tmp_path):
    trainer = IEGTrainer(_net(), C, TrainerConfig(method="supervised"))
    trainer.ema_weights[0].assign(np.full(trainer.ema_weights[0].shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="holds NaN or Inf: the training diverged"):
        export_serving(trainer, str(tmp_path / "nan"), image_shape=SHAPE)
    assert not (tmp_path / "nan").exists()
