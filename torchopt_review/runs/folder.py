"""A run's lifecycle in its folder (:class:`RunFolder`): a result already? -> prepare (resume
checks, checkpoint verification, writability, clearing a fresh start) -> start -> save_epoch ... ->
finish / fail; the run.json record; what must match for a run to be resumed or skipped."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..errors import UserError
from .files import atomic_write, atomic_write_json, atomic_write_text, csv_text, read_record, record_status
from .schema import (CKPT, DIAG_COLUMNS, DIAG_CSV, DIAGNOSTICS, DIVERGED, DONE, FAILED, FINAL_STATUSES, METRIC_COLUMNS,
                     METRICS_CSV, RECORDER, RUN_JSON, RUNNING, checkpoint_problem, run_key)

if TYPE_CHECKING:  # imported lazily at run time: reading run folders needs no torch
    from ..config import RunConfig


def _versions() -> dict[str, str]:
    import lightning
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__}


def _hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def new_record(cfg: RunConfig, device: str, engine: str = "single") -> dict[str, Any]:
    """A run's run.json as it starts (``status: running``); the same for separate and stacked runs."""
    t = cfg.trainer
    return {
        "status": RUNNING, "label": cfg.run_label, "optimizer": cfg.optim.name, "seed": cfg.seed, "lr": cfg.optim.lr,
        "epochs": t.epochs, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "versions": _versions(),
        "device": device, "hardware": _hardware(device), "precision": t.precision, "engine": engine,
        "test": None, "diverged": None, "error": None, "epochs_completed": 0, "wall_s": 0.0,
        "started": now(),
    }


def hparams_of(cfg: RunConfig) -> dict[str, Any]:
    """What TensorBoard's HParams tab lists for a run (separate and stacked alike)."""
    t = cfg.trainer
    return {"optimizer": cfg.optim.name, "label": cfg.run_label, "semantics": cfg.optim.semantics, "lr": cfg.optim.lr,
            "seed": cfg.seed, "batch_size": t.batch_size, "model": cfg.model.name, "epochs": t.epochs,
            **{f"optim.{k}": str(v) for k, v in cfg.optim.kwargs.items()}}


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    return None if a == b else f"{path} {a!r} -> {b!r}"


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))  # tuples -> lists, as in run.json


def comparable(fingerprint: Any) -> Any:
    """A fingerprint as compared: JSON-normal, without the experiment name (renaming an
    experiment folder does not change its runs; records written before this rule carry it)."""
    fp = _normal(fingerprint)
    if isinstance(fp, dict):
        fp.pop("experiment", None)
    return fp


def same_configuration(cfg: RunConfig, stored: Mapping[str, Any]) -> bool:
    return comparable(stored.get("fingerprint")) == comparable(cfg.fingerprint())


def stored_mismatch(cfg: RunConfig, stored: Mapping[str, Any]) -> str | None:
    """How the run in a run.json differs from ``cfg`` in what changes the numbers (its
    fingerprint); None when alike or unknown (then :meth:`RunFolder.prepare` judges the checkpoint)."""
    old = stored.get("fingerprint")
    if not isinstance(old, Mapping):
        conf = stored.get("config")
        if not isinstance(conf, Mapping):
            return None
        from ..config import build_config

        try:
            old = build_config(conf).fingerprint()
        except Exception:  # noqa: BLE001 - an older schema
            return None
    return _first_difference(comparable(old), comparable(cfg.fingerprint()))


def is_finished(cfg: RunConfig, stored: Mapping[str, Any] | None) -> bool:
    """A result already: done or diverged with at least the requested epochs."""
    if not stored or stored.get("status") not in FINAL_STATUSES:
        return False
    asked = stored.get("epochs", stored.get("epochs_completed"))
    try:
        return int(asked) >= cfg.trainer.epochs
    except (TypeError, ValueError):
        return False


def record_failure(cfg: RunConfig, error: str) -> dict[str, Any]:
    """Mark a run failed in its run.json from outside the run (a worker that died), keeping the
    fields its own run.json had."""
    data = read_record(cfg.run_dir) or {}
    data.update({"status": FAILED, "error": error, "label": cfg.run_label, "optimizer": cfg.optim.name,
                 "seed": cfg.seed, "lr": cfg.optim.lr})
    data.setdefault("config", cfg.to_dict())
    data.setdefault("diverged", None)
    data.setdefault("epochs_completed", 0)
    data["failed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(cfg.run_dir / RUN_JSON, data)
    return data


# -- checkpoints ------------------------------------------------------------------------------------


def verify_checkpoint(ckpt: Path, engine: str = "single") -> dict[str, Any]:
    """Load ``ckpt`` with ``torch.load(weights_only=True)``: plain tensors and containers only, so a
    tampered file (a pickle that would run code) is refused instead of executed."""
    import torch

    try:
        with warnings.catch_warnings():  # the refusal is reported below, in one line
            warnings.simplefilter("ignore")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, OSError...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's refusal: a generic paragraph around the one line that says what was refused
        specific = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the documentation"))]
        why = (specific or lines or [type(exc).__name__])[0].removeprefix("WeightsUnpickler error:").strip() or lines[0]
        why = why.split(". ")[0].rstrip(".")[:200]  # its first sentence
        raise UserError(
            f"{ckpt} is not a checkpoint this tool can load safely (torch.load weights_only=True: {why}); "
            "it is corrupt or was not written by this tool: pass --restart to discard it"
        ) from None
    problem = checkpoint_problem(state, engine)
    if problem:
        raise UserError(f"{ckpt} is not a checkpoint written by this tool ({problem}); pass --restart to discard it")
    return state


def checkpoint_rows(state: Mapping[str, Any]) -> tuple[list[dict[str, Any]], float, list[dict[str, Any]]]:
    """The metrics rows, training seconds so far and diagnostics rows a checkpoint carries."""
    callbacks = state.get("callbacks") or {}
    rec = callbacks.get(RECORDER) or {}
    diag = callbacks.get(DIAGNOSTICS) or {}
    return list(rec.get("rows", [])), float(rec.get("wall_s", 0.0)), list(diag.get("rows", []))


def checkpoint_callbacks(rows: list[dict[str, Any]], diag_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``callbacks`` entry of a checkpoint (what RunRecorder/OptimizerDiagnostics save)."""
    return {RECORDER: {"rows": list(rows), "wall_s": rows[-1]["wall_s"] if rows else 0.0},
            DIAGNOSTICS: {"rows": list(diag_rows)}}


# -- the folder ------------------------------------------------------------------------------------


class RunFolder:
    """One run's folder and its lifecycle (see the module docstring)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.path = cfg.run_dir
        self.key = run_key(cfg.run_label, cfg.seed)
        self.record: dict[str, Any] = {}

    @property
    def record_path(self) -> Path:
        return self.path / RUN_JSON

    @property
    def ckpt_path(self) -> Path:
        return self.path / CKPT

    def previous(self) -> dict[str, Any] | None:
        return read_record(self.path)

    def finished(self, restart: bool = False) -> dict[str, Any] | None:
        """The stored record when this configuration's result is already there (same fingerprint,
        done or diverged, at least the requested epochs), else None."""
        previous = None if restart else self.previous()
        if previous and same_configuration(self.cfg, previous) and is_finished(self.cfg, previous):
            return previous
        return None

    def prepare(self, *, restart: bool, engine: str = "single") -> dict[str, Any] | None:
        """Before the first byte is written: refuse (UserError) a folder holding another
        configuration's checkpoint or result, or an unreadable checkpoint; check the folder is
        writable; then clear it for a fresh start (or drop a killed writer's temporary files on
        resume). Returns the verified checkpoint to resume from, or None."""
        previous, problem = record_status(self.path)
        resume = self.ckpt_path.exists() and not restart
        if restart:
            pass
        elif previous is not None and not same_configuration(self.cfg, previous) and (
                resume or previous.get("status") in FINAL_STATUSES):
            raise UserError(
                f"{self.path} holds a {'checkpoint' if resume else 'finished run'} from a different configuration; "
                "pass --restart to discard it, or choose another --experiment/--label")
        elif resume and previous is None:  # run.json is written before the first checkpoint
            raise UserError(f"{self.path} holds a checkpoint but {problem}, so its configuration is unknown; "
                            "pass --restart to discard it")
        elif previous is not None and previous.get("status") in FINAL_STATUSES and not resume:
            raise UserError(  # more epochs asked of a finished run, but nothing to extend it from
                f"{self.path} holds a run that finished after {previous.get('epochs_completed')} epochs but no "
                f"{CKPT} to continue it from; pass --restart to train it again from scratch")
        state = verify_checkpoint(self.ckpt_path, engine) if resume else None
        if state is not None and state.get("engine") == "stacked" and engine != "stacked":
            raise UserError(f"{self.ckpt_path} was written by the stacked review engine; resume it with "
                            "`python -m torchopt_review.review --engine stacked`, or pass --restart to discard it")
        self.check_writable()
        if state is None:
            self.clear()  # a fresh start: nothing from an earlier attempt (events, CSVs) may leak into it
        else:
            for leftover in self.path.glob(".*.tmp"):  # a writer killed before its rename
                leftover.unlink()
        return state

    def check_writable(self) -> None:
        """Create the folder and write a probe file; on failure remove what this made and raise."""
        made = [p for p in (self.path, *self.path.parents) if not p.exists()]
        probe = self.path / ".write-test"
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"x" * 4096)
            probe.unlink()
        except OSError as exc:
            with contextlib.suppress(OSError):
                probe.unlink()
            for p in made:  # deepest first: leave nothing behind
                with contextlib.suppress(OSError):
                    p.rmdir()
            raise UserError(f"cannot write to {self.path}: {exc.strerror or exc}; choose another --logdir") from None

    def clear(self) -> None:
        for child in self.path.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def start(self, device: str, engine: str = "single") -> dict[str, Any]:
        """run.json says ``running`` (written before the first checkpoint)."""
        self.record = new_record(self.cfg, device, engine)
        atomic_write_json(self.record_path, self.record)
        return self.record

    def tb_logger(self, purge_step: int | None) -> Any:
        """The run's TensorBoard logger (Lightning's): events under this folder. On resume,
        TensorBoard drops the killed process's events past the checkpoint (steps >= purge_step)."""
        from lightning.pytorch.loggers import TensorBoardLogger

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TensorBoardLogger(str(Path(self.cfg.logdir)), name=self.cfg.experiment, version=self.key,
                                     default_hp_metric=False, purge_step=purge_step)

    def write_checkpoint(self, save: Callable[[Path], None], epoch: int) -> None:
        """``save(path)`` writes the checkpoint; it lands atomically as ``last.ckpt`` (a kill leaves
        the previous checkpoint or this one; a full disk leaves no torn file behind)."""
        atomic_write(self.ckpt_path, save)

    def write_tables(self, rows: list[dict[str, Any]], diag_rows: list[dict[str, Any]] | None) -> None:
        """metrics.csv (and diagnostics.csv when diagnostics are kept) from the rows so far."""
        atomic_write_text(self.path / METRICS_CSV, csv_text(METRIC_COLUMNS, rows))
        if diag_rows is not None:
            atomic_write_text(self.path / DIAG_CSV, csv_text(DIAG_COLUMNS, diag_rows))

    def save_epoch(self, save: Callable[[Path], None], rows: list[dict[str, Any]],
                   diag_rows: list[dict[str, Any]] | None) -> None:
        """The end of an epoch on disk: the checkpoint first (it carries the rows), then the CSVs;
        a kill between the two is repaired on resume (the CSVs are rewritten from the checkpoint)."""
        self.write_checkpoint(save, rows[-1]["epoch"] if rows else 0)
        self.write_tables(rows, diag_rows)

    def finish(self, rows: list[dict[str, Any]], *, test: Mapping[str, float] | None = None,
               diverged: Mapping[str, int] | None = None) -> dict[str, Any]:
        """run.json says ``done`` (with the test metrics) or ``diverged``."""
        rec = self.record
        rec["epochs_completed"] = len(rows)
        rec["wall_s"] = rows[-1]["wall_s"] if rows else 0.0
        if diverged is not None:
            rec.update(status=DIVERGED, diverged=dict(diverged))
        else:
            rec.update(status=DONE, test=dict(test or {}))
        rec["finished"] = now()
        atomic_write_json(self.record_path, rec)
        return rec

    def fail(self, error: str, epochs_completed: int) -> dict[str, Any]:
        """run.json says ``failed`` (best effort: the disk may be full; the original error matters)."""
        self.record.update(status=FAILED, error=error, epochs_completed=epochs_completed)
        if self.record:
            with contextlib.suppress(OSError):
                atomic_write_json(self.record_path, {**self.record, "finished": now()})
        return self.record


# -- TensorBoard ------------------------------------------------------------------------------------
