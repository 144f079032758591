"""Noisy-label data sets: read clean data, hold out the probe set, then inject label noise (SPEC 3).

The order is the reference's: the probe is drawn per class from the CLEAN labels and removed from the training
set before any noise touches the remaining labels. Every random choice is seeded by DataSpec.seed, and
`save_split` writes the outcome so a run can be audited and a resumed run can check it sees the same split.
"""

import dataclasses
import hashlib
import json
import os
import re

import numpy as np

from ieg_tf import image_files, noise, sources

DATASETS = ("digits", "cifar10", "cifar100", "folder", "list", "arrays")
_BENCHMARKS = ("digits", "cifar10", "cifar100")  # their given labels are clean
_SPLIT_ARRAYS = ("noisy_labels", "true_labels", "train_ids", "probe_ids", "probe_labels")
_PATHS_FILE = "train_paths.json"  # image-file data: the training files in id order
# A train folder / list named only by its split (train, training, train_v2, train_set): the folder above names the data.
_SPLIT_NAME = re.compile(r"(train|training)([-_. ]?(set|data|images|files|list|split|v?\d+))?", re.IGNORECASE)
_FILE_ORDER = ("; for image files the labels follow the training files, folder data by sorted class folder then "
               "sorted file name, list data by line, without files skipped by --skip_bad_images")


@dataclasses.dataclass
class NoisyData:
    """Training set with noisy labels, trusted probe set and clean test set.

    Images are uint8 [N, H, W, C] arrays, or str [N] file paths for large-image sets (augment_kind "imagenet",
    image_shape is then the crop size). train_ids / probe_ids index the ORIGINAL training set (before the probe
    split); probe_ids are -1 for a probe given separately. The probe arrays are in class-interleaved order
    (SPEC 3.7). train_true_labels is None when the clean labels are unknown (user data whose given labels are
    the noisy ones); noise_rate_realized is then None too. For semantic and file noise, which have no requested
    rate, noise_ratio is the realised rate. train_paths holds the image file of each training example for folder /
    list data (decoded or not), so a report row can name its file; None for data that did not come from files.
    """
    name: str
    num_classes: int
    class_names: list | None
    image_shape: tuple
    train_images: np.ndarray
    train_labels: np.ndarray
    train_true_labels: np.ndarray | None
    train_ids: np.ndarray
    probe_images: np.ndarray
    probe_labels: np.ndarray
    probe_ids: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    noise_type: str
    noise_ratio: float
    noise_rate_realized: float | None
    augment_kind: str
    train_paths: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What to load and how to corrupt it. Built from flags by the CLI; library code reads only this."""
    dataset: str = "digits"            # digits | cifar10 | cifar100 | folder | list | arrays
    data_dir: str | None = None        # digits.npz / CIFAR archives / tfds directory
    download: bool = False             # let tensorflow-datasets download CIFAR
    probe_per_class: int | None = 1    # None: every image of a separately given probe set
    noise_type: str = "uniform"        # uniform | flip | asymmetric | semantic | file | none
    noise_ratio: float = 0.8
    noise_file: str | None = None      # .npy or .csv, one label per ORIGINAL training example (CIFAR-10N style);
    #                                    folder: sorted class folders, then sorted file names; list: line order
    seed: int = 12345
    train_dir: str | None = None       # folder: train_dir/<class_name>/*.png|jpg
    test_dir: str | None = None
    probe_dir: str | None = None       # folder / list: a separate trusted probe set (WebVision's ImageNet probe)
    train_list: str | None = None      # list: lines 'relative/path.jpg,label' under image_root
    test_list: str | None = None
    probe_list: str | None = None
    image_root: str | None = None
    image_size: int | None = None      # <= 64: decode and resize at load; larger: Inception crops from files
    num_classes: int | None = None     # list / arrays: number of classes when not every id has a label
    skip_bad_images: bool = False      # folder / list: skip unreadable files instead of failing
    array_file: str | None = None      # arrays: .npz with train/test images and labels [, probe, class_names]
    semantic_fraction: float = 0.1     # semantic: share of the clean train set the labelling network sees
    semantic_epochs: int = 10
    semantic_network: str | None = None  # semantic: ieg_tf.networks name; None = small_cnn (8x8) / resnet29


def load_dataset(spec):
    """Reads `spec.dataset`, splits off the probe set and injects the requested noise.

    The labels of digits and CIFAR are clean. Those of folder / list / arrays data are taken as clean when noise
    is injected (uniform, flip, asymmetric, semantic, file) and as the given noisy labels with noise_type "none"
    (true labels unknown).

    Args:
      spec: DataSpec.

    Returns:
      NoisyData.

    Raises:
      ValueError: unknown data set or noise type, ratio outside [0, 1], missing or malformed data (images and
        labels of different lengths, channels-first images, splits whose images differ in shape, an empty training
        set, an array file with probe_labels but no probe_images or the reverse), a class with fewer than
        probe_per_class + 1 training images, class names not one per class, a noise file of the wrong length, or a
        noise file on folder / list data without a separate test split.
    """
    _check_noise(spec.noise_type, spec.noise_ratio)
    _check_noise_file_split(spec)
    raw = _read(spec)
    return _build(raw, spec, raw.train_labels, raw.train_labels,
                  spec.noise_type != "none" or spec.dataset in _BENCHMARKS)


def from_arrays(train_images, train_labels=None, test_images=None, test_labels=None, *, probe_images=None,
                probe_labels=None, probe_per_class=None, true_labels=None, noise_type="none", noise_ratio=0.0,
                num_classes=None, class_names=None, name="arrays", seed=12345):
    """NoisyData from numpy arrays or tf.data.Datasets (the Python API).

    Each image argument may be a uint8 array ([N, H, W, C] or [N, H, W]) with its labels (int [N], or [N, 1] as
    keras.datasets' load_data returns them) in the matching `*_labels` argument, or a tf.data.Dataset of (image,
    label) pairs or {"image", "label"} dicts with the `*_labels` argument left None.

    Args:
      train_images, train_labels: the training set. With noise_type "none" the labels are used as given (already
        noisy); otherwise they are the clean labels and noise is injected.
      test_images, test_labels: the clean evaluation set.
      probe_images, probe_labels: a separate trusted set. Without it the probe is split off the training set, per
        class, from `true_labels` if given, else from `train_labels` (which must then be trusted).
      probe_per_class: probe images per class; None = every given probe image, or 1 when split off.
      true_labels: int [N] clean labels of given noisy labels (monitoring and the probe split); only with
        noise_type "none".
      noise_type, noise_ratio: noise to inject, as in DataSpec ("asymmetric" needs a `name` with a mapping).
      num_classes: C; default max label + 1.
      class_names: optional list of C names.
      name: data set name (reports; selects the asymmetric mapping).
      seed: seeds the probe split and the noise.

    Returns:
      NoisyData.

    Raises:
      ValueError: malformed arrays (e.g. channels-first), mismatched lengths, splits whose images differ in shape,
        labels out of range, labels that are not one class id per image (e.g. one-hot), float images,
        probe_labels without probe_images, class_names not one per class, or a bad noise request.
    """
    _check_noise(noise_type, noise_ratio)
    if probe_labels is not None and probe_images is None:
        raise ValueError("probe_labels given without probe_images: a separate probe set needs both (then the probe "
                         "is taken from them); to split the probe off the training set, pass neither")
    if noise_type == "file":
        raise ValueError("noise_type='file' is for load_dataset; with arrays pass the noisy labels as train_labels, "
                         "the clean ones as true_labels and noise_type='none'")
    if true_labels is not None and noise_type != "none":
        raise ValueError("true_labels go with given noisy labels (noise_type='none'); to inject noise pass the clean "
                         "labels as train_labels")
    train_images, given = _arrays(train_images, train_labels, "train")
    test_images, test_y = _arrays(test_images, test_labels, "test")
    probe = None if probe_images is None else _arrays(probe_images, probe_labels, "probe")
    for what, labels in (("train_labels", given), ("true_labels", true_labels)):
        if labels is not None and len(labels) != len(train_images):
            raise ValueError(f"{what} has {len(labels)} entries for {len(train_images)} training images")
    clean = None if true_labels is None else sources.check_labels(true_labels, "true_labels")
    inferred = num_classes is None
    if inferred:
        label_sets = (given, clean, test_y, None if probe is None else probe[1])
        num_classes = int(max(np.max(y, initial=-1) for y in label_sets if y is not None)) + 1
    if class_names is not None and not isinstance(class_names, (str, bytes)):
        class_names = [str(n) if isinstance(n, np.str_) else n for n in class_names]  # a numpy array: plain strs
    raw = sources.RawData(name, int(num_classes), class_names, train_images.shape[1:], train_images, given,
                          test_images, test_y, sources.augment_kind_for(train_images.shape[1]),
                          *(probe if probe is not None else (None, None)),
                          num_classes_fix="pass num_classes to from_arrays" if inferred else None)
    if probe_per_class is None and probe is None:
        probe_per_class = 1
    spec = DataSpec(dataset=name, probe_per_class=probe_per_class, noise_type=noise_type, noise_ratio=noise_ratio,
                    seed=seed)
    trusted = given if clean is None else clean
    return _build(raw, spec, given, trusted, noise_type != "none" or clean is not None)


def save_split(data, directory):
    """Writes the split for auditing: noisy_labels, train_ids, probe_ids, probe_labels, true_labels (when known) as
    .npy files; for image-file data train_paths.json, the file of each training example in id order (a JSON list,
    one path per line: a quarter of a fixed-width .npy string array's size, and any file name survives); and
    split.json with the sizes, class names, noise (requested and realised) and the fingerprints of the training and
    probe images."""
    os.makedirs(directory, exist_ok=True)
    arrays = {name: values for name, values in _split_arrays(data).items() if values is not None}
    paths = arrays.pop("train_paths", None)
    for name, values in arrays.items():
        np.save(os.path.join(directory, f"{name}.npy"), values)
    files = [f"{name}.npy" for name in arrays]
    if paths is not None:
        with open(os.path.join(directory, _PATHS_FILE), "w", encoding="utf-8") as f:
            json.dump(paths.tolist(), f, indent=0, ensure_ascii=False)
        files.append(_PATHS_FILE)
    summary = {**_summary(data), "files": sorted(files), "fingerprints": _fingerprints(data)}
    with open(os.path.join(directory, "split.json"), "w") as f:
        json.dump(summary, f, indent=2)


def load_split(directory):
    """Reads what `save_split` wrote: a dict of the split.json entries plus the saved arrays by name."""
    path = os.path.join(directory, "split.json")
    if not os.path.exists(path):
        raise ValueError(f"no saved split in {directory} (split.json missing)")
    with open(path) as f:
        split = json.load(f)
    for name in _SPLIT_ARRAYS:
        if f"{name}.npy" in split["files"]:
            split[name] = np.load(os.path.join(directory, f"{name}.npy"))
    if _PATHS_FILE in split["files"]:
        with open(os.path.join(directory, _PATHS_FILE), encoding="utf-8") as f:
            split["train_paths"] = np.asarray(json.load(f), str)
    return split


def check_split(data, directory):
    """Raises ValueError unless `data` has the labels and ids saved in `directory` (for resuming a run), the same
    training and probe images (their fingerprints) and, where the saved split names the training files
    (image-file data), the same files in the same order.

    The data set's name must match too, except for image-file data: their name comes from a folder or file name
    (`file_data_name`), so a renamed folder, or a split saved when the name was the train folder's own ("train"),
    still resumes; their files are compared instead.
    """
    saved = load_split(directory)
    current = _split_arrays(data)
    differ = [name for name in _SPLIT_ARRAYS if (name in saved) != (current[name] is not None)
              or (name in saved and not np.array_equal(saved[name], current[name]))]
    if differ or (saved["dataset"] != data.name and data.train_paths is None):
        raise ValueError(f"the data split differs from the one saved in {directory} ({', '.join(differ) or 'name'}"
                         f"{_split_settings_changed(saved, data)}); use the seed, noise and data flags of the saved "
                         "run, or a new run directory")
    if "train_paths" in saved:  # splits saved before the files were kept have none: nothing to compare
        _check_train_files(saved["train_paths"], current["train_paths"], directory)
    # Splits saved before session 14 have no fingerprints: nothing to compare.
    fingerprints = _fingerprints(data) if "fingerprints" in saved else {}
    for what, fingerprint in fingerprints.items():
        if saved["fingerprints"].get(what) != fingerprint:
            raise ValueError(
                f"the {what.replace('_', ' ')} differ from the ones the run in {os.path.dirname(directory)} was "
                f"trained on (their fingerprint in {os.path.join(directory, 'split.json')}), while their labels "
                "match, so resuming would continue its training on other images; restore the data the run started "
                "with, or use a new run directory")


def _summary(data):
    """split.json's description of the data (`save_split` adds the files and fingerprints)."""
    return {"dataset": data.name, "num_classes": data.num_classes, "class_names": data.class_names,
            "image_shape": list(data.image_shape), "num_train": len(data.train_labels),
            "num_probe": len(data.probe_labels), "num_test": len(data.test_labels), "noise_type": data.noise_type,
            "noise_ratio": data.noise_ratio, "noise_rate_realized": data.noise_rate_realized}


# The entries of split.json that a changed split's message compares: the settings a user can fix.
_SETTINGS_SHOWN = ("dataset", "num_classes", "noise_type", "noise_ratio", "num_train", "num_probe", "num_test")


def _split_settings_changed(saved, data):
    """What split.json says the saved run's data were, against `data`, for the message of a changed split: the
    flags to fix, where they show (the seeds and the probe images drawn are not in split.json)."""
    now = _summary(data)
    changed = [f"{name} {saved[name]!r} there, {now[name]!r} here" for name in _SETTINGS_SHOWN
               if name in saved and saved[name] != now[name]]
    return f": {'; '.join(changed)}" if changed else (": the same noise and sizes: another --seed or --data_seed, "
                                                    "or other labels in the data")


def _split_arrays(data):
    """The arrays `save_split` writes, by name (None: not known for these data)."""
    return {"noisy_labels": data.train_labels, "true_labels": data.train_true_labels, "train_ids": data.train_ids,
            "probe_ids": data.probe_ids, "probe_labels": data.probe_labels,
            "train_paths": None if data.train_paths is None else np.asarray(data.train_paths, str)}


def _fingerprints(data):
    """SHA-256 of the training and probe images (of their files' paths below their common directory where the
    images are paths), so a resume can tell that the images changed under the same labels."""
    return {"training_images": _fingerprint(data.train_images), "probe_images": _fingerprint(data.probe_images)}


def _fingerprint(images):
    images = np.asarray(images)
    if images.dtype.kind in "US":
        content = "\n".join(_below_common_directory(images)).encode("utf-8") if len(images) else b""
    else:
        content = np.ascontiguousarray(images).tobytes()
    digest = hashlib.sha256(f"{images.dtype.str} {images.shape}\n".encode())
    digest.update(content)
    return digest.hexdigest()


def _check_train_files(saved, current, directory):
    """Refuses training files other than the saved ones (their number already matches). Equal labels do not show
    that one image of a class was replaced by another, yet every later id would then point at another file and
    the checkpoint's per-example statistics would be reported for the wrong images. Paths are compared below their
    common directory, so the same files moved to another root (or named by another relative path) resume."""
    if current is None:
        problem = "the data now come from no image files"
    else:
        wrong = np.flatnonzero(_below_common_directory(saved) != _below_common_directory(current))
        if not len(wrong):
            return
        i = wrong[0]
        problem = f"id {i} was {saved[i]}, now {current[i]}; {len(wrong)} of {len(saved)} ids differ"
    raise ValueError(f"the training files differ from the ones saved in {os.path.join(directory, _PATHS_FILE)}"
                     f" ({problem}), so the run's per-example statistics would be reported for other images; "
                     f"restore the saved files ({_PATHS_FILE} lists them in id order), or use a new run directory")


def _below_common_directory(paths):
    """Each path relative to the deepest directory holding all of them."""
    full = [os.path.abspath(p) for p in paths]
    prefix = os.path.join(os.path.commonpath([os.path.dirname(p) for p in full]), "")
    return np.array([p[len(prefix):] for p in full])


def given_probe_counts(spec):
    """Images per class of the probe set that spec.probe_dir / spec.probe_list / the array file's probe arrays
    give, from the listing or labels alone (no image is decoded, so files that skip_bad_images would skip are
    counted); None when the probe is split off the training set."""
    if spec.dataset == "folder" and spec.probe_dir:
        labels = image_files.read_folder(spec.probe_dir)[1]
    elif spec.dataset == "list" and spec.probe_list:
        labels = image_files.read_list(spec.probe_list, spec.image_root)[1]
    elif spec.dataset == "arrays" and spec.array_file and os.path.exists(spec.array_file):
        with np.load(spec.array_file) as f:
            if "probe_labels" not in f.files or "probe_images" not in f.files:  # half a probe set: reading refuses it
                return None
            labels = np.asarray(f["probe_labels"]).reshape(-1).astype(np.int64)
        if len(labels) == 0 or labels.min() < 0:
            return None  # reading the file reports it
    else:
        return None
    return np.bincount(labels)


def probe_split(labels, num_classes, per_class, seed, hint="", class_names=None):
    """Chooses `per_class` examples of each class as probe, seeded. `hint` ends the error when the short class is
    the last one (where num_classes was inferred, a stray label may have made it); the error names the class by
    its id and, when `class_names` are given, its name (a folder data set's class folder).

    Returns:
      (train indices ascending, probe indices in class-interleaved order c0, c1, ..., c0, c1, ...).

    Raises:
      ValueError: a class has fewer than per_class + 1 examples (one must stay for training).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if per_class >= counts.min():
        c = int(np.argmin(counts))
        raise ValueError(f"probe_per_class={per_class} is too large: {_class(c, class_names)} has only {counts[c]} "
                         f"training examples; the maximum is {counts.min() - 1} (one must stay for training)"
                         f"{hint if c == num_classes - 1 else ''}")
    probe = _pick_per_class(labels, num_classes, per_class, seed)
    return np.setdiff1d(np.arange(len(labels)), probe), probe


def _class(c, class_names):
    """'class 3', or "class 3 ('dog')" when the names are known: the id alone does not tell which folder it is."""
    return f"class {c}" if class_names is None else f"class {c} ({class_names[c]!r})"


def _pick_per_class(labels, num_classes, per_class, seed):
    """Seeded choice of per_class (None = all) indices of each class, ordered by (rank within class, class)."""
    rng = np.random.default_rng([seed, 1])
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(num_classes)]
    rank = np.concatenate([np.arange(len(p)) for p in picked])
    cls = np.concatenate([np.full(len(p), c) for c, p in enumerate(picked)])
    return np.concatenate(picked)[np.lexsort((cls, rank))].astype(np.int64)


def _check_noise(noise_type, ratio):
    noise.check_ratio(ratio)
    if noise_type not in noise.NOISE_TYPES:
        raise ValueError(f"unknown noise_type {noise_type!r}; choose one of {', '.join(noise.NOISE_TYPES)}")


def _arrays(images, labels, what):
    """(uint8 images [N, H, W, C], int32 labels) from arrays or a tf.data.Dataset."""
    if images is None:
        raise ValueError(f"{what}_images is required")
    if hasattr(images, "as_numpy_iterator"):
        if labels is not None:
            raise ValueError(f"{what}: give the labels inside the tf.data.Dataset, not as {what}_labels")
        return sources.dataset_to_arrays(images)
    if labels is None:
        raise ValueError(f"{what}_labels is required with {what}_images arrays")
    return sources.check_examples(images, labels, what)


def _build(raw, spec, given, trusted, true_known):
    """Probe split from `trusted`, then noise on `given` (labels of the original training set)."""
    _check_shapes(raw)
    hint = _inferred_classes_hint(raw)
    _check_class_names(raw)
    _check_classes(raw, trusted, hint)
    if spec.probe_per_class is not None and spec.probe_per_class < 0:
        raise ValueError(f"probe_per_class must be >= 0, got {spec.probe_per_class}")
    if raw.probe_images is None:
        if spec.probe_per_class is None:
            source = {"arrays": f"{spec.array_file} holds no probe_images and probe_labels (add them, or give a "
                                "number)", "folder": "pass --probe_dir", "list": "pass --probe_list"}
            raise ValueError("probe_per_class=None (--probe_per_class=all: every image of a separately given probe "
                             f"set) needs a separate probe set: {source.get(spec.dataset, 'give a number')}; or give "
                             "a number of probe images per class")
        train_idx, probe_idx = probe_split(trusted, raw.num_classes, spec.probe_per_class, spec.seed, hint,
                                           raw.class_names)
        probe_images, probe_labels, probe_ids = raw.train_images[probe_idx], trusted[probe_idx], probe_idx
    else:
        train_idx, probe_idx = np.arange(len(given)), _separate_probe(raw, spec.probe_per_class, spec.seed, hint)
        probe_images, probe_labels = raw.probe_images[probe_idx], raw.probe_labels[probe_idx]
        probe_ids = np.full(len(probe_idx), -1, np.int64)
    noisy = _corrupt(raw, spec, given, train_idx)
    true = trusted[train_idx] if true_known else None
    realized = None if true is None else float(np.mean(noisy != true)) if len(true) else 0.0
    # The requested ratio means nothing without injected noise: none records 0, semantic and file the realised rate.
    ratio = 0.0 if spec.noise_type == "none" else realized if spec.noise_type in ("semantic", "file") \
        else spec.noise_ratio
    return NoisyData(
        name=raw.name, num_classes=raw.num_classes, class_names=raw.class_names,
        image_shape=tuple(int(d) for d in raw.image_shape), train_images=raw.train_images[train_idx],
        train_labels=noisy.astype(np.int32), train_true_labels=None if true is None else true.astype(np.int32),
        train_ids=train_idx.astype(np.int64), probe_images=probe_images,
        probe_labels=probe_labels.astype(np.int32), probe_ids=probe_ids.astype(np.int64),
        test_images=raw.test_images, test_labels=raw.test_labels.astype(np.int32), noise_type=spec.noise_type,
        noise_ratio=float(ratio), noise_rate_realized=realized, augment_kind=raw.augment_kind,
        train_paths=None if raw.train_paths is None else raw.train_paths[train_idx])


def _corrupt(raw, spec, given, train_idx):
    """Noisy labels of the training examples train_idx."""
    kept = given[train_idx]
    if spec.noise_type == "file":
        if not spec.noise_file:
            raise ValueError("noise_type=file needs --noise_file (.npy or .csv, one label per training example)")
        labels = sources.check_labels(sources.read_label_file(spec.noise_file), spec.noise_file, raw.num_classes)
        if len(labels) != len(given):
            raise ValueError(f"noise file {spec.noise_file} has {len(labels)} labels but the original training "
                             f"set of {raw.name} has {len(given)} examples (one label per example, probe included)"
                             f"{_FILE_ORDER if raw.train_paths is not None else ''}")
        return labels[train_idx]
    if spec.noise_type == "semantic":
        model = None
        if spec.semantic_network:
            from ieg_tf import networks
            model = networks.build_network(spec.semantic_network, raw.num_classes, raw.image_shape)
        return noise.semantic_noise(raw.train_images[train_idx], kept, raw.num_classes, model=model,
                                    fraction=spec.semantic_fraction, epochs=spec.semantic_epochs, seed=spec.seed)
    return noise.inject(spec.noise_type, kept, raw.num_classes, spec.noise_ratio, spec.seed, raw.name)


def _separate_probe(raw, per_class, seed, hint=""):
    counts = np.bincount(raw.probe_labels, minlength=raw.num_classes)
    if counts.min() == 0 or (per_class is not None and per_class > counts.min()):
        c = int(np.argmin(counts))
        raise ValueError(f"the probe set has {counts[c]} images of {_class(c, raw.class_names)} but "
                         f"probe_per_class={per_class} needs at least {max(per_class or 1, 1)} of every class"
                         f"{hint if c == raw.num_classes - 1 else ''}")
    return _pick_per_class(raw.probe_labels, raw.num_classes, per_class, seed)


def _inferred_classes_hint(raw):
    """The end of a class-count error when num_classes was taken from the labels ("" when it was given)."""
    if not raw.num_classes_fix:
        return ""
    return (f"; the class count was taken as max(label)+1 = {raw.num_classes} from the labels, so a stray label out "
            f"of range would cause this: correct the labels or {raw.num_classes_fix}")


def _check_shapes(raw):
    """In-memory splits must share the training images' [H, W, C] (file paths are decoded and cropped later)."""
    if raw.train_images.dtype.kind == "U":
        return
    shapes = {what: "x".join(str(d) for d in images.shape[1:]) for what, images in
              (("train", raw.train_images), ("test", raw.test_images), ("probe", raw.probe_images))
              if images is not None}
    differ = [what for what, shape in shapes.items() if shape != shapes["train"]]
    if differ:
        raise ValueError(f"{raw.name}: the splits' images differ in shape (HxWxC: "
                         f"{', '.join(f'{what} {shape}' for what, shape in shapes.items())}); resize / convert the "
                         f"{' and '.join(differ)} images to {shapes['train']} so all splits match (tf.image.resize for "
                         "the size, np.repeat(images, 3, -1) or tf.image.rgb_to_grayscale for the channels)")


def _check_class_names(raw):
    """One str name per class id (`sources.check_class_names`), with the inferred-count hint."""
    inferred = (f"; the class count was taken as max(label)+1 from the labels: {raw.num_classes_fix} if a class has "
                "no label yet" if raw.num_classes_fix else "")
    sources.check_class_names(raw.class_names, raw.num_classes, f"{raw.name}: ", inferred)


def _check_noise_file_split(spec):
    """Refuses file noise on folder / list data without a separate test split: the held-out 20% test images are
    taken from the training files first, so a noise file (one label per training example) could not be lined up
    with the files."""
    test = {"folder": ("test_dir", "--test_dir", "folders"), "list": ("test_list", "--test_list", "list file")}
    field, flag, labels_in = test.get(spec.dataset, (None, None, None))
    if spec.noise_type == "file" and field and not getattr(spec, field):
        raise ValueError(f"noise_type=file with dataset={spec.dataset} needs a separate test split ({flag}): without "
                         "one, 20% of the training images are held out for testing before the noise file is applied, "
                         f"so its labels would not line up with the files; pass {flag}, or put the noisy labels into "
                         f"the {labels_in} and use noise_type=none")


def _check_classes(raw, trusted, hint=""):
    if len(raw.train_labels) == 0:
        raise ValueError(f"{raw.name}: the training set is empty (0 train_images); give at least one training image "
                         "of every class")
    for what, labels in (("training", raw.train_labels), ("true", trusted), ("test", raw.test_labels),
                         ("probe", raw.probe_labels)):
        if labels is not None:
            try:
                sources.check_labels(labels, f"{raw.name} {what} labels", raw.num_classes)
            except ValueError as e:
                raise ValueError(f"{e}{hint}") from None
    counts = np.bincount(trusted, minlength=raw.num_classes)
    if counts.min() == 0:
        empty = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"{raw.name}: class(es) {empty} have no training examples; class ids must be 0.."
                         f"{raw.num_classes - 1} with every class present"
                         f"{hint or ' (set num_classes to match the data)'}")
    if len(raw.test_labels) == 0:
        raise ValueError(f"{raw.name}: the test set is empty")


def file_data_name(path):
    """The name of folder / list data (results.json, split.json): the train folder's or list file's name (without
    extension), or the folder above when that name only says it is the training split: /data/pets/train and
    /data/pets/train.txt are "pets". The name also picks the asymmetric noise mapping (noise.asymmetric_mapping).
    Splits saved under an earlier name still resume: `check_split` compares the files of such data, not the name.
    """
    path = os.path.normpath(os.path.abspath(path))
    name = os.path.basename(path) if os.path.isdir(path) else os.path.splitext(os.path.basename(path))[0]
    parent = os.path.basename(os.path.dirname(path))
    return parent if _SPLIT_NAME.fullmatch(name) and parent else name


def _read(spec):
    if spec.dataset == "digits":
        return sources.read_digits(spec.data_dir)
    if spec.dataset in ("cifar10", "cifar100"):
        return sources.read_cifar(spec.dataset, spec.data_dir, spec.download)
    if spec.dataset == "arrays":
        return sources.read_npz(spec.array_file, spec.num_classes)
    if spec.dataset == "folder":
        train_paths, train_labels, names = image_files.read_folder(spec.train_dir)
        test = image_files.read_folder(spec.test_dir, names)[:2] if spec.test_dir else None
        probe = image_files.read_folder(spec.probe_dir, names)[:2] if spec.probe_dir else None
        return image_files.image_dataset(file_data_name(spec.train_dir), (train_paths, train_labels), test,
                                         len(names), names, spec.image_size, probe, spec.skip_bad_images)
    if spec.dataset == "list":
        train = image_files.read_list(spec.train_list, spec.image_root, spec.num_classes or None)
        c = spec.num_classes or int(train[1].max()) + 1
        source = None if spec.num_classes else (f"{c} classes, taken as max(label)+1 of {spec.train_list}, and "
                                                "every class needs training images")
        test, probe = (image_files.read_list(path, spec.image_root, c, source) if path else None
                       for path in (spec.test_list, spec.probe_list))
        root = (f"--image_root={spec.image_root}: correct --image_root or the list's paths" if spec.image_root else
                "the list file's folder, as no --image_root is given: pass --image_root=DIR, the folder the paths "
                "start from, or correct the list's paths")
        raw = image_files.image_dataset(file_data_name(spec.train_list), train, test, c, None, spec.image_size, probe,
                                        spec.skip_bad_images, f"the paths of a list are taken relative to {root}")
        fix = None if spec.num_classes else "pass --num_classes (DataSpec.num_classes)"
        return dataclasses.replace(raw, num_classes_fix=fix)
    raise ValueError(f"unknown dataset {spec.dataset!r}; choose one of {', '.join(DATASETS)}")
