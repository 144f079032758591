"""The meta step: a look-ahead update of theta, its probe loss, and d(probe loss)/d(omega, lambda) (SPEC 1.6).

Second-order gradients come from nested `tf.GradientTape`s: the inner tape gives G = d L_look / d theta as a
function of (omega, lambda), the outer tape differentiates the probe loss at theta' = theta - eta (mu a + G)
back to (omega, lambda). The look-ahead forward runs through `stateless_call`, so it uses theta' without
touching the model's variables, and its BatchNorm statistics updates are discarded.
"""

import contextlib
import typing

import tensorflow as tf

from ieg_tf import losses


class MetaGradients(typing.NamedTuple):
    outputs: typing.Any          # what `forward_fn` returned (shared with the main loss, so computed once)
    grad_omega: tf.Tensor        # [B] d L_probe / d omega at omega0
    grad_lambda: tf.Tensor       # [B] d L_probe / d lambda at lambda0 (zeros if the look loss ignores lambda)
    probe_logits: tf.Tensor      # [Bp, C] the probe batch's logits at theta'
    probe_loss: tf.Tensor


def look_ahead(params, grads, accumulators, step_size, momentum):
    """theta' = theta - eta * (mu * sg(a) + G): one virtual TF1-momentum step from the optimizer's accumulator."""
    if accumulators is None or not momentum:
        return [p - step_size * g for p, g in zip(params, grads)]
    return [p - step_size * (momentum * tf.stop_gradient(a) + g)
            for p, g, a in zip(params, grads, accumulators)]


def probe_objective(network, params, non_trainable, images, labels_onehot, weight_decay):
    """Probe CE at `params` (training-mode BN on the probe batch, statistic updates discarded) + wd/2 sum ||p||^2.

    The L2 term covers every trainable tensor, as the reference's meta network does (SPEC 1.6.5).
    """
    logits, _ = network.stateless_call(params, non_trainable, images, training=True)
    logits = losses.full_precision(logits)
    loss = tf.reduce_mean(losses.cross_entropy(labels_onehot, logits)) + losses.l2_penalty(params, weight_decay)
    return loss, logits


def meta_gradients(*, network, forward_fn, look_loss_fn, omega0, lambda0, probe_images, probe_labels_onehot,
                   accumulators, step_size, momentum, probe_weight_decay, main_tape=None):
    """Runs the look-ahead and returns d L_probe / d (omega, lambda).

    Args:
      network: the Keras classifier.
      forward_fn: () -> outputs; the train-batch forward passes. They are recorded on every active tape, so the
        caller's `main_tape` can reuse the same logits for the training loss (no second forward).
      look_loss_fn: (outputs, omega, lambda) -> scalar L_look(theta; omega, lambda), including R(theta).
      omega0, lambda0: [B] points at which the gradients are taken (1/B and 0.9 for IEG).
      probe_images, probe_labels_onehot: the trusted batch.
      accumulators: the optimizer's momentum accumulators, aligned with `network.trainable_variables`, or None.
      step_size, momentum: eta_meta and mu_meta.
      probe_weight_decay: wd of the probe objective.
      main_tape: the caller's outer tape; paused while the meta-only work runs so it records nothing it never uses.
    """
    params = network.trainable_variables
    pause = main_tape.stop_recording if main_tape is not None else contextlib.nullcontext
    with tf.GradientTape() as meta_tape:
        meta_tape.watch([omega0, lambda0])
        with tf.GradientTape() as look_tape:
            outputs = forward_fn()
            look_loss = look_loss_fn(outputs, omega0, lambda0)
        with pause():
            grads = look_tape.gradient(look_loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            theta_prime = look_ahead(params, grads, accumulators, step_size, momentum)
            probe_loss, probe_logits = probe_objective(
                network, theta_prime, network.non_trainable_variables, probe_images, probe_labels_onehot,
                probe_weight_decay)
    with pause():
        grad_omega, grad_lambda = meta_tape.gradient(
            probe_loss, [omega0, lambda0], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return MetaGradients(outputs, grad_omega, grad_lambda, probe_logits, probe_loss)

