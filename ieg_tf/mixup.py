"""MixUp as IEG's reference does it: one permutation over the whole batch, the "approximate Beta" coefficient."""

import tensorflow as tf

from ieg_tf.random_ops import split, uniform


def mixup_coefficient(uniform, beta=0.5):
    """m = max(a, 1 - a) with a = u^(1/beta) / 2 (SPEC 1.4.3); for beta = 0.5, m = 1 - u^2 / 2 in [0.5, 1]."""
    a = tf.pow(uniform, 1.0 / beta) / 2.0
    return tf.maximum(a, 1.0 - a)


def mixup(images, targets, seed, beta=0.5):
    """Mixes every row with a random partner row of the same batch (mode 'xxy.yxy').

    Args:
      images: [N, ...] float (any rank).
      targets: [N, K] float label distributions.
      seed: int32 [2] stateless seed.
      beta: MixUp parameter.

    Returns:
      (mixed images, mixed targets); row r is m_r * row_r + (1 - m_r) * row_pi(r).
    """
    perm_seed, coef_seed = split(seed, 2)
    n = tf.shape(images)[0]
    perm = tf.argsort(uniform([n], perm_seed))
    m = mixup_coefficient(uniform([n], coef_seed), beta)
    m_img = tf.cast(tf.reshape(m, [-1] + [1] * (images.shape.rank - 1)), images.dtype)
    m_tgt = tf.cast(m[:, None], targets.dtype)
    mixed_images = m_img * images + (1.0 - m_img) * tf.gather(images, perm)
    mixed_targets = m_tgt * targets + (1.0 - m_tgt) * tf.gather(targets, perm)
    return mixed_images, mixed_targets
