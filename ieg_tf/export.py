"""Export: a SavedModel of the EMA network, served from decoded images or from encoded image files.

The exported module holds its own copies of the EMA shadow values (in place of the network's trainable
variables) and of the network's current non-trainable state (BatchNorm moving statistics), and runs the user's
network through `stateless_call` on them: the same computation as `IEGTrainer.ema_logits`, while the live
network keeps its own weights. Only the network is exported, never the trainer (STYLE 3).

Two signatures, both returning {"probabilities": float32 [None, K], "classes": int32 [None] (the argmax), and
"class_names": string [None] when the names are known}:
* `serving_default` takes `images` [None, H, W, C] as the loaded data hold them (uint8 0..255, `data.test_images`)
  or scaled to [-1, 1]; another shape, or unscaled floats, are refused in the graph with the shape it takes.
* `serving_bytes` takes `image_bytes` string [None] of JPEG / PNG / BMP / GIF files (what TF Serving's REST API
  decodes from {"b64": ...}) and applies the evaluation's preprocessing (`pipeline.eval_dataset`) to each.

Example:
  path = export_serving(trainer, "/tmp/ieg_export", image_shape=(32, 32, 3), class_names=data.class_names)
  served = tf.saved_model.load(path)
  probabilities = served.signatures["serving_default"](images=uint8_batch)["probabilities"]
  names = served.signatures["serving_bytes"](image_bytes=tf.constant([png_bytes]))["class_names"]
"""

import numbers
import uuid

import tensorflow as tf

from ieg_tf import augment
from ieg_tf import model
from ieg_tf import sources

SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
# PIL's convert("L") in 1/65536 (ITU-R 601-2 luma, summing to 65536): a grey model sees colour files converted as
# `image_files` converted its training files, and a grey file decoded as RGB comes back unchanged.
_LUMA = (19595, 38470, 7471)


def scale_images(images):
    """uint8 images 0..255 -> float32 in [-1, 1], the scale every ieg_tf network is trained on."""
    return (tf.cast(images, tf.float32) / 255.0 - 0.5) * 2.0


def export_serving(trainer, export_dir, *, image_shape, input_dtype=tf.uint8, class_names=None,
                   center_crop=False):
    """Writes a SavedModel of the trainer's EMA network with `serving_default` and `serving_bytes` signatures.

    Encoded images get the evaluation's preprocessing, chosen by `center_crop` rather than guessed from the
    decoded size: file data sets (`pipeline.eval_dataset` decodes and centre-crops each file) pass True, so a
    served file gets the same crop as the run's test images and the same prediction; in-memory data sets (digits,
    CIFAR, small folder images) are evaluated on the stored images as they are, so an encoded image must already
    be H x W and any other size fails with both sizes named, rather than being resized into an input the network
    never saw.

    Args:
      trainer: an `IEGTrainer` (anything with `network`, `num_classes` and `ema_weights` aligned with the
        network's trainable variables).
      export_dir: directory to write (local or any `tf.io.gfile` path).
      image_shape: (H, W, C) of one image: the stored images, or the crop of file data. `serving_bytes` is
        written for C = 1 (grey) or 3 (RGB) only, the channel counts image files decode to.
      input_dtype: of `serving_default`'s images. tf.uint8 (default): images as the loaded data hold them,
        0..255, scaled to [-1, 1] inside the signature; tf.float32: images already scaled to [-1, 1].
      class_names: None, or one name per class (`data.class_names`): adds the "class_names" output.
      center_crop: `serving_bytes` centre-crops each decoded image to H x H with `augment.center_crop`, as the
        evaluation does for file data sets (`data.augment_kind == "imagenet"`); needs H == W.

    Returns:
      `export_dir`.

    Raises:
      ValueError: an input dtype other than uint8/float32, an image shape the network does not accept, a
        non-square shape with center_crop, class_names that are not one string per class, or weights that are
        NaN or Inf.
    """
    dtype = tf.as_dtype(input_dtype)
    if dtype not in (tf.uint8, tf.float32):
        raise ValueError(f"input_dtype must be tf.uint8 (stored images, 0..255) or tf.float32 (already scaled to "
                         f"[-1, 1]), got {dtype.name}")
    network = trainer.network
    shape = _check_shape(image_shape, network, center_crop)
    if len(trainer.ema_weights) != len(network.trainable_variables):
        raise ValueError(f"the trainer has {len(trainer.ema_weights)} EMA values for "
                         f"{len(network.trainable_variables)} trainable variables; rebuild the trainer around "
                         "this network")
    names = sources.check_class_names(class_names, trainer.num_classes)
    model.check_finite_weights([*trainer.ema_weights, *network.non_trainable_variables])
    module = tf.Module()
    # Copies, not references: the SavedModel must not capture (and so must not depend on) the live variables.
    module.ema = [tf.Variable(v.numpy(), trainable=False, name=f"ema_{i}")
                  for i, v in enumerate(trainer.ema_weights)]
    module.state = [tf.Variable(v.numpy(), trainable=False, name=f"state_{i}")
                    for i, v in enumerate(network.non_trainable_variables)]

    def outputs_of(logits):
        classes = tf.argmax(logits, axis=-1, output_type=tf.int32)  # as the evaluation's accuracy counts a hit
        outputs = {"probabilities": tf.nn.softmax(logits), "classes": classes}
        if names is not None:
            outputs["class_names"] = tf.gather(tf.constant(names), classes)
        return outputs

    def no_logits():
        return tf.zeros([0, trainer.num_classes])

    def predict(scaled):
        def network_logits():
            logits, _ = network.stateless_call(module.ema, module.state, scaled, training=False)
            return tf.cast(logits, tf.float32)

        # An empty request gets empty outputs; some networks' ops (oneDNN's among them) fail on a batch of 0.
        return outputs_of(tf.cond(tf.shape(scaled)[0] > 0, network_logits, no_logits))

    def refuse(fits, message):
        """The empty outputs, after an assert that fails unless `fits`; for the false branch of a `tf.cond`."""
        def branch():
            with tf.control_dependencies([tf.debugging.Assert(fits, [message])]):
                return outputs_of(no_logits())
        return branch

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], dtype, name="images")])
    def serve(images):
        # A loaded signature does not check its input's shape (only Python callers and saved_model_cli do): any
        # other image size ran through the globally pooled networks and returned predictions, and a single image
        # without its batch axis aborted the server process inside oneDNN's convolution. The network runs only
        # in the branch where the shape fits (an assert before it is not enough: the graph optimiser drops the
        # reshape that would carry the dependency).
        def run():
            batch = tf.reshape(images, [-1, *shape])
            return predict(scale_images(batch) if dtype == tf.uint8 else _checked_range(batch))

        fits, message = _shape_check(images, shape)
        return tf.cond(fits, run, refuse(fits, message))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve_bytes(image_bytes):
        def run():
            files = tf.reshape(image_bytes, [-1])
            images = tf.map_fn(lambda args: _decode(*args, shape, center_crop), (files, tf.range(tf.size(files))),
                               fn_output_signature=tf.TensorSpec(shape, tf.uint8))
            return predict(scale_images(images))

        rank_one = _dims_are(tf.shape(image_bytes), [None])
        return tf.cond(rank_one, run, refuse(rank_one, tf.strings.format(
            "image_bytes must be a list of encoded images [batch] (one image: a list of one), got shape {}",
            tf.shape(image_bytes))))

    module.serve = serve
    signatures = {SIGNATURE: serve.get_concrete_function()}
    if shape[2] in (1, 3):  # image files decode to grey or RGB; other channel counts are served as arrays only
        module.serve_bytes = serve_bytes
        signatures[BYTES_SIGNATURE] = serve_bytes.get_concrete_function()
    _save_atomically(module, export_dir, signatures)
    return export_dir


def _shape_check(images, shape):
    """(whether `images` is [batch, *shape], the message that says what it is instead)."""
    got = tf.shape(images)
    fits = _dims_are(got, [None, *shape])
    return fits, tf.strings.format(
        "images has shape {} but this model takes a batch of {}x{}x{} images [batch, height, width, channels] "
        "(one image: a batch of one); resize them as the training images were", (got, *shape))


def _dims_are(got, dims):
    """Whether the shape vector `got` is `dims` (None: any size), in ops the graph optimiser cannot fold: the
    signature's static shape makes tf.rank and tf.size of the shape constants, whatever the request holds."""
    padded = tf.concat([got, tf.fill([len(dims) + 1], -1)], 0)[:len(dims) + 1]  # -1 marks a missing axis
    checks = [padded[i] >= 0 if d is None else tf.equal(padded[i], d) for i, d in enumerate(dims)]
    return tf.reduce_all(tf.stack([*checks, tf.equal(padded[len(dims)], -1)]))


def _checked_range(images):
    """Float images, after an in-graph check that no value lies beyond model.IMAGE_LIMIT, as training and
    evaluation require: values of 0..255 are unscaled pixels, which this export cannot tell from scaled ones."""
    if model.IMAGE_LIMIT == float("inf"):
        return images
    largest = tf.reduce_max(tf.abs(images))
    scaled = tf.debugging.Assert(tf.logical_not(largest > model.IMAGE_LIMIT), [tf.strings.format(
        "images hold values up to {} but this model takes float images scaled to [-1, 1] ((pixel / 255 - 0.5) "
        "* 2), as it was trained; send uint8 pixels to an export made with input_dtype=tf.uint8", largest)])
    with tf.control_dependencies([scaled]):
        return tf.identity(images)


def check_export_dir(export_dir):
    """`export_dir` without a trailing slash; raises ValueError if it holds files that are not a SavedModel (an
    earlier export there is replaced, anything else is the user's)."""
    export_dir = export_dir.rstrip("/") or export_dir
    if tf.io.gfile.isdir(export_dir) and tf.io.gfile.listdir(export_dir) and not tf.io.gfile.exists(
            f"{export_dir}/saved_model.pb"):
        raise ValueError(f"the export directory {export_dir} holds files that are not a SavedModel; choose an "
                         "empty or new directory (each SavedModel version gets its own)")
    return export_dir


def _save_atomically(module, export_dir, signatures):
    """Writes the SavedModel beside `export_dir` and renames it into place, replacing an earlier export.

    TF Serving loads every numbered version directory it finds under its base path, so `export_dir` must never be
    seen empty or half written. The sibling's name (`<dir>.partial-<hex>`) is not a number, which the server
    ignores. A directory holding anything but a SavedModel is refused rather than replaced.
    """
    export_dir = check_export_dir(export_dir)
    tag = uuid.uuid4().hex[:12]
    partial, old = f"{export_dir}.partial-{tag}", f"{export_dir}.old-{tag}"
    tf.saved_model.save(module, partial, signatures=signatures)
    if tf.io.gfile.exists(export_dir):
        tf.io.gfile.rename(export_dir, old)
    tf.io.gfile.rename(partial, export_dir)
    if tf.io.gfile.exists(old):
        tf.io.gfile.rmtree(old)


def _decode(encoded, index, shape, center_crop):
    """uint8 [H, W, C] of the encoded image `image_bytes[index]`, as the evaluation feeds it to the network.

    Decoded as RGB (the decoders of BMP and GIF have no grey output), then converted to grey for C = 1.
    """
    height, width, channels = shape
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    if channels == 1:
        luma = tf.reduce_sum(tf.cast(image, tf.int32) * _LUMA, axis=-1, keepdims=True)
        image = tf.cast(tf.bitwise.right_shift(luma + 2 ** 15, 16), tf.uint8)
    if center_crop:
        return augment.center_crop(image, height)
    got = tf.shape(image)[:2]
    fits = tf.debugging.Assert(tf.reduce_all(got == [height, width]), [tf.strings.format(
        "image_bytes[{}] is {}x{} (height x width) but this model takes {}x{} images: resize it before sending, "
        "as the training images were resized", (index, got[0], got[1], height, width))])
    with tf.control_dependencies([fits]):  # else the reshape (or an ensure_shape) may fail first, naming no sizes
        return tf.reshape(image, shape)


def _check_shape(image_shape, network, center_crop):
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, numbers.Integral) and d > 0 for d in shape):
        raise ValueError(f"image_shape must be (H, W, C) of positive ints, got {image_shape!r}")
    shape = tuple(int(d) for d in shape)
    if center_crop and shape[0] != shape[1]:
        raise ValueError(f"center_crop gives square crops, but image_shape is {shape}; pass the crop size of the "
                         "file data set, data.image_shape")
    built_for = model.network_input_shape(network)  # functional: its Input; subclassed: the shape it was built on
    if built_for:
        expected = tuple(built_for[1:])
        if len(expected) != 3 or any(e is not None and e != d for e, d in zip(expected, shape)):
            raise ValueError(f"image_shape {shape} does not fit the network input {expected}; pass the shape of "
                             "one stored image, e.g. data.image_shape")
    return shape
