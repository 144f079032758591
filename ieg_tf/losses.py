"""Pure tensor functions of IEG's losses (SPEC 1.0, 1.3-1.7). No state, no variables."""

import tensorflow as tf

LOGIT_NORM_EPS = 1e-8
WEIGHT_NORM_EPS = 1e-5


def full_precision(x):
    """Half-precision tensors (mixed-precision logits) as float32; float32 and float64 pass unchanged."""
    x = tf.convert_to_tensor(x)
    return tf.cast(x, tf.float32) if x.dtype in (tf.float16, tf.bfloat16) else x


def logit_norm(logits):
    """Divides a whole logit block by one scalar RMS taken over all its entries (`custom_ops.logit_norm`)."""
    return logits / tf.sqrt(tf.reduce_mean(tf.square(logits)) + LOGIT_NORM_EPS)


def sharpen(probs, temperature=0.5):
    """Temperature sharpening q^(1/T) / sum_c q_c^(1/T), row-wise."""
    powered = tf.pow(probs, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def guess_label(logits_views, temperature=0.5):
    """Label guessing (SPEC 1.3): mean of softmax(logit_norm(Z_k)) over the K views, then sharpened.

    Args:
      logits_views: list of [B, C] logit blocks, one per view; each block is normalised on its own.
      temperature: sharpening temperature T.

    Returns:
      [B, C] guessed label distribution g. Not stop-gradiented: callers decide (SPEC 8.3).
    """
    probs = tf.add_n([tf.nn.softmax(logit_norm(z)) for z in logits_views]) / len(logits_views)
    return sharpen(probs, temperature)


def cross_entropy(targets, logits):
    """Per-example CE(t, z) = -sum_c t_c log softmax(z)_c, differentiable in both t and z."""
    return -tf.reduce_sum(targets * tf.nn.log_softmax(logits), axis=-1)


def mean_cross_entropy(targets, logits):
    """Mean CE with stop-gradient on the targets, as `tf.losses.softmax_cross_entropy` does."""
    return tf.reduce_mean(cross_entropy(tf.stop_gradient(targets), logits))


def kl_consistency(weak_logits, strong_logits):
    """KL(softmax(sg(z)) || softmax(z_hat)) summed over classes, averaged over the batch (SPEC 1.5)."""
    target = tf.nn.softmax(tf.stop_gradient(weak_logits))
    log_target = tf.nn.log_softmax(tf.stop_gradient(weak_logits))
    return tf.reduce_mean(
        tf.reduce_sum(target * (log_target - tf.nn.log_softmax(strong_logits)), axis=-1))


def normalize_weights(grad_omega):
    """omega* = max(-g, 0) / (sum max(-g, 0) + 1e-5): the rule that produced the paper's numbers (SPEC 1.6.7).

    All weights are zero when every gradient is >= 0.
    """
    raw = tf.maximum(-grad_omega, 0.0)
    return raw / (tf.reduce_sum(raw) + WEIGHT_NORM_EPS)


def binarize_label_mix(grad_lambda):
    """lambda* = 1 (keep the given label) where raising lambda lowers the probe loss, else 0 (SPEC 1.6.8)."""
    return tf.cast(grad_lambda < 0.0, grad_lambda.dtype)


def l2_penalty(variables, weight_decay):
    """wd * 1/2 * sum ||v||^2 (the TF1 `l2_regularizer` / `tf.nn.l2_loss` convention)."""
    if not variables:
        return tf.constant(0.0)
    if not weight_decay:
        return tf.zeros([], tf.float64 if tf.as_dtype(variables[0].dtype) == tf.float64 else tf.float32)
    total = tf.add_n([tf.nn.l2_loss(full_precision(v)) for v in variables])
    return tf.cast(weight_decay, total.dtype) * total
