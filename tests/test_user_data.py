"""The user's own data, found by a user audit: the .npz reader (half a probe set, the names of missing arrays,
class_names), keras.datasets' [N, 1] labels, one-hot numpy labels and float images named with their fix, and the
command line's messages about such data (a probe drawn from the given labels of an array file, the default noise
injected into the user's labels, TensorFlow's INFO log lines). Every file is written here; nothing is trained."""

import logging as python_logging

import numpy as np
import pytest
from absl import logging

from ieg_tf import datasets, main, train
from test_cli_validation import _file_data_flags, _main_exit, _parsed

DataSpec = datasets.DataSpec


def _arrays(n=24, c=3):
    """n uint8 5x5x3 images and int64 labels 0..c-1 in turn."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 5, 5, 3), dtype=np.uint8), (np.arange(n) % c).astype(np.int64)


def _npz(path, **arrays):
    """An .npz for --dataset=arrays of 24 train and 9 test images (_arrays), any array replaced or added by `arrays`
    (None drops it); returns its DataSpec."""
    x, y = _arrays()
    contents = {"train_images": x, "train_labels": y, "test_images": x[:9], "test_labels": y[:9], **arrays}
    np.savez(str(path), **{name: a for name, a in contents.items() if a is not None})
    return DataSpec(dataset="arrays", array_file=str(path), noise_type="none")


def _stop(*args, **kwargs):
    raise ValueError("stopped before training")


# ---------------------------------------------------------------------------------------------- 1: the .npz reader
@pytest.mark.parametrize("given, lacking", [("probe_labels", "probe_images"), ("probe_images", "probe_labels")])
def test_npz_with_half_a_probe_set_is_refused(tmp_path, given, lacking):
    x, y = _arrays()
    half = {"probe_images": x[:6]} if given == "probe_images" else {"probe_labels": y[:6]}
    spec = _npz(tmp_path / "half.npz", **half)
    with pytest.raises(ValueError, match=rf"half.npz holds {given} without {lacking}: a separate probe set needs both"
                                         r" .*; to split the probe off the training set, hold neither$"):
        datasets.load_dataset(spec)
    # The CLI's note on a partly used probe set stays quiet: the labels alone are no probe set.
    assert datasets.given_probe_counts(spec) is None


def test_npz_with_probe_labels_alone_stops_the_cli_with_the_refusal_and_no_probe_note(monkeypatch, capsys,
                                                                                      tmp_path):
    x, y = _arrays()
    spec = _npz(tmp_path / "half.npz", probe_labels=np.repeat(y[:3], 3))  # 3 per class: the note would fire
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path / 'run'}", "--dataset=arrays",
                              f"--array_file={spec.array_file}", "--noise_type=uniform",
                              run=lambda *a, data_spec, **k: datasets.load_dataset(data_spec))
    assert code == 2 and "holds probe_labels without probe_images" in err and "note:" not in err, err


def test_npz_missing_arrays_error_lists_the_files_arrays_and_the_expected_names(tmp_path):
    x, y = _arrays()
    np.savez(str(tmp_path / "keras.npz"), x_train=x, y_train=y, x_test=x[:9], y_test=y[:9])
    spec = DataSpec(dataset="arrays", array_file=str(tmp_path / "keras.npz"))
    with pytest.raises(ValueError) as error:
        datasets.load_dataset(spec)
    message = str(error.value)
    assert ("keras.npz lacks arrays ['train_images', 'train_labels', 'test_images', 'test_labels'] (it holds "
            "['x_test', 'x_train', 'y_test', 'y_train']); save the data under the names train_images, train_labels, "
            "test_images, test_labels (optionally probe_images, probe_labels, class_names), e.g. np.savez(path, "
            "train_images=x_train, train_labels=y_train, test_images=x_test, test_labels=y_test)") in message, message


@pytest.mark.parametrize("names", [np.array(["cat", "dog", "fox"]), np.array([b"cat", b"dog", b"fox"])])
def test_npz_class_names_reach_the_data(tmp_path, names):
    data = datasets.load_dataset(_npz(tmp_path / "named.npz", class_names=names))
    assert data.class_names == ["cat", "dog", "fox"] and all(type(n) is str for n in data.class_names)
    assert datasets.load_dataset(_npz(tmp_path / "plain.npz")).class_names is None


def test_npz_class_names_are_checked_one_str_per_class(tmp_path):
    with pytest.raises(ValueError, match=r"short.npz: class_names has 2 names but there are 3 classes; give one name "
                                         r"per class id 0..2, or class_names=None \(leave the class_names array out of "
                                         r"the file\); the class count was taken as max\(train_labels\)\+1$"):
        datasets.load_dataset(_npz(tmp_path / "short.npz", class_names=np.array(["cat", "dog"])))
    with pytest.raises(ValueError, match=r"ids.npz: class_names must be a list of str, one per class id; got 0 "
                                         r"\(int\)"):
        datasets.load_dataset(_npz(tmp_path / "ids.npz", class_names=np.arange(3)))
    with pytest.raises(ValueError, match=r"objects.npz: array 'class_names' cannot be read \(.*\); save it as a "
                                         r"numeric or str array, e.g. np.asarray\(names, dtype=str\)"):
        datasets.load_dataset(_npz(tmp_path / "objects.npz", class_names=np.array(["cat", "dog", 2], object)))


# ---------------------------------------------------------------------------------------------- 2: labels and images
def test_column_labels_as_keras_datasets_return_them_are_class_ids(tmp_path):
    x, y = _arrays()
    column = y[:, None].astype(np.uint8)  # keras.datasets.cifar10.load_data(): uint8 [N, 1]
    data = datasets.from_arrays(x, column, x[:9], column[:9], probe_images=x[:6], probe_labels=column[:6])
    flat = datasets.from_arrays(x, y, x[:9], y[:9], probe_images=x[:6], probe_labels=y[:6])
    for field in ("train_labels", "test_labels", "probe_labels"):
        assert np.array_equal(getattr(data, field), getattr(flat, field)) and getattr(data, field).ndim == 1
    noisy = datasets.from_arrays(x, column, x[:9], column[:9], true_labels=column, probe_per_class=1)
    assert np.array_equal(noisy.train_true_labels, y[noisy.train_ids])
    spec = _npz(tmp_path / "column.npz", train_labels=column, test_labels=column[:9], probe_images=x[:6],
                probe_labels=column[:6])
    assert np.array_equal(datasets.load_dataset(spec).test_labels, y[:9])


def test_one_hot_numpy_labels_are_named_with_the_argmax(tmp_path):
    x, y = _arrays()
    one_hot = np.eye(3, dtype=np.float32)[y]
    fix = r"labels of shape \(24, 3\) look one-hot \(or multi-label\); give one integer class id per example, e.g. " \
          r"np.argmax\(labels, axis=-1\)$"
    with pytest.raises(ValueError, match="train_labels: " + fix):
        datasets.from_arrays(x, one_hot, x[:9], y[:9])
    with pytest.raises(ValueError, match="onehot.npz train_labels: " + fix):
        datasets.load_dataset(_npz(tmp_path / "onehot.npz", train_labels=one_hot))
    soft = np.full((24, 3), 1 / 3, np.float32)  # soft labels: named as one-hot, not as a dtype problem
    with pytest.raises(ValueError, match="train_labels: " + fix):
        datasets.from_arrays(x, soft, x[:9], y[:9])
    with pytest.raises(ValueError, match=r"labels must be one id per example \(1-D\), got shape \(24, 1, 1\)"):
        datasets.from_arrays(x, y[:, None, None], x[:9], y[:9])


def test_float_and_wide_integer_images_are_refused_with_the_conversion_for_their_range():
    x, y = _arrays()
    with pytest.raises(ValueError, match=r"train_images: images must be uint8 0..255, got float32; convert with "
                                         r"np.clip\(np.round\(x \* 255\), 0, 255\).astype\(np.uint8\) for floats in "
                                         r"\[0, 1\], or np.clip\(np.round\(x\), 0, 255\).astype\(np.uint8\) for "
                                         r"floats in 0..255$"):
        datasets.from_arrays(x.astype(np.float32), y, x[:9], y[:9])
    with pytest.raises(ValueError, match=r"test_images: images must be uint8 0..255, got int64; convert with "
                                         r"x.astype\(np.uint8\) for integers in 0..255"):
        datasets.from_arrays(x, y, x[:9].astype(np.int64), y[:9])


# ---------------------------------------------------------------------------------------------- 3: the command line
@pytest.mark.parametrize("probe_counts, warned", [([], True), ([1, 1], False)])
def test_a_probe_drawn_from_the_labels_of_an_array_file_is_warned_about(monkeypatch, capsys, tmp_path,
                                                                        probe_counts, warned):
    args = _file_data_flags(tmp_path, "arrays", probe_counts)
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path / 'run'}", *args, "--noise_type=none",
                              run=_stop)
    assert code == 2 and ("ieg_tf: warning: the 1 probe image(s) per class are drawn from the given labels "
                          "(--noise_type=none, no probe_images in --array_file) and trusted as clean; for "
                          "web-labelled data add a verified probe set to the file as probe_images and probe_labels"
                          in err) == warned, err
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path / 'run'}", *args, "--noise_type=none",
                              "--method=supervised", run=_stop)
    assert "ieg_tf: warning" not in err, err  # supervised trains without the probe


NOTE = ("ieg_tf: note: 80% uniform label noise is injected into the labels of --dataset={dataset}, which are taken "
        "as clean (the default --noise_type=uniform --noise_ratio=0.8, the paper's benchmark setting); pass "
        "--noise_type=none to train on your labels as given\n")


@pytest.mark.parametrize("data", [["--dataset=folder", "--train_dir=/images"],
                                  ["--dataset=list", "--train_list=train.txt"],
                                  ["--dataset=arrays", "--array_file=data.npz"],
                                  []])  # digits: the benchmark's labels are clean, noise is what it is for
@pytest.mark.parametrize("noise", [[], ["--noise_type=uniform"], ["--noise_ratio=0.8"], ["--noise_type=none"]])
def test_default_noise_on_the_users_own_data_is_noted(monkeypatch, capsys, tmp_path, data, noise):
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", *data, *noise, run=_stop)
    noted = bool(data) and not noise
    dataset = data[0].split("=")[1] if data else "digits"
    assert code == 2 and (NOTE.format(dataset=dataset) in err) == noted and err.count("note:") == noted, err


@pytest.mark.parametrize("given, shown", [([], False), (["--verbosity=0"], True), (["-v", "1"], True)])
def test_info_log_lines_are_hidden_unless_verbosity_is_given(monkeypatch, tmp_path, given, shown):
    seen = []

    def record(*args, **kwargs):  # the level TensorFlow's INFO lines at each checkpoint and export would meet
        seen.append(logging.get_absl_logger().isEnabledFor(python_logging.INFO))
    monkeypatch.setattr(train, "run", record)
    with _parsed(f"--model_dir={tmp_path}", *given):
        if not given:
            logging.set_verbosity(logging.INFO)  # as a CLI run starts under app.run: INFO lines shown
        main.main(["ieg_tf"])
    assert seen == [shown]


def test_num_classes_flag_is_the_fix_the_inferred_class_count_names(tmp_path):
    """One stray label 9 among labels 0..2: the class count is inferred as 10 and classes 3..8 have no examples.
    The error names --num_classes; with --num_classes=3 the stray label itself is named."""
    x, y = _arrays()
    y = y.copy()
    y[5] = 9
    array_file = tmp_path / "d.npz"
    _npz(array_file, train_labels=y)
    flags = ["--dataset=arrays", f"--array_file={array_file}", "--noise_type=none"]
    with _parsed(*flags):
        with pytest.raises(ValueError, match=r"pass --num_classes \(DataSpec.num_classes\)"):
            datasets.load_dataset(main.configs_from_flags()[0])
    with _parsed(*flags, "--num_classes=3"):
        with pytest.raises(ValueError, match="label 9 is out of range"):
            datasets.load_dataset(main.configs_from_flags()[0])
    _npz(array_file)
    with _parsed(*flags, "--num_classes=3"):
        assert datasets.load_dataset(main.configs_from_flags()[0]).num_classes == 3
    with pytest.raises(Exception, match="--num_classes"):  # digits has its own classes: refused while parsing
        with _parsed("--num_classes=3"):
            pass
