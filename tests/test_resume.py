"""Crash and resume: a run killed with SIGKILL at arbitrary points and restarted with the same command ends with
the weights of an uninterrupted run; the same seed gives the same run, another seed a different one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--batch_size=32", "--val_batch_size=300", "--jit_compile=false", "--max_iteration=12", "--eval_freq=3"]
pytestmark = pytest.mark.slow


def _command(model_dir, *extra):
    return [sys.executable, "-m", "ieg_tf.main", *ARGS, f"--model_dir={model_dir}", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _run(model_dir, *extra):
    out = subprocess.run(_command(model_dir, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out


def _final_state(model_dir, name="ckpt-12"):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    assert path is not None and path.endswith(name), path
    reader = tf.train.load_checkpoint(path)
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.endswith("VARIABLE_VALUE"))
    return {n: reader.get_tensor(n) for n in names}


def _assert_same(a, b):
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)


def _kill_when(model_dir, ready, sig=signal.SIGKILL, output=None):
    """Starts the run, waits until ready(checkpoint dir) holds (or a delay passes), then sends it `sig` (SIGKILL).
    Returns whether the run was still running then; with `output` (a dict), also its return code and stderr."""
    # A job started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then keeps ignoring it:
    # the child gets the default disposition back, as a run in a terminal has it.
    process = subprocess.Popen(_command(model_dir), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE if output is not None else subprocess.DEVNULL, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    start = time.time()
    while process.poll() is None and not ready(os.path.join(model_dir, "checkpoints"), time.time() - start):
        time.sleep(0.05)
    killed = process.poll() is None
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    if output is not None:
        output.update(returncode=process.returncode, stderr=stderr)
    return killed


def _checkpoints(directory):
    return {f.split(".")[0] for f in os.listdir(directory) if f.startswith("ckpt-")} if os.path.isdir(directory) \
        else set()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("uninterrupted"))
    _run(model_dir)
    return _final_state(model_dir), model_dir


KILL_POINTS = {
    # during start-up, before any checkpoint exists
    "startup": lambda d, t: t > 4.0,
    # right after the first checkpoint files appear (possibly in the middle of writing them)
    "first_save": lambda d, t: bool(_checkpoints(d)),
    # after two checkpoints, mid-way through the next evaluation period
    "mid_period": lambda d, t: "ckpt-6" in _checkpoints(d),
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_sigkill_then_same_command_ends_with_the_uninterrupted_weights(reference, tmp_path, point):
    state, _ = reference
    model_dir = str(tmp_path)
    killed = _kill_when(model_dir, KILL_POINTS[point])
    assert killed, "the run finished before it could be killed; the test would prove nothing"
    _run(model_dir)
    _assert_same(state, _final_state(model_dir))


def test_a_partial_checkpoint_left_by_a_crash_is_ignored(reference, tmp_path):
    state, source = reference
    model_dir = str(tmp_path)
    assert _kill_when(model_dir, lambda d, t: "ckpt-6" in _checkpoints(d)), "the run finished before the kill"
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    # A crash in the middle of writing the next save leaves data files that the index does not name.
    for suffix in (".index", ".data-00000-of-00001"):
        with open(os.path.join(model_dir, "checkpoints", "ckpt-9" + suffix), "wb") as f:
            f.write(b"\x00garbage")
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) == latest
    _run(model_dir)
    _assert_same(state, _final_state(model_dir))


def test_same_seed_same_run_other_seed_different_run(reference, tmp_path):
    state, source = reference
    same, other = str(tmp_path / "same"), str(tmp_path / "other")
    _run(same)
    _assert_same(state, _final_state(same))
    for name in ("noisy_labels.npy", "probe_ids.npy"):
        np.testing.assert_array_equal(np.load(os.path.join(source, "split", name)),
                                      np.load(os.path.join(same, "split", name)))
    _run(other, "--seed=7")
    assert not np.array_equal(np.load(os.path.join(source, "split", "noisy_labels.npy")),
                              np.load(os.path.join(other, "split", "noisy_labels.npy")))
    assert not np.array_equal(np.load(os.path.join(source, "split", "probe_ids.npy")),
                              np.load(os.path.join(other, "split", "probe_ids.npy")))
    different = _final_state(other)
    assert any(not np.allclose(state[n], different[n]) for n in state if "kernel" in n)


def test_ctrl_c_says_how_to_resume_without_a_traceback_and_the_same_command_resumes(reference, tmp_path):
    state, _ = reference
    model_dir, output = str(tmp_path), {}
    assert _kill_when(model_dir, lambda d, t: "ckpt-6" in _checkpoints(d), signal.SIGINT, output)
    assert output["returncode"] == 130, output["stderr"][-3000:]
    assert "Traceback" not in output["stderr"]
    assert output["stderr"].strip().splitlines()[-1] == (
        f"ieg_tf: interrupted; run the same command again to resume from the last checkpoint in {model_dir}")
    _run(model_dir)
    _assert_same(state, _final_state(model_dir))


def test_a_mixed_float16_run_that_skipped_steps_resumes_exactly(tmp_path):
    """Started at a loss scale of 2**22, the first 6 steps' float16 gradients overflow and are skipped (their
    batches used up, the optimizer's step not advanced): 6 steps take 12 batches. Killed right after the
    checkpoints at 3 batches (step 0) and at 9 (step 3), the same command ends with the uninterrupted run's state:
    the input stream resumes after the batches consumed, not after the steps."""
    check = os.path.join(ROOT, "tests", "loss_scale_resume_check.py")
    args = [*ARGS[:3], "--eval_freq=3", "--max_iteration=6", "--mixed_precision=mixed_float16"]

    def run(model_dir, crash_after_epoch=-1):
        return subprocess.run([sys.executable, check, str(crash_after_epoch), "22", *args, f"--model_dir={model_dir}"],
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)

    uninterrupted, resumed = str(tmp_path / "uninterrupted"), str(tmp_path / "resumed")
    summary = 'RESULT {"steps": 6, "skipped_steps": 6}'
    assert summary in run(uninterrupted).stdout
    for crash_after_epoch in (0, 2):  # fit epochs of 3 batches
        killed = run(resumed, crash_after_epoch)
        assert killed.returncode == 3, killed.stderr[-3000:]
    assert _checkpoints(os.path.join(resumed, "checkpoints")) == {"ckpt-3", "ckpt-6", "ckpt-9"}
    assert summary in run(resumed).stdout
    _assert_same(_final_state(uninterrupted, "ckpt-12"), _final_state(resumed, "ckpt-12"))
