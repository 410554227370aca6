"""summary.csv (one row per label) and claims.csv (one row per test): the report's numbers for
machines. Floats by ``repr`` (round-trip exact), empty where undefined; accuracies as fractions."""

from __future__ import annotations

import csv
import io
import math
from typing import Any

from .. import blog
from .. import runs as rf
from .analysis import Analysis
from .fmt import finite
from .scalars import METRICS

__all__ = ["SUMMARY_CSV", "CLAIMS_CSV", "summary_csv", "claims_csv"]

SUMMARY_CSV, CLAIMS_CSV = "summary.csv", "claims.csv"
BLOG_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_e1", "val_acc_e5", "val_acc_e10")
CLAIMS_HEADER = ["regime", "claim", "claim_text", "claim_verdict", "test", "role", "metric", "a", "b",
                 "expected_sign", "n", "mean_diff", "ci_low", "ci_high", "sd_diff", "d_z", "wins", "t_stat", "p_t",
                 "w_stat", "p_wilcoxon", "p_family", "p_holm", "test_verdict", "note", "seeds"]


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO(newline="")
    csv.writer(buf).writerows(rows)  # csv's own line ends (\r\n), as the files always had
    return buf.getvalue()


def _num(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def summary_csv(a: Analysis) -> str:
    """One row per label: run counts by status, every metric's mean/std/CI/n, the blog's numbers."""
    fixed_names = {l.name for l in a.fixed}
    grid_names = {l.name for ls in a.grids.values() for l in ls}
    header = ["label", "optimizer", "lr", "regime", "epochs", "n_runs", "n_used", "n_done", "n_diverged", "n_failed",
              "n_other"]
    for m in METRICS:
        header += [f"{m.key}_{s}" for s in ("mean", "std", "ci_low", "ci_high", "n")]
    header += [f"blog_{c}" for c in BLOG_COLUMNS] + ["blog_note"]
    rows: list[list[Any]] = [header]
    for lab in a.labels.values():
        st = [r.status for r in lab.runs]
        n_done, n_div, n_failed = st.count(rf.DONE), st.count(rf.DIVERGED), st.count(rf.FAILED)
        regime = "+".join(x for x, on in (("fixed", lab.name in fixed_names), ("lr-grid", lab.name in grid_names)) if on)
        row: list[Any] = [lab.name, lab.optimizer, "" if lab.lr is None else repr(lab.lr), regime or "other",
                          lab.epochs, len(lab.runs), len(lab.used), n_done, n_div, n_failed,
                          len(st) - n_done - n_div - n_failed]
        for m in METRICS:
            s = lab.summary[m.key]
            row += ["" if not finite(v) else repr(float(v)) for v in (s.mean, s.std, s.ci_low, s.ci_high)] + [s.n]
        b, note = blog.blog_row_for(lab.name, lab.optimizer, lab.lr)
        row += [repr(getattr(b, c)) if b is not None else "" for c in BLOG_COLUMNS] + [note]
        rows.append(row)
    return _csv(rows)


def claims_csv(a: Analysis) -> str:
    """One row per test of every claim, fixed regime first, then the tuned one when there is a grid."""
    sections = [("fixed", a.claims)] + ([("tuned", a.tuned_claims)] if a.tuned_claims else [])
    rows: list[list[Any]] = [CLAIMS_HEADER]
    for regime, claims in sections:
        for c in claims:
            for t in c.tests:
                r = t.result
                vals = ([r.n, _num(r.mean_diff), _num(r.ci_low), _num(r.ci_high), _num(r.sd_diff), _num(r.d_z), t.wins,
                         _num(r.t_stat), _num(r.p_t), _num(r.w_stat), _num(r.p_wilcoxon)] if r is not None
                        else [0] + [""] * 10)
                rows.append([regime, c.number, c.text, c.verdict, t.test_id, t.role, t.metric, t.a, t.b,
                             t.expected, *vals, _num(t.p_family), _num(t.p_holm), t.verdict, t.note,
                             " ".join(map(str, r.seeds)) if r is not None else ""])
    return _csv(rows)
