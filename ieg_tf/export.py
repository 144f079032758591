"""Export: a SavedModel of the EMA network whose serving signature takes images as the data set stores them.

The exported module holds its own copies of the EMA shadow values (in place of the network's trainable
variables) and of the network's current non-trainable state (BatchNorm moving statistics), and runs the user's
network through `stateless_call` on them: the same computation as `IEGTrainer.ema_logits`, while the live
network keeps its own weights. Only the network is exported, never the trainer (STYLE 3).

Example:
  path = export_serving(trainer, "/tmp/ieg_export", image_shape=(32, 32, 3))
  serve = tf.saved_model.load(path).signatures["serving_default"]
  probabilities = serve(images=uint8_batch)["probabilities"]
"""

import numbers

import tensorflow as tf

from ieg_tf import model

SIGNATURE = "serving_default"


def scale_images(images):
    """uint8 images 0..255 -> float32 in [-1, 1], the scale every ieg_tf network is trained on."""
    return (tf.cast(images, tf.float32) / 255.0 - 0.5) * 2.0


def export_serving(trainer, export_dir, *, image_shape, input_dtype=tf.uint8):
    """Writes a SavedModel of the trainer's EMA network with a `serving_default` signature.

    Args:
      trainer: an `IEGTrainer` (anything with `network` and `ema_weights` aligned with the network's
        trainable variables).
      export_dir: directory to write (local or any `tf.io.gfile` path).
      image_shape: (H, W, C) of one image.
      input_dtype: tf.uint8 (default): images as the data set stores them, 0..255, scaled to [-1, 1] inside the
        signature; tf.float32: images already scaled to [-1, 1].

    Returns:
      `export_dir`. The signature takes `images` [None, H, W, C] of `input_dtype` and returns
      {"probabilities": float32 [None, C]}.

    Raises:
      ValueError: an input dtype other than uint8/float32, an image shape the network does not accept, or
        weights that are NaN or Inf.
    """
    dtype = tf.as_dtype(input_dtype)
    if dtype not in (tf.uint8, tf.float32):
        raise ValueError(f"input_dtype must be tf.uint8 (stored images, 0..255) or tf.float32 (already scaled to "
                         f"[-1, 1]), got {dtype.name}")
    shape = _check_shape(image_shape, trainer.network)
    network = trainer.network
    if len(trainer.ema_weights) != len(network.trainable_variables):
        raise ValueError(f"the trainer has {len(trainer.ema_weights)} EMA values for "
                         f"{len(network.trainable_variables)} trainable variables; rebuild the trainer around "
                         "this network")
    model.check_finite_weights([*trainer.ema_weights, *network.non_trainable_variables])
    module = tf.Module()
    # Copies, not references: the SavedModel must not capture (and so must not depend on) the live variables.
    module.ema = [tf.Variable(v.numpy(), trainable=False, name=f"ema_{i}")
                  for i, v in enumerate(trainer.ema_weights)]
    module.state = [tf.Variable(v.numpy(), trainable=False, name=f"state_{i}")
                    for i, v in enumerate(network.non_trainable_variables)]

    @tf.function(input_signature=[tf.TensorSpec([None, *shape], dtype, name="images")])
    def serve(images):
        x = scale_images(images) if dtype == tf.uint8 else images
        logits, _ = network.stateless_call(module.ema, module.state, x, training=False)
        return {"probabilities": tf.nn.softmax(tf.cast(logits, tf.float32))}

    module.serve = serve
    tf.saved_model.save(module, export_dir, signatures={SIGNATURE: serve.get_concrete_function()})
    return export_dir


def _check_shape(image_shape, network):
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, numbers.Integral) and d > 0 for d in shape):
        raise ValueError(f"image_shape must be (H, W, C) of positive ints, got {image_shape!r}")
    shape = tuple(int(d) for d in shape)
    inputs = getattr(network, "inputs", None)
    if inputs:
        expected = tuple(inputs[0].shape[1:])
        if len(expected) != 3 or any(e is not None and e != d for e, d in zip(expected, shape)):
            raise ValueError(f"image_shape {shape} does not fit the network input {expected}; pass the shape of "
                             "one stored image, e.g. data.image_shape")
    return shape
