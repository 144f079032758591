"""ResNet-50 v2 of the IEG reference (`nets/resnet50.py`, the TF-official pre-activation ResNet).

Stem conv7x7/2 (64) + max-pool 3x3/2 SAME, no BN after the stem (the first block's pre-activation does it).
Stages of [3, 4, 6, 3] bottleneck blocks BN-ReLU-conv1x1(f)-BN-ReLU-conv3x3(f, stride)-BN-ReLU-conv1x1(4f),
f = 64 * 2^i, strides [1, 2, 2, 2]. The first block of a stage has a conv1x1(4f, stride) projection shortcut
taken after its first BN-ReLU. Head: BN-ReLU, global mean, Dense. Strided convs pad by the kernel size alone
("fixed padding") and run VALID. BN momentum 0.997, epsilon 1e-5; conv kernels VarianceScaling(1, fan_in,
truncated normal), the TF1 `variance_scaling_initializer()` default. Builds for any input size; the reference
trains on 224x224.
"""

from keras import initializers
from keras import layers

_BLOCKS = (3, 4, 6, 3)
_STRIDES = (1, 2, 2, 2)


def _bn_relu(x, name):
    x = layers.BatchNormalization(momentum=0.997, epsilon=1e-5, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _conv(x, filters, kernel, stride, name):
    """Conv without bias; strided convs pad by the kernel size only, independent of the input size."""
    padding = "same"
    if stride > 1:
        begin = (kernel - 1) // 2
        end = kernel - 1 - begin
        if kernel > 1:
            x = layers.ZeroPadding2D(((begin, end), (begin, end)), name=f"{name}_pad")(x)
        padding = "valid"
    init = initializers.VarianceScaling(1.0, mode="fan_in", distribution="truncated_normal")
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                         kernel_initializer=init, name=name)(x)


def _block(x, filters, stride, project, name):
    shortcut = x
    x = _bn_relu(x, f"{name}_pre")
    if project:
        shortcut = _conv(x, 4 * filters, 1, stride, f"{name}_proj")
    x = _conv(x, filters, 1, 1, f"{name}_conv1")
    x = _conv(_bn_relu(x, f"{name}_mid1"), filters, 3, stride, f"{name}_conv2")
    x = _conv(_bn_relu(x, f"{name}_mid2"), 4 * filters, 1, 1, f"{name}_conv3")
    return layers.Add(name=f"{name}_add")([x, shortcut])


def logits(inputs, num_classes):
    """Builds the ResNet-50 v2 layer graph on `inputs`.

    Args:
      inputs: a `keras.Input` of NHWC images in [-1, 1].
      num_classes: number of output logits.

    Returns:
      The logits tensor, in the layers' compute dtype.
    """
    x = _conv(inputs, 64, 7, 2, "stem_conv")
    # float32 under a mixed policy: XLA has MaxPoolGradGrad (the meta step's second-order pass) for float32 only.
    x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool", dtype="float32")(x)
    for stage, (blocks, stride) in enumerate(zip(_BLOCKS, _STRIDES)):
        for i in range(blocks):
            x = _block(x, 64 * 2**stage, stride if i == 0 else 1, project=(i == 0),
                       name=f"stage{stage + 1}_block{i + 1}")
    x = _bn_relu(x, "final")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return layers.Dense(num_classes, name="fc")(x)
