"""From runs to everything the report says: labels, regimes and the claims judged on each regime."""

from __future__ import annotations

from dataclasses import dataclass

from .. import blog
from .claims import Claim, judge_claims
from .labels import Label, build_labels, claim_label_map, fixed_labels, tuned_groups, tuned_pick
from .load import Run

__all__ = ["Analysis", "analyse"]


@dataclass
class Analysis:
    runs: list[Run]
    labels: dict[str, Label]             # every label, in report order
    grids: dict[str, list[Label]]        # optimizer -> its lr grid (the tuned regime)
    fixed: list[Label]                   # the fixed-lr regime (the blog's)
    by_opt: dict[str, Label]             # registry name -> its label in the fixed regime
    pick: dict[str, Label]               # optimizer -> the grid label chosen on validation
    claims: list[Claim]                  # the blog's claims at the fixed lr
    tuned_claims: list[Claim] | None     # ... at the tuned lrs, when there is a grid
    tuned_key: str                       # the accuracy the tuned claims compare


def analyse(runs: list[Run]) -> Analysis:
    labels = build_labels(runs)
    grids = tuned_groups(labels)
    fixed = fixed_labels(labels, grids)
    by_opt = claim_label_map(fixed)
    pick = tuned_pick(grids)
    claims = judge_claims(by_opt, "final_val_acc")
    tuned_claims: list[Claim] | None = None
    tuned_key = "final_val_acc"
    if pick:
        picked = {base: l for base, l in pick.items() if base in blog.OPTIMIZER_ORDER}
        tuned_key = "test_acc" if all(l.summary["test_acc"].n for l in picked.values()) and picked else "final_val_acc"
        tuned_claims = judge_claims(picked, tuned_key) if picked else None
    return Analysis(runs, labels, grids, fixed, by_opt, pick, claims, tuned_claims, tuned_key)
