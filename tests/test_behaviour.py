"""Behaviour: with 80% uniform label noise and one probe image per class, IEG clearly beats plain supervised
training on a tiny separable problem that a supervised MLP can memorise (fixed seeds, a margin, no timing)."""

import numpy as np

import tinydata
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer

SPREAD = 1.0


def _test_set(centers, per_class=100):
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(len(centers)), per_class)
    images = centers[labels] + SPREAD * rng.normal(size=(len(labels), centers.shape[1]))
    return images.astype(np.float32).reshape(-1, *tinydata.SHAPE), labels


def _final_accuracy(method, steps=400):
    x, noisy, true, centers = tinydata.blobs(per_class=50, noise_ratio=0.8, spread=SPREAD)
    assert np.mean(noisy != true) > 0.45  # about half the given labels are wrong (0.6 expected)
    px, py = tinydata.probe(centers, per_class=1, spread=SPREAD)
    test_x, test_y = _test_set(centers)
    trainer = IEGTrainer(tinydata.mlp(hidden=128), 4, TrainerConfig(method=method), num_train_examples=len(x))
    trainer.compile()
    trainer.fit(tinydata.train_dataset(x, noisy, true, px, py, batch_size=32), steps_per_epoch=steps, epochs=1,
                verbose=0)
    return trainer.evaluate(tinydata.eval_dataset(test_x, test_y), return_dict=True, verbose=0)["accuracy"]


def test_ieg_beats_supervised_at_80_percent_uniform_noise_with_one_probe_per_class():
    supervised = _final_accuracy("supervised")
    ieg = _final_accuracy("ieg")
    assert ieg > 0.85, (ieg, supervised)
    assert ieg > supervised + 0.2, (ieg, supervised)
