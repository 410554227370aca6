"""``python -m torchopt_review.compare runs/blog runs/blog-stacked``: two reviews of the same runs,
side by side -- e.g. the CPU review against a GPU or stacked one.

Per run label and metric (final validation accuracy and loss, test accuracy, final training loss):
each review's mean ± std over seeds, the difference of the means, and whether each mean lies
inside the *other* review's seed spread (the range of its per-seed values) -- issue 9's criterion --
and Welch's t-test of the difference (two-sided p). "Same statistical results" means every label
passes the range check on both sides. Exit status 0 when all pass, 1 when some does not, 2 on bad
input.

Two reviews of the same seeds are not the same numbers unless they round alike: float32 trajectories
of the adaptive optimizers amplify round-off (the stacked engine's ``bmm`` against ``addmm``: equal
to 1e-15 in float64 over 600 real steps, 0.19 apart in loss after ~400 float32 steps of Adam), so
they are two draws of the same distribution, and a 5-seed range check is strict for spiky metrics.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

from scipy import stats as _st

from .errors import ArgumentParser, UserError, cli_entry
from .report import load_runs, run_scalars
from .stats import describe

METRICS = (("final_val_acc", "val acc %", 100.0), ("test_acc", "test acc %", 100.0),
           ("final_val_loss", "val loss", 1.0), ("final_train_loss", "train loss", 1.0))


def _values(exp_dir: Path) -> dict[str, dict[str, list[float]]]:
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir} is not a review folder (runs/<experiment>); run the review first")
    out: dict[str, dict[str, list[float]]] = {}
    for run in load_runs(exp_dir):
        if not run.usable:
            continue
        s = run_scalars(run)
        for key, _, _ in METRICS:
            out.setdefault(run.label, {}).setdefault(key, []).append(s[key])
    if not out:
        raise UserError(f"{exp_dir} holds no finished run")
    return out


def _within(x: float, values: list[float]) -> bool:
    """``x`` inside [min, max] of ``values`` (to float round-off: a mean of equal values may differ
    from them in the last bit)."""
    tol = 1e-9 * max(1.0, abs(x))
    return min(values) - tol <= x <= max(values) + tol


def _welch_p(a: list[float], b: list[float]) -> float:
    """Two-sided p of Welch's t-test; NaN with fewer than 2 values a side, 1 or 0 when neither
    side varies (equal or different constants)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if max(a) == min(a) and max(b) == min(b):
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():  # one constant side: scipy warns, the p-value is still right
        warnings.simplefilter("ignore")
        return float(_st.ttest_ind(a, b, equal_var=False).pvalue)


def compare(a_dir: Path, b_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """Rows per (label, metric) present in both reviews, and whether every one passes."""
    a, b = _values(Path(a_dir)), _values(Path(b_dir))
    rows, ok = [], True
    for label in [lbl for lbl in a if lbl in b]:
        for key, name, scale in METRICS:
            va, vb = a[label][key], b[label][key]
            da, db = describe(va), describe(vb)
            inside = _within(da.mean, vb) and _within(db.mean, va)
            ok &= inside
            p = _welch_p(va, vb)
            rows.append({"label": label, "metric": name, "a_mean": da.mean * scale, "a_std": da.std * scale,
                         "b_mean": db.mean * scale, "b_std": db.std * scale, "diff": (db.mean - da.mean) * scale,
                         "n": (da.n, db.n), "inside": inside, "welch_p": p})
    if not rows:
        raise UserError(f"{a_dir} and {b_dir} have no run label in common")
    return rows, ok


def render(rows: list[dict[str, Any]], a_name: str, b_name: str) -> str:
    lines = [f"| label | metric | {a_name} | {b_name} | B - A | Welch p | each mean inside the other's seed range |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['metric']} | {r['a_mean']:.3f} ± {r['a_std']:.3f} (n={r['n'][0]}) | "
                     f"{r['b_mean']:.3f} ± {r['b_std']:.3f} (n={r['n'][1]}) | {r['diff']:+.3f} | {r['welch_p']:.2f} | "
                     f"{'yes' if r['inside'] else 'NO'} |")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m torchopt_review.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="first review folder, e.g. runs/blog")
    p.add_argument("b", type=Path, help="second review folder, e.g. runs/blog-stacked")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = p.parse_args(argv)
    rows, ok = compare(args.a, args.b)
    print(render(rows, str(args.a), str(args.b)))
    print(f"\n{'same' if ok else 'NOT the same'} statistical results: "
          f"{sum(r['inside'] for r in rows)}/{len(rows)} (label, metric) pairs inside each other's seed range")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
