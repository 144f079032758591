"""Per-example accumulators of the meta step's outputs, indexed by example id (feeds the label-issue report).

The sums live in variables synchronised on read with SUM aggregation: every replica adds only the examples it
saw, reading sums over replicas, and a checkpoint holds them, so a resumed run reports the same as an
uninterrupted one: bit for bit on one device; under several replicas up to float rounding, since a restored sum
is split evenly over the replicas where an uninterrupted run's replicas hold their own partial sums, and the later
additions round differently (measured on 2 replicas: omega_mean and pseudo_fraction within 2.4e-7; visits, which
count whole steps, and every weight exact).
"""

import keras
import numpy as np
import tensorflow as tf

# Above this many N x C entries the per-class guess sums would not fit comfortably (WebVision-full: 2.4M x 1000);
# the trainer then keeps only the scalar sums and the report falls back to the model's prediction.
MAX_GUESS_ENTRIES = 1 << 26


class ExampleStats(keras.layers.Layer):
    """Sums over training steps, per example id: omega*, lambda* = 0 (pseudo label chosen), visits, guesses."""

    def __init__(self, num_examples, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_examples, self.num_classes = int(num_examples), int(num_classes)
        self.track_guesses = self.num_examples * self.num_classes <= MAX_GUESS_ENTRIES
        self.omega_sum = self._sum_variable("omega_sum", [self.num_examples])
        self.pseudo_count = self._sum_variable("pseudo_count", [self.num_examples])
        self.visits = self._sum_variable("visits", [self.num_examples])
        if self.track_guesses:
            self.guess_sum = self._sum_variable("guess_sum", [self.num_examples, self.num_classes])
        self.built = True  # no inputs to build from; Keras' symbolic build under a strategy checks this flag

    def _sum_variable(self, name, shape):
        return keras.Variable(np.zeros(shape, np.float32), trainable=False, name=name,
                              aggregation="sum", synchronization="on_read")

    def update(self, ids, omega, label_mix, guess, kept=None):
        """Adds one step's per-example values (ids int [B]; omega, label_mix float [B]; guess [B, C]), unless the
        bool scalar `kept` is False (a step whose meta step overflowed its loss scale: not a visit)."""
        index = tf.cast(ids, tf.int32)[:, None]
        weight = tf.ones([]) if kept is None else tf.cast(kept, tf.float32)
        for variable, values in ((self.omega_sum, omega), (self.pseudo_count, 1.0 - label_mix),
                                 (self.visits, tf.ones_like(omega))):
            variable.assign_add(tf.scatter_nd(index, weight * tf.cast(values, tf.float32), [self.num_examples]))
        if self.track_guesses:
            self.guess_sum.assign_add(tf.scatter_nd(
                index, weight * tf.cast(guess, tf.float32), [self.num_examples, self.num_classes]))

    def result(self):
        """Numpy views: visits, mean omega*, pseudo-label fraction, and the summed guesses (or None)."""
        visits = np.asarray(self.visits.numpy())
        seen = np.maximum(visits, 1.0)
        return {
            "visits": visits,
            "omega_mean": np.asarray(self.omega_sum.numpy()) / seen,
            "pseudo_fraction": np.asarray(self.pseudo_count.numpy()) / seen,
            "guess_sum": np.asarray(self.guess_sum.numpy()) if self.track_guesses else None,
        }
