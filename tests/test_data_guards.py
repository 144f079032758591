"""Guards of the data and report code found by user testing: label-issue reports on large-image file data, the file
path of each reported example, 16-bit images, half-given probe sets, class-name counts, one-hot labels in a
tf.data.Dataset, noise files on held-out folder / list data, list-file labels, and the training files saved with the
split. Every file is written here."""

import csv
import dataclasses
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ieg_tf import datasets, image_files, report
from ieg_tf.config import TrainerConfig
from ieg_tf.model import IEGTrainer

DataSpec = datasets.DataSpec
CLASSES = ("cat", "dog", "fox")


def _image(path, array, **save_args):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **save_args)


def _colour(c, i):
    """A distinct uniform RGB colour per (class, index): a centre crop + resize of it is the same colour whatever
    the interpolation, so the expected network input is known without re-implementing the pipeline."""
    return np.array([40 * c + 20 * i, 200 - 30 * i, 60 + 50 * c], np.uint8)


def _folder(root, per_class, shape):
    """root/<class>/<i>.png of uniform colour `_colour(c, i)`; returns {path: (class, colour)}."""
    files = {}
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            path = os.path.join(root, name, f"{i}.png")
            _image(path, np.broadcast_to(_colour(c, i), (*shape, 3)).copy())
            files[path] = (c, _colour(c, i))
    return files


def _trainer(image_size, num_train_examples):
    """An untrained IEGTrainer with EMA weights unlike the live ones: no example is visited yet, as after a run
    shorter than an epoch, so the report must predict every suggested label from the EMA model."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((image_size, image_size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    net = keras.Model(inputs, keras.layers.Dense(len(CLASSES))(pooled))
    trainer = IEGTrainer(net, len(CLASSES), TrainerConfig(), num_train_examples=num_train_examples)
    rng = np.random.default_rng(5)
    for shadow in trainer.ema_weights:
        shadow.assign(rng.normal(size=shadow.shape).astype(np.float32) * 3.0)
    return trainer


# ---------------------------------------------------------------------------------------------- 1, 2: report on files
def test_report_for_large_image_files_predicts_through_the_eval_pipeline(tmp_path):
    files = _folder(str(tmp_path / "train"), per_class=3, shape=(70, 80))
    _folder(str(tmp_path / "test"), per_class=1, shape=(70, 80))
    data = datasets.load_dataset(DataSpec(dataset="folder", train_dir=str(tmp_path / "train"), image_size=66,
                                          test_dir=str(tmp_path / "test"), noise_type="none", probe_per_class=1))
    assert data.train_images.dtype.kind == "U" and data.augment_kind == "imagenet"  # the files stay on disk
    n = len(data.train_labels)
    trainer = _trainer(66, n)
    assert np.all(trainer.example_stats.result()["visits"] == 0)

    issues = report.report_for(trainer, data, batch_size=4)  # 2 batches, the last one short

    assert len(issues) == n and len(issues.rows()) == n
    colours = np.stack([files[str(p)][1] for p in data.train_paths]).astype(np.float32)
    expected = tf.nn.softmax(trainer.ema_logits(np.broadcast_to(
        ((colours / 255.0 - 0.5) * 2.0)[:, None, None, :], (n, 66, 66, 3)))).numpy()
    np.testing.assert_allclose(report.split_probabilities(trainer, data, 4), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(issues.suggested_label, np.argmax(expected, axis=1))
    np.testing.assert_array_equal(issues.path, data.train_paths)


def test_test_confusion_of_large_image_files_goes_through_the_eval_pipeline(tmp_path):
    # Large-image runs wrote no test_confusion.csv and no per-class accuracy: the matrix read only uint8 arrays.
    _folder(str(tmp_path / "train"), per_class=2, shape=(70, 80))
    test_files = _folder(str(tmp_path / "test"), per_class=2, shape=(70, 80))
    data = datasets.load_dataset(DataSpec(dataset="folder", train_dir=str(tmp_path / "train"), image_size=66,
                                          test_dir=str(tmp_path / "test"), noise_type="none", probe_per_class=1))
    assert data.test_images.dtype.kind == "U"
    trainer = _trainer(66, len(data.train_labels))
    confusion = report.confusion_on_test_set(trainer, data, batch_size=3)
    colours = np.stack([test_files[str(p)][1] for p in data.test_images]).astype(np.float32)
    predicted = np.argmax(trainer.ema_logits(np.broadcast_to(
        ((colours / 255.0 - 0.5) * 2.0)[:, None, None, :], (len(colours), 66, 66, 3))).numpy(), axis=1)
    expected = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for t, p in zip(data.test_labels, predicted):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion, expected)


def test_folder_data_keep_the_file_of_each_training_example_after_hold_out_and_probe(tmp_path):
    files = _folder(str(tmp_path / "train"), per_class=5, shape=(6, 6))
    with pytest.warns(UserWarning, match="holding out 20%"):
        data = datasets.load_dataset(DataSpec(dataset="folder", train_dir=str(tmp_path / "train"),
                                              noise_type="none", probe_per_class=1))
    assert data.train_paths is not None and len(data.train_paths) == len(data.train_labels) == 9
    for path, image, label in zip(data.train_paths, data.train_images, data.train_labels):
        c, colour = files[str(path)]
        assert label == c and np.array_equal(image[0, 0], colour), path  # the path names this very image
    assert len(set(data.train_paths.tolist())) == 9
    assert datasets.from_arrays(data.train_images, data.train_labels, data.test_images,
                                data.test_labels).train_paths is None  # no files, no paths


def test_list_data_paths_skip_unreadable_files_in_step_with_the_images(tmp_path):
    lines = []
    for i in range(12):
        _image(str(tmp_path / "img" / f"{i}.png"), np.full((5, 5), 10 * i, np.uint8))
        lines.append(f"img/{i}.png,{i % 2}")
    (tmp_path / "img" / "4.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "test.txt").write_text("img/0.png,0\nimg/1.png,1\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        data = datasets.load_dataset(DataSpec(dataset="list", train_list=str(tmp_path / "train.txt"),
                                              test_list=str(tmp_path / "test.txt"), noise_type="none",
                                              skip_bad_images=True))
    names = [os.path.basename(p) for p in data.train_paths]
    assert "4.png" not in names and len(names) == len(data.train_labels) == 9  # 12 - 1 broken - 2 probe
    values = [10 * int(name.split(".")[0]) for name in names]
    np.testing.assert_array_equal(data.train_images[:, 0, 0, 0], values)


def _stats(n):
    return {"visits": np.ones(n), "omega_mean": np.zeros(n), "pseudo_fraction": np.ones(n),
            "guess_sum": np.eye(2)[np.arange(n) % 2]}


def test_label_issue_rows_and_csv_end_with_the_path_column_for_file_data(tmp_path):
    paths = ["/data/a,1.png", "/data/b.png", "/data/c.png"]
    issues = report.label_issues(_stats(3), [1, 1, 0], true_labels=[0, 1, 0], paths=paths)
    assert issues.columns() == report.COLUMNS + ("true_label", "path")
    assert [row["path"] for row in issues.rows()] == paths
    out = str(tmp_path / "label_issues.csv")
    report.write_label_issues_csv(issues, out)
    with open(out) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == report.COLUMNS + ("true_label", "path") and rows[1][-1] == "/data/a,1.png"
    back = report.read_label_issues_csv(out)
    assert back.path.tolist() == paths and back.true_label.tolist() == [0, 1, 0]
    no_truth = report.label_issues(_stats(3), [1, 1, 0], paths=paths)
    assert no_truth.columns() == report.COLUMNS + ("path",)
    report.write_label_issues_csv(no_truth, out)
    assert report.read_label_issues_csv(out).path.tolist() == paths
    arrays = report.label_issues(_stats(3), [1, 1, 0])  # array data: the columns are unchanged
    assert arrays.columns() == report.COLUMNS and "path" not in arrays.rows()[0]
    with pytest.raises(ValueError, match="paths has shape"):
        report.label_issues(_stats(3), [1, 1, 0], paths=paths[:2])


# ---------------------------------------------------------------------------------------------- 3: 16-bit images
def test_16_bit_png_is_rescaled_not_clipped_white(tmp_path):
    values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0, 4369, ..., 65535
    path = str(tmp_path / "deep.png")
    _image(path, values)
    assert Image.open(path).mode.startswith("I;16")
    images, kept = image_files.load_images([path])
    np.testing.assert_array_equal(images[0, ..., 0], np.arange(16).reshape(4, 4) * 17)  # 4369 = 17 * 257
    _image(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    mixed, _ = image_files.load_images([path, str(tmp_path / "rgb.png")])  # decoded as RGB: same grey values
    np.testing.assert_array_equal(mixed[0], np.repeat(images[0], 3, axis=-1))


def test_32_bit_images_are_rescaled_when_16_bit_and_refused_otherwise(tmp_path):
    path = str(tmp_path / "int.png")
    _image(path, np.array([[0, 257], [65535, 2570]], np.int32), format="TIFF")  # PIL mode I
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(image_files.load_images([path])[0][0, ..., 0], [[0, 1], [255, 10]])
    _image(str(tmp_path / "big.png"), np.array([[0, 70000]], np.int32), format="TIFF")
    with pytest.raises(ValueError, match="big.png: 32-bit integer pixels.*save the image as 8-bit"):
        image_files.load_images([str(tmp_path / "big.png")], skip_bad=True)  # not a broken file: never skipped
    _image(str(tmp_path / "float.png"), np.full((2, 2), 0.5, np.float32), format="TIFF")
    with pytest.raises(ValueError, match="float.png: 32-bit float pixels"):
        image_files.load_images([str(tmp_path / "float.png")])


# ---------------------------------------------------------------------------------------------- 4, 5, 6: from_arrays
def _arrays(n=24, c=3):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8), np.arange(n) % c


def test_half_a_probe_set_is_refused():
    x, y = _arrays()
    with pytest.raises(ValueError, match="probe_labels given without probe_images"):
        datasets.from_arrays(x, y, x, y, probe_labels=y[:6])
    with pytest.raises(ValueError, match="probe_labels is required with probe_images"):
        datasets.from_arrays(x, y, x, y, probe_images=x[:6])


def test_class_names_must_name_every_class():
    x, y = _arrays()
    with pytest.raises(ValueError, match="class_names has 2 names but there are 3 classes.*taken as max"):
        datasets.from_arrays(x, y, x, y, class_names=["cat", "dog"])
    with pytest.raises(ValueError, match="class_names has 4 names but there are 3 classes"):
        datasets.from_arrays(x, y, x, y, class_names=list("abcd"), num_classes=3)
    assert datasets.from_arrays(x, y, x, y, class_names=list("abc")).class_names == list("abc")
    # Names that are not str used to pass and fail the --export_dir SavedModel after the whole run.
    with pytest.raises(ValueError, match=r"class_names must be a list of str, one per class id; got 0 \(int\)"):
        datasets.from_arrays(x, y, x, y, class_names=[0, 1, 2])
    with pytest.raises(ValueError, match="class_names must be a list of str.*got 'abc' \\(str\\)"):
        datasets.from_arrays(x, y, x, y, class_names="abc")
    named = datasets.from_arrays(x, y, x, y, class_names=np.array(["a", "b", "c"]))
    assert named.class_names == ["a", "b", "c"] and all(type(n) is str for n in named.class_names)


@pytest.mark.parametrize("batch", [None, 5])
def test_one_hot_labels_in_a_tf_dataset_are_named(batch):
    x, y = _arrays()
    one_hot = tf.data.Dataset.from_tensor_slices((x, np.eye(3, dtype=np.float32)[y]))
    shape = "(3,)" if batch is None else f"({batch}, 3)"
    with pytest.raises(ValueError, match=rf"label shape \{shape[:-1]}\).*look one-hot.*tf.argmax"):
        datasets.from_arrays(one_hot if batch is None else one_hot.batch(batch), test_images=x, test_labels=y)


def test_tf_dataset_labels_of_shape_1_are_class_ids():
    x, y = _arrays()
    column = tf.data.Dataset.from_tensor_slices((x, y[:, None]))
    for ds in (column, column.batch(5)):
        data = datasets.from_arrays(ds, test_images=x, test_labels=y, probe_per_class=1)
        assert len(data.train_labels) + len(data.probe_labels) == len(y)
    with pytest.raises(ValueError, match="one integer class id per image"):
        datasets.from_arrays(tf.data.Dataset.from_tensor_slices((x, np.zeros((24, 2, 2), np.int64))),
                             test_images=x, test_labels=y)


# ---------------------------------------------------------------------------------------------- 7: noise files, lists
def test_noise_file_on_folder_data_needs_a_separate_test_split(tmp_path):
    files = _folder(str(tmp_path / "train"), per_class=4, shape=(4, 4))
    _folder(str(tmp_path / "test"), per_class=1, shape=(4, 4))
    order = sorted(files)  # sorted class folders, then sorted file names
    noisy = np.array([(files[p][0] + int(p.endswith("0.png"))) % 3 for p in order])
    np.save(str(tmp_path / "noisy.npy"), noisy)
    spec = DataSpec(dataset="folder", train_dir=str(tmp_path / "train"), noise_type="file",
                    noise_file=str(tmp_path / "noisy.npy"))
    with pytest.raises(ValueError, match="needs a separate test split \\(--test_dir\\)"):
        datasets.load_dataset(spec)
    data = datasets.load_dataset(DataSpec(**{**spec.__dict__, "test_dir": str(tmp_path / "test")}))
    expected = {p: label for p, label in zip(order, noisy)}
    assert [expected[str(p)] for p in data.train_paths] == data.train_labels.tolist()
    list_spec = DataSpec(dataset="list", train_list=str(tmp_path / "l.txt"), noise_type="file",
                         noise_file=str(tmp_path / "noisy.npy"))
    with pytest.raises(ValueError, match="--test_list"):
        datasets.load_dataset(list_spec)


def test_negative_list_label_names_its_line(tmp_path):
    _image(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "neg.txt").write_text("a.png,0\n\na.png,-1\n")
    with pytest.raises(ValueError, match="neg.txt line 3: label -1 is negative"):
        image_files.read_list(str(tmp_path / "neg.txt"))


def test_list_header_line_is_skipped_only_before_the_first_entry(tmp_path):
    (tmp_path / "head.txt").write_text("# images\nfilename,class_id\na.png,0\na.png 1\n")
    paths, labels = image_files.read_list(str(tmp_path / "head.txt"))
    assert labels.tolist() == [0, 1] and len(paths) == 2
    (tmp_path / "late.txt").write_text("filename,class_id\na.png,0\nb.png,cat\n")
    with pytest.raises(ValueError, match="late.txt line 3: expected 'path,label'"):
        image_files.read_list(str(tmp_path / "late.txt"))
    (tmp_path / "float.txt").write_text("a.png,1.0\na.png,0\n")  # a malformed first entry is no header
    with pytest.raises(ValueError, match="float.txt line 1: expected 'path,label'"):
        image_files.read_list(str(tmp_path / "float.txt"))


def test_list_label_out_of_range_names_its_file_line_and_value(tmp_path):
    _image(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "train.txt").write_text("a.png,0\na.png,1\na.png 0\na.png 1\n")
    (tmp_path / "test.txt").write_text("# held-out images\na.png,1\na.png,2\n")
    spec = DataSpec(dataset="list", train_list=str(tmp_path / "train.txt"), test_list=str(tmp_path / "test.txt"),
                    noise_type="none")
    with pytest.raises(ValueError, match=r"test.txt line 3: label 2 is out of range; class ids are 0\.\.1 \(2 classes, "
                                         r"taken as max\(label\)\+1 of .*train.txt"):
        datasets.load_dataset(spec)
    (tmp_path / "wide.txt").write_text("a.png,0\na.png,1\n\na.png,3\n")
    with pytest.raises(ValueError, match=r"wide.txt line 4: label 3 is out of range; class ids are 0\.\.2 "
                                         r"\(num_classes=3\)"):
        datasets.load_dataset(DataSpec(**{**spec.__dict__, "train_list": str(tmp_path / "wide.txt"),
                                          "num_classes": 3}))
    with pytest.raises(ValueError, match=r"wide.txt line 4: label 3 is out of range; class ids are 0\.\.1"):
        image_files.read_list(str(tmp_path / "wide.txt"), num_classes=2)
    assert image_files.read_list(str(tmp_path / "wide.txt"), num_classes=4)[1].tolist() == [0, 1, 3]


# ---------------------------------------------------------------------------------------------- 8: training files
def _folder_spec(root):
    return DataSpec(dataset="folder", train_dir=str(root / "train"), test_dir=str(root / "test"), noise_type="none",
                    probe_per_class=1)


def _saved_folder_split(tmp_path):
    """(data, split directory) of a run on folder data (4 training images per class) whose split is saved."""
    _folder(str(tmp_path / "train"), per_class=4, shape=(4, 4))
    _folder(str(tmp_path / "test"), per_class=1, shape=(4, 4))
    data = datasets.load_dataset(_folder_spec(tmp_path))
    datasets.save_split(data, str(tmp_path / "split"))
    return data, str(tmp_path / "split")


def test_split_of_file_data_saves_the_training_files_in_id_order(tmp_path):
    data, split_dir = _saved_folder_split(tmp_path)
    split = datasets.load_split(split_dir)
    assert split["train_paths"].tolist() == data.train_paths.tolist() and "train_paths.json" in split["files"]
    datasets.check_split(data, split_dir)
    shutil.copytree(tmp_path / "train", tmp_path / "moved" / "train")  # the same files under another root resume
    shutil.copytree(tmp_path / "test", tmp_path / "moved" / "test")
    datasets.check_split(datasets.load_dataset(_folder_spec(tmp_path / "moved")), split_dir)
    x, y = _arrays()
    arrays = datasets.from_arrays(x, y, x, y, probe_per_class=1)
    datasets.save_split(arrays, str(tmp_path / "arrays"))  # array data: no files, no paths
    assert "train_paths" not in datasets.load_split(str(tmp_path / "arrays"))
    datasets.check_split(arrays, str(tmp_path / "arrays"))


def test_resume_refuses_training_files_that_changed_under_equal_labels(tmp_path):
    data, split_dir = _saved_folder_split(tmp_path)
    os.remove(tmp_path / "train" / "dog" / "1.png")  # one image of a class replaced by another:
    _image(str(tmp_path / "train" / "dog" / "9.png"), np.zeros((4, 4, 3), np.uint8))
    changed = datasets.load_dataset(_folder_spec(tmp_path))
    for name in ("train_labels", "train_ids", "probe_labels", "probe_ids"):  # every saved array still matches
        np.testing.assert_array_equal(getattr(changed, name), getattr(data, name))
    with pytest.raises(ValueError, match=r"the training files differ from the ones saved in "
                                         r"\S+/split/train_paths.json \(id \d+ was \S+/dog/\d.png, "
                                         r"now \S+/dog/\d.png; \d of 9 ids differ\).*"
                                         r"restore the saved files.*or use a new run directory"):
        datasets.check_split(changed, split_dir)


def test_a_split_saved_without_training_files_still_resumes(tmp_path):
    # Run directories written before the split kept the training files have no train_paths.json: nothing to check.
    data, split_dir = _saved_folder_split(tmp_path)
    os.remove(os.path.join(split_dir, "train_paths.json"))
    with open(os.path.join(split_dir, "split.json")) as f:
        summary = json.load(f)
    summary["files"].remove("train_paths.json")
    with open(os.path.join(split_dir, "split.json"), "w") as f:
        json.dump(summary, f)
    datasets.check_split(data, split_dir)


def test_resume_refuses_training_or_probe_images_that_changed_under_equal_labels(tmp_path):
    x, y = _arrays()
    data = datasets.from_arrays(x, y, x, y, probe_per_class=1, seed=3)
    split_dir = str(tmp_path / "run" / "split")
    datasets.save_split(data, split_dir)
    datasets.check_split(datasets.from_arrays(x.copy(), y, x, y, probe_per_class=1, seed=3), split_dir)
    for what, index in (("training images", data.train_ids[0]), ("probe images", data.probe_ids[0])):
        changed = x.copy()
        changed[index] = 255 - changed[index]  # one image replaced; every label, id and probe id unchanged
        with pytest.raises(ValueError, match=rf"the {what} differ from the ones the run in \S+/run was trained on "
                                             r"\(their fingerprint in \S+/split/split.json\), while their labels "
                                             r"match.*restore the data the run started with, or use a new run"):
            datasets.check_split(datasets.from_arrays(changed, y, x, y, probe_per_class=1, seed=3), split_dir)


def test_resume_refuses_a_separate_probe_file_that_changed(tmp_path):
    _folder(str(tmp_path / "train"), per_class=4, shape=(4, 4))
    _folder(str(tmp_path / "test"), per_class=1, shape=(4, 4))
    _folder(str(tmp_path / "probe"), per_class=1, shape=(4, 4))
    spec = dataclasses.replace(_folder_spec(tmp_path), probe_dir=str(tmp_path / "probe"))
    data = datasets.load_dataset(spec)
    datasets.save_split(data, str(tmp_path / "split"))
    datasets.check_split(datasets.load_dataset(spec), str(tmp_path / "split"))
    probe_file = sorted((tmp_path / "probe").rglob("*.png"))[0]
    _image(str(probe_file), np.full((4, 4, 3), 77, np.uint8))  # same name, other picture
    with pytest.raises(ValueError, match=r"the probe images differ"):
        datasets.check_split(datasets.load_dataset(spec), str(tmp_path / "split"))
