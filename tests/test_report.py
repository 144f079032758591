import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from ieg_tf import example_stats, plots
from ieg_tf.config import TrainerConfig
from ieg_tf.datasets import NoisyData
from ieg_tf.model import IEGTrainer
from ieg_tf.report import (COLUMNS, confusion_on_test_set, ema_probabilities, label_issues, per_class_accuracy,
                           read_confusion_csv, read_label_issues_csv, report_for, write_confusion_csv,
                           write_label_issues_csv)

C = 3
# Hand-made statistics of 7 examples; the comment says what the flag rule must conclude and why.
VISITS = np.array([4, 4, 2, 3, 0, 2, 5], np.float32)
OMEGA = np.array([0.0, 0.02, 0.0, 0.01, 0.0, 0.005, 0.03], np.float32)
PSEUDO = np.array([0.75, 0.25, 1.0, 1.0, 0.9, 0.5, 0.8], np.float32)
GUESS = np.array([2, 1, 1, 0, 0, 2, 1])
GIVEN = np.array([0, 0, 1, 2, 1, 0, 2])
TRUE = np.array([2, 1, 1, 2, 0, 2, 1])
# 0 flagged (pseudo majority, guess 2 != 0), truly wrong: true positive
# 1 not flagged (pseudo 0.25), truly wrong: false negative
# 2 not flagged (guess = given), clean
# 3 flagged (pseudo 1.0, guess 0 != 2), clean: false positive
# 4 never visited: not flagged although pseudo_fraction says 0.9, truly wrong: false negative
# 5 not flagged (pseudo 0.5 is not a majority), truly wrong: false negative
# 6 flagged, truly wrong: true positive
EXPECTED_FLAG = [True, False, False, True, False, False, True]
IDS = np.arange(100, 107)


def _stats(guess=True):
    guess_sum = np.eye(C, dtype=np.float32)[GUESS] * VISITS[:, None] * 0.8 + 0.1 * (VISITS[:, None] > 0)
    return {"visits": VISITS, "omega_mean": OMEGA, "pseudo_fraction": PSEUDO,
            "guess_sum": guess_sum if guess else None}


def test_flags_precision_and_recall_match_hand_computation():
    issues = label_issues(_stats(), GIVEN, true_labels=TRUE, ids=IDS)
    np.testing.assert_array_equal(issues.label_believed_wrong, EXPECTED_FLAG)
    np.testing.assert_array_equal(issues.suggested_label, [2, 1, 1, 0, 1, 2, 1])  # unvisited 4 keeps its label
    assert issues.precision == pytest.approx(2 / 3)  # flagged 0, 3, 6; truly wrong among them 0, 6
    assert issues.recall == pytest.approx(2 / 5)     # truly wrong 0, 1, 4, 5, 6
    rows = issues.rows()
    assert len(rows) == 7
    assert rows[0] == {"id": 100, "given_label": 0, "suggested_label": 2, "omega_mean": 0.0,
                       "pseudo_fraction": 0.75, "visits": 4, "label_believed_wrong": True, "true_label": 2}
    assert rows[4]["label_believed_wrong"] is False and rows[4]["visits"] == 0


def test_omega_threshold_also_requires_a_low_meta_weight():
    issues = label_issues(_stats(), GIVEN, true_labels=TRUE, omega_threshold=0.015)
    np.testing.assert_array_equal(issues.label_believed_wrong, [True, False, False, True, False, False, False])
    assert issues.precision == pytest.approx(1 / 2) and issues.recall == pytest.approx(1 / 5)


def test_unknown_true_labels_are_left_out_of_precision_and_recall():
    true = TRUE.copy()
    true[6] = -1
    issues = label_issues(_stats(), GIVEN, true_labels=true)
    assert issues.precision == pytest.approx(1 / 2)  # flags with known truth: 0 (right), 3 (wrong)
    assert issues.recall == pytest.approx(1 / 4)     # known wrong labels: 0, 1, 4, 5


def test_without_true_labels_precision_and_recall_are_none():
    issues = label_issues(_stats(), GIVEN)
    assert issues.true_label is None and issues.precision is None and issues.recall is None
    assert "true_label" not in issues.rows()[0]
    np.testing.assert_array_equal(issues.id, np.arange(7))
    np.testing.assert_array_equal(issues.label_believed_wrong, EXPECTED_FLAG)


def test_undefined_precision_when_nothing_is_flagged():
    issues = label_issues(_stats(), GUESS, true_labels=TRUE)  # every given label is the model's guess
    assert not issues.label_believed_wrong.any()  # example 3 has a wrong label the flag misses: recall 0
    assert issues.precision is None and issues.recall == 0.0


def test_predictions_fill_in_without_guesses_and_for_unvisited_examples():
    predicted = np.eye(C)[[1, 2, 0, 0, 0, 0, 0]] * 0.7 + 0.1
    issues = label_issues(_stats(guess=False), GIVEN, predicted=predicted)
    np.testing.assert_array_equal(issues.suggested_label, [1, 2, 0, 0, 0, 0, 0])
    # 2 is now flagged: its prediction 0 contests the given 1 in a majority of pseudo-label votes.
    np.testing.assert_array_equal(issues.label_believed_wrong, [True, False, True, True, False, False, True])
    mixed = label_issues(_stats(guess=True), GIVEN, predicted=predicted)
    np.testing.assert_array_equal(mixed.suggested_label, [2, 1, 1, 0, 0, 2, 1])  # 4 unvisited -> prediction


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="predicted="):
        label_issues(_stats(guess=False), GIVEN)
    with pytest.raises(ValueError, match="one entry per training example"):
        label_issues(_stats(), GIVEN[:5])
    with pytest.raises(ValueError, match="pseudo_threshold"):
        label_issues(_stats(), GIVEN, pseudo_threshold=1.0)
    with pytest.raises(ValueError, match="predicted"):
        label_issues(_stats(), GIVEN, predicted=np.zeros([6, C]))


@pytest.mark.parametrize("with_truth", [True, False])
def test_csv_round_trip(tmp_path, with_truth):
    issues = label_issues(_stats(), GIVEN, true_labels=TRUE if with_truth else None, ids=IDS)
    path = str(tmp_path / "label_issues.csv")
    assert write_label_issues_csv(issues, path) == path
    lines = open(path).read().splitlines()
    assert lines[0] == ",".join(COLUMNS + (("true_label",) if with_truth else ()))
    assert lines[1].startswith("100,0,2,0.0,0.75,4,1")
    assert len(lines) == 8
    back = read_label_issues_csv(path)
    for name in ("id", "given_label", "suggested_label", "omega_mean", "pseudo_fraction", "visits",
                 "label_believed_wrong"):
        got, want = getattr(back, name), getattr(issues, name)
        assert got.dtype == want.dtype, name
        np.testing.assert_array_equal(got, want, err_msg=name)
    if with_truth:
        np.testing.assert_array_equal(back.true_label, TRUE)
        assert back.precision == pytest.approx(2 / 3) and back.recall == pytest.approx(2 / 5)
    else:
        assert back.true_label is None and back.precision is None and back.recall is None


def test_class_names_add_named_columns_that_read_back(tmp_path):
    names = ("cat", "dog", "fox")
    issues = label_issues(_stats(), GIVEN, true_labels=TRUE, ids=IDS, class_names=names)
    rows = issues.rows()
    assert [(r["given_class"], r["suggested_class"]) for r in rows] == [
        (names[g], names[s]) for g, s in zip(GIVEN, issues.suggested_label)]
    path = str(tmp_path / "named.csv")
    write_label_issues_csv(issues, path)
    assert open(path).readline().strip() == ",".join(COLUMNS + ("true_label", "given_class", "suggested_class"))
    back = read_label_issues_csv(path)
    assert back.class_names == names and back.rows() == rows
    with pytest.raises(ValueError, match="class_names has 2 names, but the labels go up to 2"):
        label_issues(_stats(), GIVEN, class_names=names[:2])


def test_reading_a_foreign_csv_raises_value_error(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a label-issue CSV"):
        read_label_issues_csv(str(path))


# ---------------------------------------------------------------- report_for on a real trainer
SHAPE, N = (4, 4, 1), 10


def _trainer(num_train_examples=N, method="ieg"):
    keras.utils.set_random_seed(1)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Dense(8, activation="tanh")(keras.layers.Flatten()(inputs))
    net = keras.Model(inputs, keras.layers.Dense(C)(x))
    trainer = IEGTrainer(net, C, TrainerConfig(method=method), num_train_examples=num_train_examples)
    rng = np.random.default_rng(3)
    for shadow in trainer.ema_weights:  # EMA values distinct from the live weights
        shadow.assign(rng.normal(size=shadow.shape).astype(np.float32))
    return trainer


def _data(true=True):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (N, *SHAPE), dtype=np.uint8)
    labels = rng.integers(0, C, N).astype(np.int32)
    empty = np.zeros([0, *SHAPE], np.uint8)
    return NoisyData(
        name="toy", num_classes=C, class_names=None, image_shape=SHAPE, train_images=images,
        train_labels=labels, train_true_labels=(labels + 1) % C if true else None, train_ids=np.arange(N) * 10,
        probe_images=empty, probe_labels=np.zeros([0], np.int32), probe_ids=np.zeros([0], np.int64),
        test_images=empty, test_labels=np.zeros([0], np.int32), noise_type="uniform", noise_ratio=1.0,
        noise_rate_realized=1.0, augment_kind="cifar")


def _set_stats(trainer, pseudo):
    stats = trainer.example_stats
    stats.visits.assign(np.full(N, 2.0, np.float32))
    stats.pseudo_count.assign(2.0 * np.asarray(pseudo, np.float32))
    stats.omega_sum.assign(np.full(N, 0.02, np.float32))


def test_report_for_uses_ema_predictions_when_guesses_are_not_kept(monkeypatch):
    monkeypatch.setattr(example_stats, "MAX_GUESS_ENTRIES", 0)
    trainer = _trainer()
    assert trainer.example_stats.result()["guess_sum"] is None
    data = _data()
    pseudo = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    _set_stats(trainer, pseudo)
    issues = report_for(trainer, data, batch_size=4)  # 3 batches, the last one short

    scaled = (data.train_images.astype(np.float32) / 255.0 - 0.5) * 2.0
    ema = np.argmax(trainer.ema_logits(scaled).numpy(), axis=1)
    live = np.argmax(trainer.network(scaled).numpy(), axis=1)
    assert np.any(ema != live), "the test needs EMA predictions that differ from the live network's"
    np.testing.assert_array_equal(issues.suggested_label, ema)
    np.testing.assert_array_equal(issues.label_believed_wrong, (pseudo == 1) & (ema != data.train_labels))
    np.testing.assert_array_equal(issues.id, data.train_ids)
    np.testing.assert_allclose(issues.omega_mean, 0.01)
    np.testing.assert_array_equal(issues.true_label, data.train_true_labels)
    assert issues.recall == pytest.approx(np.mean(issues.label_believed_wrong))  # every given label is wrong


@pytest.mark.parametrize("method", ["supervised", "l2r"])
def test_methods_that_cannot_flag_report_no_precision_or_recall(method):
    """Neither has lambda* votes, so nothing is ever flagged; a recall of 0.0 read as a measured miss."""
    trainer = _trainer(method=method)
    data = _data()
    issues = report_for(trainer, data)
    assert not issues.label_believed_wrong.any()
    assert issues.precision is None and issues.recall is None
    assert report_for(_trainer(), data).recall == 0.0  # ieg, unvisited: it could flag, and flagged none


def test_report_for_prefers_the_guesses_of_visited_examples():
    trainer = _trainer()
    data = _data(true=False)
    _set_stats(trainer, np.ones(N))
    guesses = (data.train_labels + 2) % C
    trainer.example_stats.guess_sum.assign(2.0 * np.eye(C, dtype=np.float32)[guesses])
    issues = report_for(trainer, data)
    np.testing.assert_array_equal(issues.suggested_label, guesses)
    assert issues.label_believed_wrong.all() and issues.precision is None


def test_test_confusion_counts_ema_predictions_by_true_class(tmp_path):
    import dataclasses
    trainer = _trainer()
    data = _data()
    data = dataclasses.replace(data, test_images=data.train_images, test_labels=data.train_labels)
    confusion = confusion_on_test_set(trainer, data, batch_size=4)
    scaled = (data.train_images.astype(np.float32) / 255.0 - 0.5) * 2.0
    ema = np.argmax(trainer.ema_logits(scaled).numpy(), axis=1)
    expected = np.zeros((C, C), np.int64)
    for t, p in zip(data.train_labels, ema):
        expected[t, p] += 1
    np.testing.assert_array_equal(confusion, expected)
    write_confusion_csv(confusion, tmp_path / "c.csv", ["a", "b", "c"])
    back, names = read_confusion_csv(tmp_path / "c.csv")
    np.testing.assert_array_equal(back, confusion)
    assert names == ["a", "b", "c"]
    # no test images: no matrix (file-path test sets: tests/test_data_guards.py)
    assert confusion_on_test_set(trainer, _data()) is None


def test_per_class_accuracy_is_the_recall_of_each_class_and_none_for_an_absent_class():
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]])
    assert per_class_accuracy(confusion) == [0.75, None, 0.5]


def test_report_for_rejects_a_trainer_without_matching_statistics():
    with pytest.raises(ValueError, match="num_train_examples"):
        report_for(_trainer(num_train_examples=None), _data())
    with pytest.raises(ValueError, match="counts 7 examples"):
        report_for(_trainer(num_train_examples=7), _data())
    diverged = _trainer()
    diverged.network.trainable_variables[0].assign(np.full(diverged.network.trainable_variables[0].shape, np.inf,
                                                            np.float32))
    with pytest.raises(ValueError, match="holds NaN or Inf: the training diverged"):
        report_for(diverged, _data())
    with pytest.raises(ValueError, match="holds NaN or Inf"):  # the test-set confusion's predictions too
        ema_probabilities(diverged, _data().train_images)


# ---------------------------------------------------------------- plots
def _assert_png(path):
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (600, 400)
        pixels = np.asarray(image.convert("L"), np.float32)
    assert pixels.std() > 10.0  # something is drawn, not a blank canvas
    assert path.stat().st_size > 5000


def test_plot_accuracy_writes_a_png(tmp_path):
    path = tmp_path / "accuracy.png"
    plots.plot_accuracy({"loss": [1.0, 0.5, 0.4], "val_accuracy": [0.3, 0.7, 0.6]}, str(path))
    _assert_png(path)
    with pytest.raises(ValueError, match="val_accuracy"):
        plots.plot_accuracy({"loss": [1.0]}, str(tmp_path / "none.png"))


def test_plot_omega_distribution_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    true = rng.integers(0, C, 200)
    given = np.where(rng.random(200) < 0.6, (true + 1) % C, true)
    omega = np.where(given == true, rng.gamma(4.0, 0.005, 200), rng.exponential(0.002, 200))
    visits = rng.integers(0, 3, 200)
    path = tmp_path / "omega.png"
    plots.plot_omega_distribution(omega, given, true, str(path), visits=visits, batch_size=100)
    _assert_png(path)
    with pytest.raises(ValueError, match="no visited"):
        plots.plot_omega_distribution(omega, given, np.full(200, -1), str(tmp_path / "none.png"))


def test_report_after_real_ieg_steps_counts_every_visit():
    trainer = _trainer()
    trainer.compile()
    data = _data()
    scaled = (data.train_images.astype(np.float32) / 255.0 - 0.5) * 2.0
    ds = tf.data.Dataset.from_tensor_slices({
        "weak": scaled, "strong": scaled[::-1].copy(), "label": data.train_labels, "id": np.arange(N),
        "true_label": data.train_true_labels, "probe_image": scaled, "probe_label": data.train_true_labels,
    }).batch(5)
    trainer.fit(ds, epochs=3, verbose=0)
    issues = report_for(trainer, data)
    np.testing.assert_array_equal(issues.visits, 3)
    assert np.all((issues.pseudo_fraction >= 0) & (issues.pseudo_fraction <= 1))
    guess = trainer.example_stats.result()["guess_sum"]
    np.testing.assert_allclose(guess.sum(axis=1), 3.0, rtol=1e-5)
    np.testing.assert_array_equal(issues.suggested_label, np.argmax(guess, axis=1))
    # omega* sums to 1 in each of the 6 batches; each example's sum is divided by its 3 visits.
    np.testing.assert_allclose(issues.omega_mean.sum(), 6 / 3, rtol=1e-3)


def test_example_stats_sum_each_visit_and_average_over_visits():
    stats = example_stats.ExampleStats(3, 2)
    # Example 2 is seen twice in one batch, example 1 never; lambda* = 1 keeps the label, 0 takes the guess.
    stats.update(tf.constant([0, 2, 2]), tf.constant([0.1, 0.2, 0.3]), tf.constant([0.0, 1.0, 0.25]),
                 tf.constant([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    stats.update(tf.constant([0]), tf.constant([0.3]), tf.constant([1.0]), tf.constant([[0.0, 1.0]]))
    result = stats.result()
    np.testing.assert_array_equal(result["visits"], [2, 0, 2])
    np.testing.assert_allclose(result["omega_mean"], [0.2, 0.0, 0.25], rtol=1e-6)
    np.testing.assert_allclose(result["pseudo_fraction"], [0.5, 0.0, 0.375], rtol=1e-6)
    np.testing.assert_allclose(result["guess_sum"], [[1.0, 1.0], [0.0, 0.0], [0.5, 1.5]], rtol=1e-6)
    assert all(np.all(np.isfinite(v)) for v in result.values())  # an unvisited example is 0, not 0 / 0
