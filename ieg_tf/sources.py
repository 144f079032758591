"""Readers: archives, npz files and tensors in memory to clean-labelled arrays, before any probe split or noise.

Folders and list files of image files are read by `ieg_tf.image_files`.
"""

import collections.abc
import dataclasses
import glob
import os
import pathlib
import pickle
import socket
import tarfile
import threading
import urllib.parse
import urllib.request
import warnings

import numpy as np

DIGITS_TEST_FRACTION = 1 / 3
SPLIT_SEED = 0                # fixed train/test splits (digits; folder/list sets without a test split)
_DIGITS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "digits.npz")
_TFDS_HOST = "www.cs.toronto.edu"  # where tensorflow-datasets downloads the CIFAR archives from
DOWNLOAD_CHECK_SECONDS = 5.0  # the connection check before a download; tfds itself retries for minutes
_CIFAR = {  # name: (archive, extracted folder, train members, test member, meta member, label key, names key)
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                "test_batch", "batches.meta", b"labels", b"label_names"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], "test", "meta", b"fine_labels",
                 b"fine_label_names"),
}


@dataclasses.dataclass
class RawData:
    """A data set as read: clean labels, no probe split, no noise."""
    name: str
    num_classes: int
    class_names: list | None
    image_shape: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    augment_kind: str
    probe_images: np.ndarray | None = None  # a separate trusted set (e.g. ImageNet probe for WebVision)
    probe_labels: np.ndarray | None = None
    num_classes_fix: str | None = None  # set when num_classes was taken as max(label) + 1: how to give it instead
    train_paths: np.ndarray | None = None  # image-file data: the file of each training image (report rows)


def check_class_names(names, num_classes, where="", fix=""):
    """`names` as a list, after checking it holds one str per class id (None passes as None).

    A list of another length would be cut short in test_confusion.csv, which then cannot be read back; a name of
    another type fails the SavedModel export (its `class_names` output). `where` prefixes the messages (e.g. the
    data set's name) and `fix` ends the count message.
    """
    if names is None:
        return None
    if isinstance(names, (str, bytes)) or not isinstance(names, collections.abc.Iterable):
        bad = [names]
    else:
        names = list(names)
        bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"{where}class_names must be a list of str, one per class id; got {bad[0]!r} "
                         f"({type(bad[0]).__name__}). Pass e.g. [str(n) for n in names]")
    if len(names) != num_classes:
        raise ValueError(f"{where}class_names has {len(names)} names but there are {num_classes} classes; give one "
                         f"name per class id 0..{num_classes - 1}, or class_names=None{fix}")
    return names


def check_labels(labels, what, num_classes=None):
    """Returns `labels` as int32 [N] after checking they are integers in [0, num_classes).

    Labels [N, 1] (a column, as keras.datasets' load_data returns them) are taken as [N]; labels [N, C] with C > 1
    are refused as one-hot, with the argmax that converts them.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(f"{what}: labels of shape {labels.shape} look one-hot (or multi-label); give one integer "
                         "class id per example, e.g. np.argmax(labels, axis=-1)")
    if labels.ndim != 1:
        raise ValueError(f"{what}: labels must be one id per example (1-D), got shape {labels.shape}")
    if labels.dtype.kind not in "iuf" or (labels.dtype.kind == "f" and not np.all(np.mod(labels, 1) == 0)):
        raise ValueError(f"{what}: labels must be integers (class ids), got dtype {labels.dtype}")
    bad = (labels < 0) | (labels >= num_classes if num_classes is not None else False)
    if np.any(bad):
        raise ValueError(f"{what}: label {labels[bad][0]} is out of range; class ids must be 0.."
                         f"{'C-1' if num_classes is None else num_classes - 1}")
    return labels.astype(np.int32)


def check_images(images, what):
    """Returns uint8 [N, H, W, C] images (a missing channel axis is added) or raises ValueError."""
    images = np.asarray(images)
    if images.dtype.kind == "f":
        raise ValueError(f"{what}: images must be uint8 0..255, got {images.dtype}; convert with "
                         "np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for floats in [0, 1], or "
                         "np.clip(np.round(x), 0, 255).astype(np.uint8) for floats in 0..255")
    if images.dtype != np.uint8:
        raise ValueError(f"{what}: images must be uint8 0..255, got {images.dtype}; convert with "
                         "x.astype(np.uint8) for integers in 0..255 (rescale wider ranges first, e.g. x // 257 for "
                         "16-bit values)")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"{what}: images must be [N, H, W, C], got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        first = images.shape[1] in (1, 3)
        hint = "; they look channels-first: np.transpose(images, (0, 2, 3, 1)) fixes that" if first else ""
        raise ValueError(f"{what}: images must be [N, H, W, C] channels-last with C = 1 or 3, got shape "
                         f"{images.shape}{hint}")
    return images


def check_examples(images, labels, what, source=None):
    """(uint8 images [N, H, W, C], int32 labels [N]) of the `what` split ("train", "test", "probe") after
    `check_images`, `check_labels` and a check that there is one label per image; source names the file, if any."""
    name = f"{source} {what}" if source else what
    images = check_images(images, f"{name}_images")
    labels = check_labels(labels, f"{name}_labels")
    if len(labels) != len(images):
        raise ValueError(f"{name}_labels has {len(labels)} entries for {len(images)} {what}_images")
    return images, labels


def stratified_split(labels, fraction, rng):
    """Splits indices per class: (rest, held), round(fraction * n_c) of each class held; at least 1 held, and
    for fraction < 1 at least 1 left (so a held-out test split never empties a class)."""
    rest, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = max(1, int(round(len(idx) * fraction)))
        n = min(n, len(idx) - 1) if fraction < 1 else n
        held.append(idx[:n])
        rest.append(idx[n:])
    return np.sort(np.concatenate(rest)), np.sort(np.concatenate(held))


def read_digits(data_dir=None):
    """The embedded UCI digits (data/digits.npz): 8x8x1 uint8 rescaled 0..16 -> 0..255, fixed 2:1 split.

    The train/test split uses the constant SPLIT_SEED, not the run's seed, so runs that differ only in their
    noise seed are scored on the same test images.
    """
    path = os.path.join(data_dir, "digits.npz") if data_dir else _DIGITS_PATH
    if not os.path.exists(path):
        raise ValueError(f"digits data not found at {path}; it ships as data/digits.npz in the repository")
    with np.load(path) as f:
        images = np.rint(f["images"].astype(np.float64) * 255.0 / 16.0).astype(np.uint8)[..., None]
        labels = check_labels(f["labels"], path, 10)
    train, test = stratified_split(labels, DIGITS_TEST_FRACTION, np.random.default_rng(SPLIT_SEED))
    return RawData("digits", 10, [str(d) for d in range(10)], (8, 8, 1), images[train], labels[train],
                   images[test], labels[test], "small")


def read_cifar(name, data_dir=None, download=False):
    """CIFAR-10/100: the Toronto python archive (or its extracted folder) in data_dir, else tensorflow-datasets.

    Args:
      name: "cifar10" or "cifar100".
      data_dir: folder holding cifar-10-python.tar.gz / cifar-100-python.tar.gz (or the extracted
        cifar-10-batches-py / cifar-100-python folder), or a tfds data directory; None = tfds' default.
      download: let tensorflow-datasets download and prepare the data. Without it, a missing copy fails at once.

    Returns:
      RawData with the training images in archive order (the order CIFAR-10N style label files index).
    """
    archive, folder = _CIFAR[name][:2]
    for candidate in [os.path.join(data_dir, archive), os.path.join(data_dir, folder)] if data_dir else []:
        if os.path.exists(candidate):
            return read_cifar_archive(candidate, name)
    return read_cifar_tfds(name, data_dir, download)


def read_cifar_archive(path, name):
    """Reads cifar-10-python.tar.gz / cifar-100-python.tar.gz (or the extracted folder) without tfds."""
    _, _, train_members, test_member, meta_member, label_key, names_key = _CIFAR[name]
    wanted = train_members + [test_member, meta_member]
    if os.path.isdir(path):
        contents = {m: pathlib.Path(path, m).read_bytes() for m in wanted if os.path.exists(os.path.join(path, m))}
    else:
        try:
            with tarfile.open(path, "r:gz") as tar:
                contents = {os.path.basename(m.name): tar.extractfile(m).read() for m in tar.getmembers()
                            if m.isfile() and os.path.basename(m.name) in wanted}
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ValueError(f"{path} is not a readable .tar.gz archive ({e}); download it again") from None
    missing = [m for m in wanted if m not in contents]
    if missing:
        raise ValueError(f"{path} is not a complete {name} python archive: missing {missing}")

    def load(member):  # the Toronto release is Python-2 pickles of numpy arrays and lists
        try:
            return pickle.loads(contents[member], encoding="bytes")
        except Exception as e:  # pickle raises many types on corrupt input
            raise ValueError(f"{path}: member {member} is not a CIFAR python pickle ({e!r})") from None

    def split(members):
        batches = [load(m) for m in members]
        images = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
        return images.astype(np.uint8), check_labels(labels, path, 100 if name == "cifar100" else 10)
    (train_x, train_y), (test_x, test_y) = split(train_members), split([test_member])
    class_names = [n.decode() for n in load(meta_member)[names_key]]
    return RawData(name, len(class_names), class_names, (32, 32, 3), train_x, train_y, test_x, test_y, "cifar")


def read_cifar_tfds(name, data_dir=None, download=False):
    """CIFAR via tensorflow-datasets.

    With download=False the prepared copy (<data_dir>/<name>/<version>/dataset_info.json) is looked for first,
    so a missing copy fails at once with a ValueError that says how to provide the data, instead of reaching
    tfds' network code. With download=True and no prepared copy, a connection to the download host is tried first
    (DOWNLOAD_CHECK_SECONDS): offline, tfds would retry for minutes and end in a long traceback. Any failure of
    the download or preparation is one ValueError with its cause and the offline fixes. tfds prepares into a
    temporary <name>/incomplete.XXXXXX_<version> folder that it renames when done and deletes on failure, and keeps
    partial downloads as *.tmp.* files under downloads/; neither counts as a prepared copy (here or for tfds).
    """
    root = data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")
    prepared = [p for p in glob.glob(os.path.join(root, name, "*", "dataset_info.json"))
                if not os.path.basename(os.path.dirname(p)).startswith("incomplete.")]  # a killed preparation
    archive = _CIFAR[name][0]
    if not download and not prepared:
        raise ValueError(
            f"{name} not found: no {archive} (or extracted {_CIFAR[name][1]}/) in data_dir={data_dir} and no "
            f"prepared tensorflow-datasets copy under {os.path.join(root, name)}. Fix: put {archive} from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html into --data_dir, point --data_dir at a prepared tfds "
            "directory, or pass --download on a machine with internet access.")
    offline_fix = (f"connect this machine to the internet, or put {archive} from "
                   f"https://www.cs.toronto.edu/~kriz/cifar.html into --data_dir (read without tensorflow-datasets), "
                   f"or point --data_dir at a tensorflow-datasets directory holding {name}/<version>/"
                   "dataset_info.json prepared with --download on a machine with internet access")
    if download and not prepared:
        host, port, what = _download_route(_TFDS_HOST)
        problem = _unreachable(host, port, DOWNLOAD_CHECK_SECONDS)
        if problem:
            raise ValueError(f"{name}: cannot download: {what} does not answer ({problem}); {offline_fix}")
    import tensorflow_datasets as tfds
    try:
        (train, test), info = tfds.load(name, split=["train", "test"], data_dir=root, download=download,
                                        with_info=True)
    except AssertionError as e:  # tfds' "could not find data in ..."
        raise ValueError(f"{name}: tensorflow-datasets could not load {root} ({e}); prepare it again with "
                         "--download or put the python archive into --data_dir") from None
    except Exception as e:  # requests', tfds' download, checksum and extraction errors: no traceback from tfds
        if not download:
            raise
        raise ValueError(f"{name}: tensorflow-datasets could not download and prepare it in {root} "
                         f"({_one_line(e)}); {offline_fix}") from None
    train, test = _tfds_arrays(train), _tfds_arrays(test)
    class_names = list(info.features["label"].names)
    c = len(class_names)
    order = _original_order(train["id"])
    return RawData(name, c, class_names, tuple(train["image"].shape[1:]), train["image"][order],
                   check_labels(train["label"][order], name, c), test["image"],
                   check_labels(test["label"], name, c), "cifar")


def _download_route(host):
    """(host, port, its name for messages) that an HTTPS download from `host` connects to: the https proxy of the
    environment (HTTPS_PROXY, which tfds' requests use too) unless NO_PROXY exempts the host, else the host."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return host, 443, host
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port, f"the https proxy {parts.hostname}:{port} (for {host})"


def _unreachable(host, port, seconds):
    """None when a TCP connection to host:port opens within `seconds`, else why not, in one line.

    The connection is opened in a daemon thread that is waited for `seconds` at most: a name lookup has no timeout
    of its own and can hang far longer than that on a machine without a network.
    """
    outcome = []

    def connect():
        try:
            socket.create_connection((host, port), timeout=seconds).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(_one_line(e))
    thread = threading.Thread(target=connect, name=f"connect to {host}", daemon=True)
    thread.start()
    thread.join(seconds)
    return outcome[0] if outcome else f"no connection within {seconds:g} s"


def _one_line(error, limit=300):
    """`error` as 'Type: message' on one line, cut to `limit` characters."""
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _tfds_arrays(ds):
    """A tfds split as a dict of numpy arrays (batched reads: tfds' batch_size=-1 needs exact split sizes)."""
    import tensorflow_datasets as tfds
    batches = list(tfds.as_numpy(ds.batch(4096)))
    return {key: np.concatenate([b[key] for b in batches]) for key in ("image", "label", "id")}


def _original_order(ids):
    """tfds stores CIFAR shuffled; its ids ('train_16399') restore the archive order that noise files index."""
    try:
        index = np.array([int(i.decode().rsplit("_", 1)[1]) for i in ids])
    except (ValueError, IndexError):
        index = None
    if index is None or not np.array_equal(np.sort(index), np.arange(len(ids))):
        warnings.warn("tfds ids do not name archive positions; keeping tfds order (label files must follow it)")
        return np.arange(len(ids))
    return np.argsort(index)


NPZ_REQUIRED = ("train_images", "train_labels", "test_images", "test_labels")
NPZ_OPTIONAL = ("probe_images", "probe_labels", "class_names")


def read_npz(path, num_classes=None):
    """An .npz with train_images, train_labels, test_images, test_labels [, probe_images, probe_labels]
    [, class_names].

    Labels are int [N] (or [N, 1]); probe_images and probe_labels come together or not at all; class_names holds
    one str per class id (np.savez stores a list of str as a str array). num_classes=None takes max(training
    label) + 1.
    """
    if not path or not os.path.exists(path):
        raise ValueError(f"arrays data set: file {path!r} not found; pass --array_file=data.npz")
    with np.load(path) as f:
        arrays = {k: _npz_array(f, k, path) for k in f.files}
    missing = [k for k in NPZ_REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks arrays {missing} (it holds {sorted(arrays)}); save the data under the names "
                         f"{', '.join(NPZ_REQUIRED)} (optionally {', '.join(NPZ_OPTIONAL)}), e.g. np.savez(path, "
                         "train_images=x_train, train_labels=y_train, test_images=x_test, test_labels=y_test)")
    probe = [k for k in ("probe_images", "probe_labels") if k in arrays]
    if len(probe) == 1:
        other = "probe_labels" if probe == ["probe_images"] else "probe_images"
        raise ValueError(f"{path} holds {probe[0]} without {other}: a separate probe set needs both (then the probe "
                         "is taken from them); to split the probe off the training set, hold neither")
    split = {what: check_examples(arrays[f"{what}_images"], arrays[f"{what}_labels"], what, path)
             for what in ("train", "test", "probe") if f"{what}_images" in arrays}
    train_x, train_y = split["train"]
    c = num_classes or int(train_y.max(initial=0)) + 1
    names = arrays.get("class_names")
    if names is not None:
        names = (np.char.decode(names, "utf-8") if names.dtype.kind == "S" else names).tolist()
        inferred = "" if num_classes else "; the class count was taken as max(train_labels)+1"
        names = check_class_names(names, c, f"{path}: ", f" (leave the class_names array out of the file){inferred}")
    return RawData(os.path.splitext(os.path.basename(path))[0], c, names, train_x.shape[1:], train_x, train_y,
                   *split["test"], augment_kind_for(train_x.shape[1]), *split.get("probe", (None, None)),
                   None if num_classes else "pass --num_classes (DataSpec.num_classes)")


def _npz_array(npz, key, path):
    """npz[key], with an object array (which np.load does not unpickle) refused with the fix."""
    try:
        return npz[key]
    except ValueError as e:  # "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(f"{path}: array {key!r} cannot be read ({e}); save it as a numeric or str array, e.g. "
                         "np.asarray(names, dtype=str) for class_names") from None


def dataset_to_arrays(ds):
    """Collects a tf.data.Dataset of (image, label) pairs or {'image', 'label'} dicts into numpy arrays.

    Returns:
      (uint8 images [N, H, W, C], int32 labels [N]); batched and unbatched data sets are both accepted.

    Raises:
      ValueError: an empty data set, images of different shapes, or labels that are not one integer class id per
        image (one-hot labels are named as such, with the map that converts them).
    """
    images, labels = [], []
    for number, element in enumerate(ds.as_numpy_iterator()):
        image, label = (element["image"], element["label"]) if isinstance(element, dict) else element
        image = np.asarray(image)
        labels.append(_class_ids(np.asarray(label), image, number))
        images.append(image)
    if not images:
        raise ValueError("the tf.data.Dataset is empty")
    batched = images[0].ndim == 4
    shapes = sorted({im.shape[1:] if batched else im.shape for im in images})
    if len(shapes) > 1:
        raise ValueError(f"tf.data.Dataset: images have different shapes {shapes[:3]}; resize them to one size "
                         "(e.g. tf.image.resize in a map) first")
    images = np.concatenate(images) if batched else np.stack(images)
    return check_images(images, "tf.data.Dataset"), check_labels(np.concatenate(labels), "tf.data.Dataset")


def _class_ids(label, image, number):
    """The label(s) of one data set element as int ids [1] (an unbatched element, image [H, W(, C)]) or [B] (a batch,
    images [B, H, W, C]). Anything else is refused here: concatenated, a one-hot label [C] would pass for C labels
    and surface later as a confusing count mismatch."""
    batched = image.ndim == 4
    if batched and label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    elif not batched and label.shape == (1,):
        label = label[0]
    if label.ndim == (1 if batched else 0) and (not batched or len(label) == len(image)):
        return np.atleast_1d(label)
    what = f"tf.data.Dataset element {number}: label shape {label.shape} for image shape {image.shape}"
    if label.ndim == (2 if batched else 1) and label.shape[-1] > 1 and (not batched or len(label) == len(image)):
        raise ValueError(f"{what}: the labels look one-hot (or multi-label); give one integer class id per image, "
                         "e.g. ds.map(lambda image, label: (image, tf.argmax(label, axis=-1)))")
    raise ValueError(f"{what}: give one integer class id per image (a scalar label per image, or labels [B] with "
                     "images [B, H, W, C] in a batched data set)")


def read_label_file(path):
    """Labels from .npy or .csv/.txt (one integer per line; a header line and leading columns are ignored)."""
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise ValueError(f"label file {path} not found")
    if ext == ".npy":
        return check_labels(np.load(path, allow_pickle=False), path)
    if ext not in (".csv", ".txt"):
        raise ValueError(f"label file {path}: use .npy or .csv (one label per original training example)")
    with open(path) as f:
        rows = [line.strip().replace(",", " ").split() for line in f if line.strip()]
    if rows and not rows[0][-1].lstrip("-").isdigit():
        rows = rows[1:]  # header
    try:
        return check_labels(np.array([int(r[-1]) for r in rows], np.int64), path)
    except ValueError as e:
        raise ValueError(f"label file {path}: every line must end with an integer label ({e})") from None


def augment_kind_for(height):
    """The ieg_tf.augment kind for in-memory images of this height: "small" up to 16 px, else "cifar"."""
    return "small" if height <= 16 else "cifar"
