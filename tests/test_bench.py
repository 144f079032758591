"""The benchmark scripts' logic: run planning, targets, tables, and one real in-process step timing."""

import json

import pytest

from bench import accuracy, common, meta_modes, step_time


def _row(run, acc, method=None, precision=None, recall=None):
    noise, name = run.split("/")
    return dict(run=run, noise=noise, method=method or name, test_accuracy=acc, best_test_accuracy=acc,
                label_issue_precision=precision, label_issue_recall=recall, seconds=10.0, wall_seconds=12.0)


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
    assert lines[0].startswith("| noise | method | test acc % (final)")
    assert lines[2] == "| uniform80 | supervised | 50.0 | 50.0 | - | - | 10 | 12 |"
    assert lines[3] == "| uniform80 | ieg_split | 96.0 | 96.0 | 0.990 | 0.950 | 10 | 12 |"


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


def test_augment_bench_reads_the_step_time_report_and_measures_throughput():
    from bench import augment as augment_bench
    report = {"summary": [dict(network="wrn28-2", jit=True, batch=100, ieg_ms=900.0),
                          dict(network="wrn28-2", jit=False, batch=100, ieg_ms=None)]}
    assert augment_bench.reported_ieg_ms(report, "wrn28-2", True, 100) == 900.0
    with pytest.raises(ValueError, match="no ieg time for network=wrn28-2 jit=False"):
        augment_bench.reported_ieg_ms(report, "wrn28-2", False, 100)
    result = augment_bench.measure(kind="small", batch=16, seconds=0.3)
    assert result["images_per_second"] > 0 and result["weak_images_per_second"] > 0
