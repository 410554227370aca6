"""How numbers appear in report.md: one formatter per metric kind, p-values, differences, tables."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from ..stats import Summary
from .scalars import METRIC_BY_KEY

__all__ = ["finite", "fmt", "fmt_p", "fmt_diff", "mean_std", "ci", "md_table", "fmt_lr"]


def finite(x: Any) -> bool:
    """A real, finite number (not None, NaN or inf)."""
    return isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def fmt(x: float, kind: str) -> str:
    """``x`` as the report prints a metric of ``kind`` (accuracies in %, "–" when undefined)."""
    if not finite(x):
        return "–"
    if kind == "acc":
        return f"{100 * x:.2f}"
    if kind == "loss":
        return f"{x:.4f}"
    if kind == "epoch":
        return f"{x:.1f}" if x != round(x) else f"{x:.0f}"
    if kind == "seconds":
        return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"
    if kind == "frac":
        return f"{100 * x:.1f} %"
    if kind == "count":
        return f"{x:.1f}" if x != round(x) else f"{x:.0f}"
    if kind == "sci":
        return f"{x:.3g}"
    return f"{x:.3f}"


def fmt_p(p: float) -> str:
    if not finite(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3g}"


def _diff_scale(key: str) -> tuple[float, str]:
    kind = METRIC_BY_KEY[key].kind
    if kind in ("acc", "frac"):
        return 100.0, " pp"
    return 1.0, ""


def fmt_diff(key: str, x: float) -> str:
    """A signed difference of metric ``key`` (accuracies in percentage points)."""
    if not finite(x):
        return "–"
    s, unit = _diff_scale(key)
    return f"{s * x:+.3g}{unit}" if s == 1.0 else f"{s * x:+.2f}{unit}"


def mean_std(s: Summary, kind: str) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return fmt(s.mean, kind)
    return f"{fmt(s.mean, kind)} ± {fmt(s.std, kind).replace(' %', '')}{' %' if kind == 'frac' else ''}"


def ci(s: Summary, kind: str) -> str:
    if s.n < 2:
        return "–"
    return f"[{fmt(s.ci_low, kind)}, {fmt(s.ci_high, kind)}]"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out


def fmt_lr(lr: float | None) -> str:
    return "–" if lr is None else f"{lr:g}"
