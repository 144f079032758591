"""`--strategy=mirrored` on 2 logical CPUs and `--strategy=multi_worker` with two local worker processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from ieg_tf import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--batch_size=16", "--val_batch_size=300", "--network=small_cnn", "--max_iteration=4", "--eval_freq=2"]
pytestmark = pytest.mark.slow


def _env(**extra):
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def _weights(directory):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(directory))
    return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map() if n.endswith("VARIABLE_VALUE")}


def test_mirrored_on_two_logical_cpus(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ieg_tf.main", *ARGS, "--strategy=mirrored", "--logical_cpus=2",
                          f"--model_dir={tmp_path}"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert results["steps"] == 4 and 0.0 <= results["test_accuracy"] <= 1.0
    # the final EMA pass over the test set (one device) agrees with the distributed evaluation
    confusion, _ = report.read_confusion_csv(tmp_path / "test_confusion.csv")
    assert abs(np.trace(confusion) / confusion.sum() - results["test_accuracy"]) < 1e-6


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_multi_worker_with_two_local_workers(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
    workers = []
    for index in range(2):
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "ieg_tf.main", *ARGS, "--strategy=multi_worker", f"--model_dir={tmp_path}"],
            cwd=ROOT, env=_env(TF_CONFIG=config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-4000:]
    summaries = [stdout.strip().splitlines()[-1] for stdout, _ in outputs]
    assert summaries[0].startswith("ieg_tf result:") and "steps=4" in summaries[0]
    assert summaries[0].split("seconds=")[0] == summaries[1].split("seconds=")[0]  # both workers agree
    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert results["steps"] == 4
    confusion, _ = report.read_confusion_csv(tmp_path / "test_confusion.csv")
    assert abs(np.trace(confusion) / confusion.sum() - results["test_accuracy"]) < 1e-6
    chief, other = _weights(str(tmp_path / "checkpoints")), _weights(str(tmp_path / "worker_tmp_1"))
    assert chief.keys() == other.keys()
    for name in chief:
        np.testing.assert_allclose(chief[name], other[name], rtol=1e-6, atol=1e-7, err_msg=name)
