"""Weak and strong views of a training batch in core TF ops (SPEC 1.1 for CIFAR, SPEC 3 for WebVision).

`Augmenter.weak(images, seed)` maps a uint8 batch to float32 in [-1, 1]; `Augmenter.strong(weak, seed)` augments that
weak batch again. Both are pure functions of their inputs and the stateless seed (tf.random.stateless_* only), so
they run in `tf.data` `map` on batches and give the same output for the same seed.

Kinds:
* "cifar" (32x32, the reference): weak = zero-pad 2 (black; `cifar_process` pads to 36x36), random 32x32 crop
  (offsets 0..4), flip. Strong, on top of the weak view = one of the 95 CIFAR AutoAugment sub-policies per image
  with the PIL release's magnitudes, then zero-pad 4 (0 is mid-grey in [-1, 1]) and crop with offsets 0..7
  (SPEC 8.9), flip, and a 16x16 cutout clipped at the border, filled with 0.
  `policy="randaug"`: two ops and levels shared by the batch instead (autoaugment.randaugment).
* "small" (8x8 grey digits; this project's choice, not in the reference): pad 1 (crop offsets 0..2 weak, 0..1
  strong), no flip (a mirrored digit is another symbol or none), cutout 4. In the policies, translations and the
  in-policy cutout scale with width / 32 (translate int(0.25 L) px, at most 2; in-policy cutout side at most 2 px);
  angles, shears and colour magnitudes are unchanged.
* "imagenet" (WebVision): weak = Inception crop of each image resized back to the batch's H x W, then flip.
  Strong = TF ImageNet AutoAugment 'v0' per image (translate_const 250 and cutout_const 100 scaled by width / 224,
  empty pixels 128), then a 16x16 cutout filled with 0; no second crop or flip, as the reference. Pipelines that
  already ran `inception_crop` on each decoded image pass `inception_crop=False`.

`probe_affine=(degrees, shear, scale)` (this project's option, not in the reference; off by default) gives the probe
images a random rotation, x-shear and per-axis scale about the image centre (bilinear) before their weak view:
`Augmenter.probe`. It widens what one or a few trusted images per class cover (BUILD_NOTES, `--probe_affine`).

XLA: `weak` (every kind) and `strong` with policy "none" compile under `tf.function(jit_compile=True)`. The
AutoAugment / RandAugment strong views do not: rotate / shear / translate use `tf.raw_ops.ImageProjectiveTransformV3`,
which has no XLA kernel, and the batch is partitioned by op (data-dependent shapes). They run in `tf.data` (the
intended place) or a plain `tf.function`.
"""

import math

import tensorflow as tf

from ieg_tf import autoaugment
from ieg_tf import image_ops
from ieg_tf import random_ops
from ieg_tf.config import check_affine

KINDS = ("cifar", "small", "imagenet")
POLICIES = ("autoaug", "randaug", "none")
# weak_pad: the weak view's padding before its crop; pad: the strong view's (the reference's zero_pad_and_crop).
_DEFAULTS = {"cifar": dict(weak_pad=2, pad=4, flip=True, cutout=16),
             "small": dict(weak_pad=1, pad=1, flip=False, cutout=4),
             "imagenet": dict(weak_pad=0, pad=0, flip=True, cutout=16)}


def to_float(images_uint8):
    """uint8 pixels -> float32 in [-1, 1]: (x / 255 - 0.5) * 2."""
    return (tf.cast(images_uint8, tf.float32) / 255.0 - 0.5) * 2.0


def to_uint8(images_float):
    """float32 in [-1, 1] -> uint8, rounded (the inverse of `to_float`)."""
    return tf.cast(tf.clip_by_value(tf.round((images_float / 2.0 + 0.5) * 255.0), 0.0, 255.0), tf.uint8)


def _split(seed, n):
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or seed.shape.as_list() != [2]:
        raise ValueError(f"seed must be a stateless seed: int32/int64 of shape [2], got {seed.dtype.name} "
                         f"{seed.shape}; e.g. tf.constant([step, 0])")
    return random_ops.split(seed, n)


def affine_transforms(degrees, shear, scale_x, scale_y, height, width):
    """ImageProjectiveTransformV3 rows [B, 8]: output pixel p reads the input at R(degrees) Sh(shear)
    diag(1/scale_x, 1/scale_y) (p - c) + c, c the image centre; all arguments but height, width are [B] float32."""
    theta = degrees * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    a00, a01 = cos / scale_x, (cos * shear - sin) / scale_y
    a10, a11 = sin / scale_x, (sin * shear + cos) / scale_y
    cx, cy = (tf.cast(width, tf.float32) - 1.0) / 2.0, (tf.cast(height, tf.float32) - 1.0) / 2.0
    zero = tf.zeros_like(a00)
    return tf.stack([a00, a01, cx - a00 * cx - a01 * cy, a10, a11, cy - a10 * cx - a11 * cy, zero, zero], axis=1)


def random_affine(x, seed, degrees, shear, scale, fill=0.0):
    """Per image of a float batch [B, H, W, C]: rotation by U(-degrees, degrees), x-shear by U(-shear, shear) and
    each axis scaled by 1 + U(-scale, scale), about the centre; bilinear, `fill` where the input ends."""
    shape = tf.shape(x)
    u = 2.0 * random_ops.uniform([shape[0], 4], seed) - 1.0
    transforms = affine_transforms(u[:, 0] * degrees, u[:, 1] * shear, 1.0 + u[:, 2] * scale,
                                   1.0 + u[:, 3] * scale, shape[1], shape[2])
    return bilinear_warp(x, transforms, fill)


def bilinear_warp(x, transforms, fill=0.0):
    """Float batch [B, H, W, C] warped by `affine_transforms` rows [B, 8], bilinear, `fill` outside the input."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=tf.cast(fill, tf.float32),
        interpolation="BILINEAR", fill_mode="CONSTANT")


def crop_and_flip(x, pad, max_offset, flip, seed, fill=0.0):
    """Per image: pad by `pad` with `fill`, crop back at offsets 0..max_offset, then flip with probability 0.5."""
    shape = tf.shape(x)
    offset_seed, flip_seed = _split(seed, 2)
    offsets = random_ops.randint([shape[0], 2], offset_seed, 0, max_offset + 1) - pad
    rows = tf.range(shape[1])[None, :] + offsets[:, :1]
    cols = tf.range(shape[2])[None, :]
    if flip:
        flipped = random_ops.uniform([shape[0], 1], flip_seed) < 0.5
        cols = tf.where(flipped, shape[2] - 1 - cols, cols)
    cols = cols + offsets[:, 1:]
    out = tf.gather(x, tf.clip_by_value(rows, 0, shape[1] - 1), axis=1, batch_dims=1)
    out = tf.gather(out, tf.clip_by_value(cols, 0, shape[2] - 1), axis=2, batch_dims=1)
    valid = ((rows >= 0) & (rows < shape[1]))[:, :, None] & ((cols >= 0) & (cols < shape[2]))[:, None, :]
    return image_ops.select(valid[..., None], out, fill)


def _cutout(x, size, seed):
    shape = tf.shape(x)
    mask = image_ops.cutout_mask(shape, autoaugment.random_centres(shape, seed), tf.fill([shape[0]], size))
    return image_ops.select(mask, 0.0, x)


def _inception_boxes(height, width, batch, seed, attempts=10, fallback=224 / 256):
    """(top, left, crop height, crop width), int32 [B] each: area [0.08, 1] of the image, aspect [3/4, 4/3].

    The first of `attempts` draws that fits wins; otherwise the centre square of side fallback * shorter side.
    """
    area_seed, ratio_seed, place_seed = _split(seed, 3)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = (0.08 + 0.92 * random_ops.uniform([batch, attempts], area_seed)) * h * w
    log_ratio = math.log(3 / 4) + math.log(16 / 9) * random_ops.uniform([batch, attempts], ratio_seed)
    ratio = tf.exp(log_ratio)
    crop_w, crop_h = tf.round(tf.sqrt(area * ratio)), tf.round(tf.sqrt(area / ratio))
    fits = (crop_w >= 1) & (crop_w <= w) & (crop_h >= 1) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    side = tf.floor(fallback * tf.minimum(h, w))
    crop_h = tf.where(found, tf.gather(crop_h, first, batch_dims=1), side)
    crop_w = tf.where(found, tf.gather(crop_w, first, batch_dims=1), side)
    place = random_ops.uniform([batch, 2], place_seed)
    top = tf.where(found, tf.floor(place[:, 0] * (h - crop_h + 1)), tf.floor((h - side + 1) / 2))
    left = tf.where(found, tf.floor(place[:, 1] * (w - crop_w + 1)), tf.floor((w - side + 1) / 2))
    return [tf.cast(v, tf.int32) for v in (top, left, crop_h, crop_w)]


def _bilinear_taps(start, length, in_size, out_size):
    """Source indices and weights of `tf.image.resize` (bilinear, half-pixel centres) of a [start, start+length)
    window; all [B, out_size]."""
    length = tf.cast(length, tf.float32)[:, None]
    scale = length / tf.cast(out_size, tf.float32)
    src = (tf.range(out_size, dtype=tf.float32)[None, :] + 0.5) * scale - 0.5
    floor = tf.floor(src)
    lower = tf.cast(tf.maximum(floor, 0.0), tf.int32)
    upper = tf.cast(tf.minimum(tf.math.ceil(src), length - 1.0), tf.int32)
    clip = lambda i: tf.clip_by_value(start[:, None] + i, 0, in_size - 1)
    return clip(lower), clip(upper), src - floor


def resize_boxes(x, boxes, out_height, out_width):
    """Crops box (top, left, height, width) of each image of float batch `x` and resizes it bilinearly, as
    `tf.image.resize` of the crop, but batched and XLA-compilable (gathers instead of CropAndResize)."""
    top, left, crop_h, crop_w = boxes
    shape = tf.shape(x)
    c0, c1, fx = _bilinear_taps(left, crop_w, shape[2], out_width)
    r0, r1, fy = _bilinear_taps(top, crop_h, shape[1], out_height)
    left_px = tf.gather(x, c0, axis=2, batch_dims=1)
    right_px = tf.gather(x, c1, axis=2, batch_dims=1)
    rows = left_px + (right_px - left_px) * fx[:, None, :, None]
    upper = tf.gather(rows, r0, axis=1, batch_dims=1)
    lower = tf.gather(rows, r1, axis=1, batch_dims=1)
    return upper + (lower - upper) * fy[:, :, None, None]


def _single_image(image, name):
    image = tf.convert_to_tensor(image)
    if image.shape.rank != 3:
        raise ValueError(f"{name} takes one image [H, W, C], got shape {image.shape}; use tf.data map per image")
    return image


def _resized(image, top, left, crop_h, crop_w, size):
    crop = tf.image.resize(tf.slice(image, [top, left, 0], [crop_h, crop_w, -1]), [size, size], "bilinear")
    return tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), tf.uint8) if image.dtype == tf.uint8 else crop


def inception_crop(image, size, seed):
    """Inception-style random crop of one image (area [0.08, 1], aspect [3/4, 4/3], 10 attempts, centre-crop
    fallback), bilinearly resized to [size, size, C]; uint8 stays uint8 (rounded), float stays float32."""
    image = _single_image(image, "inception_crop")
    shape = tf.shape(image)
    top, left, crop_h, crop_w = _inception_boxes(shape[0], shape[1], 1, seed)
    return _resized(image, top[0], left[0], crop_h[0], crop_w[0], size)


def center_crop(image, size, crop_fraction=224 / 256):
    """Centre square covering `crop_fraction` of the shorter side of one image, resized to [size, size, C]."""
    image = _single_image(image, "center_crop")
    shape = tf.shape(image)
    side = tf.cast(crop_fraction * tf.cast(tf.minimum(shape[0], shape[1]), tf.float32), tf.int32)
    return _resized(image, (shape[0] - side + 1) // 2, (shape[1] - side + 1) // 2, side, side, size)


class Augmenter:
    """Weak and strong views for one kind of data (see the module docstring).

    Args:
      pad: pixels of padding before the strong view's random crop; None = the kind's default (cifar 4, small 1,
        imagenet 0).
      weak_pad: the same for the weak view; None = the kind's default (cifar 2, small 1, imagenet 0).
      flip: random horizontal flip; None = the kind's default (False for "small").
      cutout: side of the final cutout square of the strong view (0 = none); None = default (16, 4, 16).
      policy: "autoaug" (per-image sub-policy), "randaug" (shared ops) or "none" (crop, flip, cutout only).
      kind: "cifar", "small" or "imagenet".
      inception_crop: "imagenet" only; False when the images were cropped at decode time.
      probe_affine: (degrees, shear, scale) of `probe`'s random affine; None = `probe` is `weak` (the reference).
    """

    def __init__(self, pad=None, flip=None, cutout=None, policy="autoaug", kind="cifar", inception_crop=True,
                 probe_affine=None, weak_pad=None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        defaults = _DEFAULTS[kind]
        self.pad = defaults["pad"] if pad is None else int(pad)
        self.weak_pad = defaults["weak_pad"] if weak_pad is None else int(weak_pad)
        self.flip = defaults["flip"] if flip is None else bool(flip)
        self.cutout = defaults["cutout"] if cutout is None else int(cutout)
        if min(self.pad, self.weak_pad, self.cutout) < 0:
            raise ValueError(f"pad, weak_pad and cutout must be >= 0, got pad={self.pad}, weak_pad={self.weak_pad}, "
                             f"cutout={self.cutout}")
        self.policy, self.kind = policy, kind
        self.inception_crop = kind == "imagenet" and inception_crop
        self.probe_affine = check_affine(probe_affine)

    def __repr__(self):
        return (f"Augmenter(pad={self.pad}, weak_pad={self.weak_pad}, flip={self.flip}, cutout={self.cutout}, "
                f"policy={self.policy!r}, "
                f"kind={self.kind!r}, inception_crop={self.inception_crop}, probe_affine={self.probe_affine})")

    @staticmethod
    def _check(images, dtype, what):
        images = tf.convert_to_tensor(images)
        if images.dtype != dtype or images.shape.rank != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"{what} takes a {dtype.name} batch [B, H, W, C] with C = 1 or 3, got "
                             f"{images.dtype.name} {images.shape}; batch the data set before this map")
        return images

    def weak(self, images, seed):
        """uint8 batch [B, H, W, C] -> float32 [-1, 1], same shape: (Inception crop), pad-crop, flip."""
        return self._weak(tf.cast(self._check(images, tf.uint8, "Augmenter.weak"), tf.float32), seed)

    def probe(self, images, seed):
        """The probe images' view: `weak`, after the random affine when `probe_affine` is set."""
        x = tf.cast(self._check(images, tf.uint8, "Augmenter.probe"), tf.float32)
        if self.probe_affine:
            # A seed of its own (folded in), so weak's crop and flip draws are those of `weak` with the same seed.
            x = random_affine(x, random_ops.fold_in(_split(seed, 2)[0], 1), *self.probe_affine)
        return self._weak(x, seed)

    def _weak(self, x, seed):
        crop_seed, flip_seed = _split(seed, 2)
        if self.inception_crop:
            shape = tf.shape(x)
            x = resize_boxes(x, _inception_boxes(shape[1], shape[2], shape[0], crop_seed), shape[1], shape[2])
        if self.weak_pad or self.flip:
            # The reference's tf.image.random_crop of the padded image: offsets 0..2 * weak_pad.
            x = crop_and_flip(x, self.weak_pad, 2 * self.weak_pad, self.flip, flip_seed)
        return to_float(x)

    def strong(self, weak_images, seed):
        """Weak float32 batch -> float32 [-1, 1], same shape: policy, then pad-crop, flip, cutout (see module)."""
        weak_images = self._check(weak_images, tf.float32, "Augmenter.strong")
        x = weak_images
        policy_seed, crop_seed, cutout_seed = _split(seed, 3)
        if self.policy != "none":
            pixels = tf.cast(to_uint8(x), tf.float32)
            width = tf.cast(tf.shape(x)[2], tf.float32)
            imagenet = self.kind == "imagenet"
            flavor = autoaugment.imagenet_flavor(width) if imagenet else autoaugment.cifar_flavor(width)
            if self.policy == "randaug":
                pixels, empty = autoaugment.randaugment(pixels, policy_seed, flavor)
            else:
                policies = autoaugment.IMAGENET_POLICY_V0 if imagenet else autoaugment.CIFAR_POLICIES
                pixels, empty = autoaugment.autoaugment(pixels, policy_seed, policies, flavor)
            # ensure_shape: the per-op partition loses the static batch size that TPU input pipelines need.
            x = tf.ensure_shape(image_ops.select(empty, 0.0, to_float(pixels)), weak_images.shape)
        strong_flip = self.flip and self.kind != "imagenet"
        if self.pad or strong_flip:
            # zero_pad_and_crop of the reference draws offsets randint(0, 2 * pad), i.e. 0..2 * pad - 1 (SPEC 8.9).
            x = crop_and_flip(x, self.pad, max(2 * self.pad - 1, 0), strong_flip, crop_seed)
        if self.cutout:
            x = _cutout(x, self.cutout, cutout_seed)
        return x


def augmenter_for(kind, policy="autoaug", probe_affine=None):
    """The reference's augmentation for `kind` ("cifar", "small", "imagenet") with the given strong policy."""
    return Augmenter(kind=kind, policy=policy, probe_affine=probe_affine)
