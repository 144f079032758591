"""The trainer: a `keras.Model` that wraps any classifier and whose `train_step` is IEG's Algorithm 1.

One step (SPEC 1.1-1.8), per replica:
  1. views: z = f(x) on the weak view (the only pass that updates BatchNorm statistics), z_hat on the strong view;
  2. label guessing: g = Sharpen(mean_k softmax(logit_norm(z_k)));
  3. meta step: look-ahead theta', probe loss, d/d(omega, lambda) -> omega*, lambda*;
  4. split (optional, the paper's threshold T): MixUp targets keep the given label where omega* >= T / B;
  5. losses: re-weighted + re-labeled CE, MixUp with probe data, KL consistency, L2;
  6. update: TF1 momentum, then the ramped EMA and the per-example accumulators.
Methods `l2r` and `supervised` share the same inputs, optimizer, EMA and evaluation.
"""

import dataclasses
import math
import typing
import warnings

import keras
import numpy as np
import tensorflow as tf

from ieg_tf import losses, meta, mixup, random_ops
from ieg_tf.config import TrainerConfig
from ieg_tf.example_stats import ExampleStats
from ieg_tf.optim import TF1Momentum, ema_decay

REQUIRED_KEYS = {  # batch keys each method reads (true_label is optional: monitoring only)
    "ieg": ("weak", "strong", "label", "id", "probe_image", "probe_label"),
    "l2r": ("weak", "label", "id", "probe_image", "probe_label"),
    "supervised": ("weak", "label", "id"),
}
TRAIN_METRICS = {
    "ieg": ("loss", "sup_loss", "mix_probe_loss", "mix_unl_loss", "kl_loss", "l2_loss", "probe_loss",
            "probe_acc", "omega_zero_frac", "omega_max", "relabel_frac", "guess_acc", "omega_clean",
            "omega_noisy", "noisy_frac", "train_acc"),
    "l2r": ("loss", "l2_loss", "probe_loss", "probe_acc", "omega_zero_frac", "omega_max", "omega_clean",
            "omega_noisy", "train_acc"),
    "supervised": ("loss", "l2_loss", "train_acc"),
}
# pass_state folds (SEED_PASS_OFFSET + pass index) into the step seed; the offset keeps these draws apart from the
# step's other stateless streams (random_ops.split of the same seed).
SEED_PASS_OFFSET = 1000
IMAGE_KEYS = ("weak", "strong", "probe_image")  # training-batch images: float, already scaled to [-1, 1]
# Float images with a value beyond +-IMAGE_LIMIT are taken for unscaled 0..255 pixels and refused. Images should lie
# in [-1, 1]; the bound is loose so that other float inputs (standardised images, features) pass. Inputs that are
# not images may be larger: set ieg_tf.model.IMAGE_LIMIT = float("inf") before the first step to turn it off.
IMAGE_LIMIT = 32.0


class StepResult(typing.NamedTuple):
    """What one replica's step computes before anything is assigned."""
    grads: list            # d(S * L_total / num_replicas) / d theta (S: the optimizer's loss scale, 1 unless
                           # mixed_float16), aligned with network.trainable_variables
    logs: dict             # tracker name -> (value, weight)
    per_example: tuple     # (omega*, lambda*, guessed label) for the label-issue statistics, or None
    state: list            # the weak-view forward's new non-trainable values (BN moving statistics)
    overflow: typing.Any = None  # True when the loss-scaled meta step overflowed (mixed_float16): the step must be
                                 # skipped (`IEGTrainer._overflow_guard`); None for supervised


@keras.saving.register_keras_serializable(package="ieg_tf")
class IEGTrainer(keras.Model):
    """Trains `network` on noisy labels with a small trusted probe set.

    Args:
      network: a built Keras classifier mapping images to logits (float32 logits under mixed precision).
      num_classes: C.
      config: TrainerConfig; its `method` selects ieg, l2r or supervised.
      num_train_examples: N; when given, per-example omega*, lambda* and guesses are summed by example id in
        `example_stats` (the label-issue report reads them); with config.meta_every > 1, `meta_cache` also keeps
        the last solved omega*, lambda* by id (`ieg_tf.meta.MetaCache`).

    Each element of the training dataset is a dict with `weak` [B,H,W,C], `strong` (ieg only), `label` int [B],
    `id` int [B] in [0, N), `true_label` int [B] (-1 = unknown; monitoring only), `probe_image` [Bp,H,W,C],
    `probe_label` int [Bp] (see `ieg_tf.pipeline.train_dataset`). Training images are float, already scaled to
    [-1, 1]. Evaluation data are (image, label) pairs; they are scored with the EMA weights, and uint8 images
    (0..255, as data sets store them) are scaled to [-1, 1] first, as `ieg_tf.export` does.

    Labels outside [0, C) and ids outside [0, N) stop the step with an InvalidArgumentError naming the key (they
    would otherwise become all-zero targets or be dropped silently). These are `tf.debugging` asserts, which XLA
    drops: with `compile(jit_compile=True)` the step counts them instead and logs a NaN loss, and `fit` stops
    after that step with a ValueError naming labels and ids and their ranges (one step has then been applied).

    Set `trainable` on the network's layers before building the trainer: the EMA shadows are made for the
    trainable variables at that point (a later change is refused; build a new IEGTrainer around the network).
    `save("x.keras")` / `keras.models.load_model` restore the whole trainer (a subclassed network must be
    registered with `keras.saving.register_keras_serializable`); `save_weights` needs a trainer built the same way.
    """

    def __init__(self, network, num_classes, config=TrainerConfig(), num_train_examples=None, **kwargs):
        super().__init__(**kwargs)
        if not network.built:
            raise ValueError("the network is not built: give it a keras.Input or call it once on a batch first")
        check_logits_network(network, num_classes)
        self.network = network
        self.num_classes = int(num_classes)
        self.config = config
        self.num_train_examples = int(num_train_examples) if num_train_examples else None
        self.ema_weights = []
        for i, variable in enumerate(network.trainable_variables):
            # Every replica holds the same post-update value, so the first replica's write is the right one.
            shadow = self.add_weight(shape=variable.shape, dtype=variable.dtype, initializer="zeros",
                                     trainable=False, aggregation="only_first_replica", name=f"ema_{i}")
            shadow.assign(variable)
            self.ema_weights.append(shadow)
        self._seed_state_ids = seed_state_ids(network)
        self.example_stats = (ExampleStats(num_train_examples, num_classes, name="example_stats")
                              if num_train_examples else None)
        if config.method != "supervised" and config.meta_grad_mode == "last_layer":
            meta.classifier_indices(network)  # a network without a Dense classifier fails here, not mid-trace
        # Only runs that reuse omega*, lambda* carry the cache, so other runs' checkpoints keep their layout.
        self.meta_cache = (meta.MetaCache(config.meta_every, num_train_examples, name="meta_cache")
                           if config.method != "supervised" and config.meta_every > 1 else None)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TRAIN_METRICS[config.method]}
        self.eval_loss = keras.metrics.Mean(name="eval_loss")
        self.eval_accuracy = keras.metrics.Mean(name="eval_accuracy")
        # Labels / ids outside their range seen by training steps (the asserts that stop them are dropped by XLA);
        # a metric, so it is neither checkpointed nor logged; `StopOnNonFiniteLoss` reads it.
        self.input_errors = keras.metrics.Sum(name="input_errors")
        # Training / evaluation images beyond +-IMAGE_LIMIT (unscaled 0..255 floats), counted the same way.
        self.image_errors = keras.metrics.Sum(name="image_errors")
        self.eval_image_errors = keras.metrics.Sum(name="eval_image_errors")
        # Everything is created above; without this, `fit` under a strategy tries to build the trainer by calling
        # it on a training batch (a dict the wrapped network does not take).
        self.built = True

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 under a strategy first averages a data batch over replicas (to build the model symbolically)
        # and only then checks whether anything needs building; with an uneven last evaluation batch (599 test
        # images over 2 replicas) that average fails. Everything here is built in __init__ and compile.
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.eval_loss, self.eval_accuracy, self.input_errors, self.image_errors,
                self.eval_image_errors]

    @property
    def decayed_variables(self):
        """The variables R(theta) covers: all trainables, or conv/dense kernels only (ResNet-29)."""
        variables = self.network.trainable_variables
        if self.config.decay_kernels_only:
            variables = [v for v in variables if v.path.endswith("kernel")]
        return variables

    def call(self, inputs, training=False):
        return self.network(network_inputs(inputs), training=training)

    def get_config(self):
        """What `save("x.keras")` stores to rebuild the trainer; the weights (EMA shadows, per-example statistics,
        meta cache, optimizer slots) are saved beside it by Keras."""
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "num_classes": self.num_classes, "config": dataclasses.asdict(self.config),
                "num_train_examples": self.num_train_examples}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        network = keras.saving.deserialize_keras_object(config.pop("network"), custom_objects=custom_objects)
        return cls(network, config.pop("num_classes"), TrainerConfig(**config.pop("config")), **config)

    def compile_from_config(self, config):
        """`load_model` compiles through here (Keras skips an overridden `compile` otherwise), so the optimizer
        and its slots exist before the saved optimizer state is loaded into them."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    # ------------------------------------------------------------------ training
    def train_step(self, data):
        if isinstance(data, (tuple, list)):  # `train_on_batch(batch)` packs its argument as (x, y, sample_weight)
            data = data[0]
        if not isinstance(data, dict):
            raise ValueError(f"training batches must be dicts (see ieg_tf.pipeline.train_dataset), got {type(data)}")
        required = REQUIRED_KEYS[self.config.method]
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"method {self.config.method} needs training batches with keys {required}; missing "
                             f"{missing}. Build them with ieg_tf.pipeline.train_dataset (a probe set is needed "
                             "for ieg and l2r).")
        data, errors = self._checked_batch(data)
        seed = self.step_seed()
        step = self.compute_gradients(data, seed)
        grads, kept = self._overflow_guard(step)  # an overflowed step (mixed_float16) is skipped, records nothing
        if self.meta_cache is not None:  # before `apply`, which advances the iteration that says "solved"
            self.meta_cache.update(data["id"], *step.per_example[:2], self.optimizer.iterations, kept=kept)
        self.optimizer.apply(grads, self.network.trainable_variables)
        self.commit_state(step.state, kept)
        self.update_ema(kept)
        if self.example_stats is not None and step.per_example is not None:
            self.example_stats.update(data["id"], *step.per_example, kept=kept)
        # Out-of-range values make the logged loss NaN, so `StopOnNonFiniteLoss` stops the run at this step even
        # where XLA dropped the asserts, and names the cause from `input_errors`.
        self.input_errors.update_state(errors)
        unscaled = _unscaled_images(data[k] for k in ("weak", "probe_image") if k in data)  # strong: weak's images
        self.image_errors.update_state(unscaled)
        logs = dict(step.logs, loss=(step.logs["loss"][0] + tf.where(errors + unscaled > 0, float("nan"), 0.0),
                                     step.logs["loss"][1]))
        for name, value in logs.items():
            self.trackers[name].update_state(value[0], sample_weight=value[1])
        return _global_results(self.trackers)

    def step_seed(self, replica_id=None):
        """Stateless seed of this step and replica: (config seed, optimizer step, replica id), so resume is exact."""
        if replica_id is None:
            replica = tf.distribute.get_replica_context()
            replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        seed = tf.constant([self.config.seed, 0], tf.int32)
        return random_ops.fold_in(random_ops.fold_in(seed, self.optimizer.iterations), replica_id)

    def _checked_batch(self, data):
        """(`data` with its labels and ids checked, the number of out-of-range values). Static problems (one-hot
        labels, uint8 images) raise ValueError at trace time; out-of-range values stop the step with an assert
        before they become all-zero targets, and where XLA drops the asserts, are counted instead."""
        checked = dict(data)
        for key in IMAGE_KEYS:
            if key in data:
                _check_float_images(data[key], key)
        errors = tf.zeros([], tf.float32)
        limits = {"label": self.num_classes, "probe_label": self.num_classes}
        if self.num_train_examples:  # ids index the per-example variables only when N is known
            limits["id"] = self.num_train_examples
        for key, limit in limits.items():
            if key in data:
                what = "example ids" if key == "id" else "class labels"
                checked[key] = checked_indices(data[key], key, limit, what)
                outside = (checked[key] < 0) | (checked[key] >= limit)
                errors += tf.reduce_sum(tf.cast(outside, tf.float32))
        return checked, errors

    def compute_gradients(self, data, seed):
        """One replica's step without side effects: a StepResult (see its fields).

        Logs map a tracker name to (value, weight) so means over examples with unknown true labels stay exact.
        """
        step = {"ieg": self._ieg_step, "l2r": self._l2r_step, "supervised": self._supervised_step}
        return step[self.config.method](data, seed)

    def _inputs(self, data):
        x = tf.convert_to_tensor(data["weak"])
        y = tf.one_hot(tf.cast(data["label"], tf.int32), self.num_classes)
        true = tf.cast(data.get("true_label", -tf.ones_like(data["label"])), tf.int32)
        return x, y, true

    def _scale(self, loss):
        """The loss to differentiate, inside the tape: 1/n of the replica's mean (the strategy sums replica
        gradients), times the optimizer's loss scale. Under mixed_float16 Keras wraps the optimizer in a
        LossScaleOptimizer whose `apply` divides the gradients by that scale, as Keras' own train_step expects."""
        loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
        return loss if self.optimizer is None else self.optimizer.scale_loss(loss)

    def _loss_scale(self):
        """The LossScaleOptimizer's current scale S (mixed_float16), which the meta step's differentiations share
        with the main one (`meta` module docstring); None when the optimizer scales nothing."""
        if self.optimizer is None or self.optimizer is self.base_optimizer:
            return None
        return tf.cast(self.optimizer.scale_loss(tf.ones([])), tf.float32)

    def _overflow_guard(self, step):
        """(gradients to apply, kept) under a LossScaleOptimizer; (step.grads, None) without one.

        A step overflowed when its loss-scaled meta step did (`step.overflow`) or its gradients are not finite, on
        any replica. Its gradients are then made NaN on every replica, so the LossScaleOptimizer skips the update
        and halves its scale, and `kept` (False) tells the caller to record nothing. Keras' LossScaleOptimizer
        alone does not suffice under a multi-replica strategy: it tests replica 0's gradients before they are
        summed, so an overflow on another replica alone was applied (inf weights, measured in
        tests/mirrored_overflow_check.py).
        """
        if self._loss_scale() is None:
            return step.grads, None
        overflow = tf.logical_not(self.optimizer.check_finite(step.grads))  # the LossScaleOptimizer's own test
        if step.overflow is not None:
            overflow = overflow | step.overflow
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            overflow = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(overflow, tf.float32)) > 0.0
        poison = tf.where(overflow, float("nan"), 1.0)
        return [g if g is None else g * tf.cast(poison, g.dtype) for g in step.grads], tf.logical_not(overflow)

    def _ieg_step(self, data, seed):
        cfg, net = self.config, self.network
        x, y, true = self._inputs(data)
        xs = tf.convert_to_tensor(data["strong"])
        xp = tf.convert_to_tensor(data["probe_image"])
        yp = tf.one_hot(tf.cast(data["probe_label"], tf.int32), self.num_classes)
        batch = tf.shape(x)[0]
        omega0 = tf.ones([batch]) / tf.cast(batch, tf.float32)
        lambda0 = tf.fill([batch], cfg.grad_eps_init)
        params = net.trainable_variables

        def forward():
            # 1. Views. Only the weak-view pass returns BN statistics the step assigns (SPEC 1.2).
            z, state = self._weak_forward(x, seed)
            z_strong, _ = net.stateless_call(params, self.pass_state(seed, 1), xs, training=True)
            z_strong = tf.cast(z_strong, tf.float32)
            # 2. Label guessing from the current model (K = 2 views, or the weak view alone).
            views = [z, z_strong] if cfg.guess_views == "weak_strong" else [z]
            return z, z_strong, losses.guess_label(views, cfg.sharpen_temperature), state

        def look_loss(outputs, omega, lam):
            z, _, guess, _ = outputs
            if cfg.meta_stop_guess_gradient:
                guess = tf.stop_gradient(guess)
            target = lam[:, None] * y + (1.0 - lam[:, None]) * guess
            return (tf.reduce_sum(omega * losses.cross_entropy(target, z))
                    + losses.l2_penalty(self.decayed_variables, cfg.weight_decay))

        with tf.GradientTape() as tape:
            # 3. Meta step: omega*, lambda* from the look-ahead's probe loss (or reused, see meta_every).
            m = meta.solve_weights(
                cfg.meta_grad_mode, self.meta_cache, self.optimizer.iterations, data["id"],
                skip_by_cond=self._skip_meta_by_cond(), network=net, forward_fn=forward, look_loss_fn=look_loss,
                omega0=omega0, lambda0=lambda0, probe_images=xp, probe_labels_onehot=yp,
                accumulators=self._accumulators(), step_size=cfg.meta_stepsize, momentum=cfg.meta_momentum,
                probe_weight_decay=self._probe_weight_decay(), main_tape=tape,
                probe_non_trainable=self.pass_state(seed, 3), loss_scale=self._loss_scale())
            z, z_strong, guess, state = m.outputs
            guess = tf.stop_gradient(guess)
            omega, lam = m.omega, m.label_mix

            # 4. Clean/noisy split by threshold T (paper); off = reference: every MixUp target is the guess.
            if cfg.clean_threshold is None:
                noisy = tf.ones([batch], tf.bool)
                unlabeled_target = guess
            else:
                noisy = omega * tf.cast(batch, tf.float32) < cfg.clean_threshold
                unlabeled_target = tf.where(noisy[:, None], guess, y)

            # 5a. Supervised terms: meta-relabeled targets, and omega* on the lambda0 mixture (halved, SPEC 1.7).
            loss_lambda = losses.mean_cross_entropy(lam[:, None] * y + (1.0 - lam[:, None]) * guess, z)
            mixed0 = cfg.grad_eps_init * y + (1.0 - cfg.grad_eps_init) * guess
            loss_omega = tf.reduce_sum(omega * losses.cross_entropy(mixed0, z))
            sup_loss = 0.5 * (loss_lambda + loss_omega)
            # 5b. Joint MixUp over [probe resample; weak; strong].
            mix_probe, mix_unl = self._mixup_losses(x, xs, xp, yp, unlabeled_target, seed)
            # 5c. KL consistency, gradient through the strong view only.
            kl = losses.kl_consistency(z, z_strong)
            l2 = losses.l2_penalty(self.decayed_variables, cfg.weight_decay)
            total = sup_loss + mix_probe + self._ce_weight() * mix_unl + cfg.consistency_factor * kl + l2
            scaled = self._scale(total)
        grads = tape.gradient(scaled, params)

        ones = tf.ones([])
        logs = {
            "loss": (total, ones), "sup_loss": (sup_loss, ones), "mix_probe_loss": (mix_probe, ones),
            "mix_unl_loss": (mix_unl, ones), "kl_loss": (kl, ones), "l2_loss": (l2, ones),
            "relabel_frac": (tf.reduce_mean(1.0 - lam), ones),
            "noisy_frac": (tf.reduce_mean(tf.cast(noisy, tf.float32)), ones),
            "guess_acc": self._accuracy_where_known(guess, true),
            **self._meta_logs(m, y, true),
            "train_acc": (_accuracy(z, y), ones),
        }
        return StepResult(grads, logs, (omega, lam, guess), state, m.overflow)

    def _ce_weight(self):
        """p at this step: ce_factor, ramped linearly from 0 over ce_rampup_steps when that is set."""
        cfg = self.config
        if not cfg.ce_rampup_steps:
            return cfg.ce_factor
        t = tf.cast(self.optimizer.iterations, tf.float32)
        return cfg.ce_factor * tf.minimum(1.0, t / float(cfg.ce_rampup_steps))

    def _mixup_losses(self, x, xs, xp, yp, unlabeled_target, seed):
        cfg = self.config
        if cfg.ce_factor == 0:  # the reference drops the whole term, probe part included
            return tf.zeros([]), tf.zeros([])
        batch = tf.shape(x)[0]
        draw_seed, mix_seed = random_ops.split(seed, 2)
        # B probe rows drawn uniformly with replacement from the probe batch (SPEC 1.4.1).
        idx = random_ops.randint([batch], draw_seed, 0, tf.shape(xp)[0])
        images = tf.concat([tf.gather(xp, idx), x, xs], axis=0)
        targets = tf.concat([tf.gather(yp, idx), unlabeled_target, unlabeled_target], axis=0)
        images, targets = mixup.mixup(images, targets, mix_seed, cfg.mixup_beta)
        logits, _ = self.network.stateless_call(
            self.network.trainable_variables, self.pass_state(seed, 2), images, training=True)
        logits_l, logits_1, logits_2 = tf.split(tf.cast(logits, tf.float32), 3, axis=0)
        targets_l, targets_u = targets[:batch], targets[batch:]
        mix_probe = losses.mean_cross_entropy(targets_l, losses.logit_norm(logits_l))
        unl_logits = tf.concat([losses.logit_norm(logits_1), losses.logit_norm(logits_2)], axis=0)
        return mix_probe, losses.mean_cross_entropy(targets_u, unl_logits)

    def _l2r_step(self, data, seed):
        cfg, net = self.config, self.network
        x, y, true = self._inputs(data)
        yp = tf.one_hot(tf.cast(data["probe_label"], tf.int32), self.num_classes)
        batch = tf.shape(x)[0]

        def forward():
            return self._weak_forward(x, seed)

        def look_loss(outputs, omega, lam):
            del lam
            z, _ = outputs
            return tf.reduce_sum(omega * losses.cross_entropy(y, z))

        with tf.GradientTape() as tape:
            # L2R: omega0 = 0, plain SGD look-ahead, no relabeling (SPEC 6).
            m = meta.solve_weights(
                cfg.meta_grad_mode, self.meta_cache, self.optimizer.iterations, data["id"],
                skip_by_cond=self._skip_meta_by_cond(), network=net, forward_fn=forward, look_loss_fn=look_loss,
                omega0=tf.zeros([batch]),
                lambda0=tf.zeros([batch]), probe_images=tf.convert_to_tensor(data["probe_image"]),
                probe_labels_onehot=yp, accumulators=None, step_size=cfg.meta_stepsize, momentum=0.0,
                probe_weight_decay=self._probe_weight_decay(), main_tape=tape,
                probe_non_trainable=self.pass_state(seed, 3), loss_scale=self._loss_scale())
            z, state = m.outputs
            omega = m.omega
            l2 = losses.l2_penalty(self.decayed_variables, cfg.weight_decay)
            total = tf.reduce_sum(omega * losses.cross_entropy(y, z)) + l2
            scaled = self._scale(total)
        grads = tape.gradient(scaled, net.trainable_variables)
        ones = tf.ones([])
        logs = {"loss": (total, ones), "l2_loss": (l2, ones), **self._meta_logs(m, y, true),
                "train_acc": (_accuracy(z, y), ones)}
        return StepResult(grads, logs, (omega, tf.ones_like(omega), tf.nn.softmax(z)), state, m.overflow)

    def _supervised_step(self, data, seed):
        x, y, _ = self._inputs(data)
        with tf.GradientTape() as tape:
            z, state = self._weak_forward(x, seed)
            l2 = losses.l2_penalty(self.decayed_variables, self.config.weight_decay)
            total = losses.mean_cross_entropy(y, z) + l2
            scaled = self._scale(total)
        grads = tape.gradient(scaled, self.network.trainable_variables)
        ones = tf.ones([])
        logs = {"loss": (total, ones), "l2_loss": (l2, ones), "train_acc": (_accuracy(z, y), ones)}
        return StepResult(grads, logs, None, state)

    def pass_state(self, seed, index):
        """The network's non-trainable values for forward pass `index` of a step: its variables, except that the
        state of every seed generator (Dropout and other random layers) is a stateless draw from (step seed, pass).

        Each `stateless_call` starts from the state it is given, so passing the variables to every pass gave the
        weak, strong, MixUp and probe passes one Dropout mask, and every replica the same one (the state variable
        is mirrored). The step seed already folds in the step and the replica; resume stays exact.
        """
        values = list(self.network.non_trainable_variables)
        for k, variable in enumerate(values):
            if id(variable) in self._seed_state_ids:
                drawn = random_ops.fold_in(random_ops.fold_in(seed, SEED_PASS_OFFSET + index), k)
                values[k] = tf.cast(drawn, variable.dtype)
        return values

    def _weak_forward(self, x, seed):
        """z = f(x) in training mode and the network's new non-trainable state (BN statistics), not yet assigned."""
        net = self.network
        z, state = net.stateless_call(net.trainable_variables, self.pass_state(seed, 0), x, training=True)
        check_logits_size(z, self.num_classes)
        return losses.full_precision(z), state

    def commit_state(self, state, kept=None):
        """Assigns the weak-view forward's BN statistics, averaged over replicas; not on a skipped step.

        Keras creates BN moving variables without a replica aggregation, so under a strategy each replica would
        keep its own copy and a checkpoint would hold replica 0's. The explicit mean keeps replicas identical; with
        one replica it is the plain update. `kept` False (an overflowed mixed_float16 step, `_overflow_guard`)
        keeps the old values: the float16 forward that overflowed may have left inf in the batch statistics.
        """
        context = tf.distribute.get_replica_context()
        for variable, value in zip(self.network.non_trainable_variables, state):
            if id(variable) in self._seed_state_ids:  # every pass draws its own (pass_state): nothing to keep
                continue
            if context is not None and context.num_replicas_in_sync > 1 and value.dtype.is_floating:
                value = context.all_reduce(tf.distribute.ReduceOp.MEAN, value)
            if kept is not None:
                value = tf.where(kept, value, variable)
            variable.assign(value)

    def _meta_logs(self, m, y, true):
        ones, omega = tf.ones([]), m.omega
        scaled = omega * tf.cast(tf.shape(omega)[0], tf.float32)  # in units of the uniform weight 1/B
        given = tf.argmax(y, axis=-1, output_type=tf.int32)
        known = tf.cast(true >= 0, tf.float32)
        clean = known * tf.cast(given == true, tf.float32)
        return {
            # Weight 0 on steps that reused omega*: they evaluate no probe batch.
            "probe_loss": (m.probe_loss, m.solved), "probe_acc": (m.probe_acc, m.solved),
            "omega_zero_frac": (tf.reduce_mean(tf.cast(omega <= 0.0, tf.float32)), ones),
            "omega_max": (tf.reduce_max(scaled), ones),
            "omega_clean": _weighted_mean(scaled, clean),
            "omega_noisy": _weighted_mean(scaled, known - clean),
        }

    def _accuracy_where_known(self, probs, true):
        known = tf.cast(true >= 0, tf.float32)
        hit = tf.cast(tf.argmax(probs, axis=-1, output_type=tf.int32) == true, tf.float32)
        return _weighted_mean(hit, known)

    def _skip_meta_by_cond(self):
        """Whether reuse steps (meta_every > 1) skip the meta step with a `tf.cond` (`meta.solve_weights`).

        Not under XLA without an accelerator: XLA:CPU runs a conditional's convolutions 10-100x slower.
        """
        accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
        return not self.jit_compile or bool(accelerators)

    @property
    def base_optimizer(self):
        """The optimizer that updates the weights: compile's, unwrapped from the LossScaleOptimizer Keras adds
        under mixed_float16 (the wrapper has no momentum accumulators of its own)."""
        return getattr(self.optimizer, "inner_optimizer", self.optimizer)

    def _accumulators(self):
        accumulator = getattr(self.base_optimizer, "accumulator", None)
        if accumulator is None or not self.config.meta_momentum:
            return None
        return [accumulator(v) for v in self.network.trainable_variables]

    def _probe_weight_decay(self):
        cfg = self.config
        return cfg.weight_decay if cfg.probe_weight_decay is None else cfg.probe_weight_decay

    def update_ema(self, kept=None):
        """shadow <- d * shadow + (1 - d) * weight after the update; a skipped step (`kept` False) moves nothing:
        its weights did not change and its iteration did not advance, so the same pull would be counted twice."""
        self.check_ema_matches_network()
        decay = ema_decay(self.optimizer.iterations, self.config.ema_decay)
        if kept is not None:
            decay = tf.where(kept, decay, tf.ones_like(decay))
        for shadow, variable in zip(self.ema_weights, self.network.trainable_variables):
            shadow.assign(decay * shadow + (1.0 - decay) * tf.cast(variable, shadow.dtype))

    # ------------------------------------------------------------------ evaluation
    def ema_logits(self, images):
        """Logits of the EMA weights with the live BN moving statistics (inference mode); uint8 images (0..255)
        are scaled to [-1, 1] first, float images are taken as already scaled."""
        self.check_ema_matches_network()
        logits, _ = self.network.stateless_call(
            self.ema_weights, self.network.non_trainable_variables, network_inputs(images), training=False)
        check_logits_size(logits, self.num_classes)
        return tf.cast(logits, tf.float32)

    def check_ema_matches_network(self):
        """Raises ValueError if the network's trainable variables no longer match the EMA shadows made for them
        in __init__ (layers frozen or unfrozen since): the EMA would be paired with the wrong variables."""
        variables = self.network.trainable_variables
        shapes = [tuple(v.shape) for v in variables]
        if shapes != [tuple(s.shape) for s in self.ema_weights]:
            raise ValueError(
                f"the network has {len(variables)} trainable variables but the trainer keeps EMA shadows of the "
                f"{len(self.ema_weights)} it had when the IEGTrainer was built: `trainable` changed afterwards. "
                "Set layer.trainable before building the IEGTrainer, or build a new IEGTrainer around the network "
                "for the next phase (e.g. fine-tuning after training the head)")

    def test_step(self, data):
        if not isinstance(data, (tuple, list)) or len(data) < 2:
            raise ValueError("evaluation data must be (images, labels) pairs, e.g. evaluate(images, labels) or a "
                             "tf.data.Dataset of (images, labels) (ieg_tf.pipeline.eval_dataset)")
        images = data[0]
        labels = checked_indices(data[1], "evaluation label", self.num_classes, "class labels")
        self.eval_image_errors.update_state(_unscaled_images([images]))
        logits = self.ema_logits(images)
        onehot = tf.one_hot(labels, self.num_classes)
        self.eval_loss.update_state(losses.cross_entropy(onehot, logits))
        self.eval_accuracy.update_state(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == labels, tf.float32))
        return _global_results({"loss": self.eval_loss, "accuracy": self.eval_accuracy})

    def predict_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        self.eval_image_errors.update_state(_unscaled_images([images]))
        return tf.nn.softmax(self.ema_logits(images))

    def fit(self, *args, callbacks=None, shuffle=False, **kwargs):
        """Keras `fit`, stopped by `NonFiniteLossError` at the first NaN or Inf training loss (a
        `StopOnNonFiniteLoss` is added unless `callbacks` has one). `shuffle` defaults to False: the training
        data are a `tf.data` pipeline that shuffles itself (`ieg_tf.pipeline.train_dataset`).

        Refused: class_weight / sample_weight (the step weights examples itself, by omega*), a global or probe
        batch that the strategy's replicas might not split evenly (not a multiple of the replica count, or of a
        size unknown before the data are read), images of another shape than the network takes, an endless
        dataset without steps_per_epoch, a `pipeline.train_dataset` stream that starts before the trainer's step
        (fit again on the same stream: it would replay its batches), and EMA shadows that no longer match the
        network's trainable variables. Float images with values beyond +-IMAGE_LIMIT (0..255 pixels not scaled
        to [-1, 1]) stop the run at their first step with a ValueError."""
        for name in ("class_weight", "sample_weight"):
            if kwargs.get(name) is not None:
                raise ValueError(f"IEGTrainer.fit does not take {name}: the training step weights every example "
                                 "itself (omega*, or uniformly for method=supervised); drop the argument, or "
                                 "resample the training data to change class frequencies")
        self.check_ema_matches_network()
        data = args[0] if args else kwargs.get("x")
        if isinstance(data, tf.distribute.DistributedDataset):
            raise ValueError("IEGTrainer.fit takes the global-batch tf.data.Dataset of "
                             "ieg_tf.pipeline.train_dataset(data, batch_size=GLOBAL) and distributes it itself; "
                             "pipeline.distributed_train_dataset is for ieg_tf.distribute.custom_fit (the "
                             "multi-worker loop)")
        check_replica_batch(data, self.distribute_strategy.num_replicas_in_sync)
        spec = getattr(data, "element_spec", None)
        if isinstance(spec, dict):
            for key in IMAGE_KEYS:
                if key in spec:
                    check_image_shape(spec[key].shape, self.network, f"training images '{key}'")
        _check_stream_start(data, int(self.optimizer.iterations.numpy()) if self.optimizer is not None else 0)
        if kwargs.get("steps_per_epoch") is None and isinstance(data, tf.data.Dataset) and \
                int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError("the training dataset is endless (ieg_tf.pipeline.train_dataset repeats forever), so "
                             "fit without steps_per_epoch would never end its first epoch or evaluate: pass "
                             "steps_per_epoch (steps between evaluations) and epochs")
        if not isinstance(callbacks, keras.callbacks.CallbackList):
            callbacks = list(callbacks or [])
            if not any(isinstance(c, StopOnNonFiniteLoss) for c in callbacks):
                callbacks.append(StopOnNonFiniteLoss())
        return super().fit(*args, callbacks=callbacks, shuffle=shuffle, **kwargs)

    def evaluate(self, *args, **kwargs):
        """Keras `evaluate` with the EMA weights. Refused: EMA shadows that no longer match the network, NaN or Inf
        weights (a diverged training: argmax of NaN logits is class 0, a believable accuracy), images of another
        shape than the network takes, and float images beyond +-IMAGE_LIMIT (0..255 pixels not scaled)."""
        self._check_inference_inputs(args[0] if args else kwargs.get("x"))
        self.eval_image_errors.reset_state()
        results = super().evaluate(*args, **kwargs)
        self._check_eval_images()
        return results

    def predict(self, *args, **kwargs):
        """Keras `predict`: softmax of the EMA logits; refused as `evaluate` is."""
        self._check_inference_inputs(args[0] if args else kwargs.get("x"))
        self.eval_image_errors.reset_state()
        results = super().predict(*args, **kwargs)
        self._check_eval_images()
        return results

    def _check_inference_inputs(self, x):
        self.check_ema_matches_network()
        self.check_finite()
        spec = getattr(x, "element_spec", None)
        if spec is not None:
            spec = spec[0] if isinstance(spec, (tuple, list)) else spec
        shape = getattr(spec if spec is not None else x, "shape", None)
        if shape is not None and not isinstance(spec, dict):
            check_image_shape(tf.TensorShape(shape), self.network, "images")

    def _check_eval_images(self):
        count = int(self.eval_image_errors.result())
        if count:
            raise ValueError(f"{count} float images had values beyond +-{IMAGE_LIMIT:g}, as unscaled 0..255 pixels "
                             "do; float images are taken as already scaled to [-1, 1]: pass them as uint8 (0..255, "
                             "e.g. np.round(x).astype(np.uint8)), which is scaled for you, or scale them (x / 127.5 "
                             "- 1)")

    def load_weights(self, filepath, *args, **kwargs):
        """Keras `load_weights`; a file saved by a trainer built otherwise is refused naming what differs (Keras
        says only that a layer "expected 4 variables, but received 0")."""
        try:
            return super().load_weights(filepath, *args, **kwargs)
        except ValueError as error:
            built = {"example_stats": ("num_train_examples", self.num_train_examples),
                     "meta_cache": ("meta_every", self.config.meta_every)}
            for layer, (setting, value) in built.items():
                if f"'{layer}'" in str(error):
                    raise ValueError(f"{filepath} was saved by a trainer built with another {setting} (its {layer} "
                                     f"variables do not fit this trainer's, built with {setting}={value}): build "
                                     "the IEGTrainer as the one that saved the file (the same network, num_classes, "
                                     "num_train_examples and TrainerConfig)") from None
            raise

    def check_finite(self):
        """Raises ValueError if a weight (network or EMA) is NaN or Inf: what a diverged training leaves, which
        no report or export should read."""
        check_finite_weights([*self.network.weights, *self.ema_weights])

    def compile(self, optimizer=None, **kwargs):
        """Keras `compile`; the default optimizer is the reference's TF1 momentum at a constant 0.1.

        The optimizer's slots are created here: the meta step reads the momentum accumulators, and Keras 3
        needs them to exist before a custom `train_step` is traced. `loss`, `metrics` and their weights are
        refused: the step computes IEG's losses (set by TrainerConfig) and reports its own metrics, so Keras'
        would be ignored.
        """
        given = [k for k in ("loss", "loss_weights", "metrics", "weighted_metrics") if kwargs.get(k) is not None]
        if given:
            raise ValueError(f"IEGTrainer.compile does not take {', '.join(given)}: the training step computes "
                             "IEG's losses itself (weights in TrainerConfig) and reports its own metrics "
                             f"({', '.join(TRAIN_METRICS[self.config.method])}; evaluation: loss, accuracy). "
                             "Pass only the optimizer (and e.g. jit_compile)")
        self.check_ema_matches_network()
        super().compile(optimizer=optimizer if optimizer is not None else TF1Momentum(0.1), **kwargs)
        self.optimizer.build(self.network.trainable_variables)
        self._warn_look_ahead_without_momentum()
        if self.jit_compile:
            self._check_xla_second_order()
            self._check_xla_replicas()

    def _check_xla_replicas(self):
        """Raises ValueError for an XLA-compiled step on several CPU replicas: XLA compiles the step for one device
        and cannot read the other replicas' variables (a Graph execution error at the first step, "Trying to
        access resource ... located in device CPU:1 from device CPU:0"). GPUs and TPUs compile per device."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        accelerators = tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU")
        if replicas > 1 and not accelerators:
            raise ValueError(f"jit_compile=True (--jit_compile=true) cannot run {replicas} replicas on CPU devices: "
                             "XLA compiles the step for one device and cannot reach the other replicas' variables; "
                             "compile with jit_compile=False (--jit_compile=false, the default with several "
                             "replicas), or use one device")

    def _warn_look_ahead_without_momentum(self):
        """Warns when meta_momentum > 0 cannot be honoured: the look-ahead θ′ = θ − η(μa + ∇) reads the
        optimizer's lr-free momentum accumulator a (SPEC 1.6.4), which only `accumulator(variable)` optimizers
        (ieg_tf.optim.TF1Momentum) expose; with another optimizer it is the plain step θ − η∇."""
        if self.config.method == "supervised" or not self.config.meta_momentum:
            return
        if getattr(self.base_optimizer, "accumulator", None) is None:
            warnings.warn(f"{type(self.base_optimizer).__name__} has no momentum accumulator that the meta step can "
                          f"read, so its look-ahead ignores meta_momentum={self.config.meta_momentum} and takes a "
                          "plain SGD step; compile with ieg_tf.optim.TF1Momentum (the reference), or set "
                          "TrainerConfig(meta_momentum=0.0) to say that this is intended", stacklevel=3)

    def _check_xla_second_order(self):
        """Raises ValueError for 16-bit max pooling in an XLA-compiled meta step: XLA registers MaxPoolGradGrad
        (the second-order pass of exact and approx_vjp through a max pool) for float32 only, so such a step fails
        deep in the compiler at its first trace. The networks of `ieg_tf.networks` pool in float32."""
        if self.config.method == "supervised" or self.config.meta_grad_mode == "last_layer":
            return
        pools = [layer.name for layer in self.network._flatten_layers(include_self=False)
                 if "MaxPool" in type(layer).__name__ and layer.compute_dtype in ("float16", "bfloat16")]
        if pools:
            raise ValueError(f"the network max-pools in 16 bits ({', '.join(pools)}), which an XLA-compiled meta "
                             "step cannot differentiate twice (XLA has MaxPoolGradGrad for float32 only): give those "
                             "layers dtype='float32' (e.g. keras.layers.MaxPooling2D(2, dtype='float32'); they then "
                             "pool in float32 between float16 layers), or compile(jit_compile=False)")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises NonFiniteLossError at the end of the first training batch whose loss is NaN or Inf; `hint` ends the
    message (what to do)."""

    def __init__(self, hint="lower the learning rate (compile(optimizer=ieg_tf.optim.TF1Momentum(0.01))) or check "
                            "the input data"):
        super().__init__()
        self.hint = hint

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            causes = (  # the inputs the step counted (`IEGTrainer.train_step`), then the learning rate
                ("image_errors", f"training images with values beyond +-{IMAGE_LIMIT:g}, as unscaled 0..255 pixels "
                 f"have, reached the training step by step {step}: float training images must be scaled to [-1, "
                 "1]. Build the batches with ieg_tf.pipeline.train_dataset (it scales uint8 data), or scale them "
                 "(x / 127.5 - 1, or ieg_tf.export.scale_images on uint8)"),
                ("input_errors", f"labels or example ids outside their range reached the training step by step "
                 f"{step}: labels must lie in [0, {getattr(self.model, 'num_classes', '?')}), ids in [0, number of "
                 "training examples). Check the dataset (an XLA-compiled step cannot assert them; "
                 "compile(jit_compile=False) names the key at the first bad batch)"))
            for name, problem in causes:
                counter = getattr(self.model, name, None)
                if counter is not None and int(counter.result()) > 0:
                    raise ValueError(f"{int(counter.result())} {problem}")
            raise NonFiniteLossError(f"the training loss became {loss} at step {step}; {self.hint}")


def check_finite_weights(variables):
    """Raises ValueError naming the first of `variables` that holds NaN or Inf (a diverged training)."""
    for variable in variables:
        if not np.all(np.isfinite(variable.numpy())):
            raise ValueError(f"the weight {variable.path} holds NaN or Inf: the training diverged. Train again with "
                             "a lower learning rate (compile(optimizer=ieg_tf.optim.TF1Momentum(0.01)), or "
                             "--learning_rate) or check the input data")


def seed_state_ids(network):
    """ids of the state variables of every seed generator in `network` (Dropout, GaussianNoise, ...)."""
    return {id(generator.state) for layer in network._flatten_layers(include_self=True)
            for generator in getattr(layer, "_seed_generators", ())}


def check_logits_network(network, num_classes):
    """Raises ValueError unless the network ends in `num_classes` logits.

    Functional and Sequential networks (which have `outputs`): the output size must be the class count, and the
    output layer must not apply softmax or sigmoid (the losses apply softmax). A subclassed network has no
    output layer to inspect (its `layers` are in attribute order); its logits are checked on a symbolic call
    where it was built with a known input shape, and in any case when a step is traced (`check_logits_size`).
    """
    outputs = getattr(network, "outputs", None)
    if not outputs:
        size = _symbolic_logits_size(network)
        if size is not None:
            _check_size(size, num_classes)
        _check_not_probabilities(network, num_classes, "network")
        return
    if len(outputs) != 1:
        raise ValueError(f"the network has {len(outputs)} outputs; IEGTrainer needs one, the class logits")
    _check_size(outputs[0].shape[-1], num_classes)
    layer = network
    while getattr(layer, "outputs", None) and getattr(layer, "layers", None):  # into nested functional models
        layer = layer.layers[-1]
    activation = "softmax" if isinstance(layer, keras.layers.Softmax) else getattr(
        getattr(layer, "activation", None), "__name__", None)
    if activation in ("softmax", "sigmoid", "log_softmax"):
        raise ValueError(f"the network's last layer ({layer.name}) applies {activation}, but IEGTrainer needs "
                         f"logits (its losses apply softmax themselves): drop the activation, e.g. keras.layers."
                         f"Dense({num_classes}) instead of Dense({num_classes}, activation='{activation}')")
    _check_not_probabilities(network, num_classes, f"network's last layer ({layer.name})")


def _check_not_probabilities(network, num_classes, where):
    """Raises ValueError when the network's outputs on a few random inputs are (log-)probabilities: every row
    sums to 1 (softmax) or has logsumexp 0 (log_softmax). Catches what no layer inspection sees: a softmax inside
    a subclassed `call`, a Lambda or `keras.ops.softmax` at the end of a functional model. Random logits meet
    either test on all rows with probability ~0. Sigmoid outputs cannot be told from logits this way. Networks
    whose input shape is unknown or that cannot run eagerly here (e.g. TPU variables) are not checked."""
    outputs = _probe_outputs(network)
    if outputs is None or outputs.ndim != 2 or outputs.shape[1] < 2:
        return
    tolerance = 1e-2  # float16 outputs sum to 1 only to about 1e-3
    top = outputs.max(axis=1, keepdims=True)
    log_sum = top[:, 0] + np.log(np.sum(np.exp(outputs - top), axis=1))  # logsumexp, without overflow
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=1), 1.0, atol=tolerance):
        kind = "softmax"
    elif np.all(outputs <= 0) and np.allclose(log_sum, 0.0, atol=tolerance):
        kind = "log_softmax"
    else:
        return
    raise ValueError(f"the {where} outputs {kind} probabilities (each row of its output on random inputs is a "
                     f"distribution over the {num_classes} classes), but IEGTrainer needs logits (its losses apply "
                     f"softmax themselves): remove the {kind} from the network's end, e.g. return "
                     f"keras.layers.Dense({num_classes})(h) instead of its {kind}")


def _probe_outputs(network, batch=4):
    """float64 outputs of `network` (inference mode) on `batch` fixed random inputs in [-1, 1], or None when
    its input shape is unknown or the call fails."""
    shape = network_input_shape(network)
    if not shape or not all(isinstance(d, int) for d in shape[1:]):
        return None
    x = tf.random.stateless_uniform([batch, *shape[1:]], [7, 11], minval=-1.0, maxval=1.0)
    try:
        return np.asarray(keras.ops.convert_to_numpy(network(x, training=False)), np.float64)
    except Exception:  # noqa: BLE001 - a network that cannot run here is checked by its logits' size alone
        return None


def check_logits_size(logits, num_classes):
    """Raises ValueError at trace time unless `logits` have `num_classes` values per image (subclassed networks,
    whose output size is not known before they run)."""
    _check_size(logits.shape[-1] if logits.shape.rank else None, num_classes)


def _check_size(size, num_classes):
    if size is not None and size != int(num_classes):
        raise ValueError(f"the network outputs {size} values per image but there are {num_classes} classes: "
                         f"end it with keras.layers.Dense({num_classes}) (no activation)")


def _symbolic_logits_size(network):
    """The last dimension of a subclassed network's output for the input shape it was built with, or None when
    that is unknown. Any failure of the symbolic call also gives None: the trace-time check still applies."""
    shape = (network.get_build_config() or {}).get("input_shape")
    if not shape or not all(d is None or isinstance(d, int) for d in shape):
        return None
    try:
        spec = network.compute_output_spec(keras.KerasTensor((None, *shape[1:])))
    except Exception:  # noqa: BLE001 - networks may not support symbolic calls; the step checks again
        return None
    return spec.shape[-1] if hasattr(spec, "shape") and spec.shape else None


def network_inputs(images):
    """Images as the networks take them: uint8 (0..255, as data sets store them) scaled to [-1, 1] by
    `ieg_tf.export.scale_images`; other dtypes are taken as already scaled."""
    from ieg_tf import export  # here, not at the top: export imports this module
    dtype = getattr(images, "dtype", None)  # read without converting: Keras may pass symbolic tensors
    if dtype is None or keras.backend.standardize_dtype(dtype) != "uint8":
        return images
    return export.scale_images(images)


def checked_indices(values, key, limit, what):
    """`values` as int32 [B], with asserts that they lie in [0, limit) run before any use (tf.one_hot would make
    an out-of-range label an all-zero target; scatters drop or fail on out-of-range ids). XLA drops asserts.

    Raises:
      ValueError: values that are not rank 1 (one-hot labels), at trace time.
    """
    values = tf.convert_to_tensor(values)
    if values.shape.rank is not None and values.shape.rank != 1:
        raise ValueError(f"'{key}' must be {what} of shape [batch], got shape {values.shape.as_list()}; one-hot "
                         f"labels? pass tf.argmax(labels, axis=-1) (integer class indices in [0, {limit}))")
    values = tf.cast(values, tf.int32)
    # No quotes: the assert's message reaches the user with them backslash-escaped.
    message = f"{key} holds values outside [0, {limit}): {what} must lie in [0, {limit})"
    asserts = [tf.debugging.assert_non_negative(values, message=message),
               tf.debugging.assert_less(values, tf.constant(limit, tf.int32), message=message)]
    with tf.control_dependencies(asserts):
        return tf.identity(values)


def _check_float_images(images, key):
    dtype = tf.as_dtype(images.dtype)
    if not dtype.is_floating:
        raise ValueError(f"training images '{key}' must be float, already scaled to [-1, 1]; got {dtype.name}. Scale "
                         "uint8 images with ieg_tf.export.scale_images, or build the batches with "
                         "ieg_tf.pipeline.train_dataset")


def _unscaled_images(images):
    """How many images of the float batches `images` hold a value beyond +-IMAGE_LIMIT (uint8 ones are scaled)."""
    count = tf.zeros([], tf.float32)
    for x in images:
        if tf.as_dtype(x.dtype).is_floating:
            largest = tf.reduce_max(tf.reshape(tf.abs(tf.cast(x, tf.float32)), [tf.shape(x)[0], -1]), axis=1)
            count += tf.reduce_sum(tf.cast(largest > IMAGE_LIMIT, tf.float32))
    return count


def network_input_shape(network):
    """The input shape the network was built for, batch dimension included, or None when unknown."""
    inputs = getattr(network, "inputs", None)
    if inputs and len(inputs) == 1:
        return tuple(inputs[0].shape)
    shape = (network.get_build_config() or {}).get("input_shape")
    return tuple(shape) if shape else None


def check_image_shape(shape, network, what):
    """Raises ValueError when images of `shape` (batch first) cannot be the network's input: a known dimension
    (height, width, channels) differs from the one the network was built for."""
    expected = network_input_shape(network)
    if expected is None or shape.rank is None or shape.rank != len(expected):
        return
    got = tuple(shape.as_list()[1:])
    if any(e is not None and g is not None and e != g for e, g in zip(expected[1:], got)):
        want = tuple(expected[1:])
        raise ValueError(f"the {what} have shape {got} but the network was built for {want}: build it for the "
                         f"data, e.g. keras.Input(shape={got}) (or None for the height and width if it pools "
                         "globally), or resize the images")


def _check_stream_start(data, step):
    """Refuses a `pipeline.train_dataset` stream that starts before `step`: fit on it would train again on the
    batches (and augmentations) of the steps already taken, e.g. when fit is called twice with one stream."""
    start = getattr(data, "ieg_start_step", None)
    if start is not None and start < step:
        raise ValueError(f"this training stream starts at step {start} (pipeline.train_dataset(start_step={start})) "
                         f"but the trainer has taken {step} steps, so fit would train again on the batches and "
                         f"augmentations of steps {start}..{step - 1}: build a new stream for each fit, "
                         "pipeline.train_dataset(..., start_step=int(trainer.optimizer.iterations)) (under "
                         "mixed_float16, the batches consumed), or call fit once with more epochs")


def check_replica_batch(data, num_replicas):
    """Raises ValueError if `data` (a tf.data.Dataset of training dicts) has a global batch, or probe batch, that
    `num_replicas` replicas might not split evenly: a size that is not a multiple of `num_replicas`, or one not
    known before the data are read. A 15 = 8 + 7 split weights the replicas' means equally, so the examples of the
    smaller share count more; a last batch of 1 leaves a replica with none, whose mean is NaN (measured: a NaN
    loss at that step, blamed on the learning rate)."""
    spec = getattr(data, "element_spec", None)
    if num_replicas <= 1 or not isinstance(spec, dict) or "weak" not in spec:
        return
    for key, what in (("weak", "global batch"), ("probe_image", "probe batch")):
        if key not in spec:
            continue
        batch = spec[key].shape[0] if spec[key].shape.rank else None
        if batch is None:
            raise ValueError(f"the {what} size ({key!r}) of the training dataset is not static, so {num_replicas} "
                             "replicas might split a batch unevenly (a last short batch: each replica's mean would "
                             "weigh its examples differently, and a replica left with none gives a NaN loss); give "
                             f"the dataset a fixed batch size divisible by {num_replicas}: "
                             f".batch(size, drop_remainder=True), or .rebatch(size, drop_remainder=True) after a "
                             "generator, or build it with ieg_tf.pipeline.train_dataset")
        if batch % num_replicas:
            raise ValueError(f"the {what} of {batch} examples does not split evenly over {num_replicas} replicas "
                             f"(each replica's mean would weigh its examples differently); use a {what} size "
                             f"divisible by {num_replicas}, e.g. {batch - batch % num_replicas or num_replicas} "
                             f"(the batch sizes given to ieg_tf.pipeline.train_dataset are global ones)")


def _global_results(metrics):
    """{name: the Mean's value over every replica's updates so far}, for a step's returned logs.

    Under a strategy, Keras's `fit` and `evaluate` reduce the logs a step returns by averaging the replicas'
    values (the first replica's value on TPU), while each replica's Mean holds only its own updates. A plain
    `result()` therefore reports a mean of per-replica means: wrong when the replicas' counts differ (the last,
    partial test batch; weighted trackers), and one replica's share of the test set on TPU. Summing the Means'
    totals and counts across replicas gives every replica the global value, which any of those reductions keeps.
    A Mean that has no weight yet reads NaN, not Keras' 0: guess_acc, omega_clean and omega_noisy have none when
    no true label is known (the user's own data), and 0.0 would read as a measured 0% or weight 0.
    """
    local = [tf.stack([tf.convert_to_tensor(m.total), tf.convert_to_tensor(m.count)]) for m in metrics.values()]
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        local = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
    return {name: tf.where(s[1] > 0, s[0] / tf.maximum(s[1], 1e-30), float("nan")) for name, s in zip(metrics, local)}


def _accuracy(logits, onehot):
    return tf.reduce_mean(tf.cast(tf.argmax(logits, -1) == tf.argmax(onehot, -1), tf.float32))


def _weighted_mean(values, weights):
    """(weighted mean, total weight) for a Mean tracker; a batch with zero weight contributes nothing."""
    total = tf.reduce_sum(weights)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), total), total
