"""Per-run scalars: every number the report summarizes across seeds, computed from one run's logs.

Each scalar is a :class:`Metric` in :data:`METRICS` (key, title, kind for formatting, and the blog
column shown beside it); :func:`run_scalars` returns all of them for one run, NaN where a metric is
undefined for that run (a target never reached, an epoch the run did not get to).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import blog
from .load import Run, as_float

__all__ = ["Metric", "METRICS", "METRIC_BY_KEY", "TARGETS", "LATE_WINDOW", "SPIKE_REL", "run_scalars",
           "diag_series", "target_key"]

TARGETS = (0.85, 0.88)       # validation-accuracy targets for "time to target"
LATE_WINDOW = 5              # claim 3: train-loss progress over the last 5 epochs
SPIKE_REL = 0.20             # observation 1: an epoch whose val loss rises > 20 % counts as a spike


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    kind: str          # acc | loss | epoch | seconds | frac | log | count | sci
    blog_attr: str = ""  # BlogRow attribute shown beside it


def target_key(t: float) -> str:
    """0.88 -> "88" (the suffix of ``epochs_to_88``)."""
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
        Metric(f"epochs_to_{target_key(t)}", f"epochs to {t:.0%} val acc", "epoch"),
        Metric(f"wall_to_{target_key(t)}", f"seconds to {t:.0%} val acc", "seconds"),
    )],
    Metric("time_per_epoch", "seconds per epoch (training wall time / epochs)", "seconds"),
    Metric("val_acc_e1", "val acc at epoch 1", "acc", "val_acc_e1"),
    Metric("val_acc_e5", "val acc at epoch 5", "acc", "val_acc_e5"),
    Metric("val_acc_e10", "val acc at epoch 10", "acc", "val_acc_e10"),
    Metric("train_loss_e20", "train loss at epoch 20", "loss", "train_loss"),
    Metric("train_acc_e20", "train acc at epoch 20", "acc", "train_acc"),
    Metric("val_loss_e20", "val loss at epoch 20", "loss", "val_loss"),
    Metric("val_acc_e20", "val acc at epoch 20", "acc", "val_acc"),
    Metric("max_val_loss_jump", "largest epoch-over-epoch val-loss increase (0: it never rose)", "loss"),
    Metric("max_val_loss_jump_rel", "largest relative epoch-over-epoch val-loss increase (0: it never rose)", "frac"),
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


def diag_series(diag: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
    out["test_acc"] = as_float(test.get("acc")) if isinstance(test, dict) else nan
    if np.any(np.isfinite(val_acc)):
        i = int(np.nanargmax(val_acc))
        out["best_val_acc"], out["best_val_epoch"] = float(val_acc[i]), float(epochs[i])
    for t in TARGETS:
        hit = np.flatnonzero(val_acc >= t)
        if hit.size:  # unreached stays NaN: counted as "not reached", never averaged in
            out[f"epochs_to_{target_key(t)}"] = float(epochs[hit[0]])
            out[f"wall_to_{target_key(t)}"] = float(m["wall_s"][hit[0]])
    out["time_per_epoch"] = float(m["wall_s"][-1] / epochs[-1])
    for e in (1, 5, 10):
        out[f"val_acc_e{e}"] = _at_epoch(m, "val_acc", e)
    for col in ("train_loss", "train_acc", "val_loss", "val_acc"):
        out[f"{col}_e{blog.BLOG_EPOCH}"] = _at_epoch(m, col, blog.BLOG_EPOCH)
    if epochs.size >= 2:
        jumps = np.diff(val_loss)
        rel = jumps / val_loss[:-1]
        # an increase: 0 when val loss never rose (a falling curve's "largest increase" is not negative)
        if np.any(np.isfinite(jumps)):
            out["max_val_loss_jump"] = max(0.0, float(np.nanmax(jumps)))
        if np.any(np.isfinite(rel)):
            out["max_val_loss_jump_rel"] = max(0.0, float(np.nanmax(rel)))
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
        ser = diag_series(run.diagnostics)
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
