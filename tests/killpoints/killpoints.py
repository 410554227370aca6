"""Deterministic kill points for the kill tests (tests/test_faults.py), installed by monkeypatching.

``KILL_PAUSE=<point>@<epoch>`` (or ``<label>/seed<k>:<point>@<epoch>`` for one run of a review;
comma-separated for several) makes the process announce ``test-pause: <point>@<epoch> <run>`` on
stderr and sleep ``KILL_PAUSE_S`` seconds (default 60) at that point, so a test can SIGKILL it
exactly there (with ``KILL_PAUSE_ONCE=<folder>``, only the first process to reach a pause pauses:
a resumed run goes through). Points:

- ``before_ckpt``: the epoch is logged to TensorBoard, nothing saved yet;
- ``ckpt_tmp``: the checkpoint is written to its temporary file, not yet renamed;
- ``before_csv``: the checkpoint is renamed into place, metrics.csv not yet rewritten;
- ``val``: inside validation; ``test``: inside the test pass after the last epoch;
- ``train_batch``: mid-epoch, after the epoch's second Lightning batch.

The first three wrap :meth:`torchopt_review.runs.RunFolder.save_epoch` (both engines), the last
three add hooks to the Lightning path's ``RunRecorder``. Nothing of this is in the product: the
zygote children of tests/proc_harness.py import this module when ``KILL_PAUSE`` is set, and a
review's spawned worker processes import it through ``sitecustomize`` (this folder is put on
their PYTHONPATH).
"""

from __future__ import annotations

import os
import sys
import time

from torchopt_review.runs import RunFolder

_SPEC = {s for s in os.environ.get("KILL_PAUSE", "").split(",") if s}


def pause(point: str, epoch: int, run: str = "") -> None:
    if {f"{point}@{epoch}", f"{run}:{point}@{epoch}"} & _SPEC:
        once = os.environ.get("KILL_PAUSE_ONCE")  # a folder: each pause only for the first process there
        if once:
            try:
                os.close(os.open(os.path.join(once, f"{run}:{point}@{epoch}".replace("/", "-")),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        print(f"test-pause: {point}@{epoch} {run}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("KILL_PAUSE_S", "60")))


_save_epoch, _write_tables, _start = RunFolder.save_epoch, RunFolder.write_tables, RunFolder.start


def save_epoch(self, save, rows, diag_rows):
    epoch = rows[-1]["epoch"]
    pause("before_ckpt", epoch, self.key)

    def save_then_pause(path):
        save(path)
        pause("ckpt_tmp", epoch, self.key)

    self._kill_epoch = epoch
    try:
        _save_epoch(self, save_then_pause, rows, diag_rows)
    finally:
        self._kill_epoch = None


def write_tables(self, rows, diag_rows):
    if getattr(self, "_kill_epoch", None) is not None:
        pause("before_csv", self._kill_epoch, self.key)
    _write_tables(self, rows, diag_rows)


def start(self, *args, **kwargs):
    callbacks = sys.modules.get("lightning_module.callbacks")
    if callbacks is not None and not getattr(callbacks.RunRecorder, "_kill_points", False):
        rec = callbacks.RunRecorder
        rec._kill_points = True

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == 1:
                pause("train_batch", pl_module.current_epoch + 1, self.folder.key)

        def on_validation_start(self, trainer, pl_module):
            if trainer.state.fn == "fit":
                pause("val", pl_module.current_epoch + 1, self.folder.key)

        def on_test_start(self, trainer, pl_module):
            pause("test", len(self.rows), self.folder.key)

        rec.on_train_batch_end, rec.on_validation_start, rec.on_test_start = (
            on_train_batch_end, on_validation_start, on_test_start)
    return _start(self, *args, **kwargs)


if _SPEC:
    RunFolder.save_epoch, RunFolder.write_tables, RunFolder.start = save_epoch, write_tables, start
