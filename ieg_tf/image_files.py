"""Image files on disk to RawData: class folders, WebVision-style list files, decoding with PIL.

Small images (<= 64 px, or --image_size <= 64) are decoded here into memory; larger ones stay paths for the input
pipeline to decode and crop. An unreadable image is an error naming the file; with skip_bad (for scraped data sets
with a few broken JPEGs) such files are skipped with one warning instead. A file that does not exist is reported as
missing, not as unreadable: most often the list's paths are relative to another folder than --image_root, which
skipping would only hide.
"""

import os
import re
import warnings

import numpy as np
from PIL import Image

from ieg_tf.sources import SPLIT_SEED, RawData, augment_kind_for, check_labels, stratified_split

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
SMALL_IMAGE_MAX = 64          # larger images stay on disk and get Inception crops in the pipeline
HELD_OUT_TEST_FRACTION = 0.2  # folder / list sets given without a test split
_GRAY_MODES = ("1", "L", "LA", "I", "F")  # and the 16-bit modes I;16, I;16B, I;16L, I;16N (see _is_gray)
_UINT16_MAX = 65535


class UnsupportedPixelsError(ValueError):
    """An image whose pixel values have no defined mapping to 8 bit (e.g. 32-bit float); not a broken file, so
    --skip_bad_images does not hide it."""


def read_folder(directory, class_names=None):
    """Paths and labels of directory/<class_name>/*.png|jpg; classes are the sorted sub-directory names.

    Sub-directories whose names start with '.' (.ipynb_checkpoints, .git, .cache) are hidden, as in a file browser,
    and are no classes.
    """
    if not directory or not os.path.exists(directory):
        raise ValueError(f"image folder {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise ValueError(f"image folder {directory!r} is a file, not a folder; pass the folder holding one sub-folder "
                         "of images per class (a file of 'path,label' lines is read with --dataset=list --train_list)")
    found = sorted(d for d in os.listdir(directory)
                   if not d.startswith(".") and os.path.isdir(os.path.join(directory, d)))
    if not found:
        raise ValueError(f"no class sub-directories in {directory}; expected {directory}/<class_name>/*.png|jpg")
    unknown = [d for d in found if class_names is not None and d not in class_names]
    if unknown:
        raise ValueError(f"{directory} has classes {unknown} that the training folder does not have")
    names = class_names or found
    paths, labels = [], []
    for d in found:
        files = sorted(f for f in os.listdir(os.path.join(directory, d)) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files and class_names is None:
            raise ValueError(f"class '{d}' in {directory} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(directory, d, f) for f in files]
        labels += [names.index(d)] * len(files)
    return paths, np.array(labels, np.int32), names


def read_list(list_file, image_root=None, num_classes=None, classes_from=None):
    """Paths and labels from lines 'relative/path.jpg,label' or 'relative/path.jpg label' (WebVision style).

    Blank lines and lines starting with '#' are ignored. The first other line is a header (e.g. 'filename,class_id')
    and skipped when its label field has no digit; any other line without an integer label, or with one outside
    0..num_classes-1 (negative, when num_classes is None), is an error naming its line number. The file is read as
    UTF-8; a byte-order mark (as Windows editors write) is dropped, not taken into the first path. A path in double
    quotes, as CSV writers quote a name with a comma or space ("a, b.jpg",3 or "a b.jpg" 3; a quote inside doubled),
    is unquoted; so is a quoted label.

    Args:
      list_file: the list file.
      image_root: the directory the paths are relative to; default the list file's.
      num_classes: C, when known.
      classes_from: where C came from, for the out-of-range message (default "num_classes=C").
    """
    if not list_file or not os.path.exists(list_file):
        raise ValueError(f"list file {list_file!r} not found")
    root = image_root or os.path.dirname(os.path.abspath(list_file))
    classes = None if num_classes is None else (num_classes, classes_from or f"num_classes={num_classes}")
    paths, labels, first = [], [], True
    with open(list_file, encoding="utf-8-sig") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"list file {list_file} is not UTF-8 text ({e}); save it as UTF-8") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{list_file} line {number}"
        parts = _list_fields(line, where)
        label = _list_label(parts, line, where, first, classes)
        first = False
        if label is not None:
            paths.append(os.path.join(root, parts[0].strip()))
            labels.append(label)
    if not paths:
        raise ValueError(f"list file {list_file} names no images")
    return paths, check_labels(np.array(labels), list_file)


def _list_fields(line, where):
    """[path, label text] of one list line (or [path] alone). A path in double quotes (CSV style, a quote inside
    doubled) may hold commas and spaces; otherwise the label is what follows the last comma, or the last space when
    the line has no comma."""
    if not line.startswith('"'):
        return line.rsplit(",", 1) if "," in line else line.rsplit(None, 1)
    quoted = re.fullmatch(r'"((?:[^"]|"")*)"\s*(?:,\s*)?(.*)', line)
    if quoted is None:
        raise ValueError(f"{where}: the quote before the path is not closed ({line!r}); end the path with a quote "
                         '(a quote inside it doubled, as CSV writes it: "say ""hi"".jpg",3)')
    path, rest = quoted.group(1).replace('""', '"'), quoted.group(2)
    return [path, rest] if rest else [path]


def _list_label(parts, line, where, header_allowed, classes=None):
    """The label of one list line, or None for a header line (allowed only as the first line). A malformed line or
    a label outside 0..C-1 (`classes` = (C, where C came from), or None: only negative labels) is an error naming
    `where` (file and line number), so the user can find and fix it."""
    text = parts[1].strip() if len(parts) == 2 else ""
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()  # a quoted label, as CSV writers that quote every field write it
    if re.fullmatch(r"[-+]?\d+", text):
        label = int(text)
        if label < 0:
            raise ValueError(f"{where}: label {label} is negative; class ids are 0..C-1 (line {line!r})")
        if classes is not None and label >= classes[0]:
            raise ValueError(f"{where}: label {label} is out of range; class ids are 0..{classes[0] - 1} "
                             f"({classes[1]}); correct the line ({line!r})")
        return label
    if header_allowed and len(parts) == 2 and not any(ch.isdigit() for ch in text):
        return None  # a header such as 'filename,class_id'; a digit ('1.0') means a malformed label instead
    raise ValueError(f"{where}: expected 'path,label' with an integer label, got {line!r}")


def image_dataset(name, train, test, num_classes, class_names, image_size=None, probe=None, skip_bad=False,
                  missing_fix=None):
    """RawData from (paths, labels) pairs of image files; RawData.train_paths keeps each training image's file.

    Args:
      name: data set name.
      train, test, probe: (paths, labels) pairs; test=None holds out a stratified 20% of train (fixed seed);
        probe (optional) is a separate trusted set, e.g. the ImageNet probe of WebVision.
      num_classes, class_names: C and the names (or None).
      image_size, skip_bad, missing_fix: as in `load_images`.

    Messages about the files name their split ("train", "test", "probe") and count per split; a held-out test
    split's files count as "train", the folder or list they came from.
    """
    given_test = test is not None
    if test is None:
        warnings.warn(f"{name}: no test split given; holding out {HELD_OUT_TEST_FRACTION:.0%} of the training "
                      "images (stratified, fixed seed) for evaluation")
        rest, held = stratified_split(train[1], HELD_OUT_TEST_FRACTION, np.random.default_rng(SPLIT_SEED))
        test = ([train[0][i] for i in held], train[1][held])
        train = ([train[0][i] for i in rest], train[1][rest])
    parts = [train, test] + ([probe] if probe is not None else [])
    files = [p for paths, _ in parts for p in paths]
    splits = np.repeat(["train", "test" if given_test else "train", "probe"][:len(parts)],
                       [len(paths) for paths, _ in parts]).tolist()
    images, kept = load_images(files, image_size, name, skip_bad, splits=splits, missing_fix=missing_fix)
    files, labels = np.array(files)[kept], np.concatenate([labels for _, labels in parts])[kept]
    ends = np.cumsum([len(paths) for paths, _ in parts])
    part = np.searchsorted(ends, kept, side="right")  # which of train / test / probe each kept file is from
    shape = (image_size, image_size, 3) if images.dtype.kind == "U" else images.shape[1:]
    kind = "imagenet" if images.dtype.kind == "U" else augment_kind_for(shape[0])
    select = [(images[part == i], labels[part == i]) for i in range(len(parts))]
    return RawData(name, num_classes, class_names, tuple(int(d) for d in shape), *select[0], *select[1], kind,
                   *(select[2] if probe is not None else (None, None)), train_paths=files[part == 0])


def load_images(paths, image_size=None, what="images", skip_bad=False, splits=None, missing_fix=None):
    """Decodes image files into uint8 [N, S, S, C], or keeps them as paths when the images are large.

    Args:
      paths: image file paths.
      image_size: None (keep the native size, which must be one size <= 64), <= 64 (decode and resize to
        image_size x image_size), or larger (keep paths; the pipeline decodes and crops to image_size).
      what: name for messages.
      skip_bad: skip unreadable files with one warning (scraped data sets) instead of raising; missing files too,
        unless no file of a split exists (then the paths, not a few files, are wrong).
      splits: the split of each path ("train", "test", "probe"), which messages name and count by; None: all `what`.
      missing_fix: what the message about missing files proposes (e.g. the list's --image_root).

    Returns:
      (uint8 images [M, S, S, C] or str paths [M], int indices of the M readable files among `paths`).
      C is 1 when every image is greyscale, else 3.

    Raises:
      ValueError: a missing or unreadable file (unless skip_bad), images of mixed or large sizes without
        image_size, or no readable image at all.
    """
    splits = [what] * len(paths) if splits is None else list(splits)
    keep_paths = image_size is not None and image_size > SMALL_IMAGE_MAX
    headers, bad, missing = {}, [], []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as im:
                headers[i] = (im.size, im.mode)
                if keep_paths:
                    im.verify()  # catches truncated files now rather than mid-training in the pipeline
        except (FileNotFoundError, NotADirectoryError):
            missing.append(i)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            bad.append(i)
    _report_bad(paths, missing, splits, skip_bad, missing_fix or "restore them, or remove them from the data")
    _report_bad(paths, bad, splits, skip_bad)
    if image_size is None:
        _check_sizes(headers, splits)
    if keep_paths:
        decoded = {i: paths[i] for i in headers}
    else:
        decoded, bad = {}, []
        mode = "L" if all(_is_gray(m) for _, m in headers.values()) else "RGB"
        for i in headers:
            try:
                decoded[i] = _decode(paths[i], mode, image_size)
            except UnsupportedPixelsError:
                raise
            except (OSError, ValueError, SyntaxError):
                bad.append(i)
        _report_bad(paths, bad, splits, skip_bad)
    if not decoded:
        raise ValueError(f"{what}: no readable images among {len(paths)} files")
    kept = np.array(sorted(decoded))
    values = [decoded[i] for i in kept]
    return (np.array(values) if isinstance(values[0], str) else np.stack(values)), kept


def _check_sizes(headers, splits):
    """Refuses images of several sizes, or of one size above SMALL_IMAGE_MAX (both need --image_size), naming the
    sizes of each split."""
    sizes = {}  # split: its sizes, splits in order
    for i, (size, _) in headers.items():
        sizes.setdefault(splits[i], set()).add(size)
    every = sorted(set().union(*sizes.values()))

    def listed(found):
        found = sorted(found)
        return f"{', '.join(f'{w}x{h}' for w, h in found[:5])}{', ...' if len(found) > 5 else ''}"
    if len(every) > 1:
        where = (f"{next(iter(sizes))}: images have different sizes ({listed(every)})" if len(sizes) == 1 else
                 f"images have different sizes ({'; '.join(f'{split}: {listed(s)}' for split, s in sizes.items())})")
        raise ValueError(f"{where}; pass --image_size=N to resize them to NxN (N <= 64 decodes into memory; e.g. 224 "
                         "keeps files and uses Inception crops)")
    if every and max(every[0]) > SMALL_IMAGE_MAX:
        raise ValueError(f"{', '.join(sizes)}: images are {every[0][0]}x{every[0][1]}; pass --image_size (e.g. 224 "
                         f"for Inception crops from the files, or <= {SMALL_IMAGE_MAX} to decode and resize)")


def _is_gray(mode):
    """Single-channel PIL modes, 16-bit ones included (their suffix names the byte order)."""
    return mode in _GRAY_MODES or mode.startswith("I;16")


def _decode(path, mode, image_size):
    """uint8 [H, W, C] of one image file in PIL `mode` ("L" or "RGB"), resized to image_size if given."""
    with Image.open(path) as im:
        im = _to_8bit(im, path).convert(mode)
        if image_size is not None:
            im = im.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(im, np.uint8).reshape(im.size[1], im.size[0], -1)


def _to_8bit(im, path):
    """An 8-bit ("L") copy of a 16- or 32-bit greyscale image, other images unchanged.

    PIL's convert("L") clips such pixels at 255, which turns a 16-bit PNG (mode I;16) all white. A 16-bit value v
    becomes v >> 8 (its high byte) instead: what TensorFlow's PNG decoder gives (libpng's strip_16), in the
    exported model's serving_bytes and for the large-image path, so a served file gets the pixels, and the
    prediction, of its training or test copy; rounding v * 255 / 65535 instead differs by 1 on a quarter of the
    levels. (16-bit colour PNGs need nothing here: PIL reads them as "RGB" by their high bytes too.)
    Mode "I" (32-bit int: a TIFF, or a 16-bit PNG in older Pillow versions) is taken as 16-bit when its values fit,
    the mapping of a 16-bit PNG of the same values; TensorFlow's decoders read no TIFF, so serving refuses such a
    file itself rather than predicting from other pixels. Float pixels (mode "F") and larger ints have no known
    range, so they are refused rather than guessed.
    """
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > _UINT16_MAX):
            raise UnsupportedPixelsError(
                f"{path}: 32-bit integer pixels ({values.min()}..{values.max()}) have no known range to map to 8 "
                "bit; save the image as 8-bit (values 0..255) or 16-bit PNG")
        return Image.fromarray((values >> 8).astype(np.uint8))
    if im.mode == "F":
        raise UnsupportedPixelsError(f"{path}: 32-bit float pixels (PIL mode F) have no known range to map to 8 bit; "
                                     "save the image as 8-bit (values 0..255) or 16-bit PNG")
    return im


def _report_bad(paths, bad, splits, skip_bad, missing_fix=None):
    """Raises for (or, with skip_bad, warns of) the files `bad` of `paths`, counted per split: missing files when
    `missing_fix` is given (the message's fix), else unreadable ones. Missing files are never skipped when no file
    of a split exists."""
    if not bad:
        return
    bad = sorted(bad)
    totals, counts = {}, {}
    for split in splits:
        totals[split] = totals.get(split, 0) + 1
    for i in bad:
        counts[splits[i]] = counts.get(splits[i], 0) + 1
    where = " and ".join(f"{split}: {n} of {totals[split]}" for split, n in counts.items())
    first = ", ".join(paths[i] for i in bad[:3])
    kind = "unreadable" if missing_fix is None else "missing"
    if missing_fix is not None and any(n == totals[split] for split, n in counts.items()):
        raise ValueError(f"{where} image file(s) do not exist (first: {first}); {missing_fix}")
    if skip_bad:
        warnings.warn(f"skipped {len(bad)} {kind} image file(s) ({where.replace(' and ', ', ')}); first: {first}")
    elif missing_fix is not None:
        raise ValueError(f"{where} image file(s) do not exist (first: {first}); {missing_fix}, or pass "
                         "--skip_bad_images to skip them")
    else:
        raise ValueError(f"{where} image file(s) cannot be read as images (first: {first}); remove or replace them, "
                         "or pass --skip_bad_images to skip them")
