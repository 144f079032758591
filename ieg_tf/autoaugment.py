"""AutoAugment and RandAugment policies, applied per image to a batch without Python or numpy (SPEC 1.1 and 3).

Two flavours of the same op set:
* "pil" is the reference's CIFAR release (`augmentation_transforms.py`, PIL ops on an RGBA image). Level L in 0..10
  gives Rotate +-int(3L) deg, TranslateX/Y +-int(L * translate_const / 10) px, ShearX/Y +-0.03L, Posterize keeps
  4 - int(0.4L) bits, Solarize threshold 256 - int(25.6L), Color/Contrast/Brightness/Sharpness 0.1 + 0.18L, Cutout
  side int(L * cutout_const / 10) px. Pixels emptied by the affine ops or the in-policy Cutout keep an "empty"
  flag (PIL's alpha 0) that the caller turns into 0 in [-1, 1] space; the ops that go through RGB in the reference
  (AutoContrast, Equalize, Invert, Posterize, Solarize) drop the flag, so later ops see the black pixel, as PIL.
* "tf" is the TF ImageNet AutoAugment (`autoaugment.py`, policy 'v0'): Rotate +-3L deg, Translate
  +-L * translate_const / 10 px, Posterize keeps int(0.4L) bits (at least 1: TF clamps the shift of 8 to 7),
  Solarize threshold int(25.6L), SolarizeAdd +int(11L) below 128, Cutout side 2 int(L * cutout_const / 10), and
  empty pixels are filled with 128 right after each op.

Every image draws its own sub-policy, application coins and signs. Each step partitions the batch by op, so an op
runs only on the images that drew it (`tf.dynamic_partition` / `tf.dynamic_stitch`, no Python branching).
"""

import dataclasses

import tensorflow as tf

from ieg_tf import image_ops as ops
from ieg_tf.random_ops import randint, split, uniform

OPS = ("Identity", "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout")
_CUTOUT_RGB = (125.0, 122.0, 113.0)   # the CIFAR release paints in-policy Cutout this colour (with alpha 0)

# The 95 "good policies" found on CIFAR-10 (AutoAugment release; the reference's `cifar10_policies`).
CIFAR_POLICIES = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)), (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)), (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)), (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)), (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)), (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.0, 2)), (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.4, 3)), (("Equalize", 0.7, 5), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("TranslateY", 0.7, 9)), (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 1)),
    (("TranslateY", 0.8, 9), ("TranslateY", 0.9, 9)), (("AutoContrast", 0.8, 0), ("TranslateY", 0.7, 9)),
    (("TranslateY", 0.2, 7), ("Color", 0.9, 6)), (("Equalize", 0.7, 6), ("Color", 0.4, 9)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)), (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)), (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)), (("Brightness", 0.3, 7), ("AutoContrast", 0.5, 8)),
    (("AutoContrast", 0.9, 4), ("AutoContrast", 0.5, 6)), (("Solarize", 0.3, 5), ("Equalize", 0.6, 5)),
    (("TranslateY", 0.2, 4), ("Sharpness", 0.3, 3)), (("Brightness", 0.0, 8), ("Color", 0.8, 8)),
    (("Solarize", 0.2, 6), ("Color", 0.8, 6)), (("Solarize", 0.2, 6), ("AutoContrast", 0.8, 1)),
    (("Solarize", 0.4, 1), ("Equalize", 0.6, 5)), (("Brightness", 0.0, 0), ("Solarize", 0.5, 2)),
    (("AutoContrast", 0.9, 5), ("Brightness", 0.5, 3)), (("Contrast", 0.7, 5), ("Brightness", 0.0, 2)),
    (("Solarize", 0.2, 8), ("Solarize", 0.1, 5)), (("Contrast", 0.5, 1), ("TranslateY", 0.2, 9)),
    (("AutoContrast", 0.6, 5), ("TranslateY", 0.0, 9)), (("AutoContrast", 0.9, 4), ("Equalize", 0.8, 4)),
    (("Brightness", 0.0, 7), ("Equalize", 0.4, 7)), (("Solarize", 0.2, 5), ("Equalize", 0.7, 5)),
    (("Equalize", 0.6, 8), ("Color", 0.6, 2)), (("Color", 0.3, 7), ("Color", 0.2, 4)),
    (("AutoContrast", 0.5, 2), ("Solarize", 0.7, 2)), (("AutoContrast", 0.2, 0), ("Equalize", 0.1, 0)),
    (("ShearY", 0.6, 5), ("Equalize", 0.6, 5)), (("Brightness", 0.9, 3), ("AutoContrast", 0.4, 1)),
    (("Equalize", 0.8, 8), ("Equalize", 0.7, 7)), (("Equalize", 0.7, 7), ("Solarize", 0.5, 0)),
    (("Equalize", 0.8, 4), ("TranslateY", 0.8, 9)), (("TranslateY", 0.8, 9), ("TranslateY", 0.6, 9)),
    (("TranslateY", 0.9, 0), ("TranslateY", 0.5, 9)), (("AutoContrast", 0.5, 3), ("Solarize", 0.3, 4)),
    (("Solarize", 0.5, 3), ("Equalize", 0.4, 4)), (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)), (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)), (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("AutoContrast", 0.1, 5), ("Brightness", 0.0, 0)), (("Cutout", 0.2, 4), ("Equalize", 0.1, 1)),
    (("Equalize", 0.7, 7), ("AutoContrast", 0.6, 4)), (("Color", 0.1, 8), ("ShearY", 0.2, 3)),
    (("ShearY", 0.4, 2), ("Rotate", 0.7, 0)), (("ShearY", 0.1, 3), ("AutoContrast", 0.9, 5)),
    (("TranslateY", 0.3, 6), ("Cutout", 0.3, 3)), (("Equalize", 0.5, 0), ("Solarize", 0.6, 6)),
    (("AutoContrast", 0.3, 5), ("Rotate", 0.2, 7)), (("Equalize", 0.8, 2), ("Invert", 0.4, 0)),
    (("Equalize", 0.9, 5), ("Color", 0.7, 0)), (("Equalize", 0.1, 1), ("ShearY", 0.1, 3)),
    (("AutoContrast", 0.7, 3), ("Equalize", 0.7, 0)), (("Brightness", 0.5, 1), ("Contrast", 0.1, 7)),
    (("Contrast", 0.1, 4), ("Solarize", 0.6, 5)), (("Solarize", 0.2, 3), ("ShearX", 0.0, 0)),
    (("TranslateX", 0.3, 0), ("TranslateX", 0.6, 0)), (("Equalize", 0.5, 9), ("TranslateY", 0.6, 7)),
    (("ShearX", 0.1, 0), ("Sharpness", 0.5, 1)), (("Equalize", 0.8, 6), ("Invert", 0.3, 6)),
    (("AutoContrast", 0.3, 9), ("Cutout", 0.5, 3)), (("ShearX", 0.4, 4), ("AutoContrast", 0.9, 2)),
    (("ShearX", 0.0, 3), ("Posterize", 0.0, 3)), (("Solarize", 0.4, 3), ("Color", 0.2, 4)),
    (("Equalize", 0.1, 4), ("Equalize", 0.7, 6)), (("Equalize", 0.3, 8), ("AutoContrast", 0.4, 3)),
    (("Solarize", 0.6, 4), ("AutoContrast", 0.7, 6)), (("AutoContrast", 0.2, 9), ("Brightness", 0.4, 8)),
    (("Equalize", 0.1, 0), ("Equalize", 0.0, 6)), (("Equalize", 0.8, 4), ("Equalize", 0.0, 4)),
    (("Equalize", 0.5, 5), ("AutoContrast", 0.1, 2)), (("Solarize", 0.5, 5), ("AutoContrast", 0.9, 5)),
    (("AutoContrast", 0.6, 1), ("AutoContrast", 0.7, 8)), (("Equalize", 0.2, 0), ("AutoContrast", 0.1, 2)),
    (("Equalize", 0.6, 9), ("Equalize", 0.4, 4)),
)

# TF ImageNet AutoAugment policy 'v0' (25 sub-policies), the WebVision strong view.
IMAGENET_POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)), (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)), (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)), (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)), (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)), (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)), (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)), (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)), (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)), (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)), (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)), (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)), (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

# RandAugment's op list of the reference (`randaugment.RANDOM_POLICY_OPS`).
RANDAUG_OPS = ("Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color", "Contrast", "Brightness",
               "Sharpness", "ShearX", "TranslateX", "TranslateY", "Posterize", "ShearY")


@dataclasses.dataclass(frozen=True)
class Flavor:
    """How levels become op arguments, and what happens to empty pixels (see the module docstring)."""
    pil: bool
    translate_const: float
    cutout_const: float


def cifar_flavor(width):
    """The CIFAR PIL release; pixel magnitudes (10 px translate, 20 px cutout at level 10) scale with width / 32."""
    return Flavor(pil=True, translate_const=10.0 * width / 32.0, cutout_const=20.0 * width / 32.0)


def imagenet_flavor(width):
    """TF ImageNet AutoAugment (translate_const 250, cutout_const 100 at 224 px), scaled with width / 224."""
    return Flavor(pil=False, translate_const=250.0 * width / 224.0, cutout_const=100.0 * width / 224.0)


def _arguments(level, flavor):
    """Per-image op arguments [B] for levels [B]: float64 for the geometry, float32 for the rest."""
    level = tf.cast(level, tf.float64)

    def scaled(maxval):
        # float64 like the reference's Python arithmetic: PIL receives e.g. 2 * 1.8 / 10 + 0.1 rounded once.
        return level * (tf.cast(maxval, tf.float64) if tf.is_tensor(maxval) else maxval) / 10.0

    if flavor.pil:
        args = dict(degrees=tf.floor(scaled(30.0)), bits=4.0 - tf.floor(scaled(4.0)),
                    threshold=256.0 - tf.floor(scaled(256.0)), addition=tf.zeros_like(level), shear=scaled(0.3),
                    pixels=tf.floor(scaled(flavor.translate_const)), cutout=tf.floor(scaled(flavor.cutout_const)))
    else:
        args = dict(degrees=scaled(30.0), bits=tf.maximum(tf.floor(scaled(4.0)), 1.0),
                    threshold=tf.floor(scaled(256.0)), addition=tf.floor(scaled(110.0)), shear=scaled(0.3),
                    pixels=scaled(flavor.translate_const), cutout=2.0 * tf.floor(scaled(flavor.cutout_const)))
    args["factor"] = scaled(1.8) + 0.1
    # Geometry stays float64 (PIL's double coefficients); the colour ops take float32.
    return {name: value if name in ("degrees", "shear", "pixels") else tf.cast(value, tf.float32)
            for name, value in args.items()}


def _point(lut_fn, drops_empty):
    """An op that maps every pixel through a per-image table; `drops_empty` as the PIL release's RGB round trip."""
    def op(x, empty, arg):
        return ops.apply_lut(x, lut_fn(x, arg)), (tf.zeros_like(empty) if drops_empty else empty)
    return op


def _blend_with(degenerate_fn):
    def op(x, empty, arg):
        return ops.blend(degenerate_fn(x), x, arg["factor"]), empty
    return op


def _affine(coeffs_fn):
    def op(x, empty, arg):
        # Warping a "content" channel with fill 0 marks the pixels that came from outside (PIL's alpha 0).
        warped = ops.warp(tf.concat([x, tf.cast(~empty, tf.float32)], axis=-1), coeffs_fn(x, arg))
        return warped[..., :-1], warped[..., -1:] < 0.5
    return op


def _cutout(x, empty, arg):
    mask = ops.cutout_mask(tf.shape(x), arg["centre"], tf.cast(arg["cutout"], tf.int32))
    return ops.select(mask, tf.constant(_CUTOUT_RGB[:x.shape[-1]]), x), empty | mask


_OP_FNS = {
    "Identity": lambda x, empty, arg: (x, empty),
    "AutoContrast": _point(lambda x, arg: ops.autocontrast_lut(x), True),
    "Equalize": _point(lambda x, arg: ops.equalize_lut(x), True),
    "Invert": _point(lambda x, arg: ops.invert_lut(), True),
    "Posterize": _point(lambda x, arg: ops.posterize_lut(arg["bits"]), True),
    "Solarize": _point(lambda x, arg: ops.solarize_lut(arg["threshold"]), True),
    "SolarizeAdd": _point(lambda x, arg: ops.solarize_add_lut(arg["addition"]), True),
    "Contrast": _point(lambda x, arg: ops.contrast_lut(x, arg["factor"]), False),
    "Brightness": _point(lambda x, arg: ops.brightness_lut(arg["factor"]), False),
    "Color": _blend_with(ops.grey),
    "Sharpness": _blend_with(ops.smooth),
    "Rotate": _affine(lambda x, arg: ops.rotate_coeffs(arg["degrees"], tf.shape(x)[1], tf.shape(x)[2])),
    "ShearX": _affine(lambda x, arg: ops.shear_x_coeffs(arg["shear"])),
    "ShearY": _affine(lambda x, arg: ops.shear_y_coeffs(arg["shear"])),
    "TranslateX": _affine(lambda x, arg: ops.translate_coeffs(arg["pixels"], tf.zeros_like(arg["pixels"]))),
    "TranslateY": _affine(lambda x, arg: ops.translate_coeffs(tf.zeros_like(arg["pixels"]), arg["pixels"])),
    "Cutout": _cutout,
}


def apply_step(x, empty, op, level, apply, seed, flavor):
    """Applies op[i] at level[i] to image i where apply[i]; one (op, prob, level) entry of a sub-policy.

    The batch is partitioned by op, each op runs on its own images only, and the results are stitched back.

    Args:
      x: float32 [B, H, W, C], values 0..255.
      empty: bool [B, H, W, 1], pixels that hold no image content (PIL flavour).
      op: int32 [B] indices into OPS.
      level: float32 [B] levels 0..10.
      apply: bool [B] (the probability coin, drawn by the caller).
      seed: stateless seed [2] for the random signs and the Cutout centres.
      flavor: Flavor.

    Returns:
      (x, empty) after the step.
    """
    shape = tf.shape(x)
    sign_seed, centre_seed = split(seed, 2)
    sign = tf.cast(tf.where(uniform([shape[0]], sign_seed) < 0.5, -1.0, 1.0), tf.float64)
    arg = _arguments(level, flavor)
    arg.update(degrees=sign * arg["degrees"], shear=sign * arg["shear"], pixels=sign * arg["pixels"],
               centre=random_centres(shape, centre_seed))
    group = tf.where(apply, op, OPS.index("Identity"))

    def parts(t):
        return tf.dynamic_partition(t, group, len(OPS))

    index, xs, empties = parts(tf.range(shape[0])), parts(x), parts(empty)
    args = {name: parts(value) for name, value in arg.items()}
    outs = [_OP_FNS[name](xs[k], empties[k], {n: v[k] for n, v in args.items()}) for k, name in enumerate(OPS)]
    x = tf.dynamic_stitch(index, [out for out, _ in outs])
    empty = tf.dynamic_stitch(index, [e for _, e in outs])
    if not flavor.pil:
        x = ops.select(empty, 128.0, x)
        empty = tf.zeros_like(empty)
    return x, empty


def random_centres(shape, seed):
    """Uniform (row, column) pixel positions, int32 [B, 2], for a batch of `shape` [B, H, W, C]."""
    size = tf.cast(shape[1:3], tf.float32)
    return tf.cast(tf.floor(uniform([shape[0], 2], seed) * size), tf.int32)


def autoaugment(x, seed, policies, flavor):
    """Applies one sub-policy drawn uniformly from `policies` to each image of `x` (float32 0..255 [B, H, W, C]).

    Returns:
      (x, empty): the augmented batch and its empty-pixel flags (always False in the "tf" flavour).
    """
    table = tf.constant([[[OPS.index(name), prob, level] for name, prob, level in sub] for sub in policies])
    batch = tf.shape(x)[0]
    seeds = split(seed, 1 + 2 * len(policies[0]))
    sub = tf.gather(table, randint([batch], seeds[0], 0, len(policies)))
    empty = tf.zeros_like(x[..., :1], tf.bool)
    for k in range(len(policies[0])):
        apply = uniform([batch], seeds[1 + 2 * k]) < sub[:, k, 1]
        x, empty = apply_step(x, empty, tf.cast(sub[:, k, 0], tf.int32), sub[:, k, 2], apply, seeds[2 + 2 * k],
                              flavor)
    return x, empty


def randaugment(x, seed, flavor, num_ops=2, prob=0.5, max_level=10, names=RANDAUG_OPS):
    """RandAugment of the reference: `num_ops` ops drawn with replacement from `names` and levels
    randint(1, max_level), shared by the whole batch; each image applies each op with probability `prob`.

    Returns:
      (x, empty) as `autoaugment`.
    """
    batch = tf.shape(x)[0]
    seeds = split(seed, 2 + 2 * num_ops)
    choices = randint([num_ops], seeds[0], 0, len(names))
    levels = tf.cast(randint([num_ops], seeds[1], 1, max_level), tf.float32)
    empty = tf.zeros_like(x[..., :1], tf.bool)
    for k in range(num_ops):
        apply = uniform([batch], seeds[2 + 2 * k]) < prob
        op = tf.fill([batch], tf.gather([OPS.index(name) for name in names], choices[k]))
        x, empty = apply_step(x, empty, op, tf.fill([batch], levels[k]), apply, seeds[3 + 2 * k], flavor)
    return x, empty
