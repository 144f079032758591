"""Small networks with no reference counterpart: the offline default CNN and a BN-free MLP for unit tests.

`small_cnn` is sized for the embedded 8x8x1 digits (about 66k parameters at 10 classes): two conv3x3-BN-ReLU
layers of 32 channels, 2x2 max-pool, two of 64, global average pool, Dense. BN momentum is 0.9 rather than the
WRN's 0.999: a digits run is a few hundred steps, and moving statistics with a 1000-step memory would still be
near their initial values at evaluation time. The trainer regularises it like the WRN (wd 5e-4 over all
trainable variables), a choice of this project rather than the reference's.

`mlp` is Flatten-Dense(hidden, tanh)-Dense. tanh rather than ReLU keeps the loss smooth, so finite-difference
checks of the meta step's second-order gradients have no kinks to trip over.
"""

from keras import layers


def _conv_bn_relu(x, filters, name):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal",
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def cnn_logits(inputs, num_classes):
    """Builds the small CNN layer graph on `inputs`.

    Args:
      inputs: a `keras.Input` of NHWC images in [-1, 1] (8x8x1 for the digits).
      num_classes: number of output logits.

    Returns:
      The logits tensor, in the layers' compute dtype.
    """
    x = _conv_bn_relu(inputs, 32, "conv1")
    x = _conv_bn_relu(x, 32, "conv2")
    # float32 under a mixed policy: XLA has MaxPoolGradGrad (the meta step's second-order pass) for float32 only.
    x = layers.MaxPooling2D(2, padding="same", name="pool", dtype="float32")(x)
    x = _conv_bn_relu(x, 64, "conv3")
    x = _conv_bn_relu(x, 64, "conv4")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dense(num_classes, name="fc")(x)


def mlp_logits(inputs, num_classes, hidden=32):
    """Builds the two-layer MLP graph on `inputs` (no BN, so no non-trainable state).

    Args:
      inputs: a `keras.Input` of any shape; it is flattened.
      num_classes: number of output logits.
      hidden: width of the hidden tanh layer.

    Returns:
      The logits tensor, in the layers' compute dtype.
    """
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(hidden, activation="tanh", name="hidden")(x)
    return layers.Dense(num_classes, name="fc")(x)
