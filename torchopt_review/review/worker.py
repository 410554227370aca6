"""One run as the review calls it, and the worker process that calls runs for the pool.

A worker process is started with the ``spawn`` method, limits itself to ``threads`` torch/OpenMP
threads *before* torch loads, then trains the runs its parent sends over a pipe, reporting each
run's start, epochs and end. What a run prints (Lightning's, C libraries' and Python's output,
tracebacks) goes to ``runs/<experiment>/.review-logs/<label>-seed<k>.log``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..config import RunConfig
from ..errors import Terminated, UserError

LOG_DIR = ".review-logs"  # runs/<exp>/.review-logs/<label>-seed<k>.log: a worker's output during a run

RunFn = Callable[..., dict]


def review_log(exp_dir: Path, label: str, seed: int) -> Path:
    """Where a run's output goes while the review trains it. Beside the run folder, not in it:
    a fresh run's folder is emptied when it starts."""
    return exp_dir / LOG_DIR / f"{label}-seed{seed}.log"


def thread_env(threads: int) -> dict[str, str]:
    """The thread limits of OpenMP/MKL/OpenBLAS, set before torch loads in a worker."""
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def resolve_run_fn(run_fn: RunFn | None) -> RunFn:
    """``run_fn``, or :func:`torchopt_review.train.run` when None."""
    if run_fn is not None:
        return run_fn
    from ..train import run  # lazily: torch and Lightning load here, after the thread settings

    return run


def call_run(run_fn: RunFn, cfg: RunConfig, restart: bool, on_epoch: Callable[[dict], None],
             passthrough: tuple[type[BaseException], ...] = ()) -> tuple[str, Any]:
    """Run one training run; never raises (except KeyboardInterrupt and Terminated: they stop the
    review; and ``passthrough``): ("ok", run.json dict) | ("user", message) | ("error", traceback text)."""
    try:
        result = run_fn(cfg, restart=restart, progress=False, on_epoch=on_epoch)
    except UserError as exc:
        return "user", str(exc)
    except (KeyboardInterrupt, Terminated, *passthrough):
        raise
    except BaseException as exc:  # noqa: BLE001 - a run's crash must not take the review down
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return "error", f"{type(exc).__name__}: {exc}\n{tb}"
    if not isinstance(result, Mapping):
        return "error", f"run returned {type(result).__name__}, not the run.json dict"
    return "ok", json.loads(json.dumps(dict(result), default=str))


def worker_main(conn: Any, run_fn_blob: bytes | None, threads: int) -> None:
    """A worker process: thread limits first, then torch; then runs tasks sent by the parent."""
    os.environ.update(thread_env(threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us cleanly
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:  # the review died (kill -9): stop at once instead of writing unlocked run folders
        def watch() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(3)

        threading.Thread(target=watch, daemon=True).start()
    run_fn = resolve_run_fn(pickle.loads(run_fn_blob) if run_fn_blob else None)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)

    def send(msg: tuple) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(3)

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        key, cfg, restart = task
        send(("start", key, None))
        terminated = False
        with output_to(review_log(Path(cfg.logdir) / cfg.experiment, cfg.run_label, cfg.seed)):
            try:
                kind, payload = call_run(run_fn, cfg, restart, lambda info, key=key: send(("epoch", key, dict(info))))
            except Terminated:  # SIGTERM to this worker (Lightning's handler, then train.run): its run stops
                kind, payload, terminated = "error", "the worker process was sent SIGTERM", True
        send(("end", key, (kind, payload)))
        if terminated:
            return


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors 1 and 2: Lightning's and C libraries'
    too) to ``path`` while a run trains, so the review's progress line stays readable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield  # the run itself will report the unwritable folder
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()  # a quiet run leaves no log

