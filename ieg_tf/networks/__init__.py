"""Network zoo: the reference's classifiers as Keras 3 functional models.

Every network maps NHWC images in [-1, 1] to logits (no softmax). Models are built from standard Keras layers
only, so `model.stateless_call(trainable, non_trainable, x, training=True)` works for the meta step. No layer
carries a regularizer: the trainer adds L2 itself from `NetworkSpec`, R = weight_decay * 1/2 * sum ||v||^2 over
`decayed_variables(model, spec)` (SPEC §1.9).

Example:
  model = build_network("wrn28-2", num_classes=10, input_shape=(32, 32, 3))
  spec = get_spec("wrn28-2")
  l2 = spec.weight_decay * 0.5 * sum(tf.reduce_sum(v ** 2) for v in decayed_variables(model, spec))
"""

import dataclasses
import numbers
import re

import keras

from ieg_tf.networks import resnet29
from ieg_tf.networks import resnet50
from ieg_tf.networks import small
from ieg_tf.networks import wrn

DEFAULT_NETWORK = "wrn28-10"


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """How the reference regularises a network.

    Attributes:
      name: the network name, as given to `build_network`.
      weight_decay: the reference's L2 coefficient for this network.
      decay_kernels_only: True: R = wd * 1/2 * sum ||w||^2 over conv/dense kernels only (ResNet-29);
        False: over all trainable variables, BN beta and biases included (WRN, ResNet-50).
    """

    name: str
    weight_decay: float
    decay_kernels_only: bool


_WRN_NAME = re.compile(r"wrn(\d+)-(\d+)")
_SPECS = {
    "resnet29": NetworkSpec("resnet29", 1e-4, True),
    "resnet50": NetworkSpec("resnet50", 4e-4, False),
    "small_cnn": NetworkSpec("small_cnn", 5e-4, False),
    "mlp": NetworkSpec("mlp", 5e-4, False),
}
_BUILDERS = {
    "resnet29": resnet29.logits,
    "resnet50": resnet50.logits,
    "small_cnn": small.cnn_logits,
    "mlp": small.mlp_logits,
}
_OPTIONS = {"resnet29": ("reference_quirk",), "mlp": ("hidden",)}


def names():
    """Returns the known network names; any "wrn<depth>-<k>" with depth = 6n+4 is accepted as well."""
    return ["wrn28-10", "wrn28-2", "resnet29", "resnet50", "small_cnn", "mlp"]


def _wrn_size(name):
    """Returns (depth, width) for a "wrn<depth>-<k>" name, None for any other name."""
    match = _WRN_NAME.fullmatch(name)
    if match is None:
        return None
    depth, width = int(match[1]), int(match[2])
    if depth < 10 or (depth - 4) % 6 or width < 1:
        raise ValueError(f"bad network {name!r}: a WRN needs depth = 6n+4 with n >= 1 and width k >= 1, "
                         "e.g. 'wrn28-10' or 'wrn16-4'")
    return depth, width


def get_spec(name):
    """Returns the reference's regularisation settings for network `name`.

    Args:
      name: one of `names()`, or "wrn<depth>-<k>".

    Returns:
      A `NetworkSpec`.

    Raises:
      ValueError: if `name` is not a known network.
    """
    if name in _SPECS:
        return _SPECS[name]
    if isinstance(name, str) and _wrn_size(name):
        return NetworkSpec(name, 5e-4, False)
    raise ValueError(f"unknown network {name!r}; choose one of: {', '.join(names())} "
                     "(or any wrn<depth>-<k> with depth = 6n+4)")


def build_network(name, num_classes, input_shape, *, weight_decay=None, **options):
    """Builds network `name` as a functional Keras model from images to logits.

    The logits come out of a final linear `Activation` in the policy's variable dtype, so they are float32
    under a mixed-precision policy (and float64 under a float64 policy, for gradient checks).

    Args:
      name: one of `names()`, or "wrn<depth>-<k>".
      num_classes: number of logits.
      input_shape: (height, width, channels) of one image.
      weight_decay: overrides the spec's coefficient (e.g. ResNet-50's `--l2_weight_decay`). The effective
        spec is attached to the model as `model.network_spec`.
      **options: network-specific switches: `reference_quirk` (resnet29), `hidden` (mlp).

    Returns:
      A functional `keras.Model`, built for `input_shape`.

    Raises:
      ValueError: for an unknown name, an unknown option, or a malformed class count or input shape.
    """
    spec = get_spec(name)
    if not isinstance(num_classes, numbers.Integral) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    num_classes = int(num_classes)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, numbers.Integral) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be (height, width, channels) of positive ints, got {input_shape!r}")
    wrn_size = _wrn_size(name)
    key = "wrn" if wrn_size else name
    unknown = sorted(set(options) - set(_OPTIONS.get(key, ())))
    if unknown:
        allowed = ", ".join(_OPTIONS.get(key, ())) or "none"
        raise ValueError(f"network {name!r} does not take option(s) {unknown}; its options: {allowed}")

    inputs = keras.Input(shape=tuple(int(d) for d in input_shape), name="images")
    if wrn_size:
        x = wrn.logits(inputs, num_classes, depth=wrn_size[0], width=wrn_size[1])
    else:
        x = _BUILDERS[name](inputs, num_classes, **options)
    out_dtype = keras.config.dtype_policy().variable_dtype
    outputs = keras.layers.Activation("linear", dtype=out_dtype, name="logits")(x)
    model = keras.Model(inputs, outputs, name=name)
    if weight_decay is not None:
        spec = dataclasses.replace(spec, weight_decay=float(weight_decay))
    model.network_spec = spec
    return model


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def decayed_variables(model, spec):
    """Returns the trainable variables that the L2 regulariser covers, in `model.trainable_variables` order.

    Args:
      model: a network from `build_network` (or any Keras model).
      spec: its `NetworkSpec`.

    Returns:
      All trainable variables, or, if `spec.decay_kernels_only`, only the Conv2D and Dense kernels.
    """
    if not spec.decay_kernels_only:
        return list(model.trainable_variables)
    kernels = {id(layer.kernel) for layer in _all_layers(model)
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
    return [v for v in model.trainable_variables if id(v) in kernels]
