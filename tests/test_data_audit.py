"""Data loading as a user audit found it: --download without a network, 16-bit images decoded otherwise than the
exported model decodes them, missing list files reported as unreadable images, a list's byte-order mark and quoted
paths, messages that named the data set "train" for test files, and the small ones (a file given as a folder, a
probe-size error naming the class id alone, a hidden folder taken as a class). Every file is written here; nothing
is downloaded or trained."""

import io
import json
import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ieg_tf import datasets, image_files, sources

DataSpec = datasets.DataSpec
CLASSES = ("cat", "dog")
pytestmark = pytest.mark.filterwarnings("ignore:.*no test split given:UserWarning")  # held-out tests, as meant


def _image(path, array, **save_args):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **save_args)


def _folder(root, per_class=4, size=8):
    """root/<class>/<i>.png: per_class grey size x size images of each class in CLASSES."""
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            _image(os.path.join(root, name, f"{i}.png"), np.full((size, size), 40 * c + 10 * i, np.uint8))
    return str(root)


# ---------------------------------------------------------------------------------------------- 1: --download offline
class _NoTfdsDownload(Exception):
    """Raised by the stand-in for tfds.load: the download was attempted."""


@pytest.fixture
def tfds_loads(monkeypatch):
    """The calls of tfds.load, which stands in for a download that must not start (it would retry for minutes)."""
    import tensorflow_datasets as tfds
    calls = []

    def load(*args, **kwargs):
        calls.append(args)
        raise _NoTfdsDownload("tensorflow-datasets was asked to download")
    monkeypatch.setattr(tfds, "load", load)
    return calls


def _unreachable(*args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_download_without_a_network_fails_fast_with_the_fixes_before_tfds_starts(monkeypatch, tmp_path, tfds_loads):
    monkeypatch.setattr(socket, "create_connection", _unreachable)  # the network boundary: no host resolves
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        sources.read_cifar("cifar10", str(tmp_path), download=True)
    message = str(error.value)
    assert time.monotonic() - start < 15 and not tfds_loads
    assert "\n" not in message and message.startswith("cifar10: cannot download"), message
    for part in ("www.cs.toronto.edu", "Name or service not known", "cifar-10-python.tar.gz", "--data_dir",
                 "tensorflow-datasets"):
        assert part in message, (part, message)


def test_behind_a_proxy_the_download_check_connects_to_the_proxy(monkeypatch, tmp_path, tfds_loads):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    tried = []

    def refuse(address, *args, **kwargs):
        tried.append(address)
        raise ConnectionRefusedError(111, "Connection refused")
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ValueError, match=r"^cifar100: cannot download: the https proxy proxy.example:3128 \(for "
                                         r"www.cs.toronto.edu\) does not answer \(ConnectionRefusedError: "):
        sources.read_cifar("cifar100", str(tmp_path), download=True)
    assert tried == [("proxy.example", 3128)] and not tfds_loads


def test_a_download_that_fails_inside_tfds_is_one_message_and_leaves_no_copy_a_later_run_trusts(monkeypatch,
                                                                                              tmp_path):
    import requests

    class Open:
        def close(self):
            pass
    monkeypatch.setattr(socket, "create_connection", lambda *args, **kwargs: Open())  # the quick check passes

    def refuse(*args, **kwargs):  # the connection fails once tfds fetches the archive
        raise requests.exceptions.ConnectionError("Max retries exceeded with url: /~kriz/cifar-10-binary.tar.gz")
    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)
    with pytest.raises(ValueError) as error:
        sources.read_cifar("cifar10", str(tmp_path), download=True)
    message = str(error.value)
    assert "\n" not in message and message.startswith("cifar10: tensorflow-datasets could not download"), message
    assert "Max retries exceeded" in message and "--data_dir" in message, message
    with pytest.raises(ValueError, match="cifar10 not found"):  # tfds' leftovers are no prepared copy
        sources.read_cifar("cifar10", str(tmp_path), download=False)


def test_a_killed_preparation_is_no_prepared_copy(tmp_path):
    """tfds prepares into <name>/incomplete.XXXXXX_<version> and renames it at the end; one left by a killed run
    is not the data."""
    (tmp_path / "cifar10" / "incomplete.AB12CD_3.0.2").mkdir(parents=True)
    (tmp_path / "cifar10" / "incomplete.AB12CD_3.0.2" / "dataset_info.json").write_text("{}")
    with pytest.raises(ValueError, match="cifar10 not found"):
        sources.read_cifar("cifar10", str(tmp_path), download=False)


# ---------------------------------------------------------------------------------------------- 2: 16-bit pixels
def _served(encoded, channels):
    """The pixels TensorFlow's decoder (the exported model's serving_bytes) gives for an encoded file."""
    return tf.io.decode_image(encoded, channels=channels, expand_animations=False).numpy()


def test_16_bit_png_levels_map_to_8_bit_as_tensorflow_decodes_them(tmp_path):
    levels = np.arange(65536, dtype=np.uint16).reshape(16, 64, 64)  # every 16-bit grey level once, in 16 files
    paths = [str(tmp_path / f"levels{i}.png") for i in range(16)]
    for path, image in zip(paths, levels):
        _image(path, image)
    assert Image.open(paths[0]).mode.startswith("I;16")
    encoded = [open(path, "rb").read() for path in paths]
    np.testing.assert_array_equal(image_files.load_images(paths)[0], [_served(e, 1) for e in encoded])
    _image(str(tmp_path / "rgb.png"), np.zeros((64, 64, 3), np.uint8))
    mixed = image_files.load_images(paths + [str(tmp_path / "rgb.png")])[0][:16]  # decoded as RGB next to colour
    np.testing.assert_array_equal(mixed, [_served(e, 3) for e in encoded])


def test_32_bit_integer_images_map_as_a_16_bit_png_of_their_values_or_are_refused(tmp_path):
    """Mode I (a TIFF here; older Pillows read 16-bit PNGs so) holding 16-bit values gets the mapping of a 16-bit PNG
    of the same values; TensorFlow's decoders read no TIFF, so the served model refuses the file itself, loudly."""
    values = (np.arange(4096) * 16 + np.arange(4096) % 16).astype(np.int32).reshape(64, 64)  # every high, low byte
    path = str(tmp_path / "int.png")
    _image(path, values, format="TIFF")
    assert Image.open(path).mode == "I"
    png = io.BytesIO()
    Image.fromarray(values.astype(np.uint16)).save(png, "PNG")
    np.testing.assert_array_equal(image_files.load_images([path])[0][0], _served(png.getvalue(), 1))
    with pytest.raises(tf.errors.InvalidArgumentError):  # what serving_bytes would do with this file
        _served(open(path, "rb").read(), 1)
    _image(str(tmp_path / "wide.png"), np.array([[-1, 3]], np.int32), format="TIFF")
    with pytest.raises(ValueError, match="wide.png: 32-bit integer pixels .*save the image as 8-bit"):
        image_files.load_images([str(tmp_path / "wide.png")], skip_bad=True)


# ---------------------------------------------------------------------------------------------- 3: list files
def _list_data(tmp_path, lines, name="train.txt"):
    """Images tmp_path/images/train/<class>/<i>.png and the list tmp_path/lists/<name> of `lines`."""
    _folder(tmp_path / "images" / "train")
    (tmp_path / "lists").mkdir(exist_ok=True)
    path = tmp_path / "lists" / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def _lines(quote=""):
    return [f"{quote}train/{name}/{i}.png{quote},{c}" for c, name in enumerate(CLASSES) for i in range(4)]


def test_list_paths_that_do_not_exist_are_named_missing_with_the_image_root_fix(tmp_path):
    train = _list_data(tmp_path, _lines())
    for skip in (False, True):  # no file is there: skipping them would only hide the wrong root
        spec = DataSpec(dataset="list", train_list=train, noise_type="none", skip_bad_images=skip)
        with pytest.raises(ValueError) as error:
            datasets.load_dataset(spec)
        message = str(error.value)
        assert message.startswith("train: 8 of 8 image file(s) do not exist (first: "), message
        assert os.path.join(str(tmp_path), "lists", "train", "cat", "0.png") in message
        assert "--image_root" in message and "skip_bad_images" not in message and "cannot be read" not in message
    spec = DataSpec(dataset="list", train_list=train, noise_type="none", image_root=str(tmp_path / "images"))
    assert len(datasets.load_dataset(spec).test_labels) == 2


def test_a_few_missing_list_files_can_be_skipped_and_are_named_missing(tmp_path):
    train = _list_data(tmp_path, _lines() + ["train/cat/gone.png,0"])
    spec = DataSpec(dataset="list", train_list=train, noise_type="none", image_root=str(tmp_path / "images"))
    with pytest.raises(ValueError, match=r"^train: 1 of 9 image file\(s\) do not exist \(first: .*gone.png\); .*"
                                         r"or pass --skip_bad_images to skip them$"):
        datasets.load_dataset(spec)
    with pytest.warns(UserWarning, match=r"skipped 1 missing image file\(s\) \(train: 1 of 9\); first: .*gone.png"):
        datasets.load_dataset(DataSpec(**{**spec.__dict__, "skip_bad_images": True}))


def test_list_file_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    train = _list_data(tmp_path, _lines())
    text = open(train, encoding="utf-8").read()
    open(train, "w", encoding="utf-8").write("\ufeff" + text)
    paths, labels = image_files.read_list(train, str(tmp_path / "images"))
    assert paths[0] == os.path.join(str(tmp_path / "images"), "train", "cat", "0.png") and len(paths) == 8


@pytest.mark.parametrize("line, path, label", [
    ('"a b.png",1', "a b.png", 1), ('"a b.png" 1', "a b.png", 1), ('"a, b.png","1"', "a, b.png", 1),
    ('"say ""hi"".png",0', 'say "hi".png', 0), ('no "quote".png,1', 'no "quote".png', 1)])
def test_list_file_quoted_paths_are_unquoted(tmp_path, line, path, label):
    (tmp_path / "q.txt").write_text(f'"filename","label"\n{line}\n')
    paths, labels = image_files.read_list(str(tmp_path / "q.txt"), "/r")
    assert paths == [os.path.join("/r", path)] and labels.tolist() == [label]


def test_list_file_with_an_unclosed_quote_names_its_line(tmp_path):
    (tmp_path / "q.txt").write_text('a.png,0\n"b.png,1\n')
    with pytest.raises(ValueError, match=r"q.txt line 2: the quote before the path is not closed"):
        image_files.read_list(str(tmp_path / "q.txt"))


# ---------------------------------------------------------------------------------------------- 4: splits and name
def test_messages_name_the_split_whose_files_are_bad_and_count_per_split(tmp_path):
    train, test = _folder(tmp_path / "mydata" / "train"), _folder(tmp_path / "mydata" / "test")
    (tmp_path / "mydata" / "test" / "dog" / "broken.png").write_bytes(b"\x89PNG garbage")
    spec = DataSpec(dataset="folder", train_dir=train, test_dir=test, noise_type="none")
    with pytest.raises(ValueError, match=r"^test: 1 of 9 image file\(s\) cannot be read as images "
                                         r"\(first: .*broken.png\)"):
        datasets.load_dataset(spec)
    os.remove(tmp_path / "mydata" / "test" / "dog" / "broken.png")
    _image(str(tmp_path / "mydata" / "test" / "dog" / "big.png"), np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match=r"^images have different sizes \(train: 8x8; test: 8x8, 16x16\)"):
        datasets.load_dataset(spec)


def test_folder_data_are_named_by_the_folder_above_a_train_folder_and_old_splits_still_resume(tmp_path):
    train, test = _folder(tmp_path / "mydata" / "train"), _folder(tmp_path / "mydata" / "test")
    spec = DataSpec(dataset="folder", train_dir=train, test_dir=test, noise_type="none")
    data = datasets.load_dataset(spec)
    assert data.name == "mydata"
    assert datasets.load_dataset(DataSpec(dataset="folder", train_dir=test, noise_type="none")).name == "test"
    split = tmp_path / "run" / "split"
    datasets.save_split(data, str(split))
    summary = json.loads((split / "split.json").read_text())
    (split / "split.json").write_text(json.dumps({**summary, "dataset": "train"}))  # as runs before saved it
    datasets.check_split(data, str(split))
    os.rename(tmp_path / "mydata" / "train", tmp_path / "mydata" / "train_v2")  # the same files, renamed
    datasets.check_split(datasets.load_dataset(DataSpec(**{**spec.__dict__, "train_dir": train + "_v2"})), str(split))


# ---------------------------------------------------------------------------------------------- 5: small ones
def test_a_file_given_as_the_train_folder_is_named_a_file(tmp_path):
    (tmp_path / "train.txt").write_text("a.png,0\n")
    with pytest.raises(ValueError, match=r"train.txt' is a file, not a folder; .*--dataset=list"):
        image_files.read_folder(str(tmp_path / "train.txt"))


def test_probe_size_errors_name_the_class_folder(tmp_path):
    train = _folder(tmp_path / "train", per_class=3)
    spec = DataSpec(dataset="folder", train_dir=train, test_dir=train, noise_type="none", probe_per_class=3)
    with pytest.raises(ValueError, match=r"class 0 \('cat'\) has only 3 training examples"):
        datasets.load_dataset(spec)
    probe = _folder(tmp_path / "probe", per_class=1)
    with pytest.raises(ValueError, match=r"the probe set has 1 images of class 0 \('cat'\)"):
        datasets.load_dataset(DataSpec(**{**spec.__dict__, "probe_dir": probe, "probe_per_class": 2}))


def test_hidden_folders_are_no_classes(tmp_path):
    train = _folder(tmp_path / "train")
    os.makedirs(tmp_path / "train" / ".ipynb_checkpoints")
    _image(str(tmp_path / "train" / ".cache" / "x.png"), np.zeros((8, 8), np.uint8))
    paths, labels, names = image_files.read_folder(train)
    assert names == list(CLASSES) and len(paths) == 8
    assert image_files.read_folder(train, names)[2] == list(CLASSES)  # a test folder with them too
