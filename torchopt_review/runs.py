"""The run folder: ``<logdir>/<experiment>/<label>/seed<k>/``, its schema and its lifecycle.

Every engine (the Lightning path in :mod:`torchopt_review.train`, the stacked engine), the review,
the report and compare go through this module; nothing else writes into a run folder.

Schema (what a folder holds)::

    run.json             the run's record: RECORD_FIELDS (config, fingerprint, versions, status ...)
    metrics.csv          one row per epoch: METRIC_COLUMNS (train columns: running means over the epoch)
    diagnostics.csv      per parameter tensor every few hundred steps: DIAG_COLUMNS
    events.out.tfevents  TensorBoard: EPOCH_TAGS, lr/group<i>, diag/<param>/<key>, one histogram per
                         layer and epoch, CUSTOM_SCALARS, hparams
    last.ckpt            the last finished epoch, in Lightning's checkpoint layout (``state_dict``,
                         ``optimizer_states``, ``callbacks[RECORDER|DIAGNOSTICS]`` carrying the rows)

Lifecycle: :meth:`RunFolder.finished` (a result already?) -> :meth:`RunFolder.prepare` (resume
checks, checkpoint verification, writability, clearing a fresh start) -> :meth:`RunFolder.start`
(run.json ``running``) -> per epoch :meth:`RunFolder.save_epoch` (checkpoint atomically, then the
CSVs it carries the rows of) -> :meth:`RunFolder.finish` or :meth:`RunFolder.fail`.

Every write is atomic (:func:`atomic_write`: a temporary file in the same folder, then
``os.replace``), so a kill at any moment leaves either the old file or the new one.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from .errors import UserError

if TYPE_CHECKING:  # imported lazily at run time: reading run folders needs no torch
    from .config import RunConfig

# -- schema ------------------------------------------------------------------------------------

DONE, DIVERGED, FAILED, RUNNING = "done", "diverged", "failed", "running"
FINAL_STATUSES = (DONE, DIVERGED)  # results: a later review skips them

RUN_JSON, METRICS_CSV, DIAG_CSV, CKPT = "run.json", "metrics.csv", "diagnostics.csv", "last.ckpt"
METRIC_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
DIAG_COLUMNS = ("epoch", "step", "param", "eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm")
RECORD_FIELDS = ("status", "label", "optimizer", "seed", "lr", "epochs", "config", "fingerprint", "versions",
                 "device", "hardware", "precision", "engine", "test", "diverged", "error", "epochs_completed",
                 "wall_s", "started", "finished")

# TensorBoard: per-epoch curves (x-axis = optimizer steps), lr per param group, diagnostics
EPOCH_TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc"}
STEP_LOSS_TAG = "train/loss_step"
MISTAKES_TAG = "test/mistakes"  # image: a grid of test images the trained model gets wrong (+ its caption as text)
MISTAKES_SEEN, MISTAKES_SHOWN = 1000, 64  # of the first 1,000 test images, the first 64 misclassified
DIAG_TB_KEYS = ("eff_lr_p50", "update_ratio", "grad_norm")
HISTOGRAM_BINS = 30

# One chart per metric, every run overlaid (TensorBoard's Custom Scalars dashboard).
CUSTOM_SCALARS = {
    "optimizers": {
        "train/loss": ["Multiline", ["^train/loss$"]],
        "train/acc": ["Multiline", ["^train/acc$"]],
        "val/loss": ["Multiline", ["^val/loss$"]],
        "val/acc": ["Multiline", ["^val/acc$"]],
        "learning rate": ["Multiline", ["^lr/"]],
        "train/loss (every N steps)": ["Multiline", ["^train/loss_step$"]],
    },
    "diagnostics": {
        "effective step size, median per layer": ["Multiline", [r"^diag/.*/eff_lr_p50$"]],
        "update / weight ratio": ["Multiline", [r"^diag/.*/update_ratio$"]],
        "gradient norm": ["Multiline", [r"^diag/.*/grad_norm$"]],
    },
}

# Checkpoint layout: Lightning's, with the two callbacks' states under these keys (their
# ``state_key``); the stacked engine writes the same layout, plus ``"engine": "stacked"``.
RECORDER, DIAGNOSTICS = "RunRecorder", "OptimizerDiagnostics"

SEED_DIR = re.compile(r"^seed(?P<seed>-?\d+)$")


def lr_tag(group: int) -> str:
    return f"lr/group{group}"


def diag_tag(param: str, key: str) -> str:
    return f"diag/{param}/{key}"


def run_key(label: str, seed: int) -> str:
    """``<label>/seed<k>``: a run's name inside its experiment (and its TensorBoard version)."""
    return f"{label}/seed{seed}"


# -- atomic writes (the one helper) ------------------------------------------------------------

def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` a temporary file beside ``path``, fsync it, then rename it into place; on any
    error (a full disk, a kill signal turned exception) remove the temporary file and re-raise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``, or None when there is none to read (missing, a parent that is a file,
    unreadable, not JSON)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return None


# errno values of a full disk / quota / file-size limit: reported as a user error, not a crash
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def record_problem(data: Any) -> str | None:
    """Why ``data`` (what a run.json holds) is not a run record this tool wrote; None when it is.
    Files read back are untrusted: hand-edited, torn, or from another version."""
    if not isinstance(data, dict):
        return f"not a JSON object but a {type(data).__name__}"
    if data.get("status") not in (DONE, DIVERGED, FAILED, RUNNING):
        return f"status {data.get('status')!r} is not one of {DONE}, {DIVERGED}, {FAILED}, {RUNNING}"
    checks = (("label", lambda v: isinstance(v, str) and v != ""), ("optimizer", lambda v: isinstance(v, str)),
              ("seed", _is_int))
    for key, ok in checks:
        if not ok(data.get(key)):
            return f"{key} is {data.get(key)!r}" if key in data else f"it has no {key!r}"
    optional = (("epochs", lambda v: _is_int(v) and v >= 1), ("epochs_completed", lambda v: _is_int(v) and v >= 0),
                ("fingerprint", lambda v: isinstance(v, dict)), ("config", lambda v: isinstance(v, dict)),
                ("lr", _is_number),
                ("test", lambda v: v is None or (isinstance(v, dict) and all(_is_number(v.get(k)) for k in ("acc", "loss")))),
                ("diverged", lambda v: v is None or isinstance(v, dict)), ("wall_s", _is_number))
    for key, ok in optional:
        if key in data and not ok(data[key]):
            return f"{key} is {data[key]!r}"
    if data["status"] == DONE and not isinstance(data.get("test"), dict) and "fingerprint" in data:
        return "status done without test metrics"
    return None


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """A run folder's run.json when it is a valid record (:func:`record_problem`), else None."""
    data = read_json(Path(run_dir) / RUN_JSON)
    return data if record_problem(data) is None else None


def record_status(run_dir: str | Path) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")``, or ``(None, why it cannot be used)``: no run.json, not JSON, not a record."""
    path = Path(run_dir) / RUN_JSON
    if not path.exists():
        return None, f"no {RUN_JSON}"
    data = read_json(path)
    if data is None:
        return None, f"unreadable {RUN_JSON} (not valid JSON)"
    problem = record_problem(data)
    return (None, f"unusable {RUN_JSON} ({problem})") if problem else (data, "")


# -- tables -------------------------------------------------------------------------------------

def csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    """Rows as CSV; floats by ``repr`` (round-trip exact)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def epoch_row(epoch: int, step: int, wall_s: float, train_loss: float, train_acc: float, val_loss: float,
              val_acc: float, lr: float) -> dict[str, Any]:
    """One metrics.csv row (both engines build theirs here)."""
    return {"epoch": epoch, "step": step, "wall_s": round(wall_s, 3), "train_loss": train_loss,
            "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "lr": lr}


def diag_row(epoch: int, step: int, param: str, quantiles: list[float], update_ratio: float,
             grad_norm: float) -> dict[str, Any]:
    """One diagnostics.csv row: effective step size p10/p50/p90, update/weight ratio, grad norm."""
    return {"epoch": epoch, "step": step, "param": param, "eff_lr_p10": quantiles[0], "eff_lr_p50": quantiles[1],
            "eff_lr_p90": quantiles[2], "update_ratio": update_ratio, "grad_norm": grad_norm}


def epoch_line(row: Mapping[str, Any], epochs: int, key: str = "") -> str:
    """The one-line summary printed after each epoch."""
    return (f"{key + ': ' if key else ''}epoch {row['epoch']:>3}/{epochs}  train loss {row['train_loss']:.4f} "
            f"acc {100 * row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
            f"  ({row['wall_s']:.1f} s)")


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


MAX_EPOCHS = 1_000_000  # an epoch number beyond this in a CSV is corrupt, not a long run


def _read_rows(path: Path, columns: tuple[str, ...]) -> tuple[list[dict[str, str]], str]:
    """The rows of a CSV this module wrote, or a problem: not text, not CSV, missing columns, or a
    row that is not complete (a torn last line, a hand edit)."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                return [], f"{path.name} lacks columns {missing}"
            rows = []
            for row in reader:
                if None in row or any(row.get(c) in (None, "") for c in columns):
                    return [], f"{path.name} line {reader.line_num} is incomplete (a torn or edited row)"
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        return [], f"{path.name} is not a CSV file this tool wrote ({exc.__class__.__name__})"
    except OSError as exc:
        return [], f"{path.name} cannot be read ({exc.strerror or exc})"
    return rows, ""


def read_metrics(path: str | Path) -> tuple[list[list[float]], str]:
    """metrics.csv -> rows of floats in METRIC_COLUMNS order, sorted by epoch (the last row wins
    for a repeated epoch: a resumed run may repeat one), and a problem ("" when none). A file
    with any unusable row yields no rows and says why: a result is never half-used."""
    path = Path(path)
    if not path.is_file():
        return [], f"no {METRICS_CSV}"
    rows, problem = _read_rows(path, METRIC_COLUMNS)
    by_epoch: dict[int, list[float]] = {}
    for i, row in enumerate(rows):
        vals = [_float(row[c]) for c in METRIC_COLUMNS]
        epoch, step = vals[0], vals[1]
        if not (epoch.is_integer() and 1 <= epoch <= MAX_EPOCHS and step.is_integer() and step >= 0):
            return [], f"{METRICS_CSV} row {i + 1} has epoch {row['epoch']!r}, step {row['step']!r}"
        by_epoch[int(epoch)] = vals
    return ([by_epoch[e] for e in sorted(by_epoch)], "") if not problem else ([], problem)


def read_diagnostics(path: str | Path) -> list[dict[str, Any]] | None:
    """diagnostics.csv -> rows (``param`` a string, the rest floats), or None when absent/unusable."""
    path = Path(path)
    if not path.is_file():
        return None
    rows, problem = _read_rows(path, DIAG_COLUMNS)
    if problem:
        return None
    return [{c: (r[c] if c == "param" else _float(r[c])) for c in DIAG_COLUMNS} for r in rows] or None


def iter_run_dirs(exp_dir: str | Path) -> Iterator[tuple[str, int, Path]]:
    """``(label, seed, folder)`` of every ``<label>/seed<k>`` folder under ``exp_dir``, sorted."""
    for label_dir in sorted(p for p in Path(exp_dir).iterdir() if p.is_dir()):
        for seed_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
            m = SEED_DIR.match(seed_dir.name)
            if m:
                yield label_dir.name, int(m.group("seed")), seed_dir


# -- the record (run.json) -------------------------------------------------------------------------

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
        from .config import build_config

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

def checkpoint_problem(state: Any, engine: str = "single") -> str | None:
    """Why a weights-only-loaded ``state`` is not a checkpoint this tool wrote (for ``engine``)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint"
    required = ["state_dict", "optimizer_states", "opt_steps", "epoch", "callbacks"]
    if engine != "stacked" and state.get("engine") != "stacked":
        required += ["loops", "global_step"]  # what Lightning's resume reads
    missing = [k for k in required if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not (isinstance(state["state_dict"], dict) and state["state_dict"]
            and all(hasattr(v, "shape") for v in state["state_dict"].values())):
        return "its state_dict is not a set of tensors"
    opts = state["optimizer_states"]
    if not (isinstance(opts, list) and opts and all(isinstance(o, dict) and "state" in o and "param_groups" in o
                                                   for o in opts)):
        return "its optimizer_states are not optimizer state_dicts"
    if not (_is_int(state["opt_steps"]) and state["opt_steps"] >= 0 and _is_int(state["epoch"]) and state["epoch"] >= 0):
        return "its opt_steps/epoch are not counts"
    callbacks = state["callbacks"]
    rec = callbacks.get(RECORDER) if isinstance(callbacks, dict) else None
    diag = callbacks.get(DIAGNOSTICS, {"rows": []}) if isinstance(callbacks, dict) else None
    for name, part, columns in ((RECORDER, rec, METRIC_COLUMNS), (DIAGNOSTICS, diag, DIAG_COLUMNS)):
        rows = part.get("rows") if isinstance(part, dict) else None
        if not (isinstance(rows, list) and all(isinstance(r, dict) and set(columns) <= set(r) for r in rows)):
            return f"its {name} rows are not a list of {', '.join(columns[:3])}... rows"
    return None


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

def log_epoch(writer: Any, row: Mapping[str, Any], lrs: list[float]) -> None:
    """An epoch's curves: EPOCH_TAGS at x = optimizer steps, and each param group's lr."""
    for key, tag in EPOCH_TAGS.items():
        writer.add_scalar(tag, row[key], row["step"])
    for i, lr in enumerate(lrs):
        writer.add_scalar(lr_tag(i), float(lr), row["step"])


def log_diag(writer: Any, row: Mapping[str, Any]) -> None:
    for key in DIAG_TB_KEYS:
        writer.add_scalar(diag_tag(row["param"], key), row[key], row["step"])


def log_hparams(logger: Any, cfg: RunConfig, last: Mapping[str, Any], test_acc: float) -> None:
    logger.log_hyperparams(hparams_of(cfg), {"hp/val_acc": last["val_acc"], "hp/val_loss": last["val_loss"],
                                             "hp/test_acc": test_acc})


def log_eff_histograms(writer: Any, last_eff: Mapping[str, Any], step: int) -> None:
    """One histogram of log10 effective step size per parameter tensor (its last measurement; of
    :func:`~torchopt_review.diagnostics.quantile_sample`'s at most 16,384 values, which is what a
    histogram resolves anyway). Binned by ``torch.histc`` (30 equal bins between min and max) and
    written raw: ~50x cheaper than TensorBoard's numpy binning, which a review pays 480 times an epoch."""
    import torch

    from .diagnostics import quantile_sample

    for name, eff in last_eff.items():
        values = quantile_sample(eff.flatten())
        # a run blowing up has inf/NaN step sizes before its NaN loss is noticed:
        # TensorBoard refuses a histogram with no finite value ("empty")
        values = values[torch.isfinite(values)]
        if not values.numel():
            continue
        x = values.double().clamp_min(1e-30).log10()
        lo, hi = x.min(), x.max()
        counts = torch.histc(x, bins=HISTOGRAM_BINS, min=float(lo), max=float(hi) if hi > lo else float(lo) + 1e-12)
        stats = torch.stack([lo, hi, x.sum(), (x * x).sum()]).tolist()
        edges = torch.linspace(stats[0], stats[1] if stats[1] > stats[0] else stats[0] + 1e-12, HISTOGRAM_BINS + 1)
        writer.add_histogram_raw(diag_tag(name, "log10_eff_lr"), min=stats[0], max=stats[1], num=int(x.numel()),
                                 sum=stats[2], sum_squares=stats[3], bucket_limits=edges[1:].tolist(),
                                 bucket_counts=counts.tolist(), global_step=step)


def log_mistakes(writer: Any, images: Any, labels: Any, predicted: Any, step: int) -> None:
    """At the end of a run: the first :data:`MISTAKES_SHOWN` test images (of ``images``, uint8,
    the first :data:`MISTAKES_SEEN` of the test set) whose ``predicted`` class is wrong, as one
    ``torchvision.utils.make_grid`` image, with "true -> predicted" per image as its text caption."""
    from torchvision.utils import make_grid

    from .data import CLASSES

    wrong = (predicted.cpu() != labels.cpu()).nonzero().flatten()[:MISTAKES_SHOWN]
    if not len(wrong):
        return
    side = int(round(images[0].numel() ** 0.5))
    pixels = images.cpu()[wrong].reshape(len(wrong), 1, side, side).float().div_(255.0)
    writer.add_image(MISTAKES_TAG, make_grid(pixels, nrow=8, padding=2, pad_value=1.0), step)
    pairs = [f"{i + 1}. {CLASSES[int(labels[k])]} -> {CLASSES[int(predicted[k])]}" for i, k in enumerate(wrong.tolist())]
    writer.add_text(MISTAKES_TAG, "Test images the model gets wrong (row by row, true -> predicted):  \n"
                    + "  \n".join(pairs), step)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
