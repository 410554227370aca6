"""The scheduler: trains a review's to-do list one of three ways (one run after the other in this
process, stacked in this process, or in a pool of worker processes) and records each outcome.

Failures are isolated: a run that raises, or whose worker process dies (killed, out of memory,
segfault), is marked ``failed`` in its ``run.json`` and the other runs go on. A run that hits an
error the user must fix (a :class:`~torchopt_review.errors.UserError`) stops the review from
starting more runs. Ctrl-C stops the workers at once: their finished epochs are checkpointed and
their ``run.json`` still says ``running``, so the next review resumes them.
"""

from __future__ import annotations

import os
import pickle
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..config import RunConfig
from ..runs import FAILED, read_record, record_failure
from . import worker
from .progress import Progress
from .results import RunOutcome, key_of, outcome_of


def default_workers() -> int:
    """The CPU cores this process may use (SLURM/cgroup cpusets), not the node's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process died: killed by {name}{hint}"
    return f"the worker process died with exit code {exitcode}"


@dataclass
class _Slot:
    proc: Any
    conn: Any
    task: tuple[str, RunConfig] | None = None


class Scheduler:
    """Runs the to-do list in-process, stacked or in worker processes, feeding progress and outcomes."""

    def __init__(self, todo: list[RunConfig], *, run_fn: worker.RunFn | None, restart: bool, progress: Progress):
        self.todo = todo
        self.run_fn, self.restart, self.progress = run_fn, restart, progress
        self.by_key = {key_of(c): c for c in todo}
        self.outcomes: dict[str, RunOutcome] = {}
        self.user_error: str | None = None  # first UserError a run hit: stop starting runs

    def finish(self, key: str, kind: str, payload: Any) -> None:
        """Record how run ``key`` ended: ``kind`` "ok" (payload: its run.json dict), "user" (an
        error the user must fix) or "error" (a traceback or a worker's death)."""
        cfg = self.by_key[key]
        if kind == "user":
            # Input the user must fix (missing data, a foreign checkpoint): not the run's failure.
            self.user_error = self.user_error or f"{cfg.run_dir}: {payload}"
            self.progress.drop(key)
            return
        if kind == "ok":
            out = outcome_of(cfg, payload)
            if out.status == FAILED and (read_record(cfg.run_dir) or {}).get("status") != FAILED:
                record_failure(cfg, out.error or FAILED)
        else:
            out = outcome_of(cfg, record_failure(cfg, payload), error=payload)
        self.outcomes[key] = out
        self.progress.end(key, out)

    def run_in_process(self) -> None:
        run_fn = worker.resolve_run_fn(self.run_fn)
        for cfg in self.todo:
            if self.user_error:
                break
            key = key_of(cfg)
            self.progress.start(key)
            kind, payload = worker.call_run(run_fn, cfg, self.restart,
                                            lambda info, key=key: self.progress.epoch(key, info))
            self.finish(key, kind, payload)

    def run_stacked(self) -> list[RunConfig]:
        """Train the stackable runs here as stacked models (:mod:`torchopt_review.stacked`), one
        stack per compatible configuration; returns the runs that cannot be stacked."""
        from ..stacked import stack_key, train_stacked

        stacks: dict[tuple, list[RunConfig]] = {}
        rest: list[RunConfig] = []
        for cfg in self.todo:
            key = stack_key(cfg)
            if key is None:
                rest.append(cfg)
            else:
                stacks.setdefault(key, []).append(cfg)
        for cfgs in stacks.values():
            if self.user_error:
                break
            results = train_stacked(cfgs, restart=self.restart, on_start=self.progress.start,
                                    on_epoch=lambda key, info: self.progress.epoch(key, info))
            for key, (kind, payload) in results.items():
                self.finish(key, kind, payload)
        return rest

    def run_processes(self, workers: int, threads: int) -> None:
        import multiprocessing
        from multiprocessing.connection import wait

        ctx = multiprocessing.get_context("spawn")  # never fork a process whose torch threads exist
        blob = pickle.dumps(self.run_fn) if self.run_fn is not None else None
        pending = deque(self.todo)
        slots: list[_Slot] = []

        def spawn() -> _Slot:
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=worker.worker_main, args=(child_conn, blob, threads), daemon=True,
                               name=f"review-worker-{len(slots)}")
            proc.start()
            child_conn.close()
            return _Slot(proc, parent_conn)

        def handle(slot: _Slot, msg: tuple) -> None:
            what, key, payload = msg
            if what == "start":
                self.progress.start(key)
            elif what == "epoch":
                self.progress.epoch(key, payload)
            elif what == "end":
                slot.task = None
                self.finish(key, *payload)

        try:
            while True:
                # Hand out work; replace dead workers while there is some.
                for idx, slot in enumerate(slots):
                    if slot.task is None and not slot.proc.is_alive() and pending and not self.user_error:
                        slot.conn.close()
                        slots[idx] = spawn()
                while len(slots) < min(workers, len(self.todo)) and pending and not self.user_error:
                    slots.append(spawn())
                for slot in slots:
                    if slot.task is None and pending and not self.user_error and slot.proc.is_alive():
                        cfg = pending.popleft()
                        slot.task = (key_of(cfg), cfg)
                        try:
                            slot.conn.send((slot.task[0], cfg, self.restart))
                        except (BrokenPipeError, OSError):
                            pass  # it died: the sentinel says so below
                busy = [s for s in slots if s.task is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=self.progress.interval)
                for slot in busy:
                    try:
                        while slot.conn.poll():
                            handle(slot, slot.conn.recv())
                    except (EOFError, OSError):
                        pass
                    if slot.task is not None and slot.proc.sentinel in ready:
                        slot.proc.join(timeout=5)
                        key, cfg = slot.task
                        slot.task = None
                        self.finish(key, "error", death_message(slot.proc.exitcode))
                self.progress.draw()
        finally:
            for slot in slots:
                if slot.task is not None:
                    # Interrupted mid-run: stop it at once. Its last finished epoch is checkpointed
                    # (atomically) and its run.json still says "running": the next review resumes it.
                    # (SIGTERM would let Lightning turn the stop into a "failed" run.)
                    slot.proc.kill()
                else:
                    try:
                        slot.conn.send(None)
                    except (BrokenPipeError, OSError):
                        pass
            deadline = time.monotonic() + 10
            for slot in slots:
                slot.proc.join(timeout=max(0.1, deadline - time.monotonic()))
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join(timeout=5)
                slot.conn.close()
