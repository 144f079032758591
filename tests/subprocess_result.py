"""Runs a check in a fresh Python process (one tf.distribute strategy, or one logical-device layout, per process)
and returns the JSON it prints on its last line starting with "RESULT "."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_result(args, timeout=600):
    """`args` after the interpreter (a script path and its arguments, or "-c", source); fails with its stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE]), "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])
