"""Flag combinations the command line refuses in one line naming the flags and the fix, before any training."""

import contextlib
import glob
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from PIL import Image

from ieg_tf import datasets, distribute, main, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def _parsed(*args):
    """FLAGS parsed from `python -m ieg_tf.main *args`, reset afterwards."""
    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["ieg_tf", *args])
        yield
    finally:
        flags.FLAGS.unparse_flags()


def _refused(*args):
    """The flag parser's message refusing `args`."""
    with pytest.raises(flags.IllegalFlagValueError) as error, _parsed(*args):
        pass
    return str(error.value)


def _must_not_train(*args, **kwargs):
    raise AssertionError("the run started training")


def _main_exit(monkeypatch, capsys, *args, run=_must_not_train):
    """(exit code, stdout, stderr) of main.main on `args`, with `run` in place of train.run."""
    monkeypatch.setattr(train, "run", run)
    with _parsed(*args), pytest.raises(SystemExit) as exit_info:
        main.main(["ieg_tf"])
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("args, flag, other", [
    (["--noise_file=labels.npy"], "noise_file", "noise_type"),
    (["--noise_type=none", "--noise_ratio=0.5"], "noise_ratio", "noise_type"),
    (["--noise_type=none", "--noise_ratio=0.8"], "noise_ratio", "noise_type"),  # the default, but given
    (["--noise_type=semantic", "--noise_ratio=0.4"], "noise_ratio", "noise_type"),
    (["--noise_type=file", "--noise_file=labels.npy", "--noise_ratio=0.2"], "noise_ratio", "noise_type"),
    (["--train_dir=/images"], "train_dir", "dataset"),
    (["--test_dir=/images"], "test_dir", "dataset"),
    (["--dataset=list", "--train_list=train.txt", "--probe_dir=/images"], "probe_dir", "dataset"),
    (["--train_list=train.txt"], "train_list", "dataset"),
    (["--dataset=folder", "--train_dir=/images", "--test_list=test.txt"], "test_list", "dataset"),
    (["--probe_list=probe.txt"], "probe_list", "dataset"),
    (["--dataset=folder", "--train_dir=/images", "--image_root=/images"], "image_root", "dataset"),
    (["--array_file=data.npz"], "array_file", "dataset"),
    (["--image_size=32"], "image_size", "dataset"),
    (["--dataset=arrays", "--array_file=data.npz", "--image_size=32"], "image_size", "dataset"),
    (["--dataset=cifar10", "--skip_bad_images"], "skip_bad_images", "dataset"),
    (["--download"], "download", "dataset"),
    (["--dataset=list", "--train_list=train.txt", "--data_dir=/data"], "data_dir", "dataset"),
])
def test_a_flag_the_chosen_data_set_or_noise_type_ignores_is_refused(args, flag, other):
    message = _refused(*args)
    assert f"--{flag} is used only with --{other}=" in message and f"drop --{flag} or change --{other}" in message


@pytest.mark.parametrize("args", [
    [], ["--noise_type=none"], ["--noise_type=semantic"], ["--skip_bad_images=false", "--download=false"],
    ["--noise_type=none", "--noise_ratio=0"],  # what bench/accuracy.py passes for clean labels
    ["--noise_type=file", "--noise_file=labels.npy"], ["--noise_type=asymmetric", "--noise_ratio=0.4"],
    ["--dataset=folder", "--train_dir=a", "--test_dir=b", "--probe_dir=c", "--image_size=32", "--skip_bad_images"],
    ["--dataset=list", "--train_list=a", "--test_list=b", "--probe_list=c", "--image_root=d", "--image_size=224"],
    ["--dataset=arrays", "--array_file=data.npz"], ["--dataset=cifar100", "--data_dir=/data", "--download"],
    ["--clean_threshold=1.5"], ["--method=l2r"], ["--seed=0", "--data_seed=4294967295"],
])
def test_consistent_flags_pass(args):
    with _parsed(*args):
        main.check_flags_at_start()
        main.configs_from_flags()


def test_every_flagfile_passes_and_its_run_line_names_what_it_leaves_out():
    folder = os.path.join(ROOT, "flags")
    for name in sorted(f for f in os.listdir(folder) if f.endswith(".cfg")):
        path = os.path.join(folder, name)
        with _parsed(f"--flagfile={path}"):
            try:
                main.check_flags_at_start()
            except ValueError as error:  # the list files of food101n / webvision_mini come on the command line
                needed = re.search(r"needs (--\w+=)", str(error)).group(1)
                assert needed in open(path).read().split("# Run:")[1], (name, error)


@pytest.mark.parametrize("args, message", [
    (["--dataset=folder"], "--dataset=folder needs --train_dir=DIR"),
    (["--dataset=list"], "--dataset=list needs --train_list=FILE"),
    (["--dataset=arrays"], "--dataset=arrays needs --array_file=DATA.npz"),
    (["--noise_type=file"], "--noise_type=file needs --noise_file=LABELS"),
    (["--method=supervised", "--clean_threshold=1"],
     "--clean_threshold is used only with --method=ieg, not --method=supervised: drop --clean_threshold"),
    (["--method=l2r", "--clean_threshold=0"], "--clean_threshold is used only with --method=ieg, not --method=l2r"),
])
def test_a_missing_or_unused_flag_stops_the_run_before_training(monkeypatch, capsys, tmp_path, args, message):
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", *args)
    assert code == 2 and err.startswith(f"ieg_tf: error: {message}") and err.count("\n") == 1, err


@pytest.mark.parametrize("policy", ["float16", "float64", "bogus"])
def test_mixed_precision_takes_only_the_supported_policies(policy):
    assert (f"--mixed_precision={policy}: value should be one of <float32|mixed_float16|mixed_bfloat16>"
            in _refused(f"--mixed_precision={policy}"))
    for good in ("float32", "mixed_float16", "mixed_bfloat16"):
        with _parsed(f"--mixed_precision={good}"):
            assert main.configs_from_flags()[2].mixed_precision == good


@pytest.mark.parametrize("arg", ["--seed=-1", "--data_seed=-1", "--seed=4294967296"])
def test_seeds_outside_numpys_range_are_refused_naming_the_flag(arg):
    assert f"flag {arg}: " in _refused(arg) and "[0, 4294967295]" in _refused(arg)


def test_tpu_strategy_without_a_tpu_says_to_pass_tpu(monkeypatch, capsys, tmp_path):
    def connect(run_cfg, *args, **kwargs):  # what train.run does first with the strategy flags
        distribute.make_strategy(run_cfg.strategy, run_cfg.tpu)
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", "--strategy=tpu", run=connect)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("ieg_tf: error: --strategy=tpu found no TPU") and "pass --tpu=NAME" in err, err


def test_interrupt_message_starts_a_line_of_its_own(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        sys.stdout.write("\r 1/100 ━━━━━━ 2s 25ms/step - loss: 9.5873")  # a progress bar mid-line
        raise KeyboardInterrupt
    code, out, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", run=interrupted)
    assert code == 130 and out.endswith("loss: 9.5873\n"), (out, err)
    # no checkpoint in model_dir yet: nothing to resume, and other flags may start it over
    assert err.startswith(f"ieg_tf: interrupted before the first checkpoint in {tmp_path}: nothing trained is kept; "
                          "run the command again, with the same or other flags, to start over"), err


def test_stray_positional_argument_is_one_line_not_the_help():
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-m", "ieg_tf.main", "--network=small_cnn", "extra_positional"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "ieg_tf: error: unexpected argument 'extra_positional': every option is a --flag=value" in out.stderr
    assert "--weight_decay" not in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("args, warned", [
    (["--dataset=list", "--train_list=t.txt", "--noise_type=none"], True),
    (["--dataset=folder", "--train_dir=/images", "--noise_type=none"], True),
    (["--dataset=list", "--train_list=t.txt", "--noise_type=none", "--probe_list=p.txt"], False),
    (["--dataset=list", "--train_list=t.txt", "--noise_type=none", "--method=supervised"], False),
    (["--dataset=folder", "--train_dir=/images"], False),  # injected noise: the given labels are the clean ones
])
def test_a_probe_taken_from_uninjected_file_labels_is_warned_about(monkeypatch, capsys, tmp_path, args, warned):
    def stop(*a, **k):
        raise ValueError("stopped before training")
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", *args, run=stop)
    assert code == 2 and ("ieg_tf: warning: the 1 probe image(s) per class are drawn from the given labels" in err
                          ) == warned, err


@pytest.mark.parametrize("arg", ["--probe_per_class=all", "--probe_per_class=0", "--probe_per_class=-2",
                                 "--probe_per_class=many", "--probe_per_class=1.5", "--probe_per_class="])
def test_probe_per_class_takes_a_count_or_all_with_a_given_probe_set(arg):
    message = _refused(arg)
    if arg.endswith("=all"):
        assert "--probe_per_class=all" in message and "--probe_dir" in message and "--probe_list" in message, message
    else:
        assert f"{arg}: give a whole number >= 1" in message, message


@pytest.mark.parametrize("args, per_class", [
    ([], 1), (["--probe_per_class=10"], 10),
    (["--dataset=folder", "--train_dir=a", "--probe_dir=c", "--probe_per_class=all"], None),
    (["--dataset=list", "--train_list=a", "--probe_list=c", "--probe_per_class=all"], None),
    ([f"--flagfile={os.path.join(ROOT, 'flags', 'food101n.cfg')}", "--probe_list=p.txt"], 10),
    ([f"--flagfile={os.path.join(ROOT, 'flags', 'food101n.cfg')}", "--probe_list=p.txt", "--probe_per_class=all"],
     None),
])
def test_probe_per_class_reaches_the_data_spec_as_a_count_or_none(args, per_class):
    with _parsed(*args):
        assert main.configs_from_flags()[0].probe_per_class == per_class


def _probe_images(root, counts):
    """root/<class>/<i>.png, counts[c] tiny PNGs of class c; returns root."""
    for c, n in enumerate(counts):
        os.makedirs(os.path.join(root, f"c{c}"), exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4), 30 * c + i, np.uint8)).save(os.path.join(root, f"c{c}", f"{i}.png"))
    return str(root)


def _file_data_flags(tmp_path, kind, probe_counts):
    """Flags of a folder or list data set in tmp_path: 4 training and 1 test image per class, and a probe set of
    probe_counts[c] images of class c."""
    train, test = _probe_images(tmp_path / "train", [4, 4]), _probe_images(tmp_path / "test", [1, 1])
    probe = _probe_images(tmp_path / "probe", probe_counts)
    if kind == "arrays":
        def arrays(name):
            files = sorted(glob.glob(os.path.join(tmp_path, name, "*", "*.png")))
            return (np.stack([np.asarray(Image.open(f))[..., None] for f in files]),
                    np.array([int(f.split(os.sep)[-2][1:]) for f in files]))
        names = ("train", "test", "probe") if probe_counts else ("train", "test")
        split = {f"{name}_{what}": a for name in names for what, a in zip(("images", "labels"), arrays(name))}
        np.savez(tmp_path / "data.npz", **split)
        return ["--dataset=arrays", f"--array_file={tmp_path / 'data.npz'}"]
    if kind == "folder":
        return ["--dataset=folder", f"--train_dir={train}", f"--test_dir={test}", f"--probe_dir={probe}"]
    for name in ("train", "test", "probe"):
        lines = [f"{name}/{c}/{f},{c[1:]}" for c in sorted(os.listdir(tmp_path / name))
                 for f in sorted(os.listdir(tmp_path / name / c))]
        (tmp_path / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return ["--dataset=list", *(f"--{name}_list={tmp_path / name}.txt" for name in ("train", "test", "probe"))]


@pytest.mark.parametrize("kind", ["folder", "list", "arrays"])
def test_probe_per_class_all_uses_every_given_probe_image(tmp_path, kind):
    with _parsed(*_file_data_flags(tmp_path, kind, [3, 2]), "--noise_type=none", "--probe_per_class=all"):
        data = datasets.load_dataset(main.configs_from_flags()[0])
    assert sorted(data.probe_labels.tolist()) == [0, 0, 0, 1, 1] and len(data.train_labels) == 8


def test_probe_per_class_all_on_an_array_file_without_probe_arrays_says_what_to_add(tmp_path):
    with _parsed(*_file_data_flags(tmp_path, "arrays", []), "--noise_type=none", "--probe_per_class=all"):
        with pytest.raises(ValueError, match=r"needs a separate probe set: \S+data.npz holds no probe_images and "
                                             r"probe_labels \(add them, or give a number\)"):
            datasets.load_dataset(main.configs_from_flags()[0])


@pytest.mark.parametrize("per_class, note", [
    ("1", "ieg_tf: note: --probe_per_class=1 uses 2 of the 5 images of the given probe set (--probe_{flag}="),
    ("2", "ieg_tf: note: --probe_per_class=2 uses 4 of the 5 images of the given probe set (--probe_{flag}="),
    ("all", None),
])
@pytest.mark.parametrize("kind, flag", [("folder", "dir"), ("list", "list"), ("arrays", "")])
def test_a_given_probe_set_larger_than_used_is_noted(monkeypatch, capsys, tmp_path, kind, flag, per_class, note):
    def stop(*a, **k):
        raise ValueError("stopped before training")
    args = _file_data_flags(tmp_path, kind, [3, 2])
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path / 'run'}", *args, "--noise_type=none",
                              f"--probe_per_class={per_class}", run=stop)
    assert code == 2 and err.count("ieg_tf: note:") == (note is not None), err
    if note:
        if kind == "arrays":
            note = note.replace("--probe_{flag}=", "probe_images of --array_file=")
        assert note.format(flag=flag) in err and "; --probe_per_class=all uses every one\n" in err, err
    _, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path / 'run'}", *args, "--noise_type=none",
                           "--method=supervised", run=stop)
    assert "ieg_tf: note:" not in err, err  # supervised trains without the probe


def _stop_at_run(*args, **kwargs):
    raise ValueError("stopped where training would start")


@pytest.mark.parametrize("args, notes", [
    (["--method=supervised", "--meta_every=3", "--ce_factor=9", "--probe_affine=15,0.3,0.15"],
     ["--method=supervised does not read --ce_factor, --meta_every, --probe_affine; they are ignored"]),
    (["--method=l2r", "--guess_views=weak", "--meta_every=3"],
     ["--method=l2r does not read --guess_views; it is ignored"]),
    (["--lr_schedule=constant", "--decay_rate=0.5", "--cos_t_mul=3"],
     ["--lr_schedule=constant does not read --cos_t_mul, --decay_rate; they are ignored"]),
    (["--lr_schedule=cosine", "--warmup_epochs=2", "--method=supervised", "--grad_eps_init=0.5"],
     ["--method=supervised does not read --grad_eps_init; it is ignored",
      "--lr_schedule=cosine does not read --warmup_epochs; it is ignored"]),
    (["--method=ieg", "--meta_every=3", "--ce_factor=9", "--lr_schedule=cosine_warmup", "--warmup_epochs=2"], []),
    (["--method=supervised"], []),  # defaults are not "given"
])
def test_flags_the_method_or_schedule_does_not_read_are_noted(monkeypatch, capsys, tmp_path, args, notes):
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", *args, run=_stop_at_run)
    assert code == 2 and "stopped where training would start" in err, err
    assert [line[len("ieg_tf: note: "):] for line in err.splitlines() if line.startswith("ieg_tf: note:")] == notes


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_16_bit_policy_on_a_cpu_is_noted_as_slower(monkeypatch, capsys, tmp_path, policy):
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", f"--mixed_precision={policy}",
                              run=_stop_at_run)
    assert code == 2 and f"ieg_tf: note: --mixed_precision={policy} on a machine without a GPU runs slower" in err
    code, _, err = _main_exit(monkeypatch, capsys, f"--model_dir={tmp_path}", run=_stop_at_run)
    assert "note:" not in err
