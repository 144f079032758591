"""Label noise: realised rates and transition matrices against the requested ones, mappings, seeding, errors."""

import numpy as np
import pytest

from ieg_tf import noise

N = 100_000


def _labels(num_classes, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, N).astype(np.int32)


def _sigma(p, n):
    return np.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("num_classes,ratio", [(10, 0.4), (10, 0.8), (100, 0.2)])
def test_uniform_draws_from_all_classes(num_classes, ratio):
    clean = _labels(num_classes)
    noisy = noise.uniform_noise(clean, num_classes, ratio, seed=1)
    expected_rate = ratio * (num_classes - 1) / num_classes  # SPEC 3.3: the true class may be redrawn
    assert abs(np.mean(noisy != clean) - expected_rate) < 5 * _sigma(expected_rate, N)
    realised = noise.transition_matrix(clean, noisy, num_classes)
    target = noise.expected_transition_matrix("uniform", num_classes, ratio)
    assert np.allclose(np.diag(target), 1 - ratio + ratio / num_classes)
    row_n = N / num_classes
    assert np.max(np.abs(realised - target)) < 5 * _sigma(target.max(), row_n)
    assert np.allclose(realised.sum(axis=1), 1.0)


def test_flip_never_keeps_the_true_class_when_selected():
    clean = _labels(10)
    noisy = noise.flip_noise(clean, 10, 0.4, seed=2)
    assert abs(np.mean(noisy != clean) - 0.4) < 5 * _sigma(0.4, N)
    realised = noise.transition_matrix(clean, noisy, 10)
    target = noise.expected_transition_matrix("flip", 10, 0.4)
    assert np.allclose(np.diag(target), 0.6) and np.isclose(target[0, 1], 0.4 / 9)
    assert np.max(np.abs(realised - target)) < 5 * _sigma(0.6, N / 10)


def test_asymmetric_cifar10_follows_the_spec_mapping():
    clean = _labels(10)
    noisy = noise.asymmetric_noise(clean, noise.asymmetric_mapping("cifar10"), 0.4, seed=3)
    # truck->automobile, bird->airplane, cat<->dog, deer->horse; 0, 1, 6, 7, 8 never change.
    assert noise.CIFAR10_ASYMMETRIC == {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}
    untouched = np.isin(clean, [0, 1, 6, 7, 8])
    assert np.array_equal(noisy[untouched], clean[untouched])
    changed = noisy != clean
    assert np.all(noisy[changed] == np.vectorize(noise.CIFAR10_ASYMMETRIC.get)(clean[changed]))
    realised = noise.transition_matrix(clean, noisy, 10)
    target = noise.expected_transition_matrix("asymmetric", 10, 0.4, "cifar10")
    assert target[9, 1] == pytest.approx(0.4) and target[9, 9] == pytest.approx(0.6)
    assert np.max(np.abs(realised - target)) < 5 * _sigma(0.4, N / 10)
    assert abs(np.mean(changed) - 0.4 * 0.5) < 5 * _sigma(0.2, N)


def test_cifar100_mapping_stays_within_each_superclass():
    groups = noise.CIFAR100_SUPERCLASSES
    assert sorted(c for g in groups for c in g) == list(range(100))
    assert all(len(g) == 5 for g in groups) and len(groups) == 20
    mapping = noise.asymmetric_mapping("cifar100")
    superclass = {c: i for i, g in enumerate(groups) for c in g}
    assert sorted(mapping) == list(range(100)) and sorted(mapping.values()) == list(range(100))
    assert all(superclass[s] == superclass[d] and s != d for s, d in mapping.items())
    assert mapping[4] == 30 and mapping[95] == 4  # beaver -> dolphin, whale -> beaver (aquatic mammals)
    clean = _labels(100)
    noisy = noise.inject("asymmetric", clean, 100, 0.3, seed=4, dataset="cifar100")
    assert abs(np.mean(noisy != clean) - 0.3) < 5 * _sigma(0.3, N)


def test_digits_mapping_is_documented_constant():
    assert noise.asymmetric_mapping("digits") == noise.DIGITS_ASYMMETRIC == {1: 8, 8: 1, 3: 9, 9: 3, 7: 1}
    clean = _labels(10)
    noisy = noise.inject("asymmetric", clean, 10, 0.4, seed=5, dataset="digits")
    assert abs(np.mean(noisy != clean) - 0.4 * 0.5) < 5 * _sigma(0.2, N)


def test_asymmetric_without_mapping_is_a_clear_error():
    with pytest.raises(ValueError, match="no.*mapping|has none"):
        noise.inject("asymmetric", _labels(10)[:10], 10, 0.4, seed=0, dataset="my_folder")


@pytest.mark.parametrize("kind", ["uniform", "flip"])
def test_noise_is_seeded(kind):
    clean = _labels(10)[:5000]
    a = noise.inject(kind, clean, 10, 0.5, seed=7)
    assert np.array_equal(a, noise.inject(kind, clean, 10, 0.5, seed=7))
    assert not np.array_equal(a, noise.inject(kind, clean, 10, 0.5, seed=8))
    assert a.dtype == np.int32 and a.min() >= 0 and a.max() < 10


def test_ratio_extremes():
    clean = _labels(10)[:1000]
    assert np.array_equal(noise.inject("flip", clean, 10, 0.0, seed=0), clean)
    assert np.all(noise.inject("flip", clean, 10, 1.0, seed=0) != clean)
    assert np.array_equal(noise.inject("none", clean, 10, 0.9, seed=0), clean)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_ratio_outside_unit_interval_is_rejected(ratio):
    with pytest.raises(ValueError, match=r"noise_ratio must be in \[0, 1\]"):
        noise.inject("uniform", np.zeros(4, np.int32), 10, ratio, seed=0)


def test_unknown_and_label_only_noise_types():
    with pytest.raises(ValueError, match="unknown noise_type"):
        noise.inject("pairflip", np.zeros(4, np.int32), 10, 0.1, seed=0)
    with pytest.raises(ValueError, match="semantic_noise"):
        noise.inject("semantic", np.zeros(4, np.int32), 10, 0.1, seed=0)


def test_transition_matrix_counts():
    t = noise.transition_matrix([0, 0, 0, 1, 1], [0, 1, 1, 1, 1], 3)
    assert np.allclose(t, [[1 / 3, 2 / 3, 0], [0, 1, 0], [0, 0, 0]])


def test_semantic_noise_comes_from_a_network_trained_on_a_clean_subset():
    import keras

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100).astype(np.int32)
    # Classes 0 and 1 look identical (dark), and so do 2 and 3 (bright): a network can only confuse look-alikes.
    images = np.where(labels[:, None, None, None] >= 2, 220, 30) + rng.normal(0, 20, (400, 4, 4, 1))
    images = np.clip(images, 0, 255).astype(np.uint8)

    def tiny():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4, 4, 1))
        return keras.Model(inputs, keras.layers.Dense(4)(keras.layers.Flatten()(inputs)))

    noisy = noise.semantic_noise(images, labels, 4, fraction=0.5, epochs=10, model=tiny(), batch_size=8,
                                seed=3)
    assert noisy.shape == labels.shape and noisy.dtype == np.int32
    wrong = noisy != labels
    assert 0.3 < wrong.mean() < 0.7  # half of each look-alike pair gets the other's label
    assert np.mean((noisy[wrong] // 2) == (labels[wrong] // 2)) > 0.95  # uniform noise would give 1/3
    with pytest.raises(ValueError, match="fraction"):
        noise.semantic_noise(images, labels, 4, fraction=0.0, model=tiny())
    with pytest.raises(ValueError, match="uint8 images"):
        noise.semantic_noise(images.astype(np.float32), labels, 4, model=tiny())
