"""The report's figures (matplotlib, imported only when drawing): curves with seed bands, the blog's
pairings, effective step sizes, final accuracy per label and the lr sweep.

Every PNG is written through :func:`torchopt_review.runs.atomic_write`, so a report killed while
drawing leaves the previous figure or the new one, never a torn file.
"""

from __future__ import annotations

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
    from matplotlib.ticker import FuncFormatter

    vals = np.concatenate([_curve(l, col)[1] for l in labs]) if labs else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo = max(0.0, float(np.percentile(vals, 5)) - 0.01)
        ax.set_ylim(lo, min(1.0, float(vals.max()) + 0.01))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}%"))


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
        rf.atomic_write(exp_dir / name, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
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
