"""Frozen configuration objects. Library code takes these; only `main.py` reads absl FLAGS."""

import dataclasses
import numbers

METHODS = ("ieg", "l2r", "supervised")
META_GRAD_MODES = ("exact", "approx_vjp", "last_layer")
GUESS_VIEWS = ("weak_strong", "weak")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """IEG's algorithm constants (SPEC 1.0). Defaults are the reference code's.

    Attributes:
      method: "ieg", "l2r" (Learning to Reweight, SPEC 6) or "supervised" (CE on the given labels).
      ce_factor: p, weight of the MixUp CE on unlabeled data; 0 drops the whole MixUp term (probe part too).
      ce_rampup_steps: R >= 0; the weight on the unlabeled MixUp CE is p * min(1, t / R) at step t, a linear
        ramp as in MixMatch, so the first steps' guesses (from a model that has seen little more than the probe)
        carry less weight. 0 = the full weight p from the first step (the reference).
      consistency_factor: k, weight of the KL consistency loss.
      meta_stepsize: eta_meta, the fixed look-ahead step (not the current learning rate).
      meta_momentum: mu_meta; 0 gives a plain SGD look-ahead.
      grad_eps_init: lambda0, where the lambda-gradient is taken; also the label mix of L_omega.
      clean_threshold: None = reference behaviour (no split). A number T switches on the paper's Algorithm 1
        split: an example whose omega* is below T / B (T times the uniform weight) is "possibly mislabeled" and its
        MixUp targets use the guessed label; the others keep their given label.
      weight_decay: L2 coefficient of R(theta) = wd * 1/2 * sum ||v||^2.
      decay_kernels_only: R covers conv/dense kernels only (ResNet-29) instead of every trainable variable.
      probe_weight_decay: wd of the meta probe objective, over all variables; None = weight_decay.
      ema_decay: EMA decay cap; the effective decay is min(ema_decay, (1 + t) / (10 + t)).
      mixup_beta: beta of the "approximate Beta" MixUp coefficient.
      sharpen_temperature: T of label sharpening.
      guess_views: views whose predictions are averaged into the guessed label: "weak_strong" (K = 2, the
        reference, SPEC 1.3) or "weak" (the weak view alone, for data whose strong views are mostly unrecognisable).
      meta_stop_guess_gradient: stop the gradient through the guessed label in the look-ahead loss. The reference
        keeps it (SPEC 8.3); stopping it skips a second-order path through the strong-view forward.
      seed: base seed of the step's stateless randomness (MixUp, probe resampling), folded with step and replica.
      meta_grad_mode: how ieg and l2r get d(probe loss)/d(omega, lambda) (`ieg_tf.meta`): "exact" (the look-ahead
        through theta', SPEC 1.6; the only mode that reproduces the paper), "last_layer" (the look-ahead steps the
        classifier, the last Dense layer, only; exact for a classifier-only network) or "approx_vjp" (first order
        in meta_stepsize: the probe gradient at theta against the per-example training gradients, no look-ahead
        forward).
      meta_every: k >= 1; ieg and l2r solve omega*, lambda* on steps whose iteration is a multiple of k and reuse
        them in between, by example id where the trainer knows N, else the last solved batch's means
        (`ieg_tf.meta.MetaCache`). 1 = every step (the reference).
    """

    method: str = "ieg"
    ce_factor: float = 5.0
    ce_rampup_steps: int = 0
    consistency_factor: float = 20.0
    meta_stepsize: float = 0.1
    meta_momentum: float = 0.9
    grad_eps_init: float = 0.9
    clean_threshold: float | None = None
    weight_decay: float = 5e-4
    decay_kernels_only: bool = False
    probe_weight_decay: float | None = None
    ema_decay: float = 0.999
    mixup_beta: float = 0.5
    sharpen_temperature: float = 0.5
    guess_views: str = "weak_strong"
    meta_stop_guess_gradient: bool = False
    seed: int = 12345
    meta_grad_mode: str = "exact"
    meta_every: int = 1

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}'; choose one of: {', '.join(METHODS)}")
        if self.guess_views not in GUESS_VIEWS:
            raise ValueError(f"unknown guess_views '{self.guess_views}'; choose one of: {', '.join(GUESS_VIEWS)}")
        if self.meta_grad_mode not in META_GRAD_MODES:
            raise ValueError(f"unknown meta_grad_mode '{self.meta_grad_mode}'; choose one of: "
                             f"{', '.join(META_GRAD_MODES)}")
        _require_int("meta_every", self.meta_every, 1, "1 = solve omega*, lambda* every step")
        _require_int("ce_rampup_steps", self.ce_rampup_steps, 0, "0 = no ramp")
        for name in ("ce_factor", "consistency_factor", "meta_stepsize", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.meta_momentum < 1.0:
            raise ValueError(f"meta_momentum must be in [0, 1), got {self.meta_momentum}")
        if not 0.0 < self.grad_eps_init < 1.0:
            raise ValueError(f"grad_eps_init must be in (0, 1), got {self.grad_eps_init}")
        if self.clean_threshold is not None and self.clean_threshold < 0:
            raise ValueError(f"clean_threshold must be >= 0 (or unset), got {self.clean_threshold}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


def check_affine(values, name="probe_affine"):
    """(degrees, shear, scale) as a tuple of floats, or None for None / all zeros; ValueError if out of range."""
    if values is None:
        return None
    try:
        degrees, shear, scale = (float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} takes three numbers DEGREES,SHEAR,SCALE (e.g. 15,0.3,0.15), "
                         f"got {values!r}") from None
    if not (0 <= degrees <= 180 and 0 <= shear <= 1 and 0 <= scale < 1):
        raise ValueError(f"{name}={degrees:g},{shear:g},{scale:g} is out of range: degrees in [0, 180], shear in "
                         f"[0, 1], scale in [0, 1) (e.g. 15,0.3,0.15)")
    return (degrees, shear, scale) if degrees or shear or scale else None


def _require_int(name, value, minimum, meaning):
    """Raises ValueError unless `value` is an int (not a bool) >= minimum; `meaning` explains the minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} ({meaning}), got {value!r}")


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How a training run is driven (`ieg_tf.train.run`); the reference's flag names are in brackets.

    Attributes:
      model_dir: run directory: checkpoints, TensorBoard logs, split, results.json, label_issues.csv, plots.
      network: `ieg_tf.networks` name; None = the data set's default (small_cnn for 8x8 digits, wrn28-10 else).
      batch_size: per-replica train and probe batch B (the global batch is B x replicas) [batch_size].
      max_iteration: total steps; None = `epochs` epochs, or the data set's default [max_iteration].
      epochs: total epochs when max_iteration is None [max_epoch].
      eval_freq: steps between evaluations and checkpoints; None = one epoch [eval_freq].
      learning_rate, lr_schedule, decay_steps, decay_rate, t_mul, m_mul, warmup_epochs, momentum: the optimizer
        and its schedule (ieg_tf.optim.make_schedule); decay_steps None = one epoch; warmup_epochs in epochs of
        len(train) // batch_size steps.
      lr_boundaries: the steps after which `custom_step` multiplies the rate by decay_rate (ascending; required
        by custom_step, which the reference reads from its decay_steps list).
      aug_type: strong augmentation policy, "autoaug" or "randaug".
      probe_affine: (degrees, shear, scale): a random affine of the probe images before their weak view; None or
        zeros = none, the reference (this project's option, ieg_tf.augment).
      val_batch_size: evaluation batch.
      strategy: default | mirrored | multi_worker | tpu [distribution_strategy]; tpu: the TPU address.
      jit_compile: XLA for the train step; None = on for a single device (XLA and multi-device CPU strategies
        do not mix).
      export_dir: where to write the serving SavedModel at the end (None = no export).
      keep_checkpoints: checkpoints kept in model_dir (the reference keeps 4).
      seed: seeds the input order, augmentation and the step's randomness.
      mixed_precision: a keras.mixed_precision policy name, e.g. "mixed_bfloat16"; None = float32.
      weight_decay: overrides the network's reference L2 coefficient (ResNet-50's --l2_weight_decay).
    """

    model_dir: str = "/tmp/ieg_tf"
    network: str | None = None
    batch_size: int = 100
    max_iteration: int | None = None
    epochs: int | None = None
    eval_freq: int | None = None
    learning_rate: float = 0.1
    lr_schedule: str = "cosine"
    decay_steps: int | None = None
    decay_rate: float = 0.1
    lr_boundaries: tuple[int, ...] = ()
    t_mul: float = 1.5
    m_mul: float = 0.9
    warmup_epochs: float = 0.0
    momentum: float = 0.9
    aug_type: str = "autoaug"
    probe_affine: tuple[float, float, float] | None = None
    val_batch_size: int = 100
    strategy: str = "default"
    tpu: str | None = None
    jit_compile: bool | None = None
    export_dir: str | None = None
    keep_checkpoints: int = 4
    seed: int = 12345
    mixed_precision: str | None = None
    weight_decay: float | None = None

    def __post_init__(self):
        for name in ("batch_size", "val_batch_size", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_iteration", "epochs", "eval_freq", "decay_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or unset), got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        try:
            boundaries = tuple(int(str(b).strip()) for b in self.lr_boundaries)
        except ValueError:
            boundaries = None
        if boundaries is None or list(boundaries) != sorted(set(boundaries)) or any(b < 1 for b in boundaries):
            raise ValueError(f"lr_boundaries must be ascending steps >= 1, got {list(self.lr_boundaries)}")
        if (self.lr_schedule == "custom_step") != bool(boundaries):
            raise ValueError("lr_schedule=custom_step needs lr_boundaries (the steps where the rate is multiplied "
                             "by decay_rate), e.g. --lr_boundaries=80000,120000; other schedules take none, got "
                             f"lr_schedule={self.lr_schedule} and lr_boundaries={list(boundaries)}")
        object.__setattr__(self, "lr_boundaries", boundaries)
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy '{self.strategy}'; choose one of: {', '.join(STRATEGIES)}")
        if self.aug_type not in ("autoaug", "randaug"):
            raise ValueError(f"aug_type must be autoaug or randaug, got '{self.aug_type}'")
        object.__setattr__(self, "probe_affine", check_affine(self.probe_affine))
