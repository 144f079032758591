"""Stateless random draws that agree with and without `jit_compile`.

An explicit algorithm is needed ("auto_select" may differ under XLA), and even with Philox, TF 2.21's float
`stateless_uniform` differs between the XLA and TF kernels on CPU while the integer draw agrees; so floats are
built from 24-bit integers (float32's resolution).
"""

import tensorflow as tf

RNG = "philox"
_FLOAT_BITS = 24


def split(seed, n):
    """`n` independent stateless seeds derived from `seed`."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, n, alg=RNG))


def fold_in(seed, data):
    """A new stateless seed from `seed` and an integer (a step, a replica id)."""
    return tf.random.experimental.stateless_fold_in(seed, tf.cast(data, tf.int32), alg=RNG)


def randint(shape, seed, minval, maxval):
    """Uniform int32 in [minval, maxval)."""
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=tf.int32, alg=RNG)


def uniform(shape, seed):
    """U[0, 1) float32 on a 2^-24 grid, identical under XLA and TF kernels."""
    return tf.cast(randint(shape, seed, 0, 1 << _FLOAT_BITS), tf.float32) / float(1 << _FLOAT_BITS)
