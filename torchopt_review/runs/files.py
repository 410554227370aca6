"""Reading and writing a run folder's files: the one atomic-write helper (a temporary file in the
same folder, fsync, ``os.replace``), run.json and the CSVs, each read through the schema's checks."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .schema import DIAG_COLUMNS, MAX_EPOCHS, METRICS_CSV, METRIC_COLUMNS, RUN_JSON, SEED_DIR, record_problem


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


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
