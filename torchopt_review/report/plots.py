"""The report's figures (matplotlib, imported only when drawing): curves with seed bands, the blog's
pairings, effective step sizes, final accuracy per label and the lr sweep.

Every PNG is written through :func:`torchopt_review.runs.atomic_write`, so a report killed while
drawing leaves the previous figure or the new one, never a torn file.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import blog
from .. import runs as rf
from .fmt import fmt_lr
from .labels import Label
from .scalars import TARGETS, diag_series

__all__ = ["PLOT_FILES", "make_plots"]

PLOT_FILES = ("train_loss.png", "validation.png", "pairings.png", "effective_lr.png", "test_acc.png", "lr_sweep.png")
_PAIRINGS = (("sgd", "momentum"), ("momentum", "nesterov"), ("adagrad", "rmsprop"),
             ("adagrad", "rmsprop", "adam"), ("rmsprop", "adam", "nadam"))
_STYLES = ("-", "--", ":", "-.")


def _colour(optimizer: str) -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    order = blog.OPTIMIZER_ORDER
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
    """Percent ticks with as many decimals as the range needs (no two alike), and limits that hold
    every mean curve and seed band whole."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    vals = np.concatenate([np.concatenate(_curve(l, col)[1:]) for l in labs]) if labs else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = float(vals.min()), float(vals.max())
        pad = max(0.05 * (hi - lo), 0.002)
        ax.set_ylim(max(0.0, lo - pad), min(1.0, hi + pad))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=None))


def _loss_axis(ax: Any) -> None:
    """Log scale with plain-number tick labels (0.3, not 3x10^-1); minor ticks are labelled
    only as densely as the axis's span in decades leaves room for."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")

    def minor(v: float, _pos: int) -> str:
        lo, hi = ax.get_ylim()
        span = math.log10(hi / lo) if 0 < lo < hi else 0.0
        mantissa = round(v / 10 ** math.floor(math.log10(v)), 6) if v > 0 else 0.0
        keep = range(1, 10) if span < 0.5 else (2, 3, 5) if span < 1.2 else (2, 5) if span < 2 else ()
        return f"{v:.3g}" if mantissa in keep else ""

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    ax.yaxis.grid(True, which="both")  # a short log axis may hold no major (10^k) tick at all


def _epoch_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def final_acc_key(fixed: Sequence[Label], tuned_pick: dict[str, Label]) -> str:
    """The accuracy the final-accuracy figure shows: test accuracy when any label drawn has it."""
    labs = [l for l in fixed if l.used] + list(tuned_pick.values())
    return "test_acc" if any(l.summary["test_acc"].n for l in labs) else "final_val_acc"


def make_plots(exp_dir: Path, fixed: list[Label], by_opt: dict[str, Label], grids: dict[str, list[Label]],
                tuned_pick: dict[str, Label]) -> dict[str, str]:
    """Writes the PNGs; returns {plot name: file name} for those written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
             "axes.spines.right": False, "figure.dpi": 110}
    with plt.rc_context(style):  # this report's look, without changing the caller's matplotlib
        return _make_plots(plt, exp_dir, fixed, by_opt, grids, tuned_pick)


def _make_plots(plt: Any, exp_dir: Path, fixed: list[Label], by_opt: dict[str, Label], grids: dict[str, list[Label]],
                tuned_pick: dict[str, Label]) -> dict[str, str]:
    written: dict[str, str] = {}
    labs = [l for l in fixed if l.used]
    band = "band: min–max over seeds"

    def save(fig: Any, name: str) -> None:
        for ax in fig.axes:  # epochs are whole numbers
            if ax.get_xlabel() == "epoch":
                _epoch_axis(ax)
        rf.atomic_write(exp_dir / name, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
        plt.close(fig)
        written[name.removesuffix(".png")] = name

    if labs:
        # The blog's summary figure: training loss of every optimizer on one axis.
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for lab in labs:
            _draw(ax, lab, labs, "train_loss")
        _loss_axis(ax)
        ax.set(xlabel="epoch", ylabel="train loss (running mean over the epoch, log scale)",
               title=f"Training loss, mean over seeds ({band})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9)
        save(fig, "train_loss.png")

        # Its validation companion; one legend beside both panels, clear of the bands.
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 5.2))
        for lab in labs:
            _draw(a1, lab, labs, "val_acc")
            _draw(a2, lab, labs, "val_loss", legend=False)
        _acc_axis(a1, labs)
        for t in TARGETS:
            a1.axhline(t, color="grey", lw=0.8, ls=":")
        a1.set(xlabel="epoch", ylabel="val accuracy", title=f"Validation accuracy ({band}; dotted: targets)")
        _loss_axis(a2)
        a2.set(xlabel="epoch", ylabel="val loss (log scale)", title=f"Validation loss ({band})")
        fig.tight_layout()
        fig.legend(*a1.get_legend_handles_labels(), loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=9)
        save(fig, "validation.png")

        # The blog's pairings, small multiples: train loss on top, val acc below; a pairing is
        # drawn when at least two of its optimizers have runs.
        pairings = []
        for pair in _PAIRINGS:
            members = [by_opt[o] for o in pair if o in by_opt and by_opt[o].used]
            if len(members) >= 2:
                absent = [o for o in pair if o not in {m.optimizer for m in members}]
                title = " vs ".join(m.name for m in members) + (f"\n({', '.join(absent)}: no runs)" if absent else "")
                pairings.append((title, members))
        if pairings:
            fig, axes = plt.subplots(2, len(pairings), figsize=(3.6 * len(pairings) + 0.8, 6.6), squeeze=False,
                                     sharex=True)
            for j, (title, members) in enumerate(pairings):
                top, bottom = axes[0, j], axes[1, j]
                top.set_title(title, fontsize=10)
                for lab in members:
                    _draw(top, lab, labs, "train_loss")
                    _draw(bottom, lab, labs, "val_acc", legend=False)
                _loss_axis(top)
                _acc_axis(bottom, members)
                top.legend(fontsize=8, loc="best")
                bottom.set_xlabel("epoch")
                _epoch_axis(bottom)
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
            series = [diag_series(r.diagnostics) for r in lab.used if r.diagnostics is not None]
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
    key = final_acc_key(fixed, tuned_pick)
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
            ax.set_yticks(range(len(ls)), [f"{l.name} (lr {fmt_lr(l.lr)})" if title.startswith("tuned") else l.name
                                            for l in ls])
            ax.invert_yaxis()
            ax.set(xlabel=("test" if key == "test_acc" else "final val") + " accuracy (%)",
                   title=f"{title}: seeds (dots), mean and 95 % t-interval")
        fig.tight_layout()
        save(fig, "test_acc.png")

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
