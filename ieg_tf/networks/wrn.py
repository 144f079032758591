"""Wide ResNet WRN-d-k as built by the IEG reference (`models/wrn.py`, AutoAugment style).

Differences from the textbook WRN that the reference has and this file keeps (SPEC §4):
* parameter-free shortcuts: average pooling (kernel = stride) then symmetric zero padding of the channels,
  so there are no 1x1 convolutions;
* an extra residual sum after every stage (the stage input, pooled and padded), and after the last stage the
  initial-conv output pooled by the total stride (4) and padded to the final width;
* batch norm without gamma (contrib `scale=False`), momentum 0.999, epsilon 1e-3;
* conv kernels N(0, sqrt(2 / (3*3*out_channels))) untruncated; FC kernel U(+-1/sqrt(num_classes)).

The shortcut pools use SAME padding. For inputs whose sides are multiples of 4 (CIFAR's 32x32 included) this
equals the reference's VALID pooling exactly; for other sizes it makes the pooled shortcut match the strided
SAME convolutions (ceil(size / stride)), where the reference would fail on a shape mismatch.
"""

import math

import keras
from keras import layers

_STRIDES = (1, 2, 2)


def _bn_relu(x, name):
    x = layers.BatchNormalization(
        momentum=0.999, epsilon=1e-3, center=True, scale=False, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _conv3x3(x, filters, stride, name):
    # Fan-out He init, untruncated: the reference's `tf.random_normal_initializer(sqrt(2 / n))`.
    init = keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (9 * filters)))
    return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                         kernel_initializer=init, name=name)(x)


def _shortcut(x, in_ch, out_ch, stride, name):
    """Parameter-free projection: avg-pool by `stride`, then zero-pad channels (out-in)/2 on each side."""
    if in_ch == out_ch:
        return x
    if stride > 1:
        x = layers.AveragePooling2D(stride, stride, padding="same", name=f"{name}_pool")(x)
    pad = (out_ch - in_ch) // 2
    height, width = x.shape[1], x.shape[2]
    # Keras has no channel-padding layer: view channels as a third spatial axis and pad that.
    x = layers.Reshape((height, width, in_ch, 1), name=f"{name}_as3d")(x)
    x = layers.ZeroPadding3D(((0, 0), (0, 0), (pad, pad)), name=f"{name}_chpad")(x)
    return layers.Reshape((height, width, out_ch), name=f"{name}_as2d")(x)


def _block(x, in_ch, out_ch, stride, activate_before_residual, name):
    """Pre-activation basic block: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3, plus a shortcut."""
    if activate_before_residual:
        # The first block of stage 1 feeds the BN-ReLU output to both branches.
        x = _bn_relu(x, f"{name}_pre")
        branch = x
    else:
        branch = _bn_relu(x, f"{name}_pre")
    branch = _conv3x3(branch, out_ch, stride, f"{name}_conv1")
    branch = _bn_relu(branch, f"{name}_mid")
    branch = _conv3x3(branch, out_ch, 1, f"{name}_conv2")
    skip = _shortcut(x, in_ch, out_ch, stride, f"{name}_skip")
    return layers.Add(name=f"{name}_add")([skip, branch])


def logits(inputs, num_classes, depth=28, width=10):
    """Builds the WRN layer graph on `inputs`.

    Args:
      inputs: a `keras.Input` of NHWC images in [-1, 1].
      num_classes: number of output logits.
      depth: total depth 6n+4 (n blocks per stage).
      width: widening factor k; stage widths are 16k, 32k, 64k.

    Returns:
      The logits tensor, in the layers' compute dtype.
    """
    blocks = (depth - 4) // 6
    filters = (16, 16 * width, 32 * width, 64 * width)
    x = _conv3x3(inputs, filters[0], 1, "init_conv")
    first_x = stage_in = x
    for stage in range(3):
        in_ch, out_ch, stride = filters[stage], filters[stage + 1], _STRIDES[stage]
        for i in range(blocks):
            x = _block(x, in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1,
                       activate_before_residual=(stage == 0 and i == 0), name=f"unit_{stage + 1}_{i}")
        stage_skip = _shortcut(stage_in, in_ch, out_ch, stride, f"stage_{stage + 1}_skip")
        x = stage_in = layers.Add(name=f"stage_{stage + 1}_add")([x, stage_skip])
    total_stride = math.prod(_STRIDES)
    first_skip = _shortcut(first_x, filters[0], filters[3], total_stride, "init_skip")
    x = layers.Add(name="init_add")([x, first_skip])
    x = _bn_relu(x, "final")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    bound = 1.0 / math.sqrt(num_classes)  # the reference scales by the class count, not the fan-in
    return layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                        bias_initializer="zeros", name="fc")(x)
