"""AutoAugment image ops in core TensorFlow with PIL semantics (replaces tfa / PIL, SPEC 0 and 1.1).

Conventions of the public ops:
* `images`: uint8 or float32 pixel values on the 0..255 scale, one image [H, W, C] or a batch [B, H, W, C], C = 1
  or 3. The result has the input's dtype and shape. Float results stay integer-valued because PIL rounds to uint8
  after every op.
* Magnitudes (`degrees`, `factor`, `bits`, ...) are a number, a scalar tensor or one value per image [B].
* Geometry is PIL's: pixel (x, y) covers [x, x+1) x [y, y+1), positive angles turn counter-clockwise about the
  image centre, and the affine ops sample the nearest pixel through `tf.raw_ops.ImageProjectiveTransformV3`.
  Pixels that come from outside the image get `fill` (default 0, PIL's empty black).
* Colour ops use PIL's arithmetic: grey = (19595 R + 38470 G + 7471 B + 32768) >> 16, blends are computed in
  float32 and truncated, equalize and autocontrast build PIL's look-up tables.

Only ImageProjectiveTransformV3 (rotate, shear, translate) lacks an XLA kernel; everything else here compiles under
`tf.function(jit_compile=True)`. The `*_lut`, `*_coeffs`, `warp`, `blend`, `smooth` helpers take float32 batches
with per-image magnitudes [B]; `autoaugment.py` builds the policies from them.
"""

import math

import tensorflow as tf


def as_batch(images):
    """Validates `images` and returns (float32 batch [B, H, W, C], function that restores the input's form)."""
    images = tf.convert_to_tensor(images)
    if images.dtype not in (tf.uint8, tf.float32):
        raise ValueError(f"images must be uint8 or float32 on the 0..255 scale, got {images.dtype.name}; cast first")
    rank = images.shape.rank
    if rank not in (3, 4) or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [H, W, C] or [B, H, W, C] with C = 1 or 3, got shape {images.shape}")
    dtype = images.dtype
    x = tf.cast(images, tf.float32)
    if rank == 3:
        x = x[None]

    def restore(y):
        if rank == 3:
            y = y[0]
        if dtype == tf.uint8:
            y = tf.cast(tf.clip_by_value(tf.round(y), 0.0, 255.0), tf.uint8)
        return y

    return x, restore


def select(mask, a, b):
    """`tf.where(mask, a, b)` for finite float images, as a*m + b*(1-m) (exact for m in {0, 1}): on CPU, SelectV2
    with broadcasting is several times slower than this arithmetic."""
    m = tf.cast(mask, tf.float32)
    return a * m + b * (1.0 - m)


def per_image(value, x, dtype=tf.float32):
    """Broadcasts a number, scalar or [B] magnitude to `dtype` [B] for the batch `x`."""
    return tf.broadcast_to(tf.cast(value, dtype), tf.shape(x)[:1])


# ----------------------------------------------------------------------------------------------------- geometry
def warp(x, coeffs, fill=0.0):
    """Nearest-neighbour affine warp of batch `x` with PIL coefficients [B, 6] = (a, b, c, d, e, f).

    Output pixel (x, y) reads input pixel floor(a X + b Y + c, d X + e Y + f) with X = x + 0.5, Y = y + 0.5, and
    gets `fill` where that lies outside the image, exactly as PIL's `Image.transform(AFFINE, NEAREST)`.
    """
    a, b, c, d, e, f = tf.unstack(tf.cast(coeffs, tf.float64), axis=1)
    c, f = c + 0.5 * (a + b), f + 0.5 * (d + e)
    # PIL runs rotations and shears in 16.16 fixed point (coefficients rounded to 1/65536) and flooring;
    # ImageProjectiveTransformV3 rounds instead, so shift by just under half a pixel (2**-18 keeps floor(0) = 0 and
    # is below the fixed-point resolution).
    fixed = tf.not_equal(b, 0.0) | tf.not_equal(d, 0.0)
    a, b, c, d, e, f = [tf.where(fixed, tf.floor(v * 65536.0 + 0.5) / 65536.0, v) for v in (a, b, c, d, e, f)]
    shift = tf.cast(fixed, tf.float64) * (0.5 - 2.0 ** -18)
    # The other matrices built here are translations: floor(x + c) = x + floor(c) keeps V3's arithmetic exact.
    c, f = tf.where(fixed, c, tf.floor(c)), tf.where(fixed, f, tf.floor(f))
    zero = tf.zeros_like(a)
    transforms = tf.cast(tf.stack([a, b, c - shift, d, e, f - shift, zero, zero], axis=1), tf.float32)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=tf.cast(fill, tf.float32),
        interpolation="NEAREST", fill_mode="CONSTANT")


def rotate_coeffs(degrees, height, width):
    """PIL `Image.rotate(degrees)` (counter-clockwise about (W/2, H/2)) as affine coefficients, float64 [B, 6]."""
    theta = -tf.cast(degrees, tf.float64) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cx, cy = tf.cast(width, tf.float64) / 2.0, tf.cast(height, tf.float64) / 2.0
    return tf.stack([cos, sin, -cos * cx - sin * cy + cx, -sin, cos, sin * cx - cos * cy + cy], axis=1)


def shear_x_coeffs(level):
    """PIL affine (1, level, 0, 0, 1, 0): input x = x + level * y."""
    level = tf.cast(level, tf.float64)
    one, zero = tf.ones_like(level), tf.zeros_like(level)
    return tf.stack([one, level, zero, zero, one, zero], axis=1)


def shear_y_coeffs(level):
    """PIL affine (1, 0, 0, level, 1, 0): input y = y + level * x."""
    level = tf.cast(level, tf.float64)
    one, zero = tf.ones_like(level), tf.zeros_like(level)
    return tf.stack([one, zero, zero, level, one, zero], axis=1)


def translate_coeffs(dx, dy):
    """Moves the content by (dx, dy) pixels (right, down); PIL affine (1, 0, -dx, 0, 1, -dy)."""
    dx, dy = tf.cast(dx, tf.float64), tf.cast(dy, tf.float64)
    one, zero = tf.ones_like(dx), tf.zeros_like(dx)
    return tf.stack([one, zero, -dx, zero, one, -dy], axis=1)


def rotate(images, degrees, fill=0.0):
    """Rotates counter-clockwise by `degrees` about the image centre (PIL `Image.rotate`, nearest)."""
    x, restore = as_batch(images)
    shape = tf.shape(x)
    return restore(warp(x, rotate_coeffs(per_image(degrees, x, tf.float64), shape[1], shape[2]), fill))


def shear_x(images, level, fill=0.0):
    """Horizontal shear, PIL affine (1, level, 0, 0, 1, 0)."""
    x, restore = as_batch(images)
    return restore(warp(x, shear_x_coeffs(per_image(level, x, tf.float64)), fill))


def shear_y(images, level, fill=0.0):
    """Vertical shear, PIL affine (1, 0, 0, level, 1, 0)."""
    x, restore = as_batch(images)
    return restore(warp(x, shear_y_coeffs(per_image(level, x, tf.float64)), fill))


def translate_x(images, pixels, fill=0.0):
    """Moves the content `pixels` to the right (negative: left)."""
    x, restore = as_batch(images)
    dx = per_image(pixels, x, tf.float64)
    return restore(warp(x, translate_coeffs(dx, tf.zeros_like(dx)), fill))


def translate_y(images, pixels, fill=0.0):
    """Moves the content `pixels` down (negative: up)."""
    x, restore = as_batch(images)
    dy = per_image(pixels, x, tf.float64)
    return restore(warp(x, translate_coeffs(tf.zeros_like(dy), dy), fill))


# ----------------------------------------------------------------------------------------------- look-up tables
def _levels():
    return tf.range(256, dtype=tf.float32)[None, None, :]


def identity_lut():
    """The table that changes nothing, [1, 1, 256]."""
    return _levels()


def invert_lut():
    """255 - value, [1, 1, 256]."""
    return 255.0 - _levels()


def posterize_lut(bits):
    """Keeps the top `bits` [B] bits (PIL `posterize`; 0 bits gives black)."""
    step = tf.pow(2.0, 8.0 - bits)[:, None, None]
    return tf.floor(_levels() / step) * step


def solarize_lut(threshold):
    """Inverts values >= `threshold` [B] (PIL `solarize`)."""
    return tf.where(_levels() < threshold[:, None, None], _levels(), 255.0 - _levels())


def solarize_add_lut(addition, threshold=128.0):
    """Adds `addition` [B] to values below `threshold` (TF AutoAugment `solarize_add`)."""
    added = tf.clip_by_value(_levels() + addition[:, None, None], 0.0, 255.0)
    return tf.where(_levels() < threshold, added, _levels())


def blend(degenerate, x, factor):
    """PIL `Image.blend(degenerate, x, factor)`: float32 d + factor (x - d), truncated to 0..255."""
    factor = tf.reshape(factor, [-1] + [1] * (x.shape.rank - 1))
    return tf.clip_by_value(tf.floor(degenerate + factor * (x - degenerate)), 0.0, 255.0)


def brightness_lut(factor):
    """PIL `ImageEnhance.Brightness`: blend with black."""
    return blend(tf.zeros_like(_levels()), _levels(), factor)


def grey(x):
    """PIL's 'L' conversion of a batch, [B, H, W, 1] (a 1-channel batch is returned as is)."""
    if x.shape[-1] == 1:
        return x
    return tf.floor((tf.tensordot(x, tf.constant([19595.0, 38470.0, 7471.0]), 1)[..., None] + 32768.0) / 65536.0)


def contrast_lut(x, factor):
    """PIL `ImageEnhance.Contrast`: blend with the rounded mean grey level of each image."""
    g = tf.cast(grey(x), tf.int32)
    total = tf.reduce_sum(g, axis=[1, 2, 3])
    n = tf.reduce_prod(tf.shape(g)[1:])
    mean = tf.cast((2 * total + n) // (2 * n), tf.float32)        # int(mean + 0.5), exactly
    return blend(mean[:, None, None], _levels(), factor)


def histogram(x):
    """Per image and channel counts of each value, int32 [B, C, 256]."""
    shape = tf.shape(x)
    channels_first = tf.reshape(tf.transpose(tf.cast(x, tf.int32), [0, 3, 1, 2]), [shape[0] * shape[3], -1])
    counts = tf.math.bincount(channels_first, minlength=256, maxlength=256, axis=-1)
    return tf.reshape(counts, [shape[0], shape[3], 256])


def equalize_lut(x):
    """PIL `ImageOps.equalize` tables, [B, C, 256]."""
    hist = histogram(x)
    top = tf.reduce_max(tf.where(hist > 0, tf.range(256), -1), axis=-1)
    last = tf.gather(hist, tf.maximum(top, 0), batch_dims=2)
    step = (tf.reduce_sum(hist, axis=-1) - last) // 255
    safe = tf.maximum(step, 1)[..., None]
    lut = (safe // 2 + tf.cumsum(hist, axis=-1, exclusive=True)) // safe
    lut = tf.clip_by_value(tf.cast(lut, tf.float32), 0.0, 255.0)
    return tf.where(step[..., None] > 0, lut, _levels())


def autocontrast_lut(x):
    """PIL `ImageOps.autocontrast` (cutoff 0) tables, [B, C, 256]: stretch each channel's range to 0..255."""
    lo = tf.cast(tf.reduce_min(x, axis=[1, 2]), tf.float64)[..., None]
    hi = tf.cast(tf.reduce_max(x, axis=[1, 2]), tf.float64)[..., None]
    # float64 like PIL's Python arithmetic, whose truncation of e.g. 254.99999 decides some table entries.
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    lut = tf.clip_by_value(tf.floor(tf.cast(_levels(), tf.float64) * scale - lo * scale), 0.0, 255.0)
    return tf.where(hi > lo, tf.cast(lut, tf.float32), _levels())


def apply_lut(x, lut):
    """Maps each pixel of `x` through its image's (and channel's) table; `lut` is [B, 1 or C, 256]."""
    shape = tf.shape(x)
    lut = tf.reshape(tf.broadcast_to(lut, [shape[0], shape[3], 256]), [-1])
    table = 256 * (tf.range(shape[3])[None, None, None, :] + shape[3] * tf.range(shape[0])[:, None, None, None])
    return tf.gather(lut, tf.cast(x, tf.int32) + table)


# -------------------------------------------------------------------------------------------- colour and filters
def color(images, factor):
    """PIL `ImageEnhance.Color`: blend with the grey image (a no-op on 1-channel images)."""
    x, restore = as_batch(images)
    return restore(blend(grey(x), x, per_image(factor, x)))


def smooth(x):
    """PIL `ImageFilter.SMOOTH` (3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; border pixels kept)."""
    rows = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    box = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]
    inner = tf.floor((box + 4.0 * x[:, 1:-1, 1:-1]) / 13.0 + 0.5)      # sums of integers: exact in float32
    return x + tf.pad(inner - x[:, 1:-1, 1:-1], [[0, 0], [1, 1], [1, 1], [0, 0]])     # integers: exact


def sharpness(images, factor):
    """PIL `ImageEnhance.Sharpness`: blend with the smoothed image."""
    x, restore = as_batch(images)
    return restore(blend(smooth(x), x, per_image(factor, x)))


def _lut_op(images, lut_fn):
    x, restore = as_batch(images)
    return restore(apply_lut(x, lut_fn(x)))


def posterize(images, bits):
    """Keeps the top `bits` bits of every value (PIL `ImageOps.posterize`)."""
    return _lut_op(images, lambda x: posterize_lut(per_image(bits, x)))


def solarize(images, threshold=128):
    """Inverts every value >= `threshold` (PIL `ImageOps.solarize`)."""
    return _lut_op(images, lambda x: solarize_lut(per_image(threshold, x)))


def contrast(images, factor):
    """PIL `ImageEnhance.Contrast`."""
    return _lut_op(images, lambda x: contrast_lut(x, per_image(factor, x)))


def brightness(images, factor):
    """PIL `ImageEnhance.Brightness`."""
    return _lut_op(images, lambda x: brightness_lut(per_image(factor, x)))


def autocontrast(images):
    """PIL `ImageOps.autocontrast` (cutoff 0), per channel."""
    return _lut_op(images, autocontrast_lut)


def equalize(images):
    """PIL `ImageOps.equalize`, per channel."""
    return _lut_op(images, equalize_lut)


def invert(images):
    """255 - value."""
    return _lut_op(images, lambda x: invert_lut())


# ------------------------------------------------------------------------------------------------------- cutout
def cutout_mask(shape, center, size):
    """Boolean [B, H, W, 1]: rows [cy - s//2, cy + s//2) x same columns, clipped at the border (reference).

    Args:
      shape: [B, H, W, C] of the batch.
      center: int32 [B, 2] (row, column).
      size: int32 [B] side of the square before clipping (odd sizes lose one pixel, as the reference).
    """
    half = (size // 2)[:, None]
    rows = tf.range(shape[1])[None, :]
    cols = tf.range(shape[2])[None, :]
    in_rows = (rows >= center[:, :1] - half) & (rows < center[:, :1] + half)
    in_cols = (cols >= center[:, 1:] - half) & (cols < center[:, 1:] + half)
    return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


def cutout(images, size, center, fill=0.0):
    """Sets a `size` x `size` square centred at `center` (row, column; [2] or [B, 2]) to `fill`."""
    x, restore = as_batch(images)
    center = tf.broadcast_to(tf.cast(center, tf.int32), [tf.shape(x)[0], 2])
    size = tf.cast(per_image(size, x), tf.int32)
    return restore(select(cutout_mask(tf.shape(x), center, size), tf.cast(fill, tf.float32), x))
