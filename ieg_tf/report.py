"""The label-issue report: which training labels the trained model believes are wrong, and what it suggests.

It reads the per-example sums the trainer keeps by example id (`IEGTrainer.example_stats`, SPEC 0): how often
an example was seen, its average meta weight omega*, and how often lambda* replaced its label by the guessed
one. `label_issues` turns them into columns plus a flag; `write_label_issues_csv` writes `label_issues.csv`.
`confusion_on_test_set` is the test-set counterpart, the EMA model's confusion matrix (`test_confusion.csv`).

Example (a `model.fit` user):
  trainer.fit(train_ds, ...)
  issues = report_for(trainer, data)
  suspicious = [row for row in issues.rows() if row["label_believed_wrong"]]
"""

import csv
import dataclasses

import numpy as np
import tensorflow as tf

from ieg_tf import pipeline

# Methods whose per-example statistics can flag a label: ieg's lambda* votes for the guess. l2r has omega* but no
# guessed labels to vote for, supervised neither; their reports suggest labels and flag none, precision/recall None.
FLAGGING_METHODS = ("ieg",)
COLUMNS = ("id", "given_label", "suggested_label", "omega_mean", "pseudo_fraction", "visits",
           "label_believed_wrong")
# The class names of given_label and suggested_label, when the data set names its classes (the last columns).
NAME_COLUMNS = ("given_class", "suggested_class")


@dataclasses.dataclass
class LabelIssues:
    """One entry per training example (numpy columns, training order) and the flag's quality.

    Attributes:
      id: int64 [N], the example's id in the original training set.
      given_label: int32 [N], the (noisy) label the model was trained on.
      suggested_label: int32 [N], the label the model believes in (see `label_issues`).
      omega_mean: float32 [N], omega* averaged over the example's visits (raw: the uniform weight is 1/B).
      pseudo_fraction: float32 [N], the share of visits in which lambda* chose the guessed label.
      visits: int64 [N], how many training steps saw the example and recorded its omega*, lambda* and guess: 0
        throughout for method=supervised, which computes none (its suggested labels are the EMA model's).
      label_believed_wrong: bool [N], the flag.
      true_label: int32 [N] clean labels (-1 = unknown), or None.
      precision: share of flagged examples whose given label is truly wrong; None when undefined (no true
        labels known, or nothing flagged among them).
      recall: share of truly mislabeled examples that are flagged; None when undefined (no true labels known,
        or no known label is wrong).
      path: str [N], the image file of each example (folder / list data), or None; `id` alone cannot name a file
        there, since it indexes the training files after sorting, the held-out test split and skipped files.
      class_names: one name per class id, or None: adds the `given_class` and `suggested_class` columns.
    """
    id: np.ndarray
    given_label: np.ndarray
    suggested_label: np.ndarray
    omega_mean: np.ndarray
    pseudo_fraction: np.ndarray
    visits: np.ndarray
    label_believed_wrong: np.ndarray
    true_label: np.ndarray | None
    precision: float | None
    recall: float | None
    path: np.ndarray | None = None
    class_names: tuple | None = None

    def __len__(self):
        return len(self.id)

    def columns(self):
        """The CSV column names: COLUMNS, then `true_label` when true labels are known, `path` when the examples
        are files, and NAME_COLUMNS when the classes have names (appended, so readers of the older columns keep
        working)."""
        return (COLUMNS + (("true_label",) if self.true_label is not None else ())
                + (("path",) if self.path is not None else ()) + (NAME_COLUMNS if self.class_names else ()))

    def rows(self):
        """A list of dicts, one per example, keyed by `columns()`, with plain Python values."""
        cells = [self._column(name).tolist() for name in self.columns()]
        return [dict(zip(self.columns(), values)) for values in zip(*cells)]

    def _column(self, name):
        if name in NAME_COLUMNS:  # given_class names given_label, suggested_class suggested_label
            return np.asarray(self.class_names, object)[getattr(self, name.replace("_class", "_label"))]
        return getattr(self, name)


def label_issues(stats, given_labels, *, true_labels=None, ids=None, predicted=None, omega_threshold=None,
                 pseudo_threshold=0.5, paths=None, class_names=None):
    """Builds the label-issue report from the trainer's per-example statistics.

    The suggested label is the argmax of the summed guessed labels g (SPEC 1.3) of a visited example when the
    trainer kept them, else the argmax of `predicted`; an example with neither keeps its given label.

    A label is believed wrong when all of these hold:
      1. the example was visited at least once (no evidence, no flag);
      2. pseudo_fraction > pseudo_threshold: lambda* = 0 means the probe loss falls when the target moves from
         the given label toward the guess (SPEC 1.6.8), i.e. the clean probe set votes against the label. One
         vote is the sign of one batch's gradient, so the flag asks for a majority of visits;
      3. suggested_label != given_label: a vote for the guess contests the label only if the guess names
         another class;
      4. only when `omega_threshold` is set: omega_mean < omega_threshold. omega* (SPEC 1.6.7) is clipped to 0
         for examples whose gradient opposes the probe's, so this asks the second meta signal to agree, trading
         recall for precision. The threshold is in the units of omega_mean (raw omega*, uniform = 1/B): the
         paper's T ("T times the uniform weight", TrainerConfig.clean_threshold) is T / batch_size here.
    Precision and recall compare the flag with given != true over the examples whose true label is known
    (true_labels >= 0), visited or not.

    Args:
      stats: `ExampleStats.result()`: dict with numpy `visits`, `omega_mean`, `pseudo_fraction` [N] and
        `guess_sum` [N, C] or None.
      given_labels: int [N], the labels trained on.
      true_labels: int [N] clean labels (-1 = unknown), or None.
      ids: int [N] original example ids; default 0..N-1.
      predicted: float [N, C] class probabilities of the EMA model (see `report_for`); required when
        `guess_sum` is None.
      omega_threshold: optional extra condition 4, in raw omega* units.
      pseudo_threshold: the share of visits lambda* must give to the guessed label, in [0, 1).
      paths: str [N] image file of each example (the `path` column), or None.
      class_names: one name per class id (the `given_class` and `suggested_class` columns), or None.

    Returns:
      LabelIssues.

    Raises:
      ValueError: missing statistics, arrays of inconsistent lengths, or a threshold out of range.
    """
    missing = [k for k in ("visits", "omega_mean", "pseudo_fraction") if k not in stats]
    if missing:
        raise ValueError(f"stats lack {missing}; pass trainer.example_stats.result()")
    if not 0.0 <= pseudo_threshold < 1.0:
        raise ValueError(f"pseudo_threshold must be in [0, 1), got {pseudo_threshold}")
    given = np.asarray(given_labels).astype(np.int32)
    if given.ndim != 1:
        raise ValueError(f"given_labels must be int class ids [N], got shape {given.shape}")
    n = len(given)
    visits = _column(stats["visits"], n, "stats['visits']").astype(np.int64)
    omega = _column(stats["omega_mean"], n, "stats['omega_mean']").astype(np.float32)
    pseudo = _column(stats["pseudo_fraction"], n, "stats['pseudo_fraction']").astype(np.float32)
    ids = np.arange(n, dtype=np.int64) if ids is None else _column(ids, n, "ids").astype(np.int64)
    true = None if true_labels is None else _column(true_labels, n, "true_labels").astype(np.int32)
    paths = None if paths is None else _column(paths, n, "paths").astype(str)

    guess_sum = stats.get("guess_sum")
    if guess_sum is None and predicted is None:
        raise ValueError("the trainer kept no guessed labels (guess_sum is None): pass predicted= EMA "
                         "probabilities [N, C], or use report_for(trainer, data), which computes them")
    suggested = given.copy()
    if predicted is not None:
        suggested = np.argmax(_matrix(predicted, n, "predicted"), axis=1).astype(np.int32)
    if guess_sum is not None:
        from_guess = np.argmax(_matrix(guess_sum, n, "stats['guess_sum']"), axis=1).astype(np.int32)
        suggested = np.where(visits > 0, from_guess, suggested)

    flag = (visits > 0) & (pseudo > pseudo_threshold) & (suggested != given)
    if omega_threshold is not None:
        flag &= omega < omega_threshold
    precision, recall = _precision_recall(flag, given, true)
    names = None if class_names is None else tuple(str(name) for name in class_names)
    if names is not None and max(int(given.max(initial=0)), int(suggested.max(initial=0))) >= len(names):
        raise ValueError(f"class_names has {len(names)} names, but the labels go up to "
                         f"{max(int(given.max()), int(suggested.max()))}; pass one name per class id")
    return LabelIssues(ids, given, suggested, omega, pseudo, visits, flag, true, precision, recall, paths, names)


def report_for(trainer, data, batch_size=256, *, omega_threshold=None, pseudo_threshold=0.5):
    """The label-issue report of a trained `IEGTrainer` on its training data.

    EMA predictions over the training examples are computed when the trainer kept no guessed labels or some
    example was never visited (then they supply its suggested label); see `split_probabilities`.

    Args:
      trainer: the IEGTrainer, built with `num_train_examples=len(data.train_labels)`.
      data: the `ieg_tf.datasets.NoisyData` it was trained on (positions = the `id` fed to the trainer).
      batch_size: batch size of the prediction pass.
      omega_threshold, pseudo_threshold: see `label_issues`.

    Returns:
      LabelIssues with `id` = data.train_ids and, for image-file data, `path` = data.train_paths.

    Raises:
      ValueError: the trainer keeps no statistics or counts a different number of examples, or its weights are
        not finite (a diverged training).
    """
    if trainer.example_stats is None:
        raise ValueError("the trainer keeps no per-example statistics: build IEGTrainer with "
                         "num_train_examples=len(data.train_labels)")
    trainer.check_finite()
    n = len(data.train_labels)
    if trainer.example_stats.num_examples != n:
        raise ValueError(f"the trainer counts {trainer.example_stats.num_examples} examples but the data have {n} "
                         "training labels; report on the data set the trainer was built for")
    stats = trainer.example_stats.result()
    predicted = None
    if stats["guess_sum"] is None or np.any(stats["visits"] == 0):
        predicted = split_probabilities(trainer, data, batch_size)
    issues = label_issues(stats, data.train_labels, true_labels=data.train_true_labels, ids=data.train_ids,
                          predicted=predicted, omega_threshold=omega_threshold, pseudo_threshold=pseudo_threshold,
                          paths=getattr(data, "train_paths", None), class_names=data.class_names)
    if trainer.config.method not in FLAGGING_METHODS:
        # Nothing can be flagged (no lambda* votes), so a recall of 0.0 would read as a measured miss.
        issues = dataclasses.replace(issues, precision=None, recall=None)
    return issues


def split_probabilities(trainer, data, batch_size=256, split="train"):
    """Softmax of the trainer's EMA logits over one split of `data` (default: the training examples in id order;
    "test", "probe"); float32 [N, C].

    The images come from `pipeline.eval_dataset(data, split=split)`, the evaluation's own path: in-memory images
    are scaled, and file paths (large-image folder / list data) are decoded and centre-cropped there, which
    `ema_probabilities` (uint8 arrays only) cannot do.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = (images for images, _ in pipeline.eval_dataset(data, batch_size, split=split))
    return _ema_softmax(trainer, batches)


def ema_probabilities(trainer, images, batch_size=256):
    """Softmax of the trainer's EMA logits over uint8 images [N, H, W, C], batched; float32 [N, C]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"predictions need uint8 [N, H, W, C] images, got {images.dtype} {images.shape}; for "
                         "the training images of file-path data use split_probabilities(trainer, data)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batches = (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    return _ema_softmax(trainer, batches, [tf.TensorSpec([None, *images.shape[1:]], tf.uint8)])


def _ema_softmax(trainer, batches, input_signature=None):
    """Concatenated softmax of the EMA logits over image batches (uint8 batches are scaled by `ema_logits`), after
    refusing non-finite weights."""
    trainer.check_finite()
    predict = tf.function(lambda batch: tf.nn.softmax(trainer.ema_logits(batch)), input_signature=input_signature,
                          reduce_retracing=input_signature is None)
    out = [predict(batch).numpy() for batch in batches]
    return np.concatenate(out) if out else np.zeros([0, trainer.num_classes], np.float32)


def confusion_on_test_set(trainer, data, batch_size=256):
    """Confusion matrix of the trainer's EMA predictions on the test set: int64 [C, C], row = true class,
    column = predicted class (its trace over its sum is the test accuracy). The images go through the evaluation's
    input path, so file paths (large-image folder / list data) are decoded and cropped as evaluation does.
    None when there are no test images."""
    if data.test_images is None or not len(data.test_images):
        return None
    predicted = np.argmax(split_probabilities(trainer, data, batch_size, split="test"), axis=-1)
    c = trainer.num_classes
    true = np.asarray(data.test_labels, np.int64)
    return np.bincount(true * c + predicted, minlength=c * c).reshape(c, c)


def per_class_accuracy(confusion):
    """Recall of each class from a confusion matrix: list of floats, None for a class absent from the test set."""
    totals = confusion.sum(axis=1)
    return [round(float(confusion[k, k] / totals[k]), 4) if totals[k] else None for k in range(len(totals))]


def write_confusion_csv(confusion, path, class_names=None):
    """Writes a confusion matrix as CSV: a header `true/predicted,<class>...`, then one row per true class."""
    names = list(class_names) if class_names else [str(k) for k in range(len(confusion))]
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["true/predicted", *names])
        for name, row in zip(names, confusion.tolist()):
            writer.writerow([name, *row])
    return path


def read_confusion_csv(path):
    """(int64 [C, C] confusion matrix, class names) from a file written by `write_confusion_csv`."""
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(f))
    names = rows[0][1:]
    return np.array([[int(v) for v in row[1:]] for row in rows[1:]], np.int64).reshape(len(names), len(names)), names


def write_label_issues_csv(issues, path):
    """Writes `issues` as CSV (header `issues.columns()`, the flag as 1/0) to a local or gfile path."""
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(issues.columns())
        for row in issues.rows():
            writer.writerow([_cell(row[name]) for name in issues.columns()])
    return path


def read_label_issues_csv(path):
    """Reads a file written by `write_label_issues_csv` back into LabelIssues (precision/recall recomputed)."""
    with tf.io.gfile.GFile(path, "r") as f:
        reader = csv.reader(f)
        header = tuple(next(reader, ()))
        if header not in [COLUMNS + truth + files + names for truth in ((), ("true_label",))
                          for files in ((), ("path",)) for names in ((), NAME_COLUMNS)]:
            raise ValueError(f"{path} is not a label-issue CSV: header {header}, expected {COLUMNS} "
                             f"(+ true_label) (+ path) (+ {', '.join(NAME_COLUMNS)})")
        body = list(reader)
    cols = dict(zip(header, zip(*body))) if body else {name: () for name in header}
    given = np.asarray(cols["given_label"], np.int32)
    flag = np.asarray(cols["label_believed_wrong"], np.int8).astype(bool)
    true = np.asarray(cols["true_label"], np.int32) if "true_label" in cols else None
    precision, recall = _precision_recall(flag, given, true)
    return LabelIssues(
        id=np.asarray(cols["id"], np.int64), given_label=given,
        suggested_label=np.asarray(cols["suggested_label"], np.int32),
        omega_mean=np.asarray(cols["omega_mean"], np.float32),
        pseudo_fraction=np.asarray(cols["pseudo_fraction"], np.float32),
        visits=np.asarray(cols["visits"], np.int64), label_believed_wrong=flag, true_label=true,
        precision=precision, recall=recall, path=np.asarray(cols["path"], str) if "path" in cols else None,
        class_names=_names_read_back(cols))


def _names_read_back(cols):
    """The class names from the name columns: None without them, or when some class id 0..max appears in neither
    label column (its name is not in the file)."""
    if NAME_COLUMNS[0] not in cols:
        return None
    named = {}
    for label, name in ((label, name) for which in ("given", "suggested")
                        for label, name in zip(cols[f"{which}_label"], cols[f"{which}_class"])):
        named[int(label)] = name
    if not named or sorted(named) != list(range(max(named) + 1)):
        return None
    return tuple(named[k] for k in range(len(named)))


def _precision_recall(flag, given, true):
    if true is None:
        return None, None
    known = true >= 0
    wrong = known & (given != true)
    flagged = known & flag
    hits = int(np.sum(flagged & wrong))
    precision = hits / int(np.sum(flagged)) if np.any(flagged) else None
    recall = hits / int(np.sum(wrong)) if np.any(wrong) else None
    return precision, recall


def _cell(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return str(np.float32(value))  # the shortest text that reads back to the same float32
    return value


def _column(values, n, name):
    values = np.asarray(values)
    if values.shape != (n,):
        raise ValueError(f"{name} has shape {values.shape}, expected ({n},): one entry per training example")
    return values


def _matrix(values, n, name):
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != n:
        raise ValueError(f"{name} has shape {values.shape}, expected ({n}, num_classes)")
    return values
