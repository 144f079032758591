"""Hand-computed values of IEG's loss helpers (SPEC 1.0-1.7)."""

import numpy as np
import pytest
import tensorflow as tf

from ieg_tf import losses, mixup


def test_logit_norm_uses_one_scalar_rms_over_the_whole_block():
    z = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    # mean of squares over all 4 entries = 25 / 4, rms = 2.5
    np.testing.assert_allclose(losses.logit_norm(z), z / 2.5, rtol=1e-6)


def test_logit_norm_of_zeros_is_finite():
    np.testing.assert_array_equal(losses.logit_norm(np.zeros((2, 3), np.float32)), np.zeros((2, 3)))


def test_sharpen_at_half_temperature_squares_and_renormalises():
    q = np.array([[0.6, 0.3, 0.1]], np.float32)
    expected = q ** 2 / np.sum(q ** 2)
    np.testing.assert_allclose(losses.sharpen(q, 0.5), expected, rtol=1e-6)
    np.testing.assert_allclose(expected, [[36 / 46, 9 / 46, 1 / 46]], rtol=1e-6)


def test_guess_label_averages_views_after_separate_logit_norm():
    z1 = np.array([[2.0, 0.0], [0.0, 2.0]], np.float32)     # rms 1.414
    z2 = np.array([[0.0, 6.0], [0.0, 0.0]], np.float32)     # rms 3
    p1 = tf.nn.softmax(z1 / np.sqrt(2.0)).numpy()
    p2 = tf.nn.softmax(z2 / 3.0).numpy()
    q = (p1 + p2) / 2
    expected = q ** 2 / np.sum(q ** 2, axis=1, keepdims=True)
    np.testing.assert_allclose(losses.guess_label([z1, z2], 0.5), expected, rtol=1e-5)


def test_cross_entropy_value_and_target_gradient():
    t = tf.constant([[0.25, 0.75]])
    z = tf.constant([[0.0, np.log(3.0)]], tf.float32)       # softmax = [0.25, 0.75]
    expected = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    np.testing.assert_allclose(losses.cross_entropy(t, z), [expected], rtol=1e-6)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(t)
        free = tf.reduce_sum(losses.cross_entropy(t, z))
        stopped = losses.mean_cross_entropy(t, z)
    np.testing.assert_allclose(tape.gradient(free, t), -np.log([[0.25, 0.75]]), rtol=1e-6)
    assert tape.gradient(stopped, t) is None


def test_kl_consistency_value_and_gradient_only_through_strong_view():
    z = tf.constant([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    zs = tf.constant([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    s, sh = tf.nn.softmax(z).numpy(), tf.nn.softmax(zs).numpy()
    expected = np.mean(np.sum(s * (np.log(s) - np.log(sh)), axis=1))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([z, zs])
        kl = losses.kl_consistency(z, zs)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)
    assert tape.gradient(kl, z) is None
    # d KL / d zs = (softmax(zs) - s) / B
    np.testing.assert_allclose(tape.gradient(kl, zs), (sh - s) / 2, atol=1e-6)


def test_normalize_weights_clips_positive_gradients_and_normalises():
    g = tf.constant([-3.0, 1.0, -1.0, 0.0])
    np.testing.assert_allclose(losses.normalize_weights(g), [3 / (4 + 1e-5), 0, 1 / (4 + 1e-5), 0], rtol=1e-6)


def test_normalize_weights_all_nonnegative_gives_all_zero_not_nan():
    w = losses.normalize_weights(tf.constant([0.0, 2.0, 5.0]))
    np.testing.assert_array_equal(w, [0.0, 0.0, 0.0])


def test_binarized_lambda_keeps_label_where_gradient_is_negative():
    np.testing.assert_array_equal(losses.binarize_label_mix(tf.constant([-1e-9, 0.0, 2.0, -4.0])), [1, 0, 0, 1])


def test_l2_penalty_is_half_sum_of_squares():
    v = [tf.Variable([1.0, 2.0]), tf.Variable([[3.0]])]
    np.testing.assert_allclose(losses.l2_penalty(v, 0.1), 0.1 * 0.5 * 14.0, rtol=1e-6)
    assert float(losses.l2_penalty(v, 0.0)) == 0.0


@pytest.mark.parametrize("u, expected", [(0.0, 1.0), (1.0, 0.5), (0.5, 0.875), (0.8, 0.68)])
def test_mixup_coefficient_is_one_minus_half_u_squared_for_beta_half(u, expected):
    np.testing.assert_allclose(mixup.mixup_coefficient(tf.constant(u), 0.5), expected, rtol=1e-6)


def test_mixup_coefficient_general_beta():
    # beta = 1: a = u / 2, m = max(a, 1 - a) = 1 - u / 2
    np.testing.assert_allclose(mixup.mixup_coefficient(tf.constant([0.2, 0.9]), 1.0), [0.9, 0.55], rtol=1e-6)


def test_mixup_mixes_images_and_targets_with_the_same_partner_and_coefficient():
    n = 6
    images = tf.reshape(tf.range(n, dtype=tf.float32), [n, 1, 1, 1]) * tf.ones([n, 2, 2, 1])
    targets = tf.one_hot(tf.range(n), n)
    mixed_x, mixed_y = mixup.mixup(images, targets, tf.constant([3, 7]), 0.5)
    mixed_x, mixed_y = mixed_x.numpy(), mixed_y.numpy()
    partners = set()
    for r in range(n):
        m = mixed_y[r, r] if np.count_nonzero(mixed_y[r]) == 2 or mixed_y[r, r] >= 0.5 else None
        assert m is not None and 0.5 <= m <= 1.0
        others = [c for c in range(n) if c != r and mixed_y[r, c] > 0]
        partner = others[0] if others else r
        partners.add(partner)
        np.testing.assert_allclose(mixed_x[r], m * r + (1 - m) * partner, rtol=1e-5)
        np.testing.assert_allclose(mixed_y[r].sum(), 1.0, rtol=1e-6)
    assert len(partners) == n  # a permutation: every row is used as a partner exactly once
    again_x, _ = mixup.mixup(images, targets, tf.constant([3, 7]), 0.5)
    np.testing.assert_array_equal(again_x, mixed_x)
