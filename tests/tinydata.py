"""A tiny separable problem with label noise, in the trainer's batch format, for fast CPU tests."""

import keras
import numpy as np
import tensorflow as tf

SHAPE = (4, 4, 1)


def blobs(num_classes=4, per_class=60, noise_ratio=0.8, seed=0, spread=0.6):
    """Gaussian class blobs in 16-D shaped as 4x4x1 images; uniform noise drawn from all classes (SPEC 3.3)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_classes, int(np.prod(SHAPE)))) * 1.5
    true = np.repeat(np.arange(num_classes), per_class)
    x = (centers[true] + spread * rng.normal(size=(len(true), centers.shape[1]))).astype(np.float32)
    noisy = np.where(rng.random(len(true)) < noise_ratio, rng.integers(0, num_classes, len(true)), true)
    order = rng.permutation(len(true))
    return x[order].reshape(-1, *SHAPE), noisy[order].astype(np.int32), true[order].astype(np.int32), centers


def probe(centers, per_class=1, seed=1, spread=0.6):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(centers)), per_class)
    x = centers[labels] + spread * rng.normal(size=(len(labels), centers.shape[1]))
    return x.astype(np.float32).reshape(-1, *SHAPE), labels.astype(np.int32)


def train_dataset(x, labels, true, probe_x, probe_y, batch_size, seed=0):
    """Infinite dict batches; weak/strong views are the input plus small/large Gaussian jitter (stateless)."""
    n = len(x)
    reps = -(-batch_size // len(probe_y))
    px, py = np.tile(probe_x, (reps, 1, 1, 1))[:batch_size], np.tile(probe_y, reps)[:batch_size]
    ds = tf.data.Dataset.from_tensor_slices((x, labels, true, np.arange(n, dtype=np.int32)))
    ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).repeat().batch(batch_size, drop_remainder=True)

    def views(index, batch):
        image, label, true_label, ids = batch
        s = tf.stack([tf.cast(index, tf.int32), seed])
        return {"weak": image + 0.05 * tf.random.stateless_normal(tf.shape(image), s),
                "strong": image + 0.3 * tf.random.stateless_normal(tf.shape(image), s + 1),
                "label": label, "id": ids, "true_label": true_label,
                "probe_image": tf.constant(px), "probe_label": tf.constant(py)}

    return ds.enumerate().map(views)


def eval_dataset(x, labels, batch_size=64):
    return tf.data.Dataset.from_tensor_slices((x, labels)).batch(batch_size)


def mlp(num_classes=4, hidden=32, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(hidden)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(h))
