"""Runs grouped into labels (one optimizer setting, many seeds) and labels into regimes.

A label is a run folder's ``<label>`` (``adam``, ``momentum-0.99``, ``sgd-lr0.1``): its usable runs'
scalars by seed and their :class:`~torchopt_review.stats.Summary` per metric. The *fixed-lr* regime is
what the blog ran (every optimizer at lr 1e-3); labels of one optimizer at two or more lrs form an
lr grid, the *tuned* regime, which is judged apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .. import blog
from ..stats import Summary, describe
from .load import Run, base_label, is_lr_label
from .scalars import METRICS, run_scalars

__all__ = ["Label", "build_labels", "tuned_groups", "fixed_labels", "claim_label_map", "tuned_pick"]


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
    order = blog.OPTIMIZER_ORDER
    return order.index(optimizer) if optimizer in order else len(order)


def build_labels(runs: list[Run]) -> dict[str, Label]:
    """Label name -> :class:`Label`, in the blog's optimizer order, then by lr."""
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
    plain = [l for l in labels.values() if not is_lr_label(l.name)]
    have = {l.name for l in plain}
    extra = []
    for base, labs in grids.items():
        if base in have:
            continue
        at_blog = [l for l in labs if _same_lr(l.lr, blog.BLOG_LR)]
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


def tuned_pick(grids: dict[str, list[Label]]) -> dict[str, Label]:
    """Per optimizer of an lr grid, the label with the best mean final validation accuracy."""
    pick = {}
    for base, ls in grids.items():
        cands = [l for l in ls if l.summary["final_val_acc"].n]
        if cands:
            pick[base] = max(cands, key=lambda l: l.summary["final_val_acc"].mean)
    return pick
