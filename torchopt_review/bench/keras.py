"""Keras 3 as a contender of ``bench epoch``: ``tools/keras_epoch.py`` run by ``.venv-keras``'s
interpreter (TensorFlow and torch do not share a virtual environment), as a long-lived worker
process that trains the same MLP on the same images and answers one timed epoch per request."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from .timing import REPO

KERAS_PYTHON = REPO / ".venv-keras" / "bin" / "python"
KERAS_SCRIPT = REPO / "tools" / "keras_epoch.py"

# TensorFlow's own settings for the worker: its thread count, no start-up chatter, never a GPU.
_TF_QUIET = {"TF_CPP_MIN_LOG_LEVEL": "3"}


class KerasWorker:
    """The worker process: JSON lines on stdin/stdout, one ``{"batch_size", "steps"}`` request ->
    one epoch's timings (``epoch_s``, ``train_s``). ``info`` is its first line (versions, backend)."""

    def __init__(self, threads: int, data_file: Path):
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="", **_TF_QUIET)
        self.proc = subprocess.Popen([str(KERAS_PYTHON), str(KERAS_SCRIPT), "--threads", str(threads),
                                      "--data", str(data_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        self.threads = threads
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()[-2000:]
            raise RuntimeError(f"keras worker exited: {err.strip().splitlines()[-1:] if err else '?'}")
        return json.loads(line)

    def epoch(self, bs: int, steps: int) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"batch_size": bs, "steps": steps}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        if self.proc.poll() is None:
            self.proc.kill()


def keras_available() -> str | None:
    """None when Keras 3 can be run, else why not."""
    if not KERAS_PYTHON.exists():
        return f"{KERAS_PYTHON} does not exist (python3 -m venv .venv-keras && .venv-keras/bin/pip install tensorflow-cpu keras)"
    if not KERAS_SCRIPT.exists():
        return f"{KERAS_SCRIPT} is missing"
    res = subprocess.run([str(KERAS_PYTHON), "-c", "import tensorflow, keras; print(keras.__version__)"],
                         capture_output=True, text=True, env=dict(os.environ, **_TF_QUIET), timeout=300)
    if res.returncode != 0:
        return "tensorflow/keras do not import in .venv-keras"
    return None
