"""The benchmark scripts' logic: run planning, targets, tables, and one real in-process step timing."""

import json
import pathlib

import pytest

from bench import accuracy, common, errors, meta_modes, step_time


def _row(run, acc, method=None, precision=None, recall=None, seed=12345):
    noise, name = run.split("/")
    return dict(run=run, noise=noise, method=method or name, test_accuracy=acc, best_test_accuracy=acc,
                label_issue_precision=precision, label_issue_recall=recall, seconds=10.0, wall_seconds=12.0,
                seed=seed)


def test_planned_runs_clean_only_ceiling_and_ieg_and_oracle_only_on_request():
    runs = accuracy.planned_runs(accuracy.DEFAULT_METHODS, list(accuracy.NOISE))
    assert runs[:2] == [("clean", "supervised"), ("clean", "ieg")]
    assert ("clean", "l2r") not in runs and ("clean", "ieg_split") not in runs
    assert [m for n, m in runs if n == "uniform80"] == ["supervised", "l2r", "ieg", "ieg_split"]
    assert [m for n, m in runs if n == "asym40"] == ["supervised", "l2r", "ieg", "ieg_split"]
    assert all(m != "oracle" for _, m in runs)
    assert accuracy.planned_runs(["oracle"], ["uniform80"]) == [("uniform80", "oracle")]


@pytest.mark.parametrize("ieg, met_ceiling, met_gain", [(0.975, True, True), (0.95, False, True),
                                                       (0.85, False, False)])
def test_check_targets(ieg, met_ceiling, met_gain):
    rows = [_row("clean/supervised", 0.985), _row("uniform80/supervised", 0.80), _row("uniform80/ieg", ieg)]
    targets = accuracy.check_targets(rows)
    assert targets["ieg_u80_within_2_points_of_ceiling"] is met_ceiling
    assert targets["ieg_u80_at_least_10_points_above_supervised"] is met_gain
    assert targets["ieg_u80_gap_to_ceiling_points"] == pytest.approx(100 * (0.985 - ieg), abs=0.01)
    assert targets["ieg_u80_gain_over_supervised_points"] == pytest.approx(100 * (ieg - 0.80), abs=0.01)


def test_check_targets_leaves_out_what_was_not_run():
    assert accuracy.check_targets([_row("uniform80/ieg", 0.9)]) == {}
    only_gain = accuracy.check_targets([_row("uniform80/ieg", 0.9), _row("uniform80/supervised", 0.5)])
    assert set(only_gain) == {"ieg_u80_gain_over_supervised_points", "ieg_u80_at_least_10_points_above_supervised"}


def test_accuracy_table_gives_issue_columns_only_to_relabelling_methods():
    rows = [_row("uniform80/supervised", 0.5), _row("uniform80/ieg_split", 0.96, precision=0.99, recall=0.95)]
    lines = accuracy.table(rows).splitlines()
    assert lines[0].startswith("| noise | method | seed | test acc % (final)")
    assert lines[2] == "| uniform80 | supervised | 12345 | 50.0 | 50.0 | - | - | 10 | 12 |"
    assert lines[3] == "| uniform80 | ieg_split | 12345 | 96.0 | 96.0 | 0.990 | 0.950 | 10 | 12 |"
    drawn = accuracy.table([dict(rows[0], draw=7)]).splitlines()
    assert drawn[0].startswith("| noise | method | seed | data seed | test acc % (final)")
    assert drawn[2] == "| uniform80 | supervised | 12345 | 7 | 50.0 | 50.0 | - | - | 10 | 12 |"


def test_check_targets_over_seeds_reports_each_seed_the_mean_and_every_seed():
    rows = [_row("clean/supervised", 0.985, seed=1), _row("uniform80/ieg", 0.975, seed=1),
            _row("uniform80/supervised", 0.3, seed=1),
            _row("clean/supervised", 0.98, seed=2), _row("uniform80/ieg", 0.95, seed=2),
            _row("uniform80/supervised", 0.3, seed=2)]
    targets = accuracy.check_targets(rows)
    assert targets["seed1"]["ieg_u80_within_2_points_of_ceiling"] is True
    assert targets["seed2"]["ieg_u80_within_2_points_of_ceiling"] is False
    assert targets["mean_ieg_u80_gap_to_ceiling_points"] == pytest.approx((1.0 + 3.0) / 2, abs=0.01)
    assert targets["every_seed_ieg_u80_within_2_points_of_ceiling"] is False
    assert targets["every_seed_ieg_u80_at_least_10_points_above_supervised"] is True
    # A --tag renames the runs, not the methods the targets read.
    tagged = [dict(r, run=r["run"] + "_t") for r in rows[:3]]
    assert accuracy.check_targets(tagged)["ieg_u80_gap_to_ceiling_points"] == pytest.approx(1.0, abs=0.01)


def test_seed_summary_gives_mean_min_max_per_setting():
    rows = [_row("uniform80/ieg", 0.95, precision=0.9, recall=0.8, seed=1),
            _row("uniform80/ieg", 0.97, precision=1.0, recall=0.9, seed=2),
            _row("clean/supervised", 0.98, seed=1), _row("clean/ieg", 0.99, precision=None, recall=None, seed=1)]
    lines = accuracy.seed_summary(rows).splitlines()
    assert lines[2] == "| uniform80 | ieg | 96.0 | 95.0 | 97.0 | 96.0 | 0.950 | 0.850 | 2 |"
    assert lines[3] == "| clean | supervised | 98.0 | 98.0 | 98.0 | 98.0 | - | - | 1 |"
    assert lines[4] == "| clean | ieg | 99.0 | 99.0 | 99.0 | 99.0 | - | - | 1 |"


def test_holdout_split_is_a_seeded_stratified_third_of_the_training_split_only(tmp_path):
    import numpy as np

    from ieg_tf import sources, train
    raw = sources.read_digits()
    flags = accuracy.holdout_flags("uniform80", tmp_path / "a", seed=1)
    data = np.load(tmp_path / "a" / "holdout_data.npz")
    assert f"--array_file={tmp_path / 'a' / 'holdout_data.npz'}" in flags and "--dataset=arrays" in flags
    assert {"--noise_type=uniform", "--noise_ratio=0.8", f"--eval_freq={accuracy.DIGITS_EPOCH}",
            f"--decay_steps={accuracy.DIGITS_EPOCH}"} <= set(flags)
    train_x, held_x = data["train_images"], data["test_images"]
    assert len(train_x) + len(held_x) == len(raw.train_labels)
    assert abs(len(held_x) - len(raw.train_labels) / 3) <= 10
    # Every held-out image is a training-split image (never a test image), and none is also trained on.
    key = lambda x: {a.tobytes() for a in x}  # noqa: E731
    assert key(held_x) <= key(raw.train_images) and not key(held_x) & key(raw.test_images)
    assert not key(held_x) & key(train_x)
    counts = np.bincount(data["test_labels"], minlength=10)  # stratified: 1/3 of each class (117-122 images)
    assert counts.min() >= 38 and counts.max() <= 41
    other = accuracy.holdout_flags("clean", tmp_path / "b", seed=2)
    assert "--noise_type=none" in other
    assert key(np.load(tmp_path / "b" / "holdout_data.npz")["test_images"]) != key(held_x)
    with pytest.raises(ValueError, match="holdout supports"):
        accuracy.holdout_flags("asym40", tmp_path / "c", seed=1)
    # The schedule and KL weight written here are the digits default's.
    assert f"--consistency_factor={train.DATASET_DEFAULTS['digits']['consistency_factor']}" in flags
    assert accuracy.DIGITS_EPOCH == (len(raw.train_labels) - 10) // 100


def test_accuracy_cli_refuses_untagged_flags_and_holdout_without_its_noise(capsys):
    with pytest.raises(SystemExit):
        accuracy.main(["--flags=--ce_factor=2"])
    assert "give it a --tag" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--holdout", "--noise", "asym40"])
    assert "--holdout runs the noise settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--probe_per_class", "0"])
    assert "--probe_per_class must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--methods", "oracle", "--probe_per_class", "1", "3"])
    assert "oracle is a 1-probe-image diagnostic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--data_seed", "2", "--flags=--data_seed=3", "--tag", "d"])
    assert "give the data seeds once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--runs", "clean/supervised", "--methods", "ieg"])
    assert "leave out --methods and --noise" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--runs", "uniform80-ieg"])
    assert "--runs takes noise/method pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        accuracy.main(["--holdout", "--runs", "asym40/ieg"])
    assert "--holdout runs the noise settings" in capsys.readouterr().err


def test_more_probe_images_plan_only_the_probe_methods_on_noisy_labels():
    plan = accuracy.planned_runs(["supervised", "ieg", "l2r"], ["clean", "uniform40", "uniform80"], probe_per_class=5)
    assert plan == [("uniform40", "l2r"), ("uniform40", "ieg"), ("uniform80", "l2r"), ("uniform80", "ieg")]
    assert ("clean", "supervised") in accuracy.planned_runs(["supervised"], ["clean"], probe_per_class=1)


def test_invocation_plan_trains_each_run_once_per_seed_and_probe_size():
    plan = accuracy.invocation_plan([1, 2, 1], ["ieg", "supervised"], ["uniform80", "clean", "uniform80"], [1, 5, 1])
    assert plan == [(1, None, "uniform80", "supervised", 1), (1, None, "uniform80", "ieg", 1),
                    (1, None, "clean", "supervised", 1), (1, None, "clean", "ieg", 1), (1, None, "uniform80", "ieg", 5),
                    (2, None, "uniform80", "supervised", 1), (2, None, "uniform80", "ieg", 1),
                    (2, None, "clean", "supervised", 1), (2, None, "clean", "ieg", 1), (2, None, "uniform80", "ieg", 5)]


def test_invocation_plan_with_data_seeds_and_explicit_runs():
    runs = accuracy.parse_runs(["clean/supervised", "uniform80/ieg", "clean/supervised"])
    plan = accuracy.invocation_plan([1, 2], ["l2r"], ["asym40"], [1], data_seeds=[7, 1, 7], runs=runs)
    assert plan == [(1, 7, "clean", "supervised", 1), (1, 7, "uniform80", "ieg", 1),
                    (1, 1, "clean", "supervised", 1), (1, 1, "uniform80", "ieg", 1),
                    (2, 7, "clean", "supervised", 1), (2, 7, "uniform80", "ieg", 1),
                    (2, 1, "clean", "supervised", 1), (2, 1, "uniform80", "ieg", 1)]
    # The probe-size rule holds for explicit runs too: no clean or supervised run with 5 images per class.
    assert accuracy.planned_runs([], [], 5, runs) == [("uniform80", "ieg")]
    for bad in ("uniform80", "uniform80/ieg2", "noisy/ieg"):
        with pytest.raises(ValueError, match="--runs takes noise/method pairs"):
            accuracy.parse_runs([bad])


def test_run_command_draws_the_data_with_the_data_seed(tmp_path):
    import numpy as np
    own_dir, own = accuracy.run_command("uniform80", "ieg", 100, tmp_path, 3, "auto", data_seed=3)
    assert (own_dir, own) == accuracy.run_command("uniform80", "ieg", 100, tmp_path, 3, "auto")
    assert not any(a.startswith("--data_seed") for a in own)
    other_dir, other = accuracy.run_command("uniform80", "ieg", 100, tmp_path, 3, "auto", data_seed=5)
    assert other_dir == tmp_path / "steps100_seed3" / "uniform80_ieg_data5"
    assert "--data_seed=5" in other and "--seed=3" in other
    # The holdout split is data too: it follows the data seed, not the training seed.
    held_dir, _ = accuracy.run_command("uniform80", "ieg", 100, tmp_path, 3, "auto", holdout=True, data_seed=5)
    accuracy.holdout_flags("uniform80", tmp_path / "ref5", seed=5)
    accuracy.holdout_flags("uniform80", tmp_path / "ref3", seed=3)
    held = np.load(held_dir / "holdout_data.npz")["test_images"]
    assert np.array_equal(held, np.load(tmp_path / "ref5" / "holdout_data.npz")["test_images"])
    assert not np.array_equal(held, np.load(tmp_path / "ref3" / "holdout_data.npz")["test_images"])


def test_draw_summary_splits_the_spread_into_training_run_and_data_draw():
    def row(run, acc, seed, draw, recall=None):
        return dict(_row(run, acc, recall=recall, seed=seed), draw=draw)
    accs = {7: [0.95, 0.97, 0.96], 8: [0.90, 0.92, 0.91]}
    rows = [row("clean/supervised", 0.99, seed, draw) for draw in accs for seed in (1, 2, 3)]
    rows += [row("uniform80/ieg", a, seed, draw, recall=0.9 + draw / 100)
             for draw, values in accs.items() for seed, a in zip((1, 2, 3), values)]
    rows.append(_row("uniform80/ieg", 0.5, seed=1))  # no data seed: left out
    summary = accuracy.draw_summary(rows)
    ieg = summary["uniform80/ieg"]
    assert ieg["draws"][7] == dict(accuracy={1: 95.0, 2: 97.0, 3: 96.0}, mean=96.0, sd=1.0, gap=3.0, recall=0.97)
    assert ieg["draws"][8]["mean"] == 91.0 and ieg["draws"][8]["gap"] == 8.0
    # Within each draw the runs' sd is 1; the draws' means differ by 5 points: MSB = 3 * 2 * 2.5^2 = 37.5,
    # MSW = 1, n0 = 3, so the draws' own sd is sqrt(36.5 / 3).
    assert ieg["within_sd"] == 1.0 and ieg["between_sd"] == pytest.approx((36.5 / 3) ** 0.5, abs=0.01)
    ceiling = summary["clean/supervised"]
    assert ceiling["draws"][7]["gap"] is None and ceiling["draws"][7]["recall"] is None
    assert ceiling["within_sd"] == 0.0 and ceiling["between_sd"] == 0.0
    lines = accuracy.draw_table(summary).splitlines()
    assert lines[0] == ("| noise | method | data seed | seed 1 % | seed 2 % | seed 3 % | mean % | sd | mean gap "
                        "| issue recall |")
    assert lines[4] == "| uniform80 | ieg | 7 | 95.00 | 97.00 | 96.00 | 96.00 | 1.00 | 3.00 | 0.970 |"
    assert "| uniform80/ieg | 2 | 1.00 | 3.49 |" in lines
    # Draws whose means differ less than the runs' noise predicts have no spread of their own.
    flat = [row("uniform80/ieg", a, seed, draw) for draw in (7, 8) for seed, a in zip((1, 2), (0.95, 0.97))]
    assert accuracy.draw_summary(flat)["uniform80/ieg"]["between_sd"] == 0.0


def test_targets_and_grid_compare_each_run_with_the_ceiling_of_its_own_data_draw():
    rows = [dict(_row("clean/supervised", acc, seed=1), draw=draw) for draw, acc in ((7, 0.99), (8, 0.97))]
    rows += [dict(_row("uniform80/ieg", acc, seed=1), draw=draw) for draw, acc in ((7, 0.96), (8, 0.96))]
    targets = accuracy.check_targets(rows)
    assert targets["seed1_data7"]["ieg_u80_gap_to_ceiling_points"] == pytest.approx(3.0, abs=0.01)
    assert targets["seed1_data8"]["ieg_u80_gap_to_ceiling_points"] == pytest.approx(1.0, abs=0.01)
    assert targets["mean_ieg_u80_gap_to_ceiling_points"] == pytest.approx(2.0, abs=0.01)
    assert accuracy.noise_grid(rows)["ieg"]["uniform80"] == dict(mean=96.0, gap=2.0, seeds=2)


def test_run_command_names_the_probe_size_and_keeps_the_one_probe_schedule(tmp_path):
    one_dir, one = accuracy.run_command("uniform40", "ieg", 1246, tmp_path, 3, "auto")
    five_dir, five = accuracy.run_command("uniform40", "ieg", 1246, tmp_path, 3, "auto", probe_per_class=5)
    assert one_dir == tmp_path / "steps1246_seed3" / "uniform40_ieg"
    assert five_dir == tmp_path / "steps1246_seed3" / "uniform40_ieg_probe5"
    assert "--noise_ratio=0.4" in one and "--probe_per_class=1" in one
    assert not any(a.startswith(("--eval_freq", "--decay_steps")) for a in one)  # the package's own epoch
    # 5 images per class leave (1198 - 50) // 100 = 11 steps per epoch; 10 would leave 10 and move the cycle ends.
    assert {"--probe_per_class=5", f"--eval_freq={accuracy.DIGITS_EPOCH}",
            f"--decay_steps={accuracy.DIGITS_EPOCH}"} <= set(five)
    assert accuracy.run_name("ieg", 10, "t") == "ieg_probe10_t" and accuracy.run_name("ieg", 1, "") == "ieg"
    with pytest.raises(ValueError, match="no other probe size"):
        accuracy.run_command("uniform80", "oracle", 10, tmp_path, 1, "auto", probe_per_class=3)


def test_targets_read_only_the_one_probe_image_runs_and_the_grid_gives_means_and_gaps():
    rows = [_row("clean/supervised", 0.98, seed=1), _row("clean/supervised", 0.99, seed=2),
            _row("uniform80/ieg", 0.95, seed=1), _row("uniform80/ieg", 0.96, seed=2),
            dict(_row("uniform80/ieg_probe5", 0.97, method="ieg", seed=1), probe_per_class=5),
            dict(_row("uniform80/ieg_probe5", 0.985, method="ieg", seed=2), probe_per_class=5),
            _row("uniform40/ieg", 0.975, seed=1)]
    rows[0]["probe_per_class"] = 1
    targets = accuracy.check_targets(rows)
    assert targets["seed1"]["ieg_u80_gap_to_ceiling_points"] == pytest.approx(3.0, abs=0.01)
    assert targets["mean_ieg_u80_gap_to_ceiling_points"] == pytest.approx(3.0, abs=0.01)
    grid = accuracy.noise_grid(rows)
    assert list(grid) == ["supervised", "ieg", "ieg_probe5"]
    assert grid["ieg"]["uniform80"] == dict(mean=95.5, gap=3.0, seeds=2)
    assert grid["ieg"]["uniform40"] == dict(mean=97.5, gap=0.5, seeds=1)
    assert grid["ieg_probe5"]["uniform80"] == dict(mean=97.75, gap=0.75, seeds=2)
    assert grid["ieg_probe5"]["probe_per_class"] == 5
    lines = accuracy.grid_table(grid).splitlines()
    assert lines[0] == "| run | probe/class | clean: mean % (gap) | uniform40: mean % (gap) | uniform80: mean % (gap) |"
    assert lines[3] == "| ieg | 1 | - | 97.5 (0.5) | 95.5 (3.0) |"
    assert lines[4] == "| ieg_probe5 | 5 | - | - | 97.8 (0.8) |"
    # Without a ceiling for every seed of a cell there is no gap, only the mean.
    assert accuracy.noise_grid(rows[2:4])["ieg"]["uniform80"]["gap"] is None


def test_grid_series_orders_by_noise_ratio_and_the_grid_figure_is_drawn(tmp_path):
    rows = [_row("clean/supervised", 0.98), _row("clean/ieg", 0.99), _row("uniform80/ieg", 0.95),
            _row("uniform20/ieg", 0.985), _row("asym40/ieg", 0.97), _row("uniform40/supervised", 0.7),
            dict(_row("uniform80/ieg_probe5", 0.97, method="ieg"), probe_per_class=5)]
    series = accuracy.grid_series(accuracy.noise_grid(rows))
    # asym40 is not a uniform ratio; supervised has two points (clean, 0.4); ieg_probe5 only one, so no line.
    assert series == {"supervised": ([0.0, 0.4], [98.0, 70.0]), "ieg": ([0.0, 0.2, 0.8], [99.0, 98.5, 95.0])}
    assert accuracy.grid_ceiling(accuracy.noise_grid(rows))["mean"] == 98.0
    tagged = [dict(r, run=r["run"] + "_t") for r in rows]  # a --tag renames every run, the ceiling's too
    assert accuracy.grid_ceiling(accuracy.noise_grid(tagged))["mean"] == 98.0
    assert accuracy.grid_ceiling(accuracy.noise_grid(rows[1:])) is None
    path = accuracy.plot_grid(accuracy.noise_grid(rows), tmp_path / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_stem_default_tag_holdout_and_a_named_report(capsys):
    assert accuracy.report_stem(False, "") == "accuracy"
    assert accuracy.report_stem(True, "eps02") == "holdout_accuracy_eps02"
    assert accuracy.report_stem(True, "eps02", "grid") == "grid"
    for bad in ("sub/grid", "grid.json"):
        with pytest.raises(ValueError, match="without its extension"):
            accuracy.report_stem(False, "", bad)
    with pytest.raises(SystemExit):
        accuracy.main(["--report", "a/b"])
    assert "--report names a file in --out" in capsys.readouterr().err


def test_accuracy_bench_default_budget_is_the_digits_default():
    from ieg_tf import train
    assert accuracy.DEFAULT_STEPS == train.DATASET_DEFAULTS["digits"]["max_iteration"]


def test_run_parallel_keeps_the_input_order():
    import time
    assert common.run_parallel(lambda a, b: time.sleep(0.01 * a) or a * b, [(3, 1), (1, 2), (2, 3)], 3) == [3, 2, 6]


def test_fmt_and_markdown_table():
    assert common.fmt(None) == "-" and common.fmt(0.1234, 1, 100) == "12.3" and common.fmt(7) == "7"
    assert common.markdown_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def _timing(method, ms, mode=None, every=1, mean=None, peak=900, before=600, breakdown=None):
    return dict(network="small_cnn", jit=False, method=method, meta_grad_mode=mode, meta_every=every, batch=100,
                step_ms=ms, step_mean_ms=mean if mean is not None else ms, peak_rss_mb=peak,
                rss_before_step_mb=before, breakdown_ms=breakdown)


def test_summarize_ratio_uses_the_exact_every_step_ieg_row():
    rows = [_timing("supervised", 20.0, breakdown={"losses": 5.0}),
            _timing("ieg", 70.0, "exact", breakdown={"guess": 10.0}),
            _timing("ieg", 40.0, "last_layer"),
            _timing("ieg", 99.0, "exact", every=4, mean=30.0)]
    (entry,) = step_time.summarize(rows)
    assert entry["supervised_ms"] == 20.0 and entry["ieg_ms"] == 70.0 and entry["ratio"] == 3.5
    assert entry["ieg_breakdown_ms"] == {"guess": 10.0}
    # With k > 1 the amortised (mean over whole cycles) time is the figure, not the median.
    assert entry["modes"]["exact/every4"]["ieg_ms"] == 30.0 and entry["modes"]["exact/every4"]["ratio"] == 1.5
    assert entry["modes"]["last_layer/every1"]["ratio"] == 2.0


def test_meta_modes_combine_and_table():
    times = [_timing("supervised", 25.0, peak=700, before=600), _timing("ieg", 100.0, "exact", peak=900),
             _timing("ieg", 50.0, "last_layer", every=4, mean=40.0, peak=800)]
    trainings = {("exact", 1): dict(test_accuracy=0.95, best_test_accuracy=0.96, label_issue_precision=0.99,
                                    label_issue_recall=0.9, seconds=300.0, model_dir="d", command="c")}
    report = meta_modes.combine(times, trainings)
    assert report["supervised"] == dict(step_ms=25.0, peak_rss_mb=700, step_rss_mb=100)
    exact, last = report["rows"]
    assert (exact["ratio_to_supervised"], exact["step_rss_mb"], exact["test_accuracy"]) == (4.0, 300, 0.95)
    assert (last["step_ms"], last["ratio_to_supervised"], last["test_accuracy"]) == (40.0, 1.6, None)
    lines = meta_modes.table(report).splitlines()
    assert len(lines) == 5 and lines[3].startswith("| exact | 1 | 100.0 | 4.00 | 900 | 300 | 95.0 | 96.0 |")
    assert meta_modes.run_name("exact", 1) == "ieg" and meta_modes.run_name("approx_vjp", 4) == "ieg_approx_vjp_k4"
    assert [c["method"] for c in meta_modes.time_configs(["exact"], [1, 4], False, 1, 2)] == [
        "supervised", "ieg", "ieg"]


@pytest.mark.parametrize("method, stop_guess, breakdown", [("supervised", False, True), ("ieg", False, True),
                                                         ("ieg", True, False)])
def test_measure_config_times_a_real_step_and_every_stage(method, stop_guess, breakdown):
    result = step_time.measure_config(network="small_cnn", jit=False, method=method, mode="exact", meta_every=1,
                                      batch=8, warmup=1, steps=2, breakdown=breakdown, stop_guess=stop_guess)
    json.dumps(result)  # what the child prints
    assert result["meta_stop_guess_gradient"] is stop_guess
    assert result["step_ms"] > 0 and result["peak_rss_mb"] >= result["rss_before_step_mb"] > 0
    if not breakdown:
        assert "breakdown_ms" not in result
        return
    stages = ["losses", "backward", "update"] if method == "supervised" else list(step_time.STAGES)
    assert list(result["breakdown_ms"]) == stages
    cumulative = result["cumulative_ms"]
    assert all(cumulative[s] > 0 for s in stages)
    # The breakdown is the difference of consecutive cumulative medians, so it sums to the last one.
    assert sum(result["breakdown_ms"].values()) == pytest.approx(cumulative["update"], abs=0.05)


def test_without_meta_times_the_ieg_step_with_no_meta_step_solved():
    common_args = dict(network="small_cnn", jit=False, method="ieg", batch=8, warmup=1, steps=2, breakdown=False)
    skipped = step_time.measure_config(mode=None, meta_every=1, without_meta=True, **common_args)
    assert skipped["without_meta"] is True and skipped["step_ms"] > 0
    assert skipped["meta_solved_while_timed"] is False
    # The same cache with a due step does record a solve, so the check above can fail.
    solving = step_time.measure_config(mode="exact", meta_every=2, **common_args)
    assert solving["meta_solved_while_timed"] is True
    with pytest.raises(ValueError, match="XLA off"):
        step_time.measure_config(mode=None, meta_every=1, without_meta=True, **dict(common_args, jit=True))


def test_summary_gives_the_ratio_without_meta():
    base = dict(network="wrn28-2", jit=False, batch=100, meta_every=1, peak_rss_mb=1, step_mean_ms=None)
    rows = [dict(base, method="supervised", meta_grad_mode=None, step_ms=100.0),
            dict(base, method="ieg", meta_grad_mode="exact", step_ms=800.0),
            dict(base, method="ieg", meta_grad_mode="exact", meta_every=2**31 - 1, step_ms=500.0,
                 without_meta=True)]
    [entry] = step_time.summarize(rows)
    assert entry["ratio"] == 8.0 and entry["ieg_without_meta_ms"] == 500.0 and entry["ratio_without_meta"] == 5.0
    assert list(entry["modes"]) == ["exact/every1"] and "ieg/without_meta" in entry["peak_rss_mb"]
    assert "none (skipped)" in step_time.table(rows)


def test_suggestion_errors_counts_wrong_suggestions_by_true_and_suggested_class(tmp_path):
    import dataclasses

    import numpy as np

    from ieg_tf import report
    true = np.array([1, 1, 1, 1, 5, 5, 7, 0])
    suggested = np.array([2, 2, 2, 1, 0, 5, 7, 0])
    given = np.array([1, 2, 2, 3, 4, 5, 7, 0])   # wrong suggestions: given right once, equal to them twice
    n = len(true)
    issues = report.LabelIssues(
        id=np.arange(n), given_label=given, suggested_label=suggested, omega_mean=np.zeros(n, np.float32),
        pseudo_fraction=np.zeros(n, np.float32), visits=np.ones(n, np.int64),
        label_believed_wrong=np.zeros(n, bool), true_label=true, precision=None, recall=None)
    report.write_label_issues_csv(issues, tmp_path / "label_issues.csv")
    counts = errors.suggestion_errors(tmp_path)
    assert counts == dict(suggested_accuracy=0.5, wrong=4, kept_wrong_label=2, overrode_right_label=1,
                          top_pairs={"1->2": 3, "5->0": 1})
    report.write_label_issues_csv(dataclasses.replace(issues, true_label=None), tmp_path / "label_issues.csv")
    assert errors.suggestion_errors(tmp_path) is None


def test_confusion_errors_count_test_errors_by_true_and_predicted_class(tmp_path):
    import numpy as np

    from ieg_tf import report
    assert errors.confusion_errors(tmp_path) is None  # a run without test_confusion.csv
    confusion = np.array([[5, 0, 1], [2, 7, 0], [0, 3, 2]])
    report.write_confusion_csv(confusion, tmp_path / "test_confusion.csv")
    assert errors.confusion_errors(tmp_path, top=2) == dict(accuracy=0.7, wrong=6, top_pairs={"2->1": 3, "1->0": 2})


def test_error_gallery_shows_the_largest_wrong_group_by_id_beside_the_two_probe_images(tmp_path, capsys):
    import numpy as np

    from ieg_tf import report
    # Ids index the training images before the probe split: ids 0 and 5 are the probe, so id != position.
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 1), np.uint8)
    ids = np.array([1, 2, 3, 4, 6, 7, 8, 9])
    true = np.array([3, 3, 1, 1, 1, 0, 1, 3])
    suggested = np.array([3, 0, 2, 1, 2, 0, 2, 3])      # 1->2 three times (ids 3, 6, 8), 3->0 once
    given = np.array([3, 0, 4, 1, 7, 0, 5, 2])
    n = len(ids)
    report.write_label_issues_csv(report.LabelIssues(
        id=ids, given_label=given, suggested_label=suggested, omega_mean=np.zeros(n, np.float32),
        pseudo_fraction=np.zeros(n, np.float32), visits=np.ones(n, np.int64), label_believed_wrong=given != suggested,
        true_label=true, precision=None, recall=None), tmp_path / "label_issues.csv")
    (tmp_path / "split").mkdir()
    (tmp_path / "split" / "split.json").write_text(json.dumps({"dataset": "arrays", "files": [
        "probe_ids.npy", "probe_labels.npy"]}))
    np.save(tmp_path / "split" / "probe_ids.npy", np.array([0, 5]))
    np.save(tmp_path / "split" / "probe_labels.npy", np.array([1, 2]))
    rows, titles = errors.gallery_rows(tmp_path, images)
    shown = [[(caption, int(image.flat[0])) for caption, image in row] for row in rows]
    assert shown == [[("probe 1", 0), ("probe 2", 5)], [("given 4", 3), ("given 7", 6), ("given 5", 8)],
                     [("given 1", 4)]]
    assert titles[1] == "true 1, suggested 2 (3 in all)" and titles[-1] == "true 1, suggested 1"
    path = errors.error_gallery(tmp_path, train_images=images)
    assert path == tmp_path / "suggestion_errors.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path.unlink()
    errors.main([str(tmp_path)])  # the command line: counts, then the gallery drawn from the digits images
    printed = capsys.readouterr().out
    assert '"top_pairs": {"1->2": 3, "3->0": 1}' in printed and f"gallery {path}" in printed and path.exists()
    with pytest.raises(SystemExit):
        errors.main([str(tmp_path / "split")])  # no label_issues.csv
    report.write_label_issues_csv(report.LabelIssues(
        id=ids, given_label=true, suggested_label=true, omega_mean=np.zeros(n, np.float32),
        pseudo_fraction=np.zeros(n, np.float32), visits=np.ones(n, np.int64), label_believed_wrong=np.zeros(n, bool),
        true_label=true, precision=None, recall=None), tmp_path / "label_issues.csv")
    assert errors.error_gallery(tmp_path, tmp_path / "none.png", train_images=images) is None


def test_plot_curves_draws_every_run_from_its_history(tmp_path):
    rows = []
    for run, acc in [("clean/supervised", 0.98), ("clean/ieg", 0.97), ("uniform80/supervised", 0.3),
                     ("uniform80/ieg", 0.95)]:
        model_dir = tmp_path / run.replace("/", "_")
        (model_dir / "checkpoints").mkdir(parents=True)
        history = [dict(step=s, val_accuracy=acc * s / 30) for s in (10, 20, 30)]
        (model_dir / "checkpoints" / "history.json").write_text(json.dumps(history))
        rows.append(dict(_row(run, acc), model_dir=str(model_dir)))
    assert accuracy.history_curve(rows[-1]["model_dir"]) == ([10, 20, 30], [0.95 / 3, 0.95 * 2 / 3, 0.95])
    path = accuracy.plot_curves(rows, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10000
    with pytest.raises(FileNotFoundError):
        accuracy.plot_curves([dict(_row("uniform80/l2r", 0.5), model_dir=str(tmp_path / "missing"))],
                             tmp_path / "x.png")


def test_seed_bands_give_mean_min_max_over_seeds_on_common_steps(tmp_path):
    import numpy as np
    rows = []
    for seed, accs in ((1, {10: 0.5, 20: 0.7, 30: 0.9}), (2, {10: 0.7, 20: 0.9})):  # seed 2 stopped at step 20
        model_dir = tmp_path / f"s{seed}"
        (model_dir / "checkpoints").mkdir(parents=True)
        (model_dir / "checkpoints" / "history.json").write_text(
            json.dumps([dict(step=s, val_accuracy=a) for s, a in accs.items()]))
        rows.append(dict(_row("uniform80/ieg", 0.9, seed=seed), model_dir=str(model_dir)))
    steps, mean, low, high = accuracy.seed_bands(rows)["uniform80/ieg"]
    assert steps == [10, 20]
    np.testing.assert_allclose(mean, [60.0, 80.0])
    np.testing.assert_allclose(low, [50.0, 70.0])
    np.testing.assert_allclose(high, [70.0, 90.0])
    path = accuracy.plot_curves(rows, tmp_path / "bands.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_bench_reads_the_step_time_report_and_measures_throughput():
    from bench import augment as augment_bench
    report = {"summary": [dict(network="wrn28-2", jit=True, batch=100, ieg_ms=900.0),
                          dict(network="wrn28-2", jit=False, batch=100, ieg_ms=None)]}
    assert augment_bench.reported_ieg_ms(report, "wrn28-2", True, 100) == 900.0
    with pytest.raises(ValueError, match="no ieg time for network=wrn28-2 jit=False"):
        augment_bench.reported_ieg_ms(report, "wrn28-2", False, 100)
    result = augment_bench.measure(kind="small", batch=16, seconds=0.3)
    assert result["images_per_second"] > 0 and result["weak_images_per_second"] > 0


@pytest.mark.slow
def test_accuracy_bench_data_seeds_reach_the_package(tmp_path, capsys):
    """Two short real runs on one training seed and two data seeds: each run's data is drawn with its data seed."""
    import numpy as np
    accuracy.main(["--steps", "3", "--seed", "1", "--data_seed", "1", "5", "--runs", "uniform80/supervised",
                   "--out", str(tmp_path)])
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["data_seeds"] == [1, 5]
    runs = {r["draw"]: r for r in report["runs"]}
    assert (runs[1]["seed"], runs[1]["data_seed"], runs[5]["seed"], runs[5]["data_seed"]) == (1, 1, 1, 5)
    assert runs[1]["model_dir"] == str(tmp_path / "steps3_seed1" / "uniform80_supervised")
    assert runs[5]["model_dir"] == str(tmp_path / "steps3_seed1" / "uniform80_supervised_data5")
    probes = [np.load(pathlib.Path(runs[d]["model_dir"]) / "split" / "probe_ids.npy") for d in (1, 5)]
    assert not np.array_equal(*probes)
    assert set(report["draws"]["uniform80/supervised"]["draws"]) == {"1", "5"}
    assert "| uniform80/supervised | 2 |" in capsys.readouterr().out
