"""Data sets: the embedded digits, CIFAR archives and tfds, custom folders / lists / arrays, the probe split,
noise files, the saved split, and clear errors for bad input. Every file is written by the test."""

import io
import os
import pickle
import tarfile
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ieg_tf import datasets, image_files, noise, sources

DataSpec = datasets.DataSpec


# ---------------------------------------------------------------------------------------------- digits, probe
def test_digits_default_is_offline_uint8_8x8_with_a_fixed_split():
    data = datasets.load_dataset(DataSpec(probe_per_class=2, noise_ratio=0.0))
    assert data.name == "digits" and data.num_classes == 10 and data.augment_kind == "small"
    assert data.train_images.shape[1:] == (8, 8, 1) == data.image_shape and data.train_images.dtype == np.uint8
    assert data.train_images.max() == 255 and data.train_images.min() == 0
    assert len(data.train_labels) + len(data.probe_labels) + len(data.test_labels) == 1797
    assert len(data.test_labels) == pytest.approx(1797 / 3, abs=10)
    with np.load(os.path.join(os.path.dirname(__file__), "..", "data", "digits.npz")) as f:
        raw = f["images"]
    # 0..16 grey levels scaled to 0..255; train_ids index the original training part of the split.
    assert set(np.unique(data.train_images)) <= {int(round(v * 255 / 16)) for v in range(17)}
    assert np.mean(np.isin(raw.reshape(len(raw), -1), [0, 16])) > 0.3
    other = datasets.load_dataset(DataSpec(probe_per_class=2, noise_ratio=0.0, seed=99))
    assert np.array_equal(other.test_images, data.test_images)  # the test split does not move with the seed
    assert not np.array_equal(other.probe_ids, data.probe_ids)  # the probe does


def test_probe_is_balanced_interleaved_clean_and_disjoint_from_training():
    spec = DataSpec(probe_per_class=5, noise_type="uniform", noise_ratio=1.0, seed=3)
    data = datasets.load_dataset(spec)
    assert np.array_equal(data.probe_labels, np.tile(np.arange(10), 5))  # c0, c1, ..., c9, c0, ...
    assert np.array_equal(np.bincount(data.probe_labels), [5] * 10)
    assert not set(data.probe_ids) & set(data.train_ids)
    assert np.array_equal(np.sort(np.concatenate([data.probe_ids, data.train_ids])),
                          np.arange(len(data.probe_ids) + len(data.train_ids)))
    raw = sources.read_digits()
    # Probe labels are the clean ones even at 100% noise; the training images are the unprobed ones.
    assert np.array_equal(data.probe_labels, raw.train_labels[data.probe_ids])
    assert np.array_equal(data.probe_images, raw.train_images[data.probe_ids])
    assert np.array_equal(data.train_true_labels, raw.train_labels[data.train_ids])
    assert np.array_equal(data.train_images, raw.train_images[data.train_ids])
    assert data.noise_rate_realized == pytest.approx(np.mean(data.train_labels != data.train_true_labels))
    assert data.noise_rate_realized == pytest.approx(0.9, abs=0.04)
    again = datasets.load_dataset(spec)
    assert np.array_equal(again.train_labels, data.train_labels) and np.array_equal(again.probe_ids, data.probe_ids)


def test_probe_per_class_too_large_is_a_clear_error():
    labels = np.repeat(np.arange(3), [5, 2, 5])
    train, probe = datasets.probe_split(labels, 3, 1, seed=0)  # class 1 keeps one training example
    assert len(probe) == 3 and len(train) == 9
    with pytest.raises(ValueError, match="probe_per_class=2 is too large: class 1 has only 2"):
        datasets.probe_split(labels, 3, 2, seed=0)
    with pytest.raises(ValueError, match="probe_per_class=200 is too large"):
        datasets.load_dataset(DataSpec(probe_per_class=200))
    with pytest.raises(ValueError, match="probe_per_class must be >= 0"):
        datasets.load_dataset(DataSpec(probe_per_class=-1))


@pytest.mark.parametrize("ratio", [-0.5, 1.01])
def test_noise_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match=r"noise_ratio must be in \[0, 1\]"):
        datasets.load_dataset(DataSpec(noise_ratio=ratio))


def test_bad_dataset_and_noise_names():
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        datasets.load_dataset(DataSpec(dataset="mnist"))
    with pytest.raises(ValueError, match="unknown noise_type 'pair'"):
        datasets.load_dataset(DataSpec(noise_type="pair"))


def test_digits_asymmetric_40_percent():
    data = datasets.load_dataset(DataSpec(noise_type="asymmetric", noise_ratio=0.4, probe_per_class=1))
    true, noisy = data.train_true_labels, data.train_labels
    mapped = np.isin(true, list(noise.DIGITS_ASYMMETRIC))
    assert np.array_equal(noisy[~mapped], true[~mapped])
    assert np.mean(noisy[mapped] != true[mapped]) == pytest.approx(0.4, abs=0.06)
    assert data.noise_rate_realized == pytest.approx(0.2, abs=0.04)


def test_save_load_and_check_split(tmp_path):
    data = datasets.load_dataset(DataSpec(probe_per_class=3, noise_ratio=0.5))
    datasets.save_split(data, str(tmp_path))
    split = datasets.load_split(str(tmp_path))
    assert np.array_equal(split["noisy_labels"], data.train_labels)
    assert np.array_equal(split["true_labels"], data.train_true_labels)
    assert np.array_equal(split["probe_ids"], data.probe_ids) and np.array_equal(split["train_ids"], data.train_ids)
    assert split["num_probe"] == 30 and split["noise_type"] == "uniform"
    assert split["noise_rate_realized"] == pytest.approx(data.noise_rate_realized)
    datasets.check_split(data, str(tmp_path))
    other = datasets.load_dataset(DataSpec(probe_per_class=3, noise_ratio=0.5, seed=1))
    with pytest.raises(ValueError, match="differs from the one saved"):
        datasets.check_split(other, str(tmp_path))
    with pytest.raises(ValueError, match="no saved split"):
        datasets.load_split(str(tmp_path / "missing"))
    # A separate probe set: the training split is the same whatever the probe, so only the probe arrays tell a
    # resume with another probe size (or other probe labels) apart.
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (40, 8, 8, 1), np.uint8), np.arange(40) % 4
    probe_x, probe_y = rng.integers(0, 256, (12, 8, 8, 1), np.uint8), np.arange(12) % 4
    one = datasets.from_arrays(images, labels, images[:8], labels[:8], probe_images=probe_x, probe_labels=probe_y,
                               probe_per_class=1)
    datasets.save_split(one, str(tmp_path / "probe"))
    two = datasets.from_arrays(images, labels, images[:8], labels[:8], probe_images=probe_x, probe_labels=probe_y,
                               probe_per_class=2)
    assert np.array_equal(two.train_labels, one.train_labels)
    with pytest.raises(ValueError, match="probe_ids, probe_labels"):
        datasets.check_split(two, str(tmp_path / "probe"))


# ---------------------------------------------------------------------------------------------- CIFAR
def _cifar_pickle(images, labels, label_key):
    data = np.stack([im.transpose(2, 0, 1).reshape(-1) for im in images]).astype(np.uint8)  # R plane, G, B
    return pickle.dumps({b"batch_label": b"x", label_key: [int(v) for v in labels], b"data": data,
                         b"filenames": [b"f%d.png" % i for i in range(len(labels))]}, protocol=2)


def _write_cifar(directory, name, per_batch=6, extract=False):
    """A tiny CIFAR python archive in the Toronto format; image i has pixel (0, 1) = (i, 100 + i, 200 - i)."""
    c = 10 if name == "cifar10" else 100
    folder, label_key = ("cifar-10-batches-py", b"labels") if c == 10 else ("cifar-100-python", b"fine_labels")
    train_members = [f"data_batch_{i}" for i in range(1, 6)] if c == 10 else ["train"]
    per = per_batch if c == 10 else 3 * c
    members, start = {}, 0
    for member in train_members + ["test_batch" if c == 10 else "test"]:
        ids = np.arange(start, start + per)
        images = np.zeros((per, 32, 32, 3), np.uint8)
        images[:, 0, 1] = np.stack([ids % 256, (100 + ids) % 256, (200 - ids) % 256], 1)
        members[member] = _cifar_pickle(images, ids % c, label_key)
        start += per
    names = [b"class%d" % i for i in range(c)]
    members["batches.meta" if c == 10 else "meta"] = pickle.dumps(
        {b"label_names" if c == 10 else b"fine_label_names": names}, protocol=2)
    if extract:
        os.makedirs(os.path.join(directory, folder))
        for member, payload in members.items():
            with open(os.path.join(directory, folder, member), "wb") as f:
                f.write(payload)
        return
    archive = "cifar-10-python.tar.gz" if c == 10 else "cifar-100-python.tar.gz"
    with tarfile.open(os.path.join(directory, archive), "w:gz") as tar:
        for member, payload in members.items():
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


@pytest.mark.parametrize("extract", [False, True])
def test_cifar10_python_archive(tmp_path, extract):
    _write_cifar(str(tmp_path), "cifar10", extract=extract)
    raw = sources.read_cifar("cifar10", str(tmp_path))
    assert raw.train_images.shape == (30, 32, 32, 3) and raw.test_images.shape == (6, 32, 32, 3)
    assert raw.class_names[3] == "class3" and raw.augment_kind == "cifar"
    assert np.array_equal(raw.train_labels, np.arange(30) % 10)  # archive order kept
    assert raw.train_images[7, 0, 1].tolist() == [7, 107, 193] and raw.train_images[7, 1, 1].tolist() == [0, 0, 0]
    assert raw.test_images[0, 0, 1].tolist() == [30, 130, 170]
    data = datasets.load_dataset(DataSpec(dataset="cifar10", data_dir=str(tmp_path), probe_per_class=2,
                                          noise_type="asymmetric", noise_ratio=1.0))
    assert len(data.probe_labels) == 20 and len(data.train_labels) == 10
    assert np.array_equal(data.train_labels, np.vectorize(lambda c: noise.CIFAR10_ASYMMETRIC.get(c, c))(
        data.train_true_labels))


def test_cifar100_python_archive(tmp_path):
    _write_cifar(str(tmp_path), "cifar100")
    data = datasets.load_dataset(DataSpec(dataset="cifar100", data_dir=str(tmp_path), probe_per_class=1,
                                          noise_type="asymmetric", noise_ratio=1.0))
    assert data.num_classes == 100 and data.train_images.shape == (200, 32, 32, 3)
    mapping = noise.asymmetric_mapping("cifar100")
    assert all(mapping[t] == n for t, n in zip(data.train_true_labels, data.train_labels))


def test_corrupt_cifar_archive_is_a_clear_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="not a readable .tar.gz archive"):
        sources.read_cifar("cifar10", str(tmp_path))


def test_missing_cifar_fails_fast_without_download(tmp_path):
    start = time.time()
    with pytest.raises(ValueError, match="cifar100 not found.*--download"):
        sources.read_cifar("cifar100", str(tmp_path), download=False)
    assert time.time() - start < 5


def test_cifar_through_tfds_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    builder = tfds.builder("cifar10", data_dir=str(tmp_path))
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)  # what a prepared copy has besides the records
    with tfds.testing.mock_data(num_examples=40):
        with pytest.warns(UserWarning, match="tfds ids"):  # mock ids are random text, not 'train_00042'
            raw = sources.read_cifar("cifar10", str(tmp_path), download=False)
    assert raw.train_images.shape == (40, 32, 32, 3) and raw.train_images.dtype == np.uint8
    assert raw.num_classes == 10 and raw.test_labels.shape == (40,) and raw.train_labels.max() < 10


# ---------------------------------------------------------------------------------------------- image files
def _png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root, per_class=3, size=(6, 6)):
    for c, name in enumerate(["cat", "dog"]):
        for i in range(per_class):
            _png(os.path.join(root, name, f"{i}.png"), np.full(size, 10 * c + i, np.uint8))


def test_image_folder_with_test_folder(tmp_path):
    _folder(str(tmp_path / "train"))
    _folder(str(tmp_path / "test"), per_class=2)
    spec = DataSpec(dataset="folder", train_dir=str(tmp_path / "train"), test_dir=str(tmp_path / "test"),
                    probe_per_class=1, noise_type="flip", noise_ratio=1.0)
    data = datasets.load_dataset(spec)
    assert data.class_names == ["cat", "dog"] and data.image_shape == (6, 6, 1)
    assert data.train_images.shape == (4, 6, 6, 1) and data.test_images.shape == (4, 6, 6, 1)
    assert sorted(np.unique(data.test_images).tolist()) == [0, 1, 10, 11]
    assert np.all(data.train_labels != data.train_true_labels)  # flip at 100% with two classes
    assert np.all(data.probe_images[:, 0, 0, 0] // 10 == data.probe_labels)


def test_image_folder_errors(tmp_path):
    _folder(str(tmp_path / "a"))
    os.makedirs(tmp_path / "a" / "empty")
    with pytest.raises(ValueError, match="class 'empty'.*has no images"):
        image_files.read_folder(str(tmp_path / "a"))
    _folder(str(tmp_path / "b"))
    _folder(str(tmp_path / "c"))
    _png(str(tmp_path / "b" / "dog" / "big.png"), np.zeros((7, 6), np.uint8))
    with pytest.raises(ValueError, match="different sizes.*--image_size"):
        datasets.load_dataset(DataSpec(dataset="folder", train_dir=str(tmp_path / "b"),
                                       test_dir=str(tmp_path / "c")))
    (tmp_path / "c" / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    spec = DataSpec(dataset="folder", train_dir=str(tmp_path / "c"), test_dir=str(tmp_path / "c"))
    with pytest.raises(ValueError, match="cannot be read as images.*broken.png.*--skip_bad_images"):
        datasets.load_dataset(spec)
    with pytest.warns(UserWarning, match="skipped 2 unreadable"):  # once in train, once in test
        data = datasets.load_dataset(DataSpec(**{**spec.__dict__, "skip_bad_images": True}))
    assert len(data.train_labels) + len(data.probe_labels) == 6
    with pytest.raises(ValueError, match="does not exist"):
        image_files.read_folder(str(tmp_path / "nope"))


def test_list_file_with_resize_and_held_out_test(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["path,label"]
    for i in range(24):
        _png(str(tmp_path / "img" / f"{i}.png"), rng.integers(0, 255, (10 + i % 3, 12, 3), dtype=np.uint8))
        lines.append(f"img/{i}.png,{i % 3}")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    spec = DataSpec(dataset="list", train_list=str(tmp_path / "train.txt"), image_size=8, probe_per_class=1,
                    noise_type="uniform", noise_ratio=0.5)
    with pytest.warns(UserWarning, match="holding out 20%"):
        data = datasets.load_dataset(spec)
    assert data.num_classes == 3 and data.image_shape == (8, 8, 3) and data.augment_kind == "small"
    assert len(data.test_labels) == 6 and len(data.train_labels) == 15
    assert np.array_equal(np.bincount(data.test_labels), [2, 2, 2])


def test_list_file_errors(tmp_path):
    _png(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "bad_label.txt").write_text("a.png,1\na.png,5\n")
    with pytest.raises(ValueError, match="label 5 is out of range"):
        datasets.load_dataset(DataSpec(dataset="list", train_list=str(tmp_path / "bad_label.txt"),
                                       num_classes=2))
    (tmp_path / "bad_line.txt").write_text("a.png,0\na.png;zero\n")
    with pytest.raises(ValueError, match="line 2: expected 'path,label'"):
        image_files.read_list(str(tmp_path / "bad_line.txt"))
    (tmp_path / "gap.txt").write_text("a.png 0\na.png 2\n")  # class 1 never appears
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training examples"):
        datasets.load_dataset(DataSpec(dataset="list", train_list=str(tmp_path / "gap.txt"),
                                       test_list=str(tmp_path / "gap.txt")))


def test_large_images_stay_files_with_a_separate_probe(tmp_path):
    for split, n in (("train", 6), ("val", 2), ("probe", 4)):
        lines = []
        for i in range(n):
            _png(str(tmp_path / split / f"{i}.jpg"), np.full((70 + i, 90, 3), 40 * (i % 2), np.uint8))
            lines.append(f"{split}/{i}.jpg {i % 2}")
        (tmp_path / f"{split}.txt").write_text("\n".join(lines))
    spec = DataSpec(dataset="list", train_list=str(tmp_path / "train.txt"), test_list=str(tmp_path / "val.txt"),
                    probe_list=str(tmp_path / "probe.txt"), image_root=str(tmp_path), image_size=72,
                    probe_per_class=None, noise_type="none")
    data = datasets.load_dataset(spec)
    assert data.augment_kind == "imagenet" and data.image_shape == (72, 72, 3)
    assert data.train_images.dtype.kind == "U" and data.train_images[0].endswith("train/0.jpg")
    assert len(data.train_labels) == 6 and np.array_equal(data.probe_labels, [0, 1, 0, 1])
    assert np.all(data.probe_ids == -1) and data.train_true_labels is None and data.noise_rate_realized is None


# ---------------------------------------------------------------------------------------------- noise files, arrays
@pytest.mark.parametrize("ext", [".npy", ".csv"])
def test_noise_file_one_label_per_original_example(tmp_path, ext):
    raw = sources.read_digits()
    labels = (raw.train_labels + (np.arange(len(raw.train_labels)) % 4 == 0)) % 10  # every 4th label shifted
    path = str(tmp_path / f"noisy{ext}")
    if ext == ".npy":
        np.save(path, labels)
    else:
        (tmp_path / "noisy.csv").write_text("index,label\n" + "".join(f"{i},{v}\n" for i, v in enumerate(labels)))
    data = datasets.load_dataset(DataSpec(noise_type="file", noise_file=path, probe_per_class=2))
    assert np.array_equal(data.train_labels, labels[data.train_ids])
    assert np.array_equal(data.probe_labels, raw.train_labels[data.probe_ids])  # probe keeps the clean labels
    assert data.noise_rate_realized == pytest.approx(np.mean(data.train_ids % 4 == 0))
    assert data.noise_ratio == data.noise_rate_realized
    np.save(str(tmp_path / "short.npy"), labels[:-1])
    with pytest.raises(ValueError, match=f"has {len(labels) - 1} labels but.*has {len(labels)} examples"):
        datasets.load_dataset(DataSpec(noise_type="file", noise_file=str(tmp_path / "short.npy")))
    np.save(str(tmp_path / "range.npy"), labels + 5)
    with pytest.raises(ValueError, match="out of range"):
        datasets.load_dataset(DataSpec(noise_type="file", noise_file=str(tmp_path / "range.npy")))


def _arrays(n=60, c=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8), (np.arange(n) % c).astype(np.int64)


def test_from_arrays_numpy_and_tf_data():
    x, y = _arrays()
    noisy = (y + (np.arange(60) % 3 == 0)) % 3
    data = datasets.from_arrays(x, noisy, x[:9], y[:9], true_labels=y, probe_per_class=2, seed=1)
    assert np.array_equal(data.probe_labels, [0, 1, 2, 0, 1, 2]) and len(data.train_labels) == 54
    assert np.array_equal(data.probe_labels, y[data.probe_ids])  # split off from the true labels
    assert np.array_equal(data.train_labels, noisy[data.train_ids])
    assert data.noise_rate_realized == pytest.approx(np.mean(data.train_ids % 3 == 0))
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "label": y})
    injected = datasets.from_arrays(ds.batch(7), test_images=tf.data.Dataset.from_tensor_slices((x[:9], y[:9])),
                                    noise_type="flip", noise_ratio=1.0, probe_per_class=1)
    assert np.array_equal(injected.train_images, x[injected.train_ids])
    assert np.all(injected.train_labels != injected.train_true_labels)
    given_only = datasets.from_arrays(x, y, x[:9], y[:9], probe_images=x[:6], probe_labels=y[:6])
    assert len(given_only.train_labels) == 60 and given_only.train_true_labels is None
    assert np.array_equal(given_only.probe_labels, [0, 1, 2, 0, 1, 2]) and np.all(given_only.probe_ids == -1)


def test_from_arrays_errors():
    x, y = _arrays()
    with pytest.raises(ValueError, match="uint8"):
        datasets.from_arrays(x / 255.0, y, x, y)
    with pytest.raises(ValueError, match="train_labels has 59 entries for 60"):
        datasets.from_arrays(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        datasets.from_arrays(x, y, x, y + 1, num_classes=3)
    with pytest.raises(ValueError, match="needs a class mapping"):
        datasets.from_arrays(x, y, x, y, noise_type="asymmetric", noise_ratio=0.2)
    mixed = tf.data.Dataset.from_generator(lambda: ((np.zeros((4 + i % 2, 4, 1), np.uint8), 0) for i in range(4)),
                                           output_signature=(tf.TensorSpec((None, 4, 1), tf.uint8),
                                                             tf.TensorSpec((), tf.int64)))
    with pytest.raises(ValueError, match="different shapes"):
        datasets.from_arrays(mixed, test_images=mixed)
    with pytest.raises(ValueError, match="true_labels go with given noisy labels"):
        datasets.from_arrays(x, y, x, y, true_labels=y, noise_type="uniform", noise_ratio=0.2)


def test_npz_arrays_dataset(tmp_path):
    x, y = _arrays()
    np.savez(str(tmp_path / "mine.npz"), train_images=x, train_labels=y, test_images=x[:5], test_labels=y[:5])
    data = datasets.load_dataset(DataSpec(dataset="arrays", array_file=str(tmp_path / "mine.npz"),
                                          noise_type="uniform", noise_ratio=0.3))
    assert data.name == "mine" and data.num_classes == 3 and data.image_shape == (5, 5, 3)
    assert len(data.train_labels) == 57 and data.train_true_labels is not None


def _save_npz(path, **arrays):
    """An .npz for --dataset=arrays: 60 train and 9 test images of _arrays, any array replaced by `arrays`."""
    x, y = _arrays()
    defaults = {"train_images": x, "train_labels": y, "test_images": x[:9], "test_labels": y[:9]}
    np.savez(str(path), **{**defaults, **arrays})
    return DataSpec(dataset="arrays", array_file=str(path), noise_type="none")


@pytest.mark.parametrize("split", ["train", "test", "probe"])
def test_npz_labels_must_match_images_in_number(tmp_path, split):
    x, y = _arrays()
    spec = _save_npz(tmp_path / "short.npz", **{f"{split}_images": x[:9], f"{split}_labels": y[:6]})
    with pytest.raises(ValueError, match=f"short.npz {split}_labels has 6 entries for 9 {split}_images"):
        datasets.load_dataset(spec)


@pytest.mark.parametrize("split, shape, listed", [
    ("test", (9, 10, 10, 3), "train 5x5x3, test 10x10x3"),
    ("probe", (9, 5, 5, 1), "train 5x5x3, test 5x5x3, probe 5x5x1")])
def test_splits_with_different_image_shapes_are_refused_at_load(tmp_path, split, shape, listed):
    x, y = _arrays()
    other = {f"{split}_images": np.zeros(shape, np.uint8), f"{split}_labels": y[:9]}
    match = rf"differ in shape \(HxWxC: {listed}\); resize / convert the {split} images to 5x5x3 so all splits match"
    with pytest.raises(ValueError, match=match):
        datasets.load_dataset(_save_npz(tmp_path / "mixed.npz", **other))
    with pytest.raises(ValueError, match=match):
        datasets.from_arrays(**{"train_images": x, "train_labels": y, "test_images": x[:9], "test_labels": y[:9],
                                **other})


def test_channels_first_images_are_refused_with_the_transpose(tmp_path):
    x, y = _arrays()
    nchw = x.transpose(0, 3, 1, 2).copy()  # (60, 3, 5, 5)
    fix = r"channels-last with C = 1 or 3, got shape \(60, 3, 5, 5\); they look channels-first: np.transpose"
    with pytest.raises(ValueError, match="train_images: images must be .N, H, W, C. " + fix):
        datasets.from_arrays(nchw, y, x[:9], y[:9])
    with pytest.raises(ValueError, match="nchw.npz train_images: images must be .N, H, W, C. " + fix):
        datasets.load_dataset(_save_npz(tmp_path / "nchw.npz", train_images=nchw))
    with pytest.raises(ValueError, match=r"C = 1 or 3, got shape \(60, 5, 5, 4\)$"):  # RGBA: no transpose hint
        datasets.from_arrays(np.zeros((60, 5, 5, 4), np.uint8), y, x[:9], y[:9])


def test_empty_npz_training_set_says_so(tmp_path):
    x, y = _arrays()
    with pytest.raises(ValueError, match="empty: the training set is empty"):
        datasets.load_dataset(_save_npz(tmp_path / "empty.npz", train_images=x[:0], train_labels=y[:0]))


def test_stray_label_errors_say_the_class_count_was_inferred(tmp_path):
    x, y = _arrays()  # classes 0..2
    stray = y.copy()
    stray[4] = 3
    inferred = r"the class count was taken as max\(label\)\+1 = 4 from the labels, so a stray label out of range"
    with pytest.raises(ValueError, match=f"class 3 has only 1 training examples.*{inferred}.*correct the labels or "
                                         r"pass --num_classes \(DataSpec.num_classes\)"):
        datasets.load_dataset(_save_npz(tmp_path / "stray.npz", train_labels=stray))
    with pytest.raises(ValueError, match=f"the probe set has 0 images of class 3.*{inferred}.*correct the labels or "
                                         "pass num_classes to from_arrays"):
        datasets.from_arrays(x, stray, x[:9], y[:9], probe_images=x[:6], probe_labels=y[:6])
    with pytest.raises(ValueError, match="label 3 is out of range; class ids must be 0..2$"):  # given: no guess
        datasets.from_arrays(x, stray, x[:9], y[:9], probe_images=x[:6], probe_labels=y[:6], num_classes=3)
    with pytest.raises(ValueError, match=r"class 0 has only 20 training examples; .* for training\)$"):
        datasets.load_dataset(DataSpec(**{**_save_npz(tmp_path / "ok.npz").__dict__, "probe_per_class": 20}))
