"""ResNet-29 of the IEG reference (`third_party/cifar10_resnet.py`, the Keras "resnet_v2" CIFAR example).

Depth 9n+2 with n = 3: a conv3x3(16)-BN-ReLU stem, then 3 stages of 3 bottleneck blocks
[BN-act-conv1x1(in, stride)] -> [BN-ReLU-conv3x3(in)] -> [BN-ReLU-conv1x1(out)], in-widths 16/64/128 and
out-widths 64/128/256, stride 2 in the first block of stages 2 and 3. The first block of each stage adds a
projection shortcut conv1x1(out, stride) without BN. Head: BN-ReLU, average pool 8x8 with stride 1, flatten,
Dense. Convs have no bias and a (truncated) glorot_normal init; BN momentum 0.9, epsilon 1e-5 with gamma.

Reference quirk (SPEC §8 item 14): the reference sets `activation = None` for the very first block and never
resets it, so in every later block the first BN is not followed by a ReLU. `reference_quirk=True` (default)
reproduces this; `reference_quirk=False` gives the Keras example's BN-ReLU there.

The 8x8 head pool assumes 32x32 inputs (an 8x8 stage-3 map, pooled to 1x1). For inputs whose stage-3 map is
smaller than 8, the pool shrinks to the map so that the net still builds.
"""

from keras import layers

_BLOCKS_PER_STAGE = 3


def _bn(x, name):
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _conv(x, filters, kernel, stride, name):
    return layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                         kernel_initializer="glorot_normal", name=name)(x)


def _bn_relu_conv(x, filters, kernel, stride, name, bn=True, relu=True):
    if bn:
        x = _bn(x, f"{name}_bn")
    if relu:
        x = layers.ReLU(name=f"{name}_relu")(x)
    return _conv(x, filters, kernel, stride, name)


def logits(inputs, num_classes, reference_quirk=True):
    """Builds the ResNet-29 layer graph on `inputs`.

    Args:
      inputs: a `keras.Input` of NHWC images in [-1, 1].
      num_classes: number of output logits.
      reference_quirk: if True, later blocks skip the ReLU after their first BN, as the reference does.

    Returns:
      The logits tensor, in the layers' compute dtype.
    """
    x = _conv(inputs, 16, 3, 1, "stem_conv")
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    in_ch = 16
    for stage in range(3):
        out_ch = in_ch * (4 if stage == 0 else 2)
        for block in range(_BLOCKS_PER_STAGE):
            name = f"stage{stage + 1}_block{block + 1}"
            stride = 2 if stage > 0 and block == 0 else 1
            very_first = stage == 0 and block == 0
            y = _bn_relu_conv(x, in_ch, 1, stride, f"{name}_conv1", bn=not very_first,
                              relu=not (very_first or reference_quirk))
            y = _bn_relu_conv(y, in_ch, 3, 1, f"{name}_conv2")
            y = _bn_relu_conv(y, out_ch, 1, 1, f"{name}_conv3")
            if block == 0:
                x = _conv(x, out_ch, 1, stride, f"{name}_proj")
            x = layers.Add(name=f"{name}_add")([x, y])
        in_ch = out_ch
    x = layers.ReLU(name="final_relu")(_bn(x, "final_bn"))
    pool = (min(8, x.shape[1]), min(8, x.shape[2]))
    x = layers.AveragePooling2D(pool, strides=1, name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    return layers.Dense(num_classes, name="fc")(x)
