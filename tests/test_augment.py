"""Augmentation in core TF ops: hand-computed pixels, PIL equivalence, the views' contracts (SPEC 1.1, 3, 8.9)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from ieg_tf import augment, random_ops
from ieg_tf import autoaugment as aa
from ieg_tf import image_ops as ops

SEED = tf.constant([7, 11])


def _random_image(shape=(32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, shape).astype(np.uint8)
    img[: shape[0] // 2] //= 3           # a skewed histogram, so equalize / autocontrast have work to do
    return img


# --------------------------------------------------------------------------------------- hand-computed pixels
def test_rotate_by_90_degrees_turns_counter_clockwise():
    img = np.arange(16 * 3, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(ops.rotate(img, 90), np.rot90(img))
    batch = tf.cast(np.stack([img, img]), tf.float32)
    out = ops.rotate(batch, [90.0, -90.0])
    assert out.dtype == tf.float32
    np.testing.assert_array_equal(out[0], np.rot90(img))
    np.testing.assert_array_equal(out[1], np.rot90(img, -1))


def test_translate_by_whole_pixels_fills_with_zero():
    img = np.arange(1, 26, dtype=np.uint8).reshape(5, 5, 1)
    right = ops.translate_x(img, 2).numpy()[..., 0]
    np.testing.assert_array_equal(right[:, 2:], img[:, :3, 0])
    np.testing.assert_array_equal(right[:, :2], 0)
    up = ops.translate_y(img, -1).numpy()[..., 0]
    np.testing.assert_array_equal(up[:4], img[1:, :, 0])
    np.testing.assert_array_equal(up[4], 0)


def test_posterize_keeps_the_top_bits():
    img = np.array([0, 63, 64, 100, 191, 255], np.uint8).reshape(1, 6, 1)
    np.testing.assert_array_equal(ops.posterize(img, 2).numpy().ravel(), [0, 0, 64, 64, 128, 192])
    np.testing.assert_array_equal(ops.posterize(img, 8).numpy().ravel(), img.ravel())


def test_solarize_inverts_from_the_threshold_up():
    img = np.array([0, 127, 128, 200, 255], np.uint8).reshape(1, 5, 1)
    np.testing.assert_array_equal(ops.solarize(img, 128).numpy().ravel(), [0, 127, 127, 55, 0])
    np.testing.assert_array_equal(ops.solarize(img, 256).numpy().ravel(), img.ravel())


def test_cutout_area_including_clipping_at_the_border():
    ones = np.full((2, 8, 8, 1), 9.0, np.float32)
    out = ops.cutout(ones, 4, [[4, 4], [0, 7]]).numpy()[..., 0]
    np.testing.assert_array_equal(out[0] == 0, np.pad(np.ones((4, 4), bool), 2))      # rows and cols 2..5
    expected = np.zeros((8, 8), bool)
    expected[0:2, 5:8] = True                                                           # rows -2..1, cols 5..8
    np.testing.assert_array_equal(out[1] == 0, expected)


def test_strong_cutout_is_a_16_square_clipped_at_the_border():
    aug = augment.Augmenter(pad=0, flip=False, cutout=16, policy="none")
    out = aug.strong(tf.ones([64, 32, 32, 3]), SEED).numpy()[..., 0]
    for mask in out == 0:
        rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
        assert mask.sum() == len(rows) * len(cols)                                      # one rectangle
        for idx in (rows, cols):
            touches_border = idx[0] == 0 or idx[-1] == 31
            assert len(idx) == 16 or (touches_border and 8 <= len(idx) < 16)
    assert {int(m.sum()) for m in out == 0} != {256}                                    # some were clipped


def test_equalize_of_a_known_histogram():
    # 1024 pixels: 512 x 0, 256 x 100, 256 x 200. step = (1024 - 256) // 255 = 3;
    # lut[v] = (3 // 2 + pixels below v) // 3: 0 -> 0, 100 -> 513 // 3 = 171, 200 -> 769 // 3 = 256 -> 255.
    img = np.repeat(np.array([0, 0, 100, 200], np.uint8), 256).reshape(32, 32, 1)
    out = ops.equalize(img).numpy()
    np.testing.assert_array_equal(np.unique(out[img == 0]), [0])
    np.testing.assert_array_equal(np.unique(out[img == 100]), [171])
    np.testing.assert_array_equal(np.unique(out[img == 200]), [255])
    flat = np.full((4, 4, 3), 77, np.uint8)
    np.testing.assert_array_equal(ops.equalize(flat), flat)                              # one value: unchanged


# --------------------------------------------------------------------------------------------- PIL equivalence
@pytest.mark.parametrize("name, ours, pil", [
    ("rotate 21", lambda x: ops.rotate(x, 21), lambda p: p.rotate(21)),
    ("rotate -12", lambda x: ops.rotate(x, -12), lambda p: p.rotate(-12)),
    ("shear_x", lambda x: ops.shear_x(x, 0.27), lambda p: p.transform(p.size, Image.AFFINE, (1, 0.27, 0, 0, 1, 0))),
    # shear -1 maps the diagonal exactly onto pixel edges: PIL's floor(0) = 0 must not become -1 (empty)
    ("shear_x -1", lambda x: ops.shear_x(x, -1.0), lambda p: p.transform(p.size, Image.AFFINE, (1, -1, 0, 0, 1, 0))),
    ("shear_y", lambda x: ops.shear_y(x, -0.15), lambda p: p.transform(p.size, Image.AFFINE, (1, 0, 0, -0.15, 1, 0))),
    ("translate", lambda x: ops.translate_x(x, -7), lambda p: p.transform(p.size, Image.AFFINE, (1, 0, 7, 0, 1, 0))),
    ("color", lambda x: ops.color(x, 0.46), lambda p: ImageEnhance.Color(p).enhance(0.46)),
    ("contrast", lambda x: ops.contrast(x, 1.72), lambda p: ImageEnhance.Contrast(p).enhance(1.72)),
    ("brightness", lambda x: ops.brightness(x, 1.36), lambda p: ImageEnhance.Brightness(p).enhance(1.36)),
    ("sharpness", lambda x: ops.sharpness(x, 1.9), lambda p: ImageEnhance.Sharpness(p).enhance(1.9)),
    ("autocontrast", ops.autocontrast, ImageOps.autocontrast),
    ("equalize", ops.equalize, ImageOps.equalize),
    ("posterize", lambda x: ops.posterize(x, 3), lambda p: ImageOps.posterize(p, 3)),
    ("solarize", lambda x: ops.solarize(x, 77), lambda p: ImageOps.solarize(p, 77)),
    ("invert", ops.invert, ImageOps.invert),
])
def test_ops_match_pil(name, ours, pil):
    img = _random_image()
    expected = np.asarray(pil(Image.fromarray(img))).astype(int)
    got = ours(img).numpy().astype(int)
    # The ops reproduce PIL's integer arithmetic; allow one level on 0.5% of pixels for platform float drift.
    diff = np.abs(got - expected)
    assert diff.max() <= 1 and np.mean(diff > 0) <= 0.005, name


def _pil_step(im, name, level, sign):
    """One op of the reference's CIFAR release (augmentation_transforms.py) on an RGBA PIL image."""
    via_rgb = {"Equalize": ImageOps.equalize, "Solarize": lambda p: ImageOps.solarize(p, 256 - int(level * 256 / 10))}
    if name in via_rgb:
        return via_rgb[name](im.convert("RGB")).convert("RGBA")
    if name in ("Color", "Contrast"):
        return getattr(ImageEnhance, name)(im).enhance(level * 1.8 / 10 + 0.1)
    if name == "Rotate":
        return im.rotate(sign * int(level * 30 / 10))
    shear, shift = sign * float(level) * 0.3 / 10, sign * level
    affine = {"ShearX": (1, shear, 0, 0, 1, 0), "TranslateX": (1, 0, shift, 0, 1, 0),
              "TranslateY": (1, 0, 0, 0, 1, shift)}[name]
    return im.transform(im.size, Image.AFFINE, affine)


def _pil_unwrap(im):
    a = np.asarray(im).astype(np.float64) / 255.0
    out = (a[..., :3] - 0.5) / 0.5
    out[a[..., 3] == 0] = 0.0                                          # empty pixels -> 0 (SPEC 1.1)
    return out


@pytest.mark.parametrize("first, second", [("TranslateY", "Equalize"), ("Rotate", "Color"),
                                           ("ShearX", "TranslateX"), ("TranslateX", "Contrast"),
                                           ("Rotate", "Solarize")])
def test_sub_policy_steps_match_the_pil_release_including_empty_pixels(first, second):
    img = np.stack([_random_image(seed=s) for s in range(4)])
    x, empty = tf.cast(img, tf.float32), tf.zeros([4, 32, 32, 1], tf.bool)
    flavor = aa.cifar_flavor(32.0)
    for name, level, seed in ((first, 7.0, [1, 2]), (second, 4.0, [3, 4])):
        x, empty = aa.apply_step(x, empty, tf.fill([4], aa.OPS.index(name)), tf.fill([4], level),
                                 tf.ones([4], tf.bool), tf.constant(seed), flavor)
    ours = tf.where(empty, 0.0, augment.to_float(x)).numpy()
    assert empty.numpy().any() == (second in ("Color", "Contrast", "TranslateX"))
    matched = []
    for b in range(4):      # find the sign combination of PIL's steps that matches, then check it against ours
        errors = {(s1, s2): np.abs(_pil_unwrap(_pil_step(_pil_step(Image.fromarray(img[b]).convert("RGBA"), first,
                                                                   7, s1), second, 4, s2)) - ours[b]).max()
                  for s1 in (1, -1) for s2 in (1, -1)}
        best = min(errors, key=errors.get)
        assert errors[best] < 1e-5, (first, second, b)
        matched.append(best)
    # Each image's sign is its own draw (apply_step: uniform < 0.5 -> -1, from the step seed's first split), and
    # both signs occur in these batches: the matched PIL signs must follow the draws, up to one fixed convention.
    for position, (name, seed) in enumerate(((first, [1, 2]), (second, [3, 4]))):
        if name in ("Rotate", "ShearX", "TranslateX", "TranslateY"):
            drawn = np.where(random_ops.uniform([4], random_ops.split(tf.constant(seed), 2)[0]).numpy() < 0.5, -1, 1)
            assert set(drawn) == {-1, 1}
            assert len({m[position] * d for m, d in zip(matched, drawn)}) == 1, (name, matched, drawn)


# ------------------------------------------------------------------------------------------- the two views
@pytest.mark.parametrize("kind, shape", [("cifar", (6, 32, 32, 3)), ("small", (6, 8, 8, 1)),
                                         ("imagenet", (3, 48, 40, 3))])
@pytest.mark.parametrize("policy", ["autoaug", "randaug"])
def test_views_dtype_shape_range_and_determinism(kind, shape, policy):
    aug = augment.augmenter_for(kind, policy)
    images = _random_image(shape)
    weak = aug.weak(images, SEED)
    strong = aug.strong(weak, SEED)
    for view in (weak, strong):
        assert view.dtype == tf.float32 and view.shape == shape
        assert -1.0 <= float(tf.reduce_min(view)) and float(tf.reduce_max(view)) <= 1.0
    np.testing.assert_array_equal(aug.weak(images, SEED), weak)
    np.testing.assert_array_equal(aug.strong(weak, SEED), strong)
    other = tf.constant([8, 11])
    assert not np.array_equal(aug.weak(images, other), weak)
    assert not np.array_equal(aug.strong(weak, other), strong)


def test_kind_defaults():
    cifar = augment.augmenter_for("cifar")
    assert (cifar.weak_pad, cifar.pad, cifar.cutout) == (2, 4, 16)
    small = augment.augmenter_for("small")
    assert (small.weak_pad, small.pad, small.flip, small.cutout) == (1, 1, False, 4)
    assert augment.augmenter_for("imagenet").inception_crop


def test_weak_crop_offsets_0_to_4_and_strong_0_to_7():
    # Column values 1..32 reveal each image's horizontal shift, shift = pad - offset. The weak view is the
    # reference's cifar_process (pad to 36x36, random 32x32 crop: 5 shifts); the strong view its
    # zero_pad_and_crop (pad 4, offsets randint(0, 8) = 0..7: 8 shifts, SPEC 8.9).
    img = np.tile(np.arange(1, 33, dtype=np.uint8)[None, :, None], (400, 32, 1, 1))
    aug = augment.Augmenter(flip=False, cutout=0, policy="none")

    def shifts(view):
        row = np.round((view[:, 16, :, 0] / 2 + 0.5) * 255).astype(int)
        return {int(np.median(r[r > 0] - np.arange(1, 33)[r > 0])) for r in row}

    weak = aug.weak(img, SEED).numpy()
    assert shifts(weak) == set(range(-2, 3))
    probe = aug.probe(img, SEED).numpy()      # the probe images take the weak view
    assert shifts(probe) == set(range(-2, 3))
    strong = aug.strong(augment.to_float(img), SEED).numpy()
    assert shifts(np.where(strong == 0, -1.0, strong)) == set(range(-4, 4))            # never +4 (SPEC 8.9)


def test_autoaug_draws_a_sub_policy_per_image_randaug_shares_ops():
    images = tf.fill([32, 8, 8, 3], 40.0)
    flavor = aa.cifar_flavor(8.0)
    policies = ((("Invert", 1.0, 0), ("Identity", 1.0, 0)), (("Identity", 1.0, 0), ("Identity", 1.0, 0)))
    out, _ = aa.autoaugment(images, SEED, policies, flavor)
    assert set(np.unique(out.numpy())) == {40.0, 215.0}                                   # per image
    seen = set()
    for s in range(8):
        out, _ = aa.randaugment(images, tf.constant([s, 0]), flavor, prob=1.0, names=("Invert", "Brightness"))
        values = np.unique(out.numpy())
        assert len(values) == 1                                                             # shared by the batch
        seen.add(float(values[0]))
    assert len(seen) > 1


def test_autoaug_gives_many_different_views_of_one_image():
    same = np.repeat(_random_image(seed=3)[None], 48, axis=0)
    aug = augment.Augmenter(pad=0, flip=False, cutout=0, policy="autoaug")
    strong = aug.strong(augment.to_float(same), SEED).numpy()
    assert len({v.tobytes() for v in strong}) > 15


def test_strong_runs_in_a_tf_data_map_on_batches():
    aug = augment.augmenter_for("cifar")
    images = _random_image((8, 32, 32, 3))
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4).enumerate()
    ds = ds.map(lambda j, x: aug.strong(aug.weak(x, tf.stack([j, 0])), tf.stack([j, 1])))
    batches = list(ds)
    assert [b.shape for b in batches] == [(4, 32, 32, 3)] * 2
    eager = aug.strong(aug.weak(images[4:], tf.constant([1, 0], tf.int64)), tf.constant([1, 1], tf.int64))
    np.testing.assert_array_equal(batches[1], eager)


@pytest.mark.parametrize("kind", ["cifar", "imagenet"])
def test_weak_and_policy_free_strong_compile_with_xla(kind):
    aug = augment.Augmenter(kind=kind, policy="none")
    images = _random_image((4, 40, 40, 3))
    weak = tf.function(aug.weak, jit_compile=True)(images, SEED)
    np.testing.assert_allclose(weak, aug.weak(images, SEED), atol=1e-5)
    strong = tf.function(aug.strong, jit_compile=True)(weak, SEED)
    np.testing.assert_allclose(strong, aug.strong(weak, SEED), atol=1e-5)


# ---------------------------------------------------------------------------------------------- crops
def test_batched_inception_crop_resize_matches_tf_image_resize():
    img = tf.cast(_random_image((20, 30, 3)), tf.float32)
    boxes = [tf.constant([v]) for v in (3, 5, 11, 17)]                                  # top, left, h, w
    got = augment.resize_boxes(img[None], boxes, 16, 16)[0]
    expected = tf.image.resize(img[3:14, 5:22], [16, 16], "bilinear")
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_inception_and_center_crop_of_single_images():
    img = _random_image((50, 70, 3))
    crop = augment.inception_crop(img, 24, SEED)
    assert crop.dtype == tf.uint8 and crop.shape == (24, 24, 3)
    np.testing.assert_array_equal(crop, augment.inception_crop(img, 24, SEED))
    assert augment.inception_crop(tf.cast(img, tf.float32), 24, SEED).dtype == tf.float32
    gradient = np.tile(np.arange(64, dtype=np.uint8)[None, :, None], (32, 1, 3))        # value = column
    center = augment.center_crop(gradient, 28, crop_fraction=0.875).numpy()
    # side 28 of the shorter side 32, columns 18..45, no resampling needed
    np.testing.assert_array_equal(center[0, :, 0], np.arange(18, 46))


# ------------------------------------------------------------------------------------------- probe affine
def _warp(img, degrees=0.0, shear=0.0, sx=1.0, sy=1.0):
    rows = augment.affine_transforms(tf.constant([degrees]), tf.constant([shear]), tf.constant([sx]),
                                     tf.constant([sy]), img.shape[0], img.shape[1])
    return augment.bilinear_warp(tf.constant(img[None], tf.float32), rows)[0].numpy()


def test_affine_transforms_rotate_about_the_centre_shear_and_scale():
    img = np.arange(1, 26, dtype=np.float32).reshape(5, 5, 1)
    np.testing.assert_allclose(_warp(img), img)
    np.testing.assert_allclose(_warp(img, 180.0), img[::-1, ::-1], atol=1e-4)
    # +90 degrees: output (r, c) reads input (c, 4 - r) by the docstring's formula (x = column, y = row), which is
    # np.rot90(img, 1); -90 degrees turns the other way.
    np.testing.assert_allclose(_warp(img, 90.0), np.rot90(img, 1), atol=1e-4)
    np.testing.assert_allclose(_warp(img, -90.0), np.rot90(img, -1), atol=1e-4)
    # Scale 0.5: the output reads twice as far from the centre, so the centre row keeps the centre value,
    # columns 0 and 4 (two pixels out) read outside the image (fill 0), columns 1 and 3 read columns 0 and 4.
    wide = _warp(img, sx=0.5)
    np.testing.assert_allclose(wide[2, :, 0], [0, 11, 13, 15, 0])
    # Shear k: output (r, c) reads column c + k (r - 2) of row r, so row 0 shifts by -2k and the centre row stays.
    sheared = _warp(img, shear=0.5)
    np.testing.assert_allclose(sheared[2], img[2])
    np.testing.assert_allclose(sheared[0, 1:, 0], img[0, :4, 0])


def test_random_affine_draws_per_image_and_is_identity_at_zero():
    batch = tf.constant(np.stack([_random_image((8, 8, 1), seed=i) for i in range(16)]), tf.float32)
    np.testing.assert_array_equal(augment.random_affine(batch, SEED, 0.0, 0.0, 0.0), batch)
    out = augment.random_affine(batch, SEED, 15.0, 0.3, 0.15).numpy()
    np.testing.assert_array_equal(out, augment.random_affine(batch, SEED, 15.0, 0.3, 0.15))
    assert not np.array_equal(out, augment.random_affine(batch, tf.constant([7, 12]), 15.0, 0.3, 0.15))
    assert out.shape == (16, 8, 8, 1) and out.min() >= 0 and out.max() <= 255
    # Every image moved, and each by its own transform: one copy of an image, 16 different results.
    same = tf.repeat(batch[:1], 16, axis=0)
    copies = augment.random_affine(same, SEED, 15.0, 0.3, 0.15).numpy().reshape(16, -1)
    assert len({row.tobytes() for row in copies}) == 16
    assert not any(np.array_equal(row, batch[0].numpy().ravel()) for row in copies)


def test_probe_view_is_the_weak_view_unless_probe_affine_is_set():
    images = tf.constant(np.stack([_random_image((8, 8, 1), seed=i) for i in range(6)]))
    plain = augment.augmenter_for("small")
    np.testing.assert_array_equal(plain.probe(images, SEED), plain.weak(images, SEED))
    assert augment.augmenter_for("small", probe_affine=(0, 0, 0)).probe_affine is None
    styled = augment.augmenter_for("small", probe_affine=(15, 0.3, 0.15))
    assert styled.probe_affine == (15.0, 0.3, 0.15) and "probe_affine=(15.0, 0.3, 0.15)" in repr(styled)
    out = styled.probe(images, SEED)
    np.testing.assert_array_equal(styled.weak(images, SEED), plain.weak(images, SEED))
    assert out.dtype == tf.float32 and out.shape == images.shape
    assert not np.array_equal(out, plain.weak(images, SEED))
    assert -1.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1.0


@pytest.mark.parametrize("values, message", [((15, 0.3), "three numbers"), (("a", 0, 0), "three numbers"),
                                             ((200, 0, 0), "out of range"), ((15, -0.1, 0), "out of range"),
                                             ((15, 0.3, 1.0), "out of range"),
                                             ((float("nan"), 0, 0), "out of range")])
def test_bad_probe_affine_is_a_clear_error(values, message):
    with pytest.raises(ValueError, match=message):
        augment.Augmenter(kind="small", probe_affine=values)


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_raises_clear_value_errors():
    aug = augment.augmenter_for("cifar")
    with pytest.raises(ValueError, match="uint8 batch"):
        aug.weak(tf.zeros([2, 32, 32, 3]), SEED)
    with pytest.raises(ValueError, match="float32 batch"):
        aug.strong(tf.zeros([32, 32, 3]), SEED)
    with pytest.raises(ValueError, match="seed"):
        aug.weak(tf.zeros([2, 32, 32, 3], tf.uint8), tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="kind"):
        augment.augmenter_for("mnist")
    with pytest.raises(ValueError, match="policy"):
        augment.Augmenter(policy="fastaa")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        ops.invert(np.zeros((4, 4, 2), np.uint8))


# ------------------------------------------------------------------------------------- crop offsets, op arguments
def test_crop_offsets_are_drawn_per_axis_and_shift_the_image_exactly():
    # Pixel (r, c) holds 10 r + c + 1, so the centre pixel of each output names the input pixel it came from.
    x = tf.tile((10.0 * tf.range(8.0)[:, None] + tf.range(8.0)[None, :] + 1.0)[None, :, :, None], [200, 1, 1, 1])
    out = augment.crop_and_flip(x, pad=2, max_offset=4, flip=False, seed=tf.constant([3, 4])).numpy()
    source = out[:, 3, 3, 0].astype(int) - 1
    dy, dx = source // 10 - 3, source % 10 - 3
    x = x.numpy()
    assert {(a, b) for a, b in zip(dy, dx)} == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}
    for b in range(200):  # a pure shift, zero where the shifted window leaves the image
        expected = np.zeros((8, 8), np.float32)
        rows, cols = slice(max(0, -dy[b]), min(8, 8 - dy[b])), slice(max(0, -dx[b]), min(8, 8 - dx[b]))
        src_rows = slice(rows.start + dy[b], rows.stop + dy[b])
        src_cols = slice(cols.start + dx[b], cols.stop + dx[b])
        expected[rows, cols] = x[0, src_rows, src_cols, 0]
        np.testing.assert_array_equal(out[b, :, :, 0], expected)


def test_pil_and_tf_flavour_arguments_follow_the_reference_formulas():
    levels = tf.range(11.0)
    pil, tf_args = aa._arguments(levels, aa.cifar_flavor(32.0)), aa._arguments(levels, aa.imagenet_flavor(224.0))
    level = np.arange(11.0)
    # The PIL release: int_parameter(level, maxval) = int(level * maxval / 10).
    np.testing.assert_array_equal(pil["bits"], 4 - np.floor(level * 4 / 10))
    np.testing.assert_array_equal(pil["threshold"], 256 - np.floor(level * 256 / 10))
    np.testing.assert_array_equal(pil["degrees"], np.floor(level * 3))
    np.testing.assert_allclose(pil["factor"], level * 1.8 / 10 + 0.1, rtol=1e-6)
    # TF AutoAugment: posterize int(level * 4 / 10) bits, solarize threshold int(level * 256 / 10), and
    # solarize_add int(level * 110 / 10).
    np.testing.assert_array_equal(tf_args["bits"], np.maximum(np.floor(level * 4 / 10), 1))
    np.testing.assert_array_equal(tf_args["threshold"], np.floor(level * 256 / 10))
    np.testing.assert_array_equal(tf_args["addition"], np.floor(level * 11))


def test_solarize_add_adds_below_the_threshold_only():
    lut = ops.solarize_add_lut(tf.constant([10.0, 200.0])).numpy()
    np.testing.assert_array_equal(lut[0, 0, [0, 127, 128, 255]], [10, 137, 128, 255])
    np.testing.assert_array_equal(lut[1, 0, [0, 60, 127, 128]], [200, 255, 255, 128])  # clipped to 255
