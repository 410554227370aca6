"""Reading a review's run folders into :class:`Run` objects, through :mod:`torchopt_review.runs` only.

The folder's schema (file names, columns, statuses) and its readers belong to ``runs``; this module
turns what they return into numpy columns and records, for each run, why it cannot enter the
statistics (``Run.problem``) instead of raising: a report lists broken runs, it does not stop at them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import runs as rf
from ..errors import UserError

__all__ = ["ReportError", "Run", "load_runs", "base_label", "is_lr_label", "as_float", "read_plan",
           "load_experiment"]

# ``<optimizer>-lr<lr>``: one member of an lr grid (the review's naming)
LR_SUFFIX = re.compile(r"^(?P<base>.+)-lr(?P<lr>[0-9][0-9.eE+-]*)$")
REVIEW_JSON = "review.json"  # the review runner's plan, beside the run folders


class ReportError(UserError):
    """A problem the user can fix (missing directory, no runs); the CLI prints it in one line."""


@dataclass
class Run:
    """One ``<label>/seed<k>`` folder as read from disk."""

    path: Path
    label: str
    seed: int
    status: str
    optimizer: str
    lr: float | None
    info: dict[str, Any]
    metrics: dict[str, np.ndarray]
    diagnostics: dict[str, np.ndarray] | None = None
    problem: str = ""

    @property
    def epochs(self) -> int:
        e = self.metrics.get("epoch")
        return int(e[-1]) if e is not None and e.size else 0

    @property
    def usable(self) -> bool:
        """Enters the statistics: finished normally and logged at least one epoch."""
        return self.status == rf.DONE and self.epochs > 0 and not self.problem


def as_float(x: Any) -> float:
    """``float(x)``, or NaN when ``x`` is not a number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def base_label(label: str) -> str:
    """``adam-lr0.01`` -> ``adam``; labels without an lr suffix are their own base."""
    m = LR_SUFFIX.match(label)
    return m.group("base") if m else label


def is_lr_label(label: str) -> bool:
    """Whether ``label`` names one member of an lr grid (``<optimizer>-lr<lr>``)."""
    return LR_SUFFIX.match(label) is not None


def _metric_columns(path: Path) -> tuple[dict[str, np.ndarray], str]:
    rows, problem = rf.read_metrics(path)
    arr = np.asarray(rows, dtype=float).reshape(len(rows), len(rf.METRIC_COLUMNS))
    return {c: arr[:, i] for i, c in enumerate(rf.METRIC_COLUMNS)}, problem


def _diagnostic_columns(path: Path) -> dict[str, np.ndarray] | None:
    rows = rf.read_diagnostics(path)
    if rows is None:
        return None
    out: dict[str, np.ndarray] = {"param": np.asarray([r["param"] for r in rows], dtype=object)}
    for c in rf.DIAG_COLUMNS:
        if c != "param":
            out[c] = np.asarray([r[c] for r in rows], dtype=float)
    return out


def _record(run_dir: Path) -> tuple[dict[str, Any], str]:
    """The run's run.json and a problem ("" when it is a valid record)."""
    info, problem = rf.record_status(run_dir)
    return info or {}, problem


def _run(label: str, folder_seed: int, run_dir: Path) -> Run:
    info, problem = _record(run_dir)
    metrics, mproblem = _metric_columns(run_dir / rf.METRICS_CSV)
    status = str(info.get("status", "unknown")) if info else "unknown"
    if status == rf.DONE and mproblem:
        problem = problem or mproblem
    elif status == rf.DONE and metrics["epoch"].size == 0:
        problem = problem or f"{rf.METRICS_CSV} has no epoch rows"
    seed = info.get("seed")
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else folder_seed
    config = info.get("config")
    optim_cfg = (config.get("optim") or {}) if isinstance(config, dict) else {}
    if not isinstance(optim_cfg, dict):
        optim_cfg = {}
    optimizer = str(info.get("optimizer") or optim_cfg.get("name") or base_label(label))
    lr = as_float(info.get("lr", optim_cfg.get("lr")))
    return Run(path=run_dir, label=label, seed=seed, status=status, optimizer=optimizer,
               lr=lr if math.isfinite(lr) else None, info=info, metrics=metrics,
               diagnostics=_diagnostic_columns(run_dir / rf.DIAG_CSV), problem=problem)


def load_runs(exp_dir: Path) -> list[Run]:
    """Every ``<label>/seed<k>`` folder under ``exp_dir`` (any status), sorted by label and seed."""
    return [_run(label, seed, folder) for label, seed, folder in rf.iter_run_dirs(exp_dir)]


def read_plan(exp_dir: Path) -> dict | None:
    """The review runner's record of the plan (``review.json``) when it is a JSON object."""
    plan = rf.read_json(Path(exp_dir) / REVIEW_JSON)
    return plan if isinstance(plan, dict) else None


def load_experiment(exp_dir: Path) -> list[Run]:
    """:func:`load_runs`, raising :class:`ReportError` when ``exp_dir`` is missing or holds no run folders."""
    if not exp_dir.is_dir():
        raise ReportError(f"no experiment directory {str(exp_dir)!r}; pass runs/<experiment> "
                          f"(the folder holding <label>/seed<k>/{rf.RUN_JSON})")
    runs = load_runs(exp_dir)
    if not runs:
        subs = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and any(p.glob(f"*/seed*/{rf.RUN_JSON}")))
        hint = f"; did you mean one of {', '.join(str(exp_dir / s) for s in subs[:5])}?" if subs else ""
        raise ReportError(f"no runs in {str(exp_dir)!r} (expected <label>/seed<k>/ folders with {rf.RUN_JSON}){hint}")
    return runs
