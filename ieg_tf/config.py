"""Frozen configuration objects. Library code takes these; only `main.py` reads absl FLAGS."""

import dataclasses

METHODS = ("ieg", "l2r", "supervised")


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """IEG's algorithm constants (SPEC 1.0). Defaults are the reference code's.

    Attributes:
      method: "ieg", "l2r" (Learning to Reweight, SPEC 6) or "supervised" (CE on the given labels).
      ce_factor: p, weight of the MixUp CE on unlabeled data; 0 drops the whole MixUp term (probe part too).
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
      meta_stop_guess_gradient: stop the gradient through the guessed label in the look-ahead loss. The reference
        keeps it (SPEC 8.3); stopping it skips a second-order path through the strong-view forward.
      seed: base seed of the step's stateless randomness (MixUp, probe resampling), folded with step and replica.
    """

    method: str = "ieg"
    ce_factor: float = 5.0
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
    meta_stop_guess_gradient: bool = False
    seed: int = 12345

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}'; choose one of: {', '.join(METHODS)}")
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
