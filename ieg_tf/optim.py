"""Optimisation state with TF1 semantics: momentum, the SGDR schedule family, and the ramped EMA (SPEC 1.8, 1.10)."""

import math

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ieg_tf")
class TF1Momentum(keras.optimizers.Optimizer):
    """`tf.train.MomentumOptimizer`: a <- mu * a + g; theta <- theta - lr * a (non-Nesterov).

    Keras SGD stores the velocity -lr * a, which differs under a changing learning rate, and IEG's look-ahead
    reads the lr-free accumulator a (SPEC 1.6.4): `accumulator(variable)` returns it.
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, name="tf1_momentum", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._accumulators = [self.add_variable_from_reference(v, "accumulator") for v in var_list]

    def accumulator(self, variable):
        return self._accumulators[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        accumulator = self.accumulator(variable)
        lr = tf.cast(learning_rate, variable.dtype)
        self.assign(accumulator, self.momentum * accumulator + tf.cast(gradient, variable.dtype))
        self.assign_sub(variable, lr * accumulator)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum}


@keras.saving.register_keras_serializable(package="ieg_tf")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Linear 0 -> base over `warmup_steps`, then `after` evaluated on the shifted step (`cosine_warmup`)."""

    def __init__(self, base, warmup_steps, after):
        self.base, self.warmup_steps, self.after = base, warmup_steps, after

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base * step / float(max(self.warmup_steps, 1))
        return tf.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

    def get_config(self):
        return {"base": self.base, "warmup_steps": self.warmup_steps,
                "after": keras.saving.serialize_keras_object(self.after)}

    @classmethod
    def from_config(cls, config):
        config["after"] = keras.saving.deserialize_keras_object(config["after"])
        return cls(**config)


SCHEDULES = ("cosine", "cosine_warmup", "cosine_one", "custom_step", "exponential", "constant")


def make_schedule(name, learning_rate, *, decay_steps, max_iteration, t_mul=1.5, m_mul=0.9, decay_rate=0.1,
                  boundaries=(), warmup_steps=0):
    """The reference's `lr_schedule` family (SPEC 1.10).

    Args:
      name: one of SCHEDULES.
      learning_rate: base learning rate (0.1 in the reference).
      decay_steps: first SGDR cycle length (`cosine`), period of `exponential`.
      max_iteration: total steps (`cosine_one`).
      t_mul, m_mul: SGDR period and peak multipliers.
      decay_rate: factor of `custom_step` (`exponential` multiplies by 0.9, as the reference).
      boundaries: steps at which `custom_step` multiplies the rate by decay_rate.
      warmup_steps: linear warm-up length of `cosine_warmup`.
    """
    sgdr = keras.optimizers.schedules.CosineDecayRestarts(
        learning_rate, first_decay_steps=decay_steps, t_mul=t_mul, m_mul=m_mul, alpha=0.0)
    if name == "cosine":
        return sgdr
    if name == "cosine_warmup":
        return LinearWarmup(learning_rate, warmup_steps, sgdr)
    if name == "cosine_one":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=max_iteration, alpha=0.0)
    if name == "custom_step":
        values = [learning_rate * decay_rate ** k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(list(boundaries), values)
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(learning_rate, decay_steps, 0.9, staircase=True)
    if name == "constant":
        return learning_rate
    raise ValueError(f"unknown lr_schedule '{name}'; choose one of: {', '.join(SCHEDULES)}")


def sgdr_restarts(first_decay_steps, t_mul, until):
    """Steps at which the SGDR schedule restarts, up to `until` (for evaluation at cycle ends)."""
    steps, length, total = [], float(first_decay_steps), 0.0
    while total + length <= until:
        total += length
        steps.append(int(math.floor(total)))
        length *= t_mul
    return steps


def ema_decay(step, decay=0.999):
    """`tf.train.ExponentialMovingAverage(decay, num_updates=step)`: min(decay, (1 + t) / (10 + t))."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(decay, (1.0 + step) / (10.0 + step))
