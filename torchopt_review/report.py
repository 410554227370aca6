"""``python -m torchopt_review.report runs/<experiment>``: the review's report, from the logs only.

Reads what the training path wrote for every run, ``runs/<experiment>/<label>/seed<k>/``:
``metrics.csv`` (one row per epoch), ``run.json`` (status, config, versions, test metrics) and,
when present, ``diagnostics.csv`` (per-parameter effective step sizes). Writes beside them:

* ``report.md`` -- setup, per-label tables (mean +- std, 95 % t-interval, n; the blog's
  single-seed numbers beside ours), a verdict on each of the blog's six claims from paired tests
  across seeds with Holm correction, the blog's two observations in numbers, failed and
  diverged runs, and a tuned-lr section when the experiment has an lr grid;
* ``summary.csv`` (one row per label) and ``claims.csv`` (one row per test);
* PNG plots, embedded in ``report.md`` with relative links.

Nothing is typed in by hand except the blog's own numbers (:mod:`torchopt_review.blog`). The
module imports only numpy/scipy at import time (matplotlib when plotting, never torch), so it
runs anywhere the run folders can be copied to.

How the statistics work (also written into the report):

* runs are paired by seed -- the seed fixes init, data order and split, so two optimizers with
  the same seed saw the same data; only seeds present (status ``done``) in both are paired;
* each claim is a two-sided paired t-test on an explicitly defined metric; the Wilcoxon
  signed-rank test is shown beside it as a check that does not assume normality;
* Holm's correction runs over the family of claim tests of one regime; a claim is *supported*
  when its Holm-adjusted p < 0.05 and the difference has the claimed sign, *contradicted* when
  it is significant with the opposite sign, *not resolved* otherwise;
* claim 5 ("Adam and Nadam end best") is an intersection-union test: Adam and Nadam each against
  every other optimizer; it is supported only if all those pairwise differences are positive and
  significant, so its p-value is the largest of theirs (no correction needed inside an
  intersection-union test).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import blog as _blog
from .stats import PairedResult, Summary, describe, holm, paired_test

__all__ = ["write_report", "load_runs", "Run", "ReportError", "main"]

METRICS_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
DIAG_COLUMNS = ("epoch", "step", "param", "eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm")

ALPHA = 0.05                 # family-wise error rate of the claim tests (Holm)
TARGETS = (0.85, 0.88)       # validation-accuracy targets for "time to target"
LATE_WINDOW = 5              # claim 3: train-loss progress over the last 5 epochs
SLIGHT_MARGIN = 0.01         # claim 2: "slightly" = less than 1 pp of val accuracy
SPIKE_REL = 0.20             # observation 1: an epoch whose val loss rises > 20 % counts as a spike
OVERFIT_EPOCH = 10           # observation 2: "overfit after ~10 epochs"

PLOT_FILES = ("train_loss.png", "validation.png", "pairings.png", "effective_lr.png", "test_acc.png", "lr_sweep.png")
_LR_SUFFIX = re.compile(r"^(?P<base>.+)-lr(?P<lr>[0-9][0-9.eE+-]*)$")
_SEED_DIR = re.compile(r"^seed(?P<seed>-?\d+)$")


class ReportError(Exception):
    """A problem the user can fix (missing directory, no runs); the CLI prints it in one line."""


# ----------------------------------------------------------------------------------------------
# Reading the run folders
# ----------------------------------------------------------------------------------------------

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
        return self.status == "done" and self.epochs > 0 and not self.problem


def _float(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _read_metrics(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """metrics.csv -> column arrays sorted by epoch (last row wins for a repeated epoch)."""
    empty = {c: np.zeros(0) for c in METRICS_COLUMNS}
    if not path.is_file():
        return empty, "no metrics.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in METRICS_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            return empty, f"metrics.csv lacks columns {missing}"
        by_epoch: dict[int, list[float]] = {}
        for row in reader:
            vals = [_float(row.get(c)) for c in METRICS_COLUMNS]
            if not math.isfinite(vals[0]):
                continue  # a partly written last line
            by_epoch[int(vals[0])] = vals  # a resumed run may repeat an epoch: keep the last
    rows = [by_epoch[e] for e in sorted(by_epoch)]
    arr = np.asarray(rows, dtype=float).reshape(len(rows), len(METRICS_COLUMNS))
    return {c: arr[:, i] for i, c in enumerate(METRICS_COLUMNS)}, ""


def _read_diagnostics(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if any(c not in (reader.fieldnames or ()) for c in DIAG_COLUMNS):
            return None
        rows = list(reader)
    if not rows:
        return None
    out: dict[str, np.ndarray] = {"param": np.asarray([r["param"] for r in rows], dtype=object)}
    for c in DIAG_COLUMNS:
        if c != "param":
            out[c] = np.asarray([_float(r[c]) for r in rows], dtype=float)
    return out


def load_runs(exp_dir: Path) -> list[Run]:
    """Every ``<label>/seed<k>`` folder under ``exp_dir`` (any status), sorted by label and seed."""
    runs: list[Run] = []
    for label_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir()):
        for seed_dir in sorted(p for p in label_dir.iterdir() if p.is_dir()):
            m = _SEED_DIR.match(seed_dir.name)
            if not m:
                continue
            problem = ""
            info: dict[str, Any] = {}
            try:
                info = json.loads((seed_dir / "run.json").read_text())
                if not isinstance(info, dict):
                    raise ValueError("not a JSON object")
            except FileNotFoundError:
                problem = "no run.json"
            except (OSError, ValueError) as exc:
                problem = f"unreadable run.json ({exc})"
            metrics, mproblem = _read_metrics(seed_dir / "metrics.csv")
            status = str(info.get("status", "unknown")) if info else "unknown"
            if status == "done" and mproblem:
                problem = problem or mproblem
            elif status == "done" and metrics["epoch"].size == 0:
                problem = problem or "metrics.csv has no epoch rows"
            seed = info.get("seed")
            seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else int(m.group("seed"))
            optim_cfg = ((info.get("config") or {}).get("optim") or {}) if isinstance(info.get("config"), dict) else {}
            optimizer = str(info.get("optimizer") or optim_cfg.get("name") or base_label(label_dir.name))
            lr = _float(info.get("lr", optim_cfg.get("lr")))
            runs.append(Run(
                path=seed_dir, label=label_dir.name, seed=seed,
                status=status, optimizer=optimizer, lr=lr if math.isfinite(lr) else None,
                info=info, metrics=metrics, diagnostics=_read_diagnostics(seed_dir / "diagnostics.csv"),
                problem=problem,
            ))
    return runs


# ----------------------------------------------------------------------------------------------
# Per-run scalars
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    kind: str          # acc | loss | epoch | seconds | frac | log | count
    blog_attr: str = ""  # BlogRow attribute shown beside it


def _target_key(t: float) -> str:
    return f"{round(t * 100):d}"


METRICS: list[Metric] = [
    Metric("final_train_loss", "final train loss (running mean over the last epoch)", "loss", "train_loss"),
    Metric("final_train_acc", "final train acc (running mean over the last epoch)", "acc", "train_acc"),
    Metric("final_val_loss", "final val loss", "loss", "val_loss"),
    Metric("final_val_acc", "final val acc", "acc", "val_acc"),
    Metric("test_acc", "test acc (after the last epoch)", "acc"),
    Metric("best_val_acc", "best val acc", "acc"),
    Metric("best_val_epoch", "epoch of best val acc", "epoch"),
    *[m for t in TARGETS for m in (
        Metric(f"epochs_to_{_target_key(t)}", f"epochs to {t:.0%} val acc", "epoch"),
        Metric(f"wall_to_{_target_key(t)}", f"seconds to {t:.0%} val acc", "seconds"),
    )],
    Metric("time_per_epoch", "seconds per epoch (training wall time / epochs)", "seconds"),
    Metric("val_acc_e1", "val acc at epoch 1", "acc", "val_acc_e1"),
    Metric("val_acc_e5", "val acc at epoch 5", "acc", "val_acc_e5"),
    Metric("val_acc_e10", "val acc at epoch 10", "acc", "val_acc_e10"),
    Metric("train_loss_e20", "train loss at epoch 20", "loss", "train_loss"),
    Metric("train_acc_e20", "train acc at epoch 20", "acc", "train_acc"),
    Metric("val_loss_e20", "val loss at epoch 20", "loss", "val_loss"),
    Metric("val_acc_e20", "val acc at epoch 20", "acc", "val_acc"),
    Metric("max_val_loss_jump", "largest epoch-over-epoch val-loss increase", "loss"),
    Metric("max_val_loss_jump_rel", "largest relative epoch-over-epoch val-loss increase", "frac"),
    Metric("val_loss_spikes", f"epochs whose val loss rose > {SPIKE_REL:.0%}", "count"),
    Metric("min_val_loss_epoch", "epoch of minimum val loss", "epoch"),
    Metric("val_loss_rise", "val loss: final minus minimum", "loss"),
    Metric("val_acc_since_min_loss", "val acc: final minus at the min-val-loss epoch", "acc"),
    Metric("late_progress", f"relative train-loss decrease over the last {LATE_WINDOW} epochs", "frac"),
    Metric("eff_lr_first", "effective step size (median coordinate), end of the first logged epoch", "sci"),
    Metric("eff_lr_last", "effective step size (median coordinate), last logged step", "sci"),
    Metric("eff_lr_log_ratio", "log(effective step size: last logged step / end of first epoch)", "log"),
]
METRIC_BY_KEY = {m.key: m for m in METRICS}


def _at_epoch(m: dict[str, np.ndarray], col: str, epoch: int) -> float:
    idx = np.flatnonzero(m["epoch"] == epoch)
    return float(m[col][idx[0]]) if idx.size else math.nan


def _diag_series(diag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per logged step, the median over parameter tensors of each diagnostic column."""
    steps = np.unique(diag["step"][np.isfinite(diag["step"])])
    out = {"step": steps, "epoch": np.asarray([np.nanmin(diag["epoch"][diag["step"] == s]) for s in steps])}
    for c in ("eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm"):
        col = diag[c]
        out[c] = np.asarray([np.nanmedian(col[diag["step"] == s]) if np.any(np.isfinite(col[diag["step"] == s]))
                             else math.nan for s in steps])
    return out


def run_scalars(run: Run) -> dict[str, float]:
    """Every per-run number the report summarizes across seeds (NaN where undefined)."""
    m = run.metrics
    nan = math.nan
    out: dict[str, float] = {k.key: nan for k in METRICS}
    if run.epochs == 0:
        return out
    epochs, val_acc, val_loss, train_loss = m["epoch"], m["val_acc"], m["val_loss"], m["train_loss"]
    out.update(
        final_train_loss=float(train_loss[-1]), final_train_acc=float(m["train_acc"][-1]),
        final_val_loss=float(val_loss[-1]), final_val_acc=float(val_acc[-1]),
    )
    test = run.info.get("test") or {}
    out["test_acc"] = _float(test.get("acc")) if isinstance(test, dict) else nan
    if np.any(np.isfinite(val_acc)):
        i = int(np.nanargmax(val_acc))
        out["best_val_acc"], out["best_val_epoch"] = float(val_acc[i]), float(epochs[i])
    for t in TARGETS:
        hit = np.flatnonzero(val_acc >= t)
        if hit.size:  # unreached stays NaN: counted as "not reached", never averaged in
            out[f"epochs_to_{_target_key(t)}"] = float(epochs[hit[0]])
            out[f"wall_to_{_target_key(t)}"] = float(m["wall_s"][hit[0]])
    out["time_per_epoch"] = float(m["wall_s"][-1] / epochs[-1])
    for e in (1, 5, 10):
        out[f"val_acc_e{e}"] = _at_epoch(m, "val_acc", e)
    for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
        out[f"{col}_e{_blog.BLOG_EPOCH}"] = _at_epoch(m, col, _blog.BLOG_EPOCH)
    if epochs.size >= 2:
        jumps = np.diff(val_loss)
        rel = jumps / val_loss[:-1]
        out["max_val_loss_jump"] = float(np.nanmax(jumps))
        out["max_val_loss_jump_rel"] = float(np.nanmax(rel))
        out["val_loss_spikes"] = float(np.sum(rel > SPIKE_REL))
    if np.any(np.isfinite(val_loss)):
        j = int(np.nanargmin(val_loss))
        out["min_val_loss_epoch"] = float(epochs[j])
        out["val_loss_rise"] = float(val_loss[-1] - val_loss[j])
        out["val_acc_since_min_loss"] = float(val_acc[-1] - val_acc[j])
    if epochs.size > LATE_WINDOW:
        before = _at_epoch(m, "train_loss", int(epochs[-1]) - LATE_WINDOW)
        out["late_progress"] = 1.0 - float(train_loss[-1]) / before if before > 0 else nan
    if run.diagnostics is not None:
        ser = _diag_series(run.diagnostics)
        ok = np.isfinite(ser["eff_lr_p50"]) & (ser["eff_lr_p50"] > 0)
        s, ep = ser["eff_lr_p50"][ok], ser["epoch"][ok]
        # Reference: the last logged step of the first epoch, not step 1 -- RMSprop's and Adam's
        # moving averages start near zero, so their step size falls during warm-up for reasons
        # unrelated to AdaGrad's accumulation.
        first = np.flatnonzero(ep == ep.min()) if s.size else np.zeros(0, int)
        if s.size >= 2 and first[-1] < s.size - 1:
            ref = s[first[-1]]
            out["eff_lr_first"], out["eff_lr_last"] = float(ref), float(s[-1])
            out["eff_lr_log_ratio"] = float(np.log(s[-1] / ref))
    return out


# ----------------------------------------------------------------------------------------------
# Labels, regimes, summaries
# ----------------------------------------------------------------------------------------------

def base_label(label: str) -> str:
    """``adam-lr0.01`` -> ``adam``; labels without an lr suffix are their own base."""
    m = _LR_SUFFIX.match(label)
    return m.group("base") if m else label


@dataclass
class Label:
    name: str
    runs: list[Run]
    optimizer: str = ""
    lr: float | None = None
    scalars: dict[int, dict[str, float]] = field(default_factory=dict)   # seed -> scalars (usable runs)
    summary: dict[str, Summary] = field(default_factory=dict)

    @property
    def used(self) -> list[Run]:
        return [r for r in self.runs if r.usable]

    def values(self, key: str, seeds: Sequence[int] | None = None) -> np.ndarray:
        seeds = sorted(self.scalars) if seeds is None else seeds
        return np.asarray([self.scalars.get(s, {}).get(key, math.nan) for s in seeds], dtype=float)

    @property
    def epochs(self) -> int:
        return max((r.epochs for r in self.used), default=0)


def _opt_rank(optimizer: str) -> int:
    order = _blog.OPTIMIZER_ORDER
    return order.index(optimizer) if optimizer in order else len(order)


def build_labels(runs: list[Run]) -> dict[str, Label]:
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    labels: dict[str, Label] = {}
    for name, rs in groups.items():
        lab = Label(name, sorted(rs, key=lambda r: r.seed))
        opts = [r.optimizer for r in lab.runs if r.info]
        lab.optimizer = max(set(opts), key=opts.count) if opts else base_label(name)
        lrs = [r.lr for r in lab.runs if r.lr is not None]
        lab.lr = max(set(lrs), key=lrs.count) if lrs else None
        for r in lab.used:
            lab.scalars[r.seed] = run_scalars(r)
        lab.summary = {m.key: describe(lab.values(m.key)) for m in METRICS}
        labels[name] = lab
    order = sorted(labels.values(), key=lambda l: (_opt_rank(l.optimizer), l.optimizer,
                                                   l.name != l.optimizer, base_label(l.name), l.lr or 0.0, l.name))
    return {l.name: l for l in order}


def tuned_groups(labels: dict[str, Label]) -> dict[str, list[Label]]:
    """Bases whose labels ran at two or more different lrs (an lr grid): base -> labels by lr."""
    by_base: dict[str, list[Label]] = {}
    for lab in labels.values():
        by_base.setdefault(base_label(lab.name), []).append(lab)
    out = {}
    for base, labs in by_base.items():
        lrs = {lab.lr for lab in labs if lab.lr is not None}
        if len(lrs) >= 2:
            out[base] = sorted(labs, key=lambda l: l.lr or 0.0)
    return out


def _same_lr(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def fixed_labels(labels: dict[str, Label], grids: dict[str, list[Label]]) -> list[Label]:
    """The fixed-lr regime: labels without an lr suffix, plus a grid's member at the blog lr
    when its optimizer has no plain label."""
    plain = [l for l in labels.values() if not _LR_SUFFIX.match(l.name)]
    have = {l.name for l in plain}
    extra = []
    for base, labs in grids.items():
        if base in have:
            continue
        at_blog = [l for l in labs if _same_lr(l.lr, _blog.BLOG_LR)]
        if at_blog:
            extra.append(at_blog[0])
    keep = {l.name for l in plain + extra}
    return [l for l in labels.values() if l.name in keep]


def claim_label_map(regime_labels: Iterable[Label]) -> dict[str, Label]:
    """Registry name -> the label that stands for it in the claims (the plain one first)."""
    out: dict[str, Label] = {}
    for lab in regime_labels:
        if lab.name == lab.optimizer or base_label(lab.name) == lab.optimizer:
            if lab.optimizer not in out or lab.name == lab.optimizer:
                out[lab.optimizer] = lab
    return out


# ----------------------------------------------------------------------------------------------
# Claims
# ----------------------------------------------------------------------------------------------

@dataclass
class ClaimTest:
    claim: int
    test_id: str
    metric: str
    a: str
    b: str
    expected: int              # +1: the claim predicts a - b > 0; -1: a - b < 0
    role: str                  # "test" (in the Holm family) or "component" (of claim 5)
    result: PairedResult | None
    wins: int = 0              # seeds where a - b has the claimed sign
    p_family: float = math.nan  # the p-value that enters Holm
    p_holm: float = math.nan
    verdict: str = ""
    note: str = ""
    seen_sign: int = 0         # claim 5's aggregate: +1 all components point the claimed way, -1 not


@dataclass
class Claim:
    number: int
    text: str
    definition: str
    tests: list[ClaimTest]
    verdict: str = ""
    reason: str = ""


def _pair(la: Label, lb: Label, key: str) -> tuple[PairedResult, list[int]]:
    seeds = sorted(set(la.scalars) & set(lb.scalars))
    a, b = la.values(key, seeds), lb.values(key, seeds)
    res = paired_test(a, b, seeds=seeds)
    return res, seeds


def _make_test(claim: int, test_id: str, key: str, la: Label | None, lb: Label | None, expected: int,
               role: str = "test", a_name: str = "", b_name: str = "") -> ClaimTest:
    a_name = la.name if la else a_name
    b_name = lb.name if lb else b_name
    if la is None or lb is None:
        missing = a_name if la is None else b_name
        return ClaimTest(claim, test_id, key, a_name, b_name, expected, role, None,
                         verdict="not tested", note=f"no finished runs of {missing!r}")
    res, seeds = _pair(la, lb, key)
    a, b = la.values(key, seeds), lb.values(key, seeds)
    d = a - b
    wins = int(np.sum(np.sign(d[np.isfinite(d)]) == expected))
    t = ClaimTest(claim, test_id, key, a_name, b_name, expected, role, res, wins=wins)
    if res.n < 2:
        t.verdict, t.note = "not resolved (n<2)", f"{res.n} paired seed(s)"
    return t


def _direction_verdict(t: ClaimTest, p: float) -> str:
    if t.result is None:
        return "not tested"
    if t.result.n < 2:
        return "not resolved (n<2)"
    if not math.isfinite(p) or p >= ALPHA or t.result.mean_diff == 0:
        return "not resolved"
    return "supported" if np.sign(t.result.mean_diff) == t.expected else "contradicted"


def judge_claims(by_opt: dict[str, Label], acc_key: str) -> list[Claim]:
    """The blog's six claims on one regime's labels; ``acc_key`` is the accuracy compared."""
    acc_title = METRIC_BY_KEY[acc_key].title
    L = by_opt.get
    claims: list[Claim] = []

    claims.append(Claim(1, _blog.CLAIMS[1], f"{acc_title}, momentum - sgd, paired by seed; the claim predicts > 0.",
                        [_make_test(1, "1", acc_key, L("momentum"), L("sgd"), +1, a_name="momentum", b_name="sgd")]))
    claims.append(Claim(2, _blog.CLAIMS[2],
                        f"{acc_title}, nesterov - momentum, paired by seed; 'better' = the difference is > 0, "
                        f"'only slightly' = its 95 % CI stays below {SLIGHT_MARGIN * 100:.0f} pp. "
                        f"A CI wholly above {SLIGHT_MARGIN * 100:.0f} pp contradicts 'slightly'.",
                        [_make_test(2, "2", acc_key, L("nesterov"), L("momentum"), +1, a_name="nesterov", b_name="momentum")]))
    t3 = [_make_test(3, "3a", "eff_lr_log_ratio", L("adagrad"), L("rmsprop"), -1, a_name="adagrad", b_name="rmsprop"),
          _make_test(3, "3b", "late_progress", L("adagrad"), L("rmsprop"), -1, a_name="adagrad", b_name="rmsprop")]
    have_diag = t3[0].result is not None and t3[0].result.n > 0
    if not have_diag:
        t3[0].verdict, t3[0].result = "not tested", None
        t3[0].note = "no diagnostics.csv for both adagrad and rmsprop"
    claims.append(Claim(3, _blog.CLAIMS[3],
                        "(3a, the mechanism) log of the median coordinate's effective step size at the last logged "
                        "step over its value at the end of the first epoch (after the moving averages' warm-up), "
                        "from diagnostics.csv, adagrad - rmsprop: the claim predicts < 0 "
                        "(AdaGrad's step shrinks more than RMSprop's, which forgets old gradients). "
                        f"(3b, the stall) relative train-loss decrease over the last {LATE_WINDOW} epochs, "
                        "1 - L(E)/L(E-5), adagrad - rmsprop: the claim predicts < 0 (AdaGrad makes less late "
                        "progress). Supported only if every sub-test that ran is supported.", t3))
    claims.append(Claim(4, _blog.CLAIMS[4], f"{acc_title}, rmsprop - adagrad, paired by seed; the claim predicts > 0.",
                        [_make_test(4, "4", acc_key, L("rmsprop"), L("adagrad"), +1, a_name="rmsprop", b_name="adagrad")]))
    others = [o for o in by_opt if o not in ("adam", "nadam")]
    comps = [_make_test(5, f"5:{x}>{y}", acc_key, L(x), L(y), +1, role="component", a_name=x, b_name=y)
             for x in ("adam", "nadam") for y in others]
    agg = ClaimTest(5, "5", acc_key, "adam, nadam", "each other optimizer", +1, "test", None)
    claims.append(Claim(5, _blog.CLAIMS[5],
                        f"{acc_title}: adam - X and nadam - X for every other optimizer X in this regime "
                        f"({', '.join(others) or 'none'}), paired by seed. Intersection-union test: supported only "
                        "if every difference is > 0 and significant, so the claim's p-value is the largest "
                        "component p; contradicted if some X beats Adam or Nadam significantly "
                        "(Bonferroni over the components, then Holm with the other claims).",
                        [agg] + comps))
    claims.append(Claim(6, _blog.CLAIMS[6], f"{acc_title}, nadam - adam, paired by seed; the claim predicts > 0. "
                        "'Usually' is also shown as the number of seeds on which Nadam wins.",
                        [_make_test(6, "6", acc_key, L("nadam"), L("adam"), +1, a_name="nadam", b_name="adam")]))

    # Claim 5's aggregate p-value (intersection-union / Bonferroni, see the definition).
    ran = [c for c in comps if c.result is not None and c.result.n >= 2 and math.isfinite(c.result.p_t)]
    if not L("adam") or not L("nadam") or not others:
        agg.verdict, agg.note = "not tested", "needs adam, nadam and at least one other optimizer"
    elif len(ran) < len(comps):
        agg.verdict, agg.note = "not resolved (n<2)", "some pairwise comparisons have fewer than 2 paired seeds"
        agg.result = None
    else:
        wrong = [c for c in ran if np.sign(c.result.mean_diff) != +1]
        if not wrong:
            agg.p_family, agg.seen_sign = max(c.result.p_t for c in ran), +1
            agg.note = f"intersection-union: largest p of {len(ran)} pairwise tests"
        else:
            agg.p_family, agg.seen_sign = min(1.0, len(ran) * min(c.result.p_t for c in wrong)), -1
            agg.note = (f"{len(wrong)} of {len(ran)} pairwise differences are not > 0; p = {len(ran)} x the "
                        "smallest of their p-values (Bonferroni)")
    for c in comps:
        if c.result is not None and c.result.n >= 2:
            c.verdict = _direction_verdict(c, c.result.p_t) + " (raw p, component)"

    # Holm over the family: every role == "test" row with a p-value.
    family = [t for cl in claims for t in cl.tests if t.role == "test"]
    for t in family:
        if t is not agg and t.result is not None and t.result.n >= 2:
            t.p_family = t.result.p_t
    adj = holm([t.p_family for t in family])
    for t, p in zip(family, adj):
        t.p_holm = p
        if t.verdict:
            continue
        if t is agg:
            if not math.isfinite(p) or p >= ALPHA:
                t.verdict = "not resolved"
            else:
                t.verdict = "supported" if agg.seen_sign == +1 else "contradicted"
        else:
            t.verdict = _direction_verdict(t, p)

    for cl in claims:
        _claim_verdict(cl)
    return claims


def _claim_verdict(cl: Claim) -> None:
    main = [t for t in cl.tests if t.role == "test"]
    ran = [t for t in main if t.verdict != "not tested"]
    if not ran:
        cl.verdict, cl.reason = "not tested", "; ".join(t.note for t in main if t.note) or "no runs"
        return
    verdicts = [t.verdict for t in ran]
    if any(v.startswith("not resolved (n<2)") for v in verdicts):
        cl.verdict = "not resolved (n<2)"
        cl.reason = "fewer than 2 seeds paired; numbers are shown but cannot be tested"
    elif "contradicted" in verdicts:
        cl.verdict = "contradicted"
    elif all(v == "supported" for v in verdicts):
        cl.verdict = "supported"
    else:
        cl.verdict = "not resolved"

    t = ran[0]
    r = t.result
    if cl.number == 2 and r is not None and r.n >= 2 and math.isfinite(r.ci_low):
        if r.ci_low > SLIGHT_MARGIN:
            cl.verdict = "contradicted"
            cl.reason = (f"Nesterov is better by more than {SLIGHT_MARGIN * 100:.0f} pp "
                         f"(95 % CI [{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}] pp): not 'slightly'")
        elif cl.verdict == "supported" and r.ci_high > SLIGHT_MARGIN:
            cl.verdict = "not resolved"
            cl.reason = (f"Nesterov is better, but the CI reaches {r.ci_high * 100:.2f} pp, "
                         f"so 'only slightly' (< {SLIGHT_MARGIN * 100:.0f} pp) is not shown")
        elif cl.verdict == "not resolved" and -SLIGHT_MARGIN < r.ci_low and r.ci_high < SLIGHT_MARGIN:
            cl.reason = (f"no detectable difference; the 95 % CI [{r.ci_low * 100:.2f}, {r.ci_high * 100:.2f}] pp "
                         f"lies within +-{SLIGHT_MARGIN * 100:.0f} pp, so the two are equivalent to within "
                         f"{SLIGHT_MARGIN * 100:.0f} pp -- the 'only slightly' part holds, 'better' is not shown")
    if cl.reason:
        return
    parts = []
    for t in ran:
        prefix = f"{t.test_id}: " if len(ran) > 1 else ""
        if t.result is None:
            parts.append(f"{prefix}{t.verdict}" + (f" ({t.note})" if t.note else ""))
            continue
        r = t.result
        parts.append(f"{prefix}{t.a} − {t.b} = {_fmt_diff(t.metric, r.mean_diff)} "
                     f"[{_fmt_diff(t.metric, r.ci_low)}, {_fmt_diff(t.metric, r.ci_high)}], d_z {r.d_z:.2f}, "
                     f"claimed sign on {t.wins}/{r.n} seeds, Holm p = {_fmt_p(t.p_holm)}")
    if cl.number == 5 and cl.tests[0].verdict != "not tested":
        comps = [c for c in cl.tests if c.role == "component" and c.result is not None and c.result.n >= 2]
        losers = [f"{c.a} − {c.b} = {_fmt_diff(c.metric, c.result.mean_diff)} (p = {_fmt_p(c.result.p_t)})"
                  for c in comps if c.result.mean_diff <= 0]
        if losers:
            parts = ["not ahead: " + ", ".join(losers)]
        elif comps:
            weakest = max(comps, key=lambda c: c.result.p_t)
            parts = [f"{len(comps)} pairwise differences all > 0; the weakest is {weakest.a} − {weakest.b} = "
                     f"{_fmt_diff(weakest.metric, weakest.result.mean_diff)} (raw p = {_fmt_p(weakest.result.p_t)}); "
                     f"Holm p = {_fmt_p(cl.tests[0].p_holm)}"]
    cl.reason = "; ".join(parts)


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------

def _fin(x: Any) -> bool:
    return isinstance(x, (int, float, np.floating)) and math.isfinite(float(x))


def _fmt(x: float, kind: str) -> str:
    if not _fin(x):
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


def _fmt_p(p: float) -> str:
    if not _fin(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3g}"


def _diff_scale(key: str) -> tuple[float, str]:
    kind = METRIC_BY_KEY[key].kind
    if kind in ("acc", "frac"):
        return 100.0, " pp"
    return 1.0, ""


def _fmt_diff(key: str, x: float) -> str:
    if not _fin(x):
        return "–"
    s, unit = _diff_scale(key)
    return f"{s * x:+.3g}{unit}" if s == 1.0 else f"{s * x:+.2f}{unit}"


def _mean_std(s: Summary, kind: str) -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return _fmt(s.mean, kind)
    return f"{_fmt(s.mean, kind)} ± {_fmt(s.std, kind).replace(' %', '')}{' %' if kind == 'frac' else ''}"


def _ci(s: Summary, kind: str) -> str:
    if s.n < 2:
        return "–"
    return f"[{_fmt(s.ci_low, kind)}, {_fmt(s.ci_high, kind)}]"


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out


def _fmt_lr(lr: float | None) -> str:
    return "–" if lr is None else f"{lr:g}"


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------

_PAIRINGS = (("sgd", "momentum"), ("momentum", "nesterov"), ("adagrad", "rmsprop"),
             ("adagrad", "rmsprop", "adam"), ("rmsprop", "adam", "nadam"))
_STYLES = ("-", "--", ":", "-.")


def _colour(optimizer: str) -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    order = _blog.OPTIMIZER_ORDER
    if optimizer in order:
        return cmap(order.index(optimizer))
    return cmap(8 + (sum(map(ord, optimizer)) % 2))


def _style(lab: Label, labels: Sequence[Label]) -> dict[str, Any]:
    same = [l.name for l in labels if l.optimizer == lab.optimizer]
    k = same.index(lab.name) if lab.name in same else 0
    return {"color": _colour(lab.optimizer), "linestyle": _STYLES[k % len(_STYLES)]}


def _curve(lab: Label, col: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epochs, mean, min and max over the label's usable seeds (NaN-padded to the longest run)."""
    runs = lab.used
    n_ep = max(r.epochs for r in runs)
    mat = np.full((len(runs), n_ep), np.nan)
    for i, r in enumerate(runs):
        e = r.metrics["epoch"].astype(int)
        ok = (e >= 1) & (e <= n_ep)
        mat[i, e[ok] - 1] = r.metrics[col][ok]
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.arange(1, n_ep + 1), np.nanmean(mat, 0), np.nanmin(mat, 0), np.nanmax(mat, 0)


def _draw(ax: Any, lab: Label, labels: Sequence[Label], col: str, legend: bool = True) -> None:
    x, mean, lo, hi = _curve(lab, col)
    st = _style(lab, labels)
    n = len(lab.used)
    ax.plot(x, mean, lw=1.8, label=f"{lab.name} (n={n})" if legend else None, **st)
    if n > 1:
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, lw=0)


def _acc_axis(ax: Any, labs: Sequence[Label], col: str = "val_acc") -> None:
    from matplotlib.ticker import FuncFormatter

    vals = np.concatenate([_curve(l, col)[1] for l in labs]) if labs else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo = max(0.0, float(np.percentile(vals, 5)) - 0.01)
        ax.set_ylim(lo, min(1.0, float(vals.max()) + 0.01))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))


def _make_plots(exp_dir: Path, fixed: list[Label], by_opt: dict[str, Label], grids: dict[str, list[Label]],
                tuned_pick: dict[str, Label]) -> dict[str, str]:
    """Writes the PNGs; returns {plot name: file name} for those written, plus notes under '_note:*'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "figure.dpi": 110})
    written: dict[str, str] = {}
    labs = [l for l in fixed if l.used]
    band = "band: min–max over seeds"

    def save(fig: Any, name: str) -> None:
        from matplotlib.ticker import MaxNLocator

        for ax in fig.axes:  # epochs are whole numbers
            if ax.get_xlabel() == "epoch":
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.savefig(exp_dir / name, bbox_inches="tight")
        plt.close(fig)
        written[name.removesuffix(".png")] = name

    if labs:
        # The blog's summary figure: training loss of every optimizer on one axis.
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for lab in labs:
            _draw(ax, lab, labs, "train_loss")
        ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel="train loss (running mean over the epoch, log scale)",
               title=f"Training loss, mean over seeds ({band})")
        ax.legend(loc="upper right", fontsize=9, ncol=2)
        save(fig, "train_loss.png")

        # Its validation companion.
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.2))
        for lab in labs:
            _draw(a1, lab, labs, "val_acc")
            _draw(a2, lab, labs, "val_loss", legend=False)
        _acc_axis(a1, labs)
        for t in TARGETS:
            a1.axhline(t, color="grey", lw=0.8, ls=":")
        a1.set(xlabel="epoch", ylabel="val accuracy", title=f"Validation accuracy ({band}; dotted: targets)")
        a2.set_yscale("log")
        a2.set(xlabel="epoch", ylabel="val loss (log scale)", title=f"Validation loss ({band})")
        a1.legend(loc="lower right", fontsize=9, ncol=2)
        save(fig, "validation.png")

        # The blog's pairings, small multiples: train loss on top, val acc below.
        fig, axes = plt.subplots(2, len(_PAIRINGS), figsize=(3.6 * len(_PAIRINGS), 6.6), squeeze=False)
        for j, pair in enumerate(_PAIRINGS):
            members = [by_opt[o] for o in pair if o in by_opt and by_opt[o].used]
            top, bottom = axes[0, j], axes[1, j]
            top.set_title(" vs ".join(pair), fontsize=10)
            if not members:
                top.text(0.5, 0.5, "no runs", ha="center", transform=top.transAxes)
                bottom.text(0.5, 0.5, "no runs", ha="center", transform=bottom.transAxes)
                continue
            for lab in members:
                _draw(top, lab, labs, "train_loss")
                _draw(bottom, lab, labs, "val_acc", legend=False)
            top.set_yscale("log")
            _acc_axis(bottom, members)
            top.legend(fontsize=8)
            bottom.set_xlabel("epoch")
        axes[0, 0].set_ylabel("train loss (log)")
        axes[1, 0].set_ylabel("val accuracy")
        fig.suptitle(f"The blog's pairings, mean over seeds ({band})", y=1.0)
        fig.tight_layout()
        save(fig, "pairings.png")

    # Why: effective step size over training, from diagnostics.csv.
    diag_labs = [l for l in labs if any(r.diagnostics is not None for r in l.used)]
    if diag_labs:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.2))
        for lab in diag_labs:
            series = [_diag_series(r.diagnostics) for r in lab.used if r.diagnostics is not None]
            steps = np.unique(np.concatenate([s["step"] for s in series]))
            st = _style(lab, labs)

            def geo(col: str) -> np.ndarray:
                # geometric mean over seeds at each logged step (step sizes live on a log scale)
                out = np.full(steps.shape, np.nan)
                for i, stp in enumerate(steps):
                    v = np.asarray([s[col][s["step"] == stp][0] for s in series if np.any(s["step"] == stp)])
                    v = v[np.isfinite(v) & (v > 0)]
                    if v.size:
                        out[i] = float(np.exp(np.mean(np.log(v))))
                return out

            a1.plot(steps, geo("eff_lr_p50"), lw=1.8, label=f"{lab.name} (n={len(series)})", **st)
            a1.fill_between(steps, geo("eff_lr_p10"), geo("eff_lr_p90"), color=st["color"], alpha=0.07, lw=0)
            a2.plot(steps, geo("update_ratio"), lw=1.5, label=lab.name, **st)
        a1.set_yscale("log")
        a2.set_yscale("log")
        a1.set(xlabel="optimizer step", ylabel="effective step size per coordinate",
               title="Effective step size (median coordinate; band p10–p90)\nmedian over parameter tensors, geometric mean over seeds")
        a2.set(xlabel="optimizer step", ylabel="‖Δw‖ / ‖w‖", title="Relative update size\nmedian over parameter tensors")
        fig.legend(*a1.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9)
        fig.tight_layout()
        save(fig, "effective_lr.png")

    # Final test accuracy per label: seed dots, mean and 95 % CI.
    panels = [("fixed lr", labs)]
    if tuned_pick:
        panels.append(("tuned lr (chosen on val)", list(tuned_pick.values())))
    key = "test_acc" if any(l.summary["test_acc"].n for _, ls in panels for l in ls) else "final_val_acc"
    panels = [(t, [l for l in ls if l.summary[key].n]) for t, ls in panels]
    panels = [(t, ls) for t, ls in panels if ls]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.5 * max(len(ls) for _, ls in panels) + 1.8),
                                 squeeze=False)
        rng = np.random.default_rng(0)  # jitter only, for visibility
        for ax, (title, ls) in zip(axes[0], panels):
            for i, lab in enumerate(ls):
                v = lab.values(key)
                v = v[np.isfinite(v)]
                s = lab.summary[key]
                c = _colour(lab.optimizer)
                ax.scatter(100 * v, i + rng.uniform(-0.15, 0.15, v.size), s=18, color=c, alpha=0.6, zorder=3)
                if s.n >= 2:
                    ax.errorbar(100 * s.mean, i, xerr=[[100 * (s.mean - s.ci_low)], [100 * (s.ci_high - s.mean)]],
                                fmt="D", color="black", ms=5, capsize=4, zorder=4)
                else:
                    ax.plot(100 * s.mean, i, "D", color="black", ms=5, zorder=4)
            ax.set_yticks(range(len(ls)), [f"{l.name} (lr {_fmt_lr(l.lr)})" if title.startswith("tuned") else l.name
                                            for l in ls])
            ax.invert_yaxis()
            ax.set(xlabel=("test" if key == "test_acc" else "final val") + " accuracy (%)",
                   title=f"{title}: seeds (dots), mean and 95 % t-interval")
        fig.tight_layout()
        save(fig, "test_acc.png")
        written["_test_acc_key"] = key

    # Tuned regime: final val acc against lr.
    if grids:
        fig, ax = plt.subplots(figsize=(8, 5))
        for base, ls in grids.items():
            ls = [l for l in ls if l.summary["final_val_acc"].n and l.lr]
            if not ls:
                continue
            x = np.asarray([l.lr for l in ls])
            m = np.asarray([l.summary["final_val_acc"].mean for l in ls])
            lo = np.asarray([l.summary["final_val_acc"].ci_low for l in ls])
            hi = np.asarray([l.summary["final_val_acc"].ci_high for l in ls])
            c = _colour(ls[0].optimizer)
            ax.plot(x, 100 * m, "o-", color=c, label=base)
            ok = np.isfinite(lo)
            ax.fill_between(x[ok], 100 * lo[ok], 100 * hi[ok], color=c, alpha=0.12, lw=0)
        ax.set_xscale("log")
        ax.set(xlabel="learning rate", ylabel="final val accuracy (%)", title="lr grid: mean final val acc (band: 95 % CI)")
        ax.legend(fontsize=9)
        save(fig, "lr_sweep.png")
    return written


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------

def _distinct(runs: Iterable[Run], getter: Callable[[Run], Any]) -> list[Any]:
    seen: list[Any] = []
    for r in runs:
        v = getter(r)
        if v not in (None, "", {}) and v not in seen:
            seen.append(v)
    return seen


def _setup_section(exp_dir: Path, runs: list[Run], labels: dict[str, Label], config: dict | None) -> list[str]:
    done = [r for r in runs if r.info]
    out = ["## Setup", ""]
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    seeds = sorted({r.seed for r in runs})
    out.append(f"- Experiment folder: `{exp_dir.name}`; {len(runs)} runs in {len(labels)} labels "
               f"({', '.join(f'{v} {k}' for k, v in sorted(statuses.items()))}).")
    out.append(f"- Seeds: {', '.join(map(str, seeds))} (the seed fixes init, data order and split; runs are "
               "paired by seed).")
    vers = _distinct(done, lambda r: json.dumps(r.info.get("versions"), sort_keys=True) if r.info.get("versions") else None)
    if vers:
        merged: dict[str, list[str]] = {}
        for v in vers:
            for k, val in json.loads(v).items():
                merged.setdefault(k, [])
                if str(val) not in merged[k]:
                    merged[k].append(str(val))
        out.append("- Versions: " + ", ".join(f"{k} {' / '.join(v)}" for k, v in merged.items()) + ".")
    for key, title in (("hardware", "Hardware"), ("device", "Device")):
        vals = _distinct(done, lambda r, k=key: r.info.get(k))
        if vals:
            out.append(f"- {title}: " + "; ".join(map(str, vals)) + ".")
    epochs = _distinct(runs, lambda r: r.epochs if r.usable else None)
    if epochs:
        out.append(f"- Epochs completed by finished runs: {', '.join(map(str, sorted(epochs)))}.")
    out.append("- Train loss/accuracy are what the log calls `train_loss`/`train_acc`: the running mean over each "
               "epoch's batches (as Keras reports them), not a re-evaluation at the end of the epoch. Val and test "
               "numbers are evaluations of the weights at the end of the epoch.")
    out.append("- Wall-clock seconds are `wall_s` from metrics.csv (cumulative training time); they compare "
               "optimizers only if the runs shared the same hardware and load.")
    missing = []
    all_seeds = set(seeds)
    for lab in labels.values():
        lack = sorted(all_seeds - {r.seed for r in lab.runs})
        if lack:
            missing.append(f"{lab.name}: {', '.join(map(str, lack))}")
    if missing:
        out.append("- Seeds without a run folder: " + "; ".join(missing) + ".")
    planned = (config or {}).get("seeds")
    if isinstance(planned, list) and planned:
        absent = [s for s in planned if s not in all_seeds]
        if absent:
            out.append(f"- Planned seeds (review.json) with no run at all: {', '.join(map(str, absent))}.")
    base = next((r.info.get("config") for r in done if r.usable and isinstance(r.info.get("config"), dict)), None)
    if base is None:
        base = next((r.info.get("config") for r in done if isinstance(r.info.get("config"), dict)), None)
    if base:
        shared = {k: v for k, v in base.items() if k not in ("seed", "optim")}
        out += ["", "Resolved config of the runs (from `run.json`; `seed` and `optim` vary per run, see below):", "",
                "```json", json.dumps(shared, indent=2, sort_keys=True, default=str), "```"]
    rows = []
    for lab in labels.values():
        r0 = next((r for r in lab.runs if r.info), None)
        optim = ((r0.info.get("config") or {}).get("optim") or {}) if r0 else {}
        rows.append([lab.name, lab.optimizer, optim.get("semantics", "–"), _fmt_lr(lab.lr),
                     json.dumps(optim.get("kwargs", {}), sort_keys=True, default=str),
                     f"{len(lab.used)}/{len(lab.runs)}"])
    out += ["", "Optimizer per label:", ""]
    out += _md_table(["label", "optimizer", "semantics", "lr", "kwargs", "runs used / found"], rows)
    if config:
        if config.get("description"):
            out.insert(2, f"- Description: {' '.join(str(config['description']).split())}")
        shown = {k: v for k, v in config.items() if k not in ("settings", "description")}
        out += ["", "Review plan (from the runner / `review.json`; the full per-run settings are in each `run.json`):",
                "", "```json", json.dumps(shown, indent=2, sort_keys=True, default=str), "```"]
    return out + [""]


def _label_table(lab: Label) -> list[str]:
    n_used, n_all = len(lab.used), len(lab.runs)
    blog_row, note = _blog.blog_row_for(lab.name, lab.optimizer, lab.lr)
    final_is_blog = lab.epochs == _blog.BLOG_EPOCH
    rows = []
    for m in METRICS:
        if m.key.startswith(("max_val_loss", "val_loss_spikes", "min_val_loss", "val_loss_rise", "val_acc_since",
                             "late_progress", "eff_lr")):
            continue  # these belong to the claims/observations sections
        if m.key.endswith(f"_e{_blog.BLOG_EPOCH}") and (final_is_blog or lab.epochs < _blog.BLOG_EPOCH):
            continue  # identical to "final" at 20 epochs; undefined for shorter runs
        s = lab.summary[m.key]
        if m.key.startswith(("epochs_to_", "wall_to_")):
            cell = f"not reached (0/{n_used})" if s.n == 0 else _mean_std(s, m.kind)
            ncell = f"{s.n}/{n_used} reached"
        else:
            cell, ncell = _mean_std(s, m.kind), str(s.n)
        b = "–"
        if blog_row is not None and m.blog_attr:
            at_blog_epoch = (m.key.endswith(f"_e{_blog.BLOG_EPOCH}") or m.key.startswith("val_acc_e")
                             or (m.key.startswith("final_") and final_is_blog))
            if at_blog_epoch:
                b = _fmt(getattr(blog_row, m.blog_attr), m.kind)
        rows.append([m.title + (" (%)" if m.kind == "acc" else ""), cell, _ci(s, m.kind), ncell, b])
    out = [f"### {lab.name}", "",
           f"Optimizer `{lab.optimizer}`, lr {_fmt_lr(lab.lr)}, {n_used} of {n_all} runs used "
           f"(seeds {', '.join(str(r.seed) for r in lab.used) or 'none'}), {lab.epochs} epochs."]
    if blog_row is not None:
        extra = f" Note: {note}." if note else ""
        if not final_is_blog and lab.epochs < _blog.BLOG_EPOCH:
            extra += f" The blog's epoch-{_blog.BLOG_EPOCH} numbers have no counterpart: these runs stopped at epoch {lab.epochs}."
        out.append(f"Blog column: the blog's single run ({blog_row.name}, seed {_blog.BLOG_SEED}, Keras).{extra}")
    elif note:
        out.append(f"Blog column: {note}.")
    out.append("")
    out += _md_table(["metric", "mean ± std", "95 % CI", "n", "blog (1 seed)"], rows)
    return out + [""]


def _overview(labels: Sequence[Label], test_key: str) -> list[str]:
    rows = []
    for lab in labels:
        s = lab.summary
        b, _ = _blog.blog_row_for(lab.name, lab.optimizer, lab.lr)
        t88 = s["epochs_to_88"]
        rows.append([
            lab.name, _fmt_lr(lab.lr), f"{len(lab.used)}/{len(lab.runs)}",
            f"{_mean_std(s['final_val_acc'], 'acc')} {_ci(s['final_val_acc'], 'acc')}",
            _fmt(b.val_acc, "acc") if b is not None and lab.epochs == _blog.BLOG_EPOCH else "–",
            f"{_mean_std(s['test_acc'], 'acc')} {_ci(s['test_acc'], 'acc')}" if s["test_acc"].n else "–",
            _mean_std(s["best_val_acc"], "acc"),
            f"{_mean_std(t88, 'epoch')} ({t88.n}/{len(lab.used)})" if t88.n else f"not reached (0/{len(lab.used)})",
            _mean_std(s["time_per_epoch"], "seconds"),
        ])
    return _md_table(["label", "lr", "runs used", "final val acc % (mean ± std [95 % CI])", "blog val acc %",
                      "test acc %", "best val acc %", "epochs to 88 % (reached)", "s / epoch"], rows)


def _claims_section(claims: list[Claim], title: str, acc_key: str) -> list[str]:
    out = [title, ""]
    n_family = sum(1 for c in claims for t in c.tests if t.role == "test" and _fin(t.p_family))
    out.append(f"Two-sided paired t-tests across seeds; Holm correction over the {n_family} claim tests of this "
               f"section (α = {ALPHA}). Wilcoxon signed-rank p-values are shown as a check that does not assume "
               "normal differences (with 5 pairs its exact two-sided p cannot go below 0.0625, so it can "
               "corroborate but not decide). Differences are a − b; accuracies in percentage points (pp). "
               "d_z = mean difference / sd of the differences. 'wins' = seeds on which the difference has the "
               "claimed sign.")
    out += ["", *_md_table(["claim", "verdict", "metric", "why"],
                           [[f"{c.number}. {c.text}", f"**{c.verdict}**", METRIC_BY_KEY[c.tests[0].metric].title
                             if c.number != 3 else "effective step size; late train-loss progress", c.reason]
                            for c in claims]), ""]
    for c in claims:
        out += [f"#### Claim {c.number}: {c.text}", "", f"Metric: {c.definition}", ""]
        rows = []
        for t in c.tests:
            r = t.result
            if r is None or r.n == 0:
                rows.append([t.test_id, f"{t.a} − {t.b}", "–", "–", "–", "–", "–", "–",
                             _fmt_p(t.p_family) if t is c.tests[0] and c.number == 5 else "–",
                             _fmt_p(t.p_holm), t.verdict + (f" ({t.note})" if t.note else "")])
                continue
            ci = f"[{_fmt_diff(t.metric, r.ci_low)}, {_fmt_diff(t.metric, r.ci_high)}]" if r.n >= 2 else ""
            dz = "–" if not (_fin(r.d_z) or (isinstance(r.d_z, float) and math.isinf(r.d_z))) else f"{r.d_z:.2f}"
            rows.append([t.test_id, f"{t.a} − {t.b}", str(r.n), f"{_fmt_diff(t.metric, r.mean_diff)} {ci}", dz,
                         f"{t.wins}/{r.n}", _fmt_p(r.p_t), _fmt_p(r.p_wilcoxon),
                         _fmt_p(t.p_family) if t.role == "test" else "(component)",
                         _fmt_p(t.p_holm), t.verdict + (f" ({t.note})" if t.note else "")])
        out += _md_table(["test", "a − b", "n", "mean diff [95 % CI]", "d_z", "wins", "t-test p", "Wilcoxon p",
                          "p in family", "Holm p", "result"], rows)
        out += ["", f"**Verdict: {c.verdict}.** {c.reason}", ""]
    return out


def _observations_section(by_opt: dict[str, Label], labs: Sequence[Label]) -> list[str]:
    out = ["## The blog's two observations, in numbers", "",
           "Descriptive, not part of the claim tests. Per label: mean ± std over seeds (worst seed in brackets).", ""]
    rows = []
    for lab in labs:
        s = lab.summary
        worst = np.nanmax(lab.values("max_val_loss_jump")) if s["max_val_loss_jump"].n else math.nan
        rows.append([lab.name, f"{_mean_std(s['max_val_loss_jump'], 'loss')} ({_fmt(worst, 'loss')})",
                     _mean_std(s["max_val_loss_jump_rel"], "frac"), _mean_std(s["val_loss_spikes"], "count"),
                     _mean_std(s["min_val_loss_epoch"], "epoch"), _mean_std(s["val_loss_rise"], "loss"),
                     _mean_std(s["val_acc_since_min_loss"], "acc")])
    out += _md_table(["label", "largest val-loss increase, epoch over epoch (worst seed)", "largest relative increase",
                      f"epochs with val loss up > {SPIKE_REL:.0%}", "epoch of min val loss",
                      "val loss: final − min", "val acc: final − at min-loss epoch (pp)"], rows)
    out.append("")
    others = [l for l in labs if l.optimizer != "rmsprop" and l.summary["max_val_loss_jump"].n]
    rms = by_opt.get("rmsprop")
    if rms is not None and rms.summary["max_val_loss_jump"].n:
        med = float(np.median([l.summary["max_val_loss_jump"].mean for l in others])) if others else math.nan
        s = rms.summary["max_val_loss_jump"]
        out.append(f"- *{_blog.OBSERVATIONS['rmsprop_unstable']}* RMSprop's largest epoch-over-epoch val-loss "
                   f"increase is {_mean_std(s, 'loss')} (mean ± std over {s.n} seeds) against a median of "
                   f"{_fmt(med, 'loss')} for the other labels; it has {_fmt(rms.summary['val_loss_spikes'].mean, 'count')} "
                   f"epochs per run on average whose val loss rose by more than {SPIKE_REL:.0%}.")
    else:
        out.append(f"- *{_blog.OBSERVATIONS['rmsprop_unstable']}* No finished RMSprop runs.")
    for name in ("adam", "nadam"):
        lab = by_opt.get(name)
        if lab is None or not lab.summary["min_val_loss_epoch"].n:
            out.append(f"- *{_blog.OBSERVATIONS['adam_overfit']}* No finished {name} runs.")
            continue
        s = lab.summary
        ep = lab.values("min_val_loss_epoch")
        ep = ep[np.isfinite(ep)]
        out.append(f"- *{_blog.OBSERVATIONS['adam_overfit']}* {name}: val loss is lowest at epoch "
                   f"{_mean_std(s['min_val_loss_epoch'], 'epoch')} (range {int(ep.min())}–{int(ep.max())}, "
                   f"{int(np.sum(ep <= OVERFIT_EPOCH + 2))}/{ep.size} seeds by epoch {OVERFIT_EPOCH + 2}), then rises by "
                   f"{_mean_std(s['val_loss_rise'], 'loss')} to epoch {lab.epochs}, while val accuracy moves by "
                   f"{_mean_std(s['val_acc_since_min_loss'], 'acc')} pp.")
    return out + [""]


def _problems_section(runs: list[Run]) -> list[str]:
    bad = [r for r in runs if not r.usable]
    out = ["## Runs that diverged, failed or are incomplete", ""]
    if not bad:
        return out + ["None: every run finished (`status: done`) and enters the statistics.", ""]
    out.append("These runs are excluded from every mean, interval and test above; a label's n says how many "
               "runs it kept. Excluding diverged runs flatters the optimizer that diverged -- read its row "
               "together with this list.")
    out.append("")
    rows = []
    for r in bad:
        div = r.info.get("diverged") or {}
        where = f"epoch {div.get('epoch')}, step {div.get('step')}" if isinstance(div, dict) and div else "–"
        err = str(r.info.get("error") or r.problem or "").strip().splitlines()
        err_s = (err[-1] if err else "")[:160]
        rows.append([r.label, r.seed, r.status, where, r.info.get("epochs_completed", r.epochs), err_s or "–"])
    out += _md_table(["label", "seed", "status", "diverged at", "epochs completed", "error / problem"], rows)
    return out + [""]


def _tuned_section(grids: dict[str, list[Label]], pick: dict[str, Label], claims: list[Claim] | None,
                   acc_key: str) -> list[str]:
    out = ["## Tuned-lr regime (kept apart from the fixed-lr comparison)", ""]
    all_labs = [l for ls in grids.values() for l in ls]
    n_runs = sum(len(l.runs) for l in all_labs)
    wall = float(np.nansum([r.metrics["wall_s"][-1] for l in all_labs for r in l.runs if r.epochs]))
    seeds = sorted({r.seed for l in all_labs for r in l.runs})
    epochs = sorted({l.epochs for l in all_labs if l.epochs})
    out.append(f"Tuning budget: {len(grids)} optimizers; per optimizer a grid of "
               + "; ".join(f"{b}: {len(ls)} lrs ({', '.join(_fmt_lr(l.lr) for l in ls)})" for b, ls in grids.items())
               + f"; seeds {', '.join(map(str, seeds))}; {', '.join(map(str, epochs))} epochs; "
               f"{n_runs} runs, {wall / 3600:.2f} h of training wall time in all. "
               "The lr is chosen per optimizer by the best **mean final validation accuracy** across seeds; the "
               f"test set is only read at the chosen lr (metric compared: {METRIC_BY_KEY[acc_key].title}).")
    out.append("")
    for base, ls in grids.items():
        rows = []
        for l in ls:
            s = l.summary
            rows.append([("**" + _fmt_lr(l.lr) + "** (chosen)") if pick.get(base) is l else _fmt_lr(l.lr),
                         f"{len(l.used)}/{len(l.runs)}", f"{_mean_std(s['final_val_acc'], 'acc')} {_ci(s['final_val_acc'], 'acc')}",
                         f"{_mean_std(s['test_acc'], 'acc')}" if pick.get(base) is l else "(not looked at)"])
        out += [f"**{base}**", "", *_md_table(["lr", "runs used", "final val acc %", "test acc %"], rows), ""]
    rows = []
    for base, l in sorted(pick.items(), key=lambda kv: -(kv[1].summary[acc_key].mean if kv[1].summary[acc_key].n else -1)):
        s = l.summary[acc_key]
        rows.append([base, _fmt_lr(l.lr), str(s.n), _mean_std(s, "acc"), _ci(s, "acc")])
    out += ["Ranking at the chosen lrs:", "",
            *_md_table(["optimizer", "chosen lr", "n", f"{METRIC_BY_KEY[acc_key].title} (%)", "95 % CI"], rows), ""]
    if claims:
        out += _claims_section(claims, "### The blog's claims at tuned learning rates", acc_key)
    return out


def _tuned_pick(grids: dict[str, list[Label]]) -> dict[str, Label]:
    pick = {}
    for base, ls in grids.items():
        cands = [l for l in ls if l.summary["final_val_acc"].n]
        if cands:
            pick[base] = max(cands, key=lambda l: l.summary["final_val_acc"].mean)
    return pick


def _write_summary_csv(path: Path, labels: dict[str, Label], fixed: Sequence[Label], grids: dict[str, list[Label]]) -> None:
    fixed_names = {l.name for l in fixed}
    grid_names = {l.name for ls in grids.values() for l in ls}
    blog_cols = ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_e1", "val_acc_e5", "val_acc_e10")
    header = ["label", "optimizer", "lr", "regime", "epochs", "n_runs", "n_used", "n_done", "n_diverged", "n_failed",
              "n_other"]
    for m in METRICS:
        header += [f"{m.key}_{s}" for s in ("mean", "std", "ci_low", "ci_high", "n")]
    header += [f"blog_{c}" for c in blog_cols] + ["blog_note"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for lab in labels.values():
            st = [r.status for r in lab.runs]
            regime = "+".join(x for x, on in (("fixed", lab.name in fixed_names), ("lr-grid", lab.name in grid_names)) if on)
            row: list[Any] = [lab.name, lab.optimizer, "" if lab.lr is None else repr(lab.lr), regime or "other",
                              lab.epochs, len(lab.runs), len(lab.used), st.count("done"), st.count("diverged"),
                              st.count("failed"), len(st) - st.count("done") - st.count("diverged") - st.count("failed")]
            for m in METRICS:
                s = lab.summary[m.key]
                row += ["" if not _fin(v) else repr(float(v)) for v in (s.mean, s.std, s.ci_low, s.ci_high)] + [s.n]
            b, note = _blog.blog_row_for(lab.name, lab.optimizer, lab.lr)
            row += [repr(getattr(b, c)) if b is not None else "" for c in blog_cols] + [note]
            w.writerow(row)


def _write_claims_csv(path: Path, sections: Sequence[tuple[str, list[Claim]]]) -> None:
    header = ["regime", "claim", "claim_text", "claim_verdict", "test", "role", "metric", "a", "b", "expected_sign",
              "n", "mean_diff", "ci_low", "ci_high", "sd_diff", "d_z", "wins", "t_stat", "p_t", "w_stat",
              "p_wilcoxon", "p_family", "p_holm", "test_verdict", "note", "seeds"]

    def num(x: Any) -> str:
        return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))

    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for regime, claims in sections:
            for c in claims:
                for t in c.tests:
                    r = t.result
                    vals = ([r.n, num(r.mean_diff), num(r.ci_low), num(r.ci_high), num(r.sd_diff), num(r.d_z), t.wins,
                             num(r.t_stat), num(r.p_t), num(r.w_stat), num(r.p_wilcoxon)] if r is not None
                            else [0] + [""] * 10)
                    w.writerow([regime, c.number, c.text, c.verdict, t.test_id, t.role, t.metric, t.a, t.b,
                                t.expected, *vals, num(t.p_family), num(t.p_holm), t.verdict, t.note,
                                " ".join(map(str, r.seeds)) if r is not None else ""])


def write_report(exp_dir: Path, *, config: dict | None = None, plots: bool = True) -> Path:
    """Read every run under ``exp_dir`` and write report.md, summary.csv, claims.csv and the PNGs.

    ``config`` is the review runner's plan (``review.json``; read from disk when not given). With
    ``plots=False`` no PNG is drawn (the tables and verdicts are the same).

    Returns the path of report.md. Raises :class:`ReportError` when ``exp_dir`` is missing or holds
    no ``<label>/seed<k>`` run folders.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise ReportError(f"no experiment directory {str(exp_dir)!r}; pass runs/<experiment> "
                          "(the folder holding <label>/seed<k>/run.json)")
    if config is None:  # the review runner's record of the plan, when run from the command line
        try:
            loaded = json.loads((exp_dir / "review.json").read_text())
            config = loaded if isinstance(loaded, dict) else None
        except (OSError, ValueError):
            config = None
    runs = load_runs(exp_dir)
    if not runs:
        subs = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and any(p.glob("*/seed*/run.json")))
        hint = f"; did you mean one of {', '.join(str(exp_dir / s) for s in subs[:5])}?" if subs else ""
        raise ReportError(f"no runs in {str(exp_dir)!r} (expected <label>/seed<k>/ folders with run.json){hint}")

    labels = build_labels(runs)
    grids = tuned_groups(labels)
    fixed = fixed_labels(labels, grids)
    by_opt = claim_label_map(fixed)
    pick = _tuned_pick(grids)

    claims = judge_claims(by_opt, "final_val_acc")
    tuned_claims: list[Claim] | None = None
    tuned_key = "final_val_acc"
    if pick:
        picked = {base: l for base, l in pick.items() if base in _blog.OPTIMIZER_ORDER}
        tuned_key = "test_acc" if all(l.summary["test_acc"].n for l in picked.values()) and picked else "final_val_acc"
        tuned_claims = judge_claims(picked, tuned_key) if picked else None

    for name in PLOT_FILES:  # never leave a stale figure from an earlier report
        (exp_dir / name).unlink(missing_ok=True)
    drawn = _make_plots(exp_dir, fixed, by_opt, grids, pick) if plots else {}
    test_key = drawn.pop("_test_acc_key", "test_acc")

    exp_name = next(((r.info.get("config") or {}).get("experiment") for r in runs
                     if isinstance(r.info.get("config"), dict)), None) or exp_dir.name
    md: list[str] = [f"# Optimizer review: `{exp_name}`", "",
                     "Generated by `python -m torchopt_review.report` from the run folders' `metrics.csv`, "
                     "`run.json` and `diagnostics.csv`; do not edit by hand -- rerun it. Machine-readable numbers: "
                     "[summary.csv](summary.csv) (one row per label; accuracies as fractions) and "
                     "[claims.csv](claims.csv) (one row per test).", "",
                     f"Reviewed post: {_blog.SOURCE}. The blog ran one seed per optimizer; its numbers are shown "
                     "beside ours, never used in any test.", ""]
    if not plots:
        md += ["Plots were not drawn for this report (`--no-plots`).", ""]
    md += _setup_section(exp_dir, runs, labels, config)

    md += ["## Fixed-lr regime: overview", ""]
    if fixed:
        md += _overview(fixed, test_key) + [""]
    else:
        md += ["No labels in the fixed-lr regime.", ""]
    if "train_loss" in drawn:
        md += ["![Training loss of every optimizer](train_loss.png)", "",
               "![Validation accuracy and loss](validation.png)", "",
               "![The blog's pairings](pairings.png)", ""]
    if "test_acc" in drawn:
        what = "test accuracy" if test_key == "test_acc" else "final validation accuracy (no test metrics were logged)"
        md += [f"Final {what} per label:", "", "![Final accuracy per label](test_acc.png)", ""]

    md += _claims_section(claims, "## The blog's claims (fixed lr, as the blog ran them)", "final_val_acc")
    md += ["### Why: effective step size", ""]
    if "effective_lr" in drawn:
        md += ["From diagnostics.csv: per logged step, the per-coordinate effective step size (e.g. AdaGrad's "
               "lr / (sqrt(sum of squared gradients) + eps)) and the relative update ‖Δw‖/‖w‖.", "",
               "![Effective step size over training](effective_lr.png)", ""]
        rows = [[l.name, _mean_std(l.summary["eff_lr_first"], "sci"), _mean_std(l.summary["eff_lr_last"], "sci"),
                 _mean_std(l.summary["eff_lr_log_ratio"], "log")] for l in fixed if l.summary["eff_lr_log_ratio"].n]
        md += _md_table(["label", "end of first epoch", "last logged step", "log(last / end of epoch 1)"], rows) + [""]
    elif plots:
        md += ["Skipped: no run in the fixed-lr regime has a diagnostics.csv, so the effective-step plot and claim "
               "3a cannot be made.", ""]
    md += _observations_section(by_opt, fixed)
    md += _problems_section(runs)
    if grids:
        md += _tuned_section(grids, pick, tuned_claims, tuned_key)
        if "lr_sweep" in drawn:
            md += ["![Final val accuracy against lr](lr_sweep.png)", ""]

    md += ["## Per-label tables", "",
           "Mean ± sample standard deviation (ddof = 1) across seeds, the 95 % Student-t interval of the mean, and n "
           "(the seeds that enter). Accuracies in %. Time to a target: the first epoch whose val accuracy reaches "
           "it, and `wall_s` at the end of that epoch; averaged over the seeds that reached it, with the count -- "
           "'not reached' when none did. The blog column is its single Keras run (seed 50) at epoch "
           f"{_blog.BLOG_EPOCH}, shown where our row measures the same thing at the same epoch.", ""]
    for lab in labels.values():
        md += _label_table(lab)

    _write_summary_csv(exp_dir / "summary.csv", labels, fixed, grids)
    sections = [("fixed", claims)] + ([("tuned", tuned_claims)] if tuned_claims else [])
    _write_claims_csv(exp_dir / "claims.csv", sections)
    out = exp_dir / "report.md"
    out.write_text("\n".join(md).rstrip() + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torchopt_review.report",
        description="Write report.md, summary.csv, claims.csv and plots for runs/<experiment> from its logged runs.")
    parser.add_argument("exp_dir", type=Path, help="runs/<experiment>, the folder holding <label>/seed<k>/")
    parser.add_argument("--no-plots", action="store_true", help="write the tables and verdicts only")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.exp_dir, plots=not args.no_plots)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
