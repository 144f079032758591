"""Helpers shared by the bench scripts: run the package as a subprocess, format tables."""

import concurrent.futures
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def child_env():
    """Environment of a child process: the repo importable, TensorFlow's C++ log quiet."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_python(args, log_path):
    """Runs `python args...` from the repo root with its output in `log_path`; raises if it fails.

    A process per run isolates Keras' global state (seeds, mixed-precision policy, compiled functions).
    """
    pathlib.Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        code = subprocess.call([sys.executable, *args], cwd=REPO, env=child_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    if code:
        tail = pathlib.Path(log_path).read_text().splitlines()[-15:]
        raise RuntimeError(f"`python {' '.join(args)}` exited with {code}; end of {log_path}:\n" + "\n".join(tail))


def run_parallel(fn, argument_tuples, jobs):
    """[fn(*a) for a in argument_tuples], with up to `jobs` calls at once (threads; each call is expected to wait
    on a child process). Results come back in the input order, whatever order the calls finish in."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fn, *arguments) for arguments in argument_tuples]
        return [future.result() for future in futures]


def fmt(value, digits=1, scale=1.0):
    """A table cell: '-' for None, numbers rounded after scaling."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value * scale:.{digits}f}"
    return str(value)


def markdown_table(header, rows):
    """A GitHub markdown table from a header list and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
