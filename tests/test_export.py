import io
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ieg_tf import datasets, pipeline
from ieg_tf.config import TrainerConfig
from ieg_tf.export import export_serving, scale_images
from ieg_tf.model import IEGTrainer
from ieg_tf.optim import TF1Momentum

SHAPE, C, N, B = (4, 4, 1), 3, 16, 8
NAMES = ["cat", "dog", "fox"]


def _net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    x = keras.layers.BatchNormalization(momentum=0.5)(x)
    return keras.Model(inputs, keras.layers.Dense(C)(x))


def _images(seed=0, n=N, shape=SHAPE):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _encoded(image, fmt="PNG"):
    """The bytes of one uint8 [H, W, C] image file; C = 1 is written as a grey image."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, fmt)
    return buffer.getvalue()


def _random_ema_trainer(network):
    """An untrained trainer whose EMA values are large random ones: confident, varied predictions without fitting."""
    trainer = IEGTrainer(network, C, TrainerConfig(method="supervised"))
    rng = np.random.default_rng(3)
    for shadow in trainer.ema_weights:
        shadow.assign(rng.normal(size=shadow.shape).astype(np.float32) * 2.0)
    return trainer


def _ema_probabilities(trainer, scaled):
    return tf.nn.softmax(trainer.ema_logits(scaled)).numpy()


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
    assert set(out) == {"probabilities", "classes"}  # no class names given, so no "class_names"
    got = out["probabilities"].numpy()
    np.testing.assert_array_equal(out["classes"].numpy(), np.argmax(got, axis=1))

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
    ({"image_shape": (4, 5, 1), "center_crop": True}, "square crops"),
    ({"image_shape": SHAPE, "class_names": NAMES[:2]}, "class_names has 2 names but there are 3 classes"),
    ({"image_shape": SHAPE, "class_names": "cat"}, "a list of str"),
    ({"image_shape": SHAPE, "class_names": ["cat", "dog", 2]},
     r"must be a list of str, one per class id; got 2 \(int\)"),
])
def test_bad_arguments_raise_value_error(trained, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_serving(trained[0], str(tmp_path / "bad"), **kwargs)


def test_images_of_other_channel_counts_are_served_as_arrays_only(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 2))
    trainer = IEGTrainer(keras.Model(inputs, keras.layers.Dense(C)(keras.layers.Flatten()(inputs))), C)
    signatures = tf.saved_model.load(export_serving(trainer, str(tmp_path / "two"), image_shape=(4, 4, 2))).signatures
    assert set(signatures) == {"serving_default"}  # no image file decodes to 2 channels
    images = _images(shape=(4, 4, 2))
    np.testing.assert_allclose(signatures["serving_default"](images=tf.constant(images))["probabilities"],
                               trainer.predict(images, verbose=0), atol=1e-5)


def test_weights_that_are_not_finite_are_not_exported(tmp_path):
    trainer = IEGTrainer(_net(), C, TrainerConfig(method="supervised"))
    trainer.ema_weights[0].assign(np.full(trainer.ema_weights[0].shape, np.nan, np.float32))
    with pytest.raises(ValueError, match="holds NaN or Inf: the training diverged"):
        export_serving(trainer, str(tmp_path / "nan"), image_shape=SHAPE)
    assert not (tmp_path / "nan").exists()


# ----------------------------------------------------------------------------------- serving_bytes: encoded images
@pytest.mark.parametrize("channels", [1, 3])
def test_bytes_signature_on_png_copies_equals_the_uint8_signature(tmp_path, channels):
    shape = (*SHAPE[:2], channels)
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape)
    trainer = _random_ema_trainer(keras.Model(inputs, keras.layers.Dense(C)(keras.layers.Flatten()(inputs))))
    images = _images(seed=channels, shape=shape)
    path = export_serving(trainer, str(tmp_path / "serving"), image_shape=shape, class_names=NAMES)
    served = tf.saved_model.load(path)
    spec = served.signatures["serving_bytes"].structured_input_signature[1]["image_bytes"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]

    from_bytes = served.signatures["serving_bytes"](image_bytes=tf.constant([_encoded(i) for i in images]))
    from_uint8 = served.signatures["serving_default"](images=tf.constant(images))
    assert set(from_bytes) == set(from_uint8) == {"probabilities", "classes", "class_names"}
    for key in from_bytes:
        np.testing.assert_array_equal(from_bytes[key].numpy(), from_uint8[key].numpy())
    probabilities = from_bytes["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, _ema_probabilities(trainer, scale_images(images)), atol=1e-5)
    classes = from_bytes["classes"].numpy()
    assert from_bytes["classes"].dtype == tf.int32 and len(set(classes)) > 1  # the name lookup below is not trivial
    np.testing.assert_array_equal(classes, np.argmax(probabilities, axis=1))
    assert [n.decode() for n in from_bytes["class_names"].numpy()] == [NAMES[k] for k in classes]


def test_grey_model_reads_any_format_and_converts_colour_files_as_pil(trained, tmp_path):
    """BMP and GIF decoders give no grey output: a grey model decodes RGB and converts it with PIL's weights, so a
    grey image in any format reads back exactly, and a colour file becomes what `image_files` trains on."""
    trainer, images = trained
    serving = tf.saved_model.load(export_serving(trainer, str(tmp_path / "grey"), image_shape=SHAPE)).signatures
    expected = serving["serving_default"](images=tf.constant(images))["probabilities"].numpy()
    for fmt in ("PNG", "BMP", "GIF"):
        got = serving["serving_bytes"](image_bytes=tf.constant([_encoded(i, fmt) for i in images]))
        np.testing.assert_array_equal(got["probabilities"].numpy(), expected, err_msg=fmt)

    colour = _images(seed=4, shape=(*SHAPE[:2], 3))
    as_pil = np.stack([np.asarray(Image.fromarray(i).convert("L"))[..., None] for i in colour])
    got = serving["serving_bytes"](image_bytes=tf.constant([_encoded(i) for i in colour]))["probabilities"]
    np.testing.assert_array_equal(got.numpy(), serving["serving_default"](images=tf.constant(as_pil))["probabilities"])


def test_bytes_of_another_size_fail_naming_both_sizes(trained, tmp_path):
    serve = tf.saved_model.load(export_serving(trained[0], str(tmp_path / "size"), image_shape=SHAPE))
    fitting, wrong = _encoded(_images(n=1)[0]), _encoded(_images(n=1, shape=(5, 6, 1))[0])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"image_bytes\[1\] is 5x6 \(height x width\) but this model takes 4x4 images"):
        serve.signatures["serving_bytes"](image_bytes=tf.constant([fitting, wrong]))


def test_file_data_bytes_get_the_evaluation_centre_crop(tmp_path):
    """JPEG and PNG files larger than the crop: the served predictions are the run's test predictions."""
    size, rng = 66, np.random.default_rng(7)
    for split, per_class in (("train", 2), ("test", 2)):
        for c, name in enumerate(NAMES):
            os.makedirs(tmp_path / split / name)
            for i, (shape, fmt) in enumerate([((70, 90), "PNG"), ((96, 72), "JPEG")][:per_class]):
                # Noise: where the crop falls changes what the network sees.
                image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / split / name / f"{i}.{fmt.lower()}", fmt)
    data = datasets.load_dataset(datasets.DataSpec(dataset="folder", train_dir=str(tmp_path / "train"),
                                                   test_dir=str(tmp_path / "test"), image_size=size,
                                                   noise_type="none", probe_per_class=1))
    assert data.augment_kind == "imagenet" and data.test_images.dtype.kind == "U"  # files, decoded by the pipeline
    keras.utils.set_random_seed(2)
    inputs = keras.Input((size, size, 3))
    pooled = keras.layers.Flatten()(keras.layers.AveragePooling2D(11)(inputs))  # 6x6 cells: the crop matters
    trainer = _random_ema_trainer(keras.Model(inputs, keras.layers.Dense(C)(pooled)))
    expected = np.concatenate([_ema_probabilities(trainer, x) for x, _ in pipeline.eval_dataset(data, 4)])

    path = export_serving(trainer, str(tmp_path / "files"), image_shape=data.image_shape,
                          class_names=data.class_names, center_crop=True)
    files = [tf.io.read_file(p) for p in data.test_images]
    got = tf.saved_model.load(path).signatures["serving_bytes"](image_bytes=tf.stack(files))
    np.testing.assert_allclose(got["probabilities"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(got["classes"].numpy(), np.argmax(expected, axis=1))
    assert [n.decode() for n in got["class_names"].numpy()] == [NAMES[k] for k in np.argmax(expected, axis=1)]


def _pooling_net():
    """A convolution and global pooling: it runs on any image size, as the built-in networks do."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(C)(keras.layers.GlobalAveragePooling2D()(x)))


def test_requests_of_another_shape_are_refused_naming_the_shape_the_model_takes(tmp_path):
    """A loaded signature does not check its input's shape: a pooling network returned predictions for any image
    size, and an image without its batch axis aborted the whole process in oneDNN's convolution."""
    trainer = _random_ema_trainer(_pooling_net())
    serve = tf.saved_model.load(export_serving(trainer, str(tmp_path / "s"), image_shape=SHAPE))
    serve = serve.signatures["serving_default"]
    assert serve(images=tf.constant(_images(n=2)))["probabilities"].shape == (2, C)
    for images, shown in ((_images(n=2, shape=(6, 6, 1)), r"\[2 6 6 1\]"), (_images(n=1)[0], r"\[4 4 1\]"),
                          (_images(n=2, shape=(4, 4, 3)), r"\[2 4 4 3\]"),
                          (_images(n=2, shape=(4, 4, 1, 1)), r"\[2 4 4 1 1\]")):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"images has shape {shown} but this model takes a batch of 4x4x1 images"):
            serve(images=tf.constant(images))


def test_empty_requests_get_empty_outputs(trained, tmp_path):
    loaded = tf.saved_model.load(export_serving(_random_ema_trainer(_pooling_net()), str(tmp_path / "e"),
                                                image_shape=SHAPE, class_names=NAMES))
    for name, request in (("serving_default", {"images": tf.zeros([0, *SHAPE], tf.uint8)}),
                          ("serving_bytes", {"image_bytes": tf.constant([], tf.string)})):
        out = loaded.signatures[name](**request)
        assert out["probabilities"].shape == (0, C) and out["classes"].shape == (0,), name
        assert out["class_names"].shape == (0,), name


def test_float_exports_refuse_unscaled_pixels_and_bytes_must_be_a_list(trained, tmp_path):
    trainer, images = trained
    loaded = tf.saved_model.load(export_serving(trainer, str(tmp_path / "f"), image_shape=SHAPE,
                                                input_dtype=tf.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images hold values up to 255 but this model takes "
                                                             r"float images scaled to \[-1, 1\]"):
        loaded.signatures["serving_default"](images=tf.constant(images.astype(np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes must be a list of encoded images"):
        loaded.signatures["serving_bytes"](image_bytes=tf.constant(_encoded(images[0])))


def test_an_export_replaces_the_last_one_in_place_and_refuses_a_directory_of_other_files(trained, tmp_path):
    """TF Serving loads each numbered version it finds: the version directory appears complete or not at all
    (written beside it, renamed), and an export into it again replaces it, leaving no stale file or sibling."""
    trainer, images = trained
    target = tmp_path / "models" / "1"
    export_serving(trainer, str(target), image_shape=SHAPE)
    (target / "assets" / "stale.txt").parent.mkdir(exist_ok=True)
    (target / "assets" / "stale.txt").write_text("from an older export")
    export_serving(trainer, str(target) + "/", image_shape=SHAPE, class_names=NAMES)
    assert os.listdir(tmp_path / "models") == ["1"]
    assert not (target / "assets" / "stale.txt").exists()
    out = tf.saved_model.load(str(target)).signatures["serving_default"](images=tf.constant(images))
    assert "class_names" in out  # the second export's
    other = tmp_path / "notes"
    other.mkdir()
    (other / "readme.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds files that are not a SavedModel"):
        export_serving(trainer, str(other), image_shape=SHAPE)
    assert os.listdir(other) == ["readme.txt"] and sorted(os.listdir(tmp_path)) == ["models", "notes"]
