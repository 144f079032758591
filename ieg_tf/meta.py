"""The meta step: a look-ahead update of theta, its probe loss, and d(probe loss)/d(omega, lambda) (SPEC 1.6).

Three ways to get the gradients (`TrainerConfig.meta_grad_mode`):
* exact: nested `tf.GradientTape`s. The inner tape gives G = d L_look / d theta as a function of (omega, lambda);
  the outer tape differentiates the probe loss at theta' = theta - eta (mu a + G) back to (omega, lambda). The
  look-ahead forward runs through `stateless_call`, so it uses theta' without touching the model's variables, and
  its BatchNorm statistics updates are discarded.
* last_layer: the same, but only the classifier (the last Dense layer) takes the look-ahead step; every other
  variable keeps its value in theta', so the second-order backward stops at the classifier (FSR's "level 0",
  SPEC 6). Exact when the classifier is the network's only trainable layer.
* approx_vjp: first order in eta, with no look-ahead forward. grad L_p(theta') = grad L_p(theta) + O(eta), so
  d L_p(theta') / d omega_i = -eta <grad L_p(theta'), d G / d omega_i> ~ -eta <v, d G / d omega_i> with
  v = grad L_p(theta): one probe forward/backward at theta (off the meta tape), then -eta d<sg(v), G>/d(omega,
  lambda) by the outer tape, a vector-Jacobian product through G (for lambda through the target mixture). The
  momentum term eta mu a does not depend on (omega, lambda); it only moves the point where grad L_p is read, an
  O(eta) shift this approximation drops. The probe loss and logits it reports are taken at theta. It is exact
  for L2R, whose look-ahead starts at omega0 = 0 with no momentum, so theta' = theta.
The rules that turn the gradients into omega* and lambda* (`losses.normalize_weights`, `binarize_label_mix`) read
signs and ratios, so they apply to every mode unchanged.

Loss scaling (`loss_scale`, mixed_float16): the float16 backward passes of the meta step underflow as the main
step's would, so both of its differentiations are seeded with the optimizer's loss scale S and unscaled in float32:
G = (d S L_look / d theta) / S, and d L_probe / d(omega, lambda) = (d S L_probe / d(omega, lambda)) / S. The second
one's probe backward then runs at the main step's magnitudes, and the second-order pass through G (a forward-mode
like propagation of -eta grad L_probe) needs no scale of its own. With S = 1 nothing changes. Scaled gradients
that overflow (S too large) make the step report `overflow` instead of NaN weights (`solve_weights`).

`MetaCache` keeps the solved omega*, lambda* by example id for `TrainerConfig.meta_every` > 1.
"""

import contextlib
import typing

import keras
import numpy as np
import tensorflow as tf

from ieg_tf import losses
from ieg_tf.config import META_GRAD_MODES

ZERO = tf.UnconnectedGradients.ZERO


class MetaGradients(typing.NamedTuple):
    outputs: typing.Any          # what `forward_fn` returned (shared with the main loss, so computed once)
    grad_omega: tf.Tensor        # [B] d L_probe / d omega at omega0
    grad_lambda: tf.Tensor       # [B] d L_probe / d lambda at lambda0 (zeros if the look loss ignores lambda)
    probe_logits: tf.Tensor      # [Bp, C] the probe batch's logits at theta' (at theta for approx_vjp)
    probe_loss: tf.Tensor


class MetaStep(typing.NamedTuple):
    """omega*, lambda* of one training step, with the forward's outputs and the probe batch's figures."""
    outputs: typing.Any    # what `forward_fn` returned
    omega: tf.Tensor       # [B] omega*, stop-gradiented
    label_mix: tf.Tensor   # [B] lambda*, stop-gradiented
    probe_loss: tf.Tensor  # probe loss at theta' (theta for approx_vjp); 0 on a reuse step
    probe_acc: tf.Tensor   # probe accuracy at the same point; 0 on a reuse step
    solved: tf.Tensor      # 1.0 if the step ran the meta step, 0.0 if it reused the cache (or overflowed)
    overflow: tf.Tensor    # True if the loss-scaled meta gradients were not finite: the step must not be applied


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


def classifier_indices(network):
    """Positions in `network.trainable_variables` of the classifier: the last trainable Dense layer.

    Layers are visited in `network.layers` order (topological for functional and Sequential models), recursing
    into nested models, so the last Dense found is the one closest to the logits.

    Raises:
      ValueError: if the network has no trainable `keras.layers.Dense` layer.
    """
    dense = [layer for layer in _all_layers(network)
             if isinstance(layer, keras.layers.Dense) and layer.trainable and layer.trainable_weights]
    if not dense:
        raise ValueError(f"meta_grad_mode=last_layer needs a network whose classifier is a trainable "
                         f"keras.layers.Dense layer, and {network.name} has none; use meta_grad_mode=exact or "
                         "approx_vjp")
    ids = {id(v) for v in dense[-1].trainable_weights}
    return [i for i, v in enumerate(network.trainable_variables) if id(v) in ids]


def _all_layers(model):
    for layer in getattr(model, "layers", ()):
        yield layer
        yield from _all_layers(layer)


def meta_gradients(*, network, forward_fn, look_loss_fn, omega0, lambda0, probe_images, probe_labels_onehot,
                   accumulators, step_size, momentum, probe_weight_decay, main_tape=None, mode="exact",
                   loss_scale=None):
    """Runs the meta step and returns d L_probe / d (omega, lambda).

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
      mode: "exact", "last_layer" or "approx_vjp" (see the module docstring).
      loss_scale: scalar S that seeds both differentiations (module docstring), or None (= 1).

    Returns:
      MetaGradients, unscaled.
    """
    outputs, result = _run(
        lambda solve: solve(), mode=mode, network=network, forward_fn=forward_fn, look_loss_fn=look_loss_fn,
        omega0=omega0, lambda0=lambda0, probe_images=probe_images, probe_labels_onehot=probe_labels_onehot,
        accumulators=accumulators, step_size=step_size, momentum=momentum, probe_weight_decay=probe_weight_decay,
        main_tape=main_tape, loss_scale=loss_scale)
    return MetaGradients(outputs, *result)


def solve_weights(mode, cache, step, ids, skip_by_cond=True, **meta_args):
    """omega* and lambda* of one step: the meta step and IEG's rules (SPEC 1.6.7-8), or reused from `cache`.

    Args:
      mode: the meta_grad_mode.
      cache: a MetaCache (meta_every > 1) or None (solve every step).
      step: the optimizer iteration (before this step's update).
      ids: [B] example ids (for the cache).
      skip_by_cond: with a cache, True runs the meta-only work under a `tf.cond`, so reuse steps skip it; False
        runs it every step and selects the cached values with `tf.where` (same results). False is for XLA on CPU,
        which runs convolutions inside a conditional 10-100x slower (its nested-computation code path, as in
        jax-ml/jax#12868).
      **meta_args: `meta_gradients`' arguments (but `mode`).

    Returns:
      MetaStep. The forward runs every step either way (the main loss needs it). Under a loss scale S > 1,
      non-finite meta gradients are an overflow of the scale, as the LossScaleOptimizer treats the main
      gradients: omega*, lambda* are then 0 and `overflow` is set, and the caller skips the update (which lowers
      S). At S <= 1 (or without a scale) they stay NaN, as a diverged run must show.
    """
    labels = meta_args["probe_labels_onehot"]
    loss_scale = meta_args.get("loss_scale")

    def solved(solve):
        grad_omega, grad_lambda, probe_logits, probe_loss = solve()
        hit = tf.cast(tf.argmax(probe_logits, -1) == tf.argmax(labels, -1), tf.float32)
        overflow = tf.constant(False)
        if loss_scale is not None:
            finite = tf.reduce_all(tf.math.is_finite(grad_omega)) & tf.reduce_all(tf.math.is_finite(grad_lambda))
            overflow = tf.logical_not(finite) & (loss_scale > 1.0)
            grad_omega, grad_lambda = (tf.where(overflow, tf.zeros_like(g), g) for g in (grad_omega, grad_lambda))
            probe_loss = tf.where(overflow, tf.zeros_like(probe_loss), probe_loss)
        return (losses.normalize_weights(grad_omega), losses.binarize_label_mix(grad_lambda),
                tf.cast(probe_loss, tf.float32), tf.reduce_mean(hit),
                1.0 - tf.cast(overflow, tf.float32), overflow)

    def decide(solve):
        if cache is None:
            return solved(solve)

        def reused():
            return (*cache.lookup(ids), tf.zeros([]), tf.zeros([]), tf.zeros([]), tf.constant(False))

        due = cache.due(step)
        if skip_by_cond:
            return tf.cond(due, lambda: solved(solve), reused)
        return tuple(tf.where(due, a, b) for a, b in zip(solved(solve), reused()))

    outputs, result = _run(decide, mode=mode, **meta_args)
    # The caller's tape must not differentiate into the meta step (or the cond around it).
    return MetaStep(outputs, *(tf.stop_gradient(t) for t in result))


def _run(decide, *, mode, network, forward_fn, look_loss_fn, omega0, lambda0, probe_images, probe_labels_onehot,
         accumulators, step_size, momentum, probe_weight_decay, main_tape=None, probe_non_trainable=None,
         loss_scale=None):
    """Records the forward on the meta tapes, then returns (outputs, decide(solve)).

    `probe_non_trainable` (default: the network's variables) is the non-trainable state of the probe forward, so
    that its Dropout masks can be drawn apart from the other passes' (`IEGTrainer.pass_state`).

    `solve()` does the meta-only work and returns (grad_omega, grad_lambda, probe_logits, probe_loss), unscaled
    (`loss_scale`: module docstring). Splitting it off lets `decide` put it under a `tf.cond`, with the forward
    (which the main loss needs anyway) outside.
    """
    if mode not in META_GRAD_MODES:
        raise ValueError(f"unknown meta_grad_mode '{mode}'; choose one of: {', '.join(META_GRAD_MODES)}")
    pause = main_tape.stop_recording if main_tape is not None else contextlib.nullcontext
    params = network.trainable_variables
    non_trainable = network.non_trainable_variables if probe_non_trainable is None else probe_non_trainable
    probe = (probe_images, probe_labels_onehot, probe_weight_decay)
    indices = classifier_indices(network) if mode == "last_layer" else range(len(params))
    stepped = [params[i] for i in indices]
    scaled, unscaled = _scaling(loss_scale)
    with tf.GradientTape() as meta_tape:
        meta_tape.watch([omega0, lambda0])
        with tf.GradientTape() as look_tape:
            outputs = forward_fn()
            look_loss = scaled(look_loss_fn(outputs, omega0, lambda0))

        def solve():
            with pause():
                grads = unscaled(look_tape.gradient(look_loss, stepped, unconnected_gradients=ZERO))
                if mode == "approx_vjp":
                    with meta_tape.stop_recording():
                        with tf.GradientTape() as probe_tape:
                            probe_loss, probe_logits = probe_objective(network, params, non_trainable, *probe)
                            scaled_probe_loss = scaled(probe_loss)
                        v = unscaled(probe_tape.gradient(scaled_probe_loss, params, unconnected_gradients=ZERO))
                    # d/d(omega, lambda) of <sg(v), G>: the mixed second derivative pulled back along v.
                    target = tf.add_n([tf.reduce_sum(g * tf.stop_gradient(u)) for g, u in zip(grads, v)])
                else:
                    slots = None if accumulators is None else [accumulators[i] for i in indices]
                    theta_prime = list(params)
                    for i, value in zip(indices, look_ahead(stepped, grads, slots, step_size, momentum)):
                        theta_prime[i] = value
                    probe_loss, probe_logits = probe_objective(network, theta_prime, non_trainable, *probe)
                    target = probe_loss
                # Asked inside the tape's context, as a cond branch must return it; the tape stops recording here.
                grad_omega, grad_lambda = unscaled(
                    meta_tape.gradient(scaled(target), [omega0, lambda0], unconnected_gradients=ZERO))
                if mode == "approx_vjp":
                    grad_omega, grad_lambda = -step_size * grad_omega, -step_size * grad_lambda
            return grad_omega, grad_lambda, probe_logits, probe_loss

        result = decide(solve)
    return outputs, result


def _scaling(loss_scale):
    """(scaled, unscaled): multiply a loss by S, divide a list of gradients by S; identities when S is None."""
    if loss_scale is None:
        return (lambda loss: loss), (lambda grads: grads)
    scale = tf.cast(loss_scale, tf.float32)
    return ((lambda loss: loss * tf.cast(scale, loss.dtype)),
            (lambda grads: [g / tf.cast(scale, g.dtype) for g in grads]))


class MetaCache(keras.layers.Layer):
    """omega*, lambda* of the last solved step, kept between the steps that solve them (`meta_every` = k > 1).

    Steps whose optimizer iteration is a multiple of k run the meta step and store, per example id, the relative
    weight omega* x B and lambda*. The steps in between reuse them: an example solved before gets its stored
    values; any other example gets the last solved batch's means (mean omega* x B, i.e. 1 unless every weight
    was 0, and the fraction of lambda* = 1). The relative weights are then renormalized to sum to 1 over the batch.
    Without `num_examples` there is no per-example store and every example gets the means.

    All of it is variables (checkpointed, so resume is exact). Under a multi-replica strategy every replica
    gathers all replicas' ids and values and writes the same update, so the store is identical everywhere.

    Args:
      every: k.
      num_examples: N (ids are in [0, N)), or None.
    """

    def __init__(self, every, num_examples=None, **kwargs):
        super().__init__(**kwargs)
        self.every = int(every)
        self.per_example = bool(num_examples)
        if self.per_example:
            # -1 marks "never solved": relative weights are >= 0.
            self.relative_weight = self._variable("relative_weight", np.full([num_examples], -1.0, np.float32))
            self.label_mix = self._variable("label_mix", np.ones([num_examples], np.float32))
        self.mean_relative_weight = self._variable("mean_relative_weight", np.float32(1.0))
        self.mean_label_mix = self._variable("mean_label_mix", np.float32(1.0))
        self.built = True  # no inputs to build from; Keras' symbolic build under a strategy checks this flag

    def _variable(self, name, value):
        return keras.Variable(value, trainable=False, name=name, aggregation="only_first_replica")

    def due(self, step):
        """Bool tensor: the meta step runs at optimizer iteration `step`."""
        return tf.equal(tf.math.floormod(tf.cast(step, tf.int64), self.every), 0)

    def lookup(self, ids):
        """(omega [B] summing to 1, or all 0 if every stored weight is 0; lambda [B]) for the batch `ids`."""
        batch = tf.shape(ids)[:1]
        rel = tf.fill(batch, tf.convert_to_tensor(self.mean_relative_weight))
        lam = tf.fill(batch, tf.convert_to_tensor(self.mean_label_mix))
        if self.per_example:
            index = tf.cast(ids, tf.int32)
            stored_rel, stored_lam = tf.gather(self.relative_weight, index), tf.gather(self.label_mix, index)
            seen = stored_rel >= 0.0
            rel, lam = tf.where(seen, stored_rel, rel), tf.where(seen, stored_lam, lam)
        return tf.math.divide_no_nan(rel, tf.reduce_sum(rel)), lam

    def update(self, ids, omega, label_mix, step, kept=None):
        """Stores this step's omega*, lambda* when it solved them (`due(step)`, and `kept` unless None: False for
        a step whose meta step overflowed its loss scale); otherwise changes nothing."""
        solved = self.due(step) if kept is None else self.due(step) & kept
        rel = tf.cast(omega, tf.float32) * tf.cast(tf.shape(omega)[0], tf.float32)
        label_mix = tf.cast(label_mix, tf.float32)
        means = tf.stack([tf.reduce_mean(rel), tf.reduce_mean(label_mix)])
        ids = tf.cast(ids, tf.int32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            ids, rel, label_mix = (context.all_gather(t, axis=0) for t in (ids, rel, label_mix))
            means = context.all_reduce(tf.distribute.ReduceOp.MEAN, means)
        for variable, value in zip((self.mean_relative_weight, self.mean_label_mix), tf.unstack(means)):
            variable.assign(tf.where(solved, value, variable))
        if self.per_example:
            index = ids[:, None]
            for variable, value in ((self.relative_weight, rel), (self.label_mix, label_mix)):
                kept = tf.where(solved, value, tf.gather(variable, ids))  # unsolved steps write back what is there
                variable.assign(tf.tensor_scatter_nd_update(variable, index, kept))
