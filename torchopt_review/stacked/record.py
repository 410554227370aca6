"""A stack's runs written to their folders (through :mod:`torchopt_review.runs`), exactly as
separate runs write theirs: per epoch the rows, TensorBoard, the checkpoint (on a background
thread) and the CSVs; at the end the test metrics, hparams and run.json."""

from __future__ import annotations

import contextlib
import math
import queue
import sys
import threading
import time
import traceback
from typing import Any, Callable

import torch
from torch import Tensor

from ..config import RunConfig
from ..data import FashionMNIST, split_indices
from ..errors import UserError
from ..runs import (CUSTOM_SCALARS, MISTAKES_SEEN, checkpoint_callbacks, checkpoint_rows, epoch_line, epoch_row,
                    log_eff_histograms, log_epoch, log_hparams, log_mistakes, say)
from .model import OptimSpec, stack_key
from .trainer import StackedDiagnostics, StackedRun, StackedTrainer

# -- writing the run folders -----------------------------------------------------------------------

class _Writer:
    """Writes the runs' checkpoints and CSVs on a background thread, in submission order, while
    the next epoch trains (40 checkpoints of 3.3 MB take ~1 s: on a GPU, longer than an epoch).
    Each file still goes to a temporary name and is renamed into place, checkpoint before CSV, so
    a kill at any moment leaves a resumable folder. At most one epoch's writes are pending."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="stacked-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread
                self._error = exc
            finally:
                self._q.task_done()

    def wait(self) -> None:
        """Block until every submitted write is on disk; re-raise a write's error here."""
        self._q.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, job: Callable[[], None]) -> None:
        self._q.put(job)

    def close(self, raise_errors: bool = True) -> None:
        """Finish the pending writes and stop; a write's error is raised unless ``raise_errors``
        is False (an error already on its way out must not be replaced by it)."""
        try:
            self.wait()
        except BaseException:
            if raise_errors:
                raise
        finally:
            self._q.put(None)
            self._thread.join(timeout=60)


def _checkpoint(tr: StackedTrainer, run: StackedRun, epoch: int, host: tuple[Tensor, list[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``run``'s checkpoint (a separate run's layout: model state, optimizer state, rows)."""
    return {
        "engine": "stacked", "epoch": epoch, "opt_steps": tr.opt_steps,
        "state_dict": tr.model.run_state_dict(run.r, host[0]),
        "optimizer_states": [tr.opts.run_state_dict(run.r, host[1])],
        "callbacks": checkpoint_callbacks(run.rows, run.diag_rows),
    }


def _write_run_files(run: StackedRun, state: dict[str, Any]) -> None:
    """The checkpoint (atomically), then the CSVs it carries the rows of."""
    rows, _, diag_rows = checkpoint_rows(state)
    run.folder.save_epoch(lambda path: torch.save(state, path), rows,
                          diag_rows if run.cfg.trainer.diagnostics else None)


def _end_epoch(tr: StackedTrainer, epoch: int, t0: float, val: tuple[Tensor, Tensor], summary: bool,
               writer: _Writer) -> None:
    writer.wait()  # the previous epoch's files are on disk (and its host copies can go)
    host = (tr.model.theta.detach().cpu(), tr.opts.host_states())  # one transfer each, for every run's checkpoint
    for run in tr._live():
        loss_sum, correct, n = run.totals
        lr = float(tr.opts.run_state(run.r, host[1])[1]["lr"])
        row = epoch_row(epoch + 1, tr.opt_steps, run.wall_before + time.perf_counter() - t0,
                        loss_sum / n if n else math.nan, correct / n if n else math.nan,
                        float(val[0][run.r]), float(val[1][run.r]), lr)
        run.rows.append(row)
        w = run.logger.experiment
        log_epoch(w, row, [lr])
        log_eff_histograms(w, run.last_eff, tr.opt_steps)
        run.last_eff = {}
        w.flush()
        state = _checkpoint(tr, run, epoch + 1, host)
        writer.submit(lambda run=run, state=state: _write_run_files(run, state))
        if summary:
            say(epoch_line(row, run.cfg.trainer.epochs, run.key))
        if tr.on_epoch is not None:
            tr.on_epoch(run.key, {"label": run.cfg.run_label, "seed": run.cfg.seed, **row, "epochs": run.cfg.trainer.epochs})


def train_stacked(cfgs: list[RunConfig], *, restart: bool = False, dataset: FashionMNIST | None = None,
                  summary: bool = False, on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
                  on_start: Callable[[str], None] | None = None,
                  use_graph: bool | None = None) -> dict[str, tuple[str, Any]]:
    """Train runs with equal :func:`stack_key` as stacks; write each run's folder as ``train.run``.

    Returns ``run key -> ("ok", run.json) | ("user", message) | ("error", traceback)``: like the
    review's per-run outcomes. Runs resuming from different epochs train as separate stacks.
    """
    from ..data import load_fashion_mnist
    from ..train import resolve_device

    keys = {stack_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_stacked needs runs of one stackable configuration (equal stack_key)")
    if not cfgs:
        return {}
    results: dict[str, tuple[str, Any]] = {}
    t = cfgs[0].trainer
    device = resolve_device(t.accelerator)
    ds = dataset if dataset is not None else load_fashion_mnist(cfgs[0].data.data_dir)
    stack: list[StackedRun] = []
    for cfg in sorted(cfgs, key=lambda c: (OptimSpec.of(c).key(), c.seed)):
        run = StackedRun(cfg, 0)
        try:
            split_indices(len(ds.train_labels), cfg.data.split, cfg.data.val_size, cfg.seed)  # before any write
            run.prepare(restart)
        except UserError as exc:
            results[run.key] = ("user", str(exc))
            continue
        stack.append(run)
    by_start: dict[int, list[StackedRun]] = {}
    for run in stack:
        by_start.setdefault(len(run.rows), []).append(run)
    for start, group in sorted(by_start.items()):
        for r, run in enumerate(group):
            run.r = r
        try:
            results.update(_train_group(group, ds, device, summary=summary, on_epoch=on_epoch, on_start=on_start,
                                        use_graph=use_graph))
        except KeyboardInterrupt:
            raise
        except UserError as exc:
            for run in group:
                results.setdefault(run.key, ("user", str(exc)))
        except Exception:  # noqa: BLE001 - one stack's crash fails its runs, not the review
            tb = traceback.format_exc()
            for run in group:
                if run.folder.record:
                    run.folder.fail(tb.strip().splitlines()[-1], len(run.rows))
                results.setdefault(run.key, ("error", tb))
    return results


def _train_group(group: list[StackedRun], ds: FashionMNIST, device: str, *, summary: bool,
                 on_epoch: Callable[[str, dict[str, Any]], None] | None, on_start: Callable[[str], None] | None,
                 use_graph: bool | None) -> dict[str, tuple[str, Any]]:
    from ..train import set_tf32

    t = group[0].cfg.trainer
    set_tf32(device, t.precision)
    if t.threads:
        torch.set_num_threads(t.threads)
    for run in group:
        run.folder.start(device, engine="stacked")
        purge = int(run.resume_state["opt_steps"]) + 1 if run.resume_state is not None else None
        run.logger = run.folder.tb_logger(purge)
        if not run.rows:
            run.logger.experiment.add_custom_scalars(CUSTOM_SCALARS)
        if on_start is not None:
            on_start(run.key)

    if use_graph is None and t.graph_step != "auto":
        use_graph = t.graph_step == "on"
    tr = StackedTrainer(group, ds, device, on_epoch=on_epoch, use_graph=use_graph)
    diag = StackedDiagnostics(tr, t.diagnostics_every_n_steps) if t.diagnostics else None
    t0 = time.perf_counter()
    writer = _Writer()
    try:
        for epoch in range(tr.start_epoch, t.epochs):
            tr.train_epoch(epoch, diag)
            if not tr._live():
                break
            _end_epoch(tr, epoch, t0, tr.evaluate("val"), summary, writer)
        test = tr.evaluate("test")
        writer.wait()  # every checkpoint and CSV on disk before any run is recorded as finished
    finally:
        writer.close(raise_errors=sys.exc_info()[0] is None)
        for run in group:
            with contextlib.suppress(OSError):
                run.logger.finalize("success")
    out: dict[str, tuple[str, Any]] = {}
    predicted = tr.test_predictions(MISTAKES_SEEN) if any(run.diverged is None for run in group) else None
    for run in group:
        if run.diverged is not None:
            rec = run.folder.finish(run.rows, diverged=run.diverged)
        else:
            test_metrics = {"loss": float(test[0][run.r]), "acc": float(test[1][run.r])}
            log_hparams(run.logger, run.cfg, run.rows[-1], test_metrics["acc"])
            log_mistakes(run.logger.experiment, tr.test_images[:MISTAKES_SEEN], tr.test_labels[:MISTAKES_SEEN],
                         predicted[run.r], tr.opt_steps)
            run.logger.finalize("success")
            rec = run.folder.finish(run.rows, test=test_metrics)
        out[run.key] = ("ok", rec)
    return out
