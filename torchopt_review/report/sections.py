"""report.md's sections after the results: the claims in detail, the blog's observations, the runs
left out, the tuned-lr regime and the per-label tables. Each returns its lines."""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from .. import blog
from ..stats import PairedResult
from .claims import ALPHA, Claim, plain_sentence
from .fmt import ci, finite, fmt, fmt_diff, fmt_lr, fmt_p, md_table, mean_std
from .labels import Label
from .load import Run
from .scalars import METRIC_BY_KEY, METRICS, SPIKE_REL

__all__ = ["verdict_table", "claims_section", "observations_section", "problems_section", "tuned_section",
           "label_table", "OVERFIT_EPOCH"]

OVERFIT_EPOCH = 10           # observation 2: "overfit after ~10 epochs"


def verdict_table(claims: list[Claim]) -> list[str]:
    """One row per claim: the verdict, the verdict in plain words, and its Holm p and d_z."""
    rows = []
    for c in claims:
        main = [t for t in c.tests if t.role == "test"]
        tag = (lambda t: f"{t.test_id}: ") if len(main) > 1 else (lambda t: "")
        p = "; ".join(f"{tag(t)}{fmt_p(t.p_holm)}" for t in main if finite(t.p_holm)) or "–"
        dz = "; ".join(f"{tag(t)}{_dz(t.result)}" for t in main if t.result is not None and t.result.n >= 2) or "–"
        rows.append([f"{c.number}. {c.text}", f"**{c.verdict}**", plain_sentence(c), p, dz])
    return md_table(["the blog's claim", "verdict", "in plain words", "Holm p", "d_z"], rows)


def _dz(r: PairedResult | None) -> str:
    if r is None or not (finite(r.d_z) or (isinstance(r.d_z, float) and math.isinf(r.d_z))):
        return "–"
    return f"{r.d_z:.2f}"


def _wilcoxon_note(claims: list[Claim]) -> str:
    """What the Wilcoxon check can say at the numbers of pairs these tests had."""
    ns = sorted({t.result.n for c in claims for t in c.tests if t.result is not None and t.result.n >= 2})
    base = "Wilcoxon signed-rank p-values are shown as a check that does not assume normal differences"
    if not ns:
        return base + "."
    pairs = f"{ns[0]} pairs" if len(ns) == 1 else f"{ns[0]}–{ns[-1]} pairs"
    floor = 2.0 / 2 ** ns[-1]  # the exact two-sided p of n differences all of one sign
    if floor >= ALPHA:
        return (f"{base} (with {pairs} its exact two-sided p cannot go below {floor:.3g}, so it can corroborate "
                "but not decide).")
    return f"{base} (with {pairs} its exact two-sided p can go as low as {floor:.2g})."


def claims_section(claims: list[Claim], title: str, *, table: bool) -> list[str]:
    """Every claim's tests; ``table``: open with the verdict table (the fixed regime's is in the results)."""
    out = [title, ""]
    n_family = sum(1 for c in claims for t in c.tests if t.role == "test" and finite(t.p_family))
    out.append(f"Two-sided paired t-tests across seeds; Holm correction over the {n_family} claim "
               f"test{'' if n_family == 1 else 's'} of this section (α = {ALPHA}). {_wilcoxon_note(claims)} Differences are a − b; accuracies in percentage "
               "points (pp). d_z = mean difference / sd of the differences. 'wins' = seeds on which the "
               "difference has the claimed sign.")
    out.append("")
    if table:
        out += verdict_table(claims) + [""]
    for c in claims:
        out += [f"#### Claim {c.number}: {c.text}", "", f"Metric: {c.definition}", ""]
        rows = []
        for t in c.tests:
            r = t.result
            if r is None or r.n == 0:
                rows.append([t.test_id, f"{t.a} − {t.b}", "–", "–", "–", "–", "–", "–",
                             fmt_p(t.p_family) if t is c.tests[0] and c.number == 5 else "–",
                             fmt_p(t.p_holm), t.verdict + (f" ({t.note})" if t.note else "")])
                continue
            ci = f"[{fmt_diff(t.metric, r.ci_low)}, {fmt_diff(t.metric, r.ci_high)}]" if r.n >= 2 else ""
            rows.append([t.test_id, f"{t.a} − {t.b}", str(r.n), f"{fmt_diff(t.metric, r.mean_diff)} {ci}", _dz(r),
                         f"{t.wins}/{r.n}", fmt_p(r.p_t), fmt_p(r.p_wilcoxon),
                         fmt_p(t.p_family) if t.role == "test" else "(component)",
                         fmt_p(t.p_holm), t.verdict + (f" ({t.note})" if t.note else "")])
        out += md_table(["test", "a − b", "n", "mean diff [95 % CI]", "d_z", "wins", "t-test p", "Wilcoxon p",
                          "p in family", "Holm p", "result"], rows)
        out += ["", f"**Verdict: {c.verdict}.** {plain_sentence(c)}", ""]
        if c.verdict != "not tested" and c.reason != c.qualifier:  # else the sentence already says it
            out += [f"Statistics: {c.reason}.", ""]
    return out


def observations_section(by_opt: dict[str, Label], labs: Sequence[Label]) -> list[str]:
    out = ["## The blog's two observations, in numbers", "",
           "Descriptive, not part of the claim tests. Per label: mean ± std over seeds (worst seed in brackets).", ""]
    rows = []
    for lab in labs:
        s = lab.summary
        worst = np.nanmax(lab.values("max_val_loss_jump")) if s["max_val_loss_jump"].n else math.nan
        rows.append([lab.name, f"{mean_std(s['max_val_loss_jump'], 'loss')} ({fmt(worst, 'loss')})",
                     mean_std(s["max_val_loss_jump_rel"], "frac"), mean_std(s["val_loss_spikes"], "count"),
                     mean_std(s["min_val_loss_epoch"], "epoch"), mean_std(s["val_loss_rise"], "loss"),
                     mean_std(s["val_acc_since_min_loss"], "acc")])
    out += md_table(["label", "largest val-loss increase, epoch over epoch (worst seed)", "largest relative increase",
                      f"epochs with val loss up > {SPIKE_REL:.0%}", "epoch of min val loss",
                      "val loss: final − min", "val acc: final − at min-loss epoch (pp)"], rows)
    out.append("")
    others = [l for l in labs if l.optimizer != "rmsprop" and l.summary["max_val_loss_jump"].n]
    rms = by_opt.get("rmsprop")
    unstable = blog.OBSERVATIONS["rmsprop_unstable"]
    if rms is None or not rms.used:
        out.append(f"- *{unstable}* Not evaluated: no finished RMSprop runs.")
    elif not rms.summary["max_val_loss_jump"].n:
        out.append(f"- *{unstable}* Not evaluated: the RMSprop runs have {rms.epochs} epoch, so there is no "
                   "epoch-over-epoch change to look at.")
    else:
        med = float(np.median([l.summary["max_val_loss_jump"].mean for l in others])) if others else math.nan
        s = rms.summary["max_val_loss_jump"]
        out.append(f"- *{unstable}* RMSprop's largest epoch-over-epoch val-loss "
                   f"increase is {mean_std(s, 'loss')} (mean ± std over {s.n} seeds) against a median of "
                   f"{fmt(med, 'loss')} for the other labels; it has {fmt(rms.summary['val_loss_spikes'].mean, 'count')} "
                   f"epochs per run on average whose val loss rose by more than {SPIKE_REL:.0%}.")
    overfit = blog.OBSERVATIONS["adam_overfit"]
    for name in ("adam", "nadam"):
        lab = by_opt.get(name)
        if lab is None or not lab.used or not lab.summary["min_val_loss_epoch"].n:
            out.append(f"- *{overfit}* Not evaluated for {name}: no finished {name} runs.")
            continue
        if lab.epochs <= OVERFIT_EPOCH:
            out.append(f"- *{overfit}* Not evaluated for {name}: its runs stopped at epoch {lab.epochs}, and the "
                       f"observation is about what happens after epoch ~{OVERFIT_EPOCH}.")
            continue
        s = lab.summary
        ep = lab.values("min_val_loss_epoch")
        ep = ep[np.isfinite(ep)]
        out.append(f"- *{overfit}* {name}: val loss is lowest at epoch "
                   f"{mean_std(s['min_val_loss_epoch'], 'epoch')} (range {int(ep.min())}–{int(ep.max())}, "
                   f"{int(np.sum(ep <= OVERFIT_EPOCH + 2))}/{ep.size} seeds by epoch {OVERFIT_EPOCH + 2}), then rises by "
                   f"{mean_std(s['val_loss_rise'], 'loss')} to epoch {lab.epochs}, while val accuracy moves by "
                   f"{mean_std(s['val_acc_since_min_loss'], 'acc')} pp.")
    return out + [""]


def problems_section(runs: list[Run]) -> list[str]:
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
    out += md_table(["label", "seed", "status", "diverged at", "epochs completed", "error / problem"], rows)
    return out + [""]


def tuned_section(grids: dict[str, list[Label]], pick: dict[str, Label], claims: list[Claim] | None,
                   acc_key: str) -> list[str]:
    out = ["## Tuned-lr regime (kept apart from the fixed-lr comparison)", ""]
    all_labs = [l for ls in grids.values() for l in ls]
    n_runs = sum(len(l.runs) for l in all_labs)
    wall = float(np.nansum([r.metrics["wall_s"][-1] for l in all_labs for r in l.runs if r.epochs]))
    seeds = sorted({r.seed for l in all_labs for r in l.runs})
    epochs = sorted({l.epochs for l in all_labs if l.epochs})
    out.append(f"Tuning budget: {len(grids)} optimizers; per optimizer a grid of "
               + "; ".join(f"{b}: {len(ls)} lrs ({', '.join(fmt_lr(l.lr) for l in ls)})" for b, ls in grids.items())
               + f"; seeds {', '.join(map(str, seeds))}; {', '.join(map(str, epochs))} epochs; "
               f"{n_runs} runs, {wall / 3600:.2f} h of training wall time in all. "
               "The lr is chosen per optimizer by the best **mean final validation accuracy** across seeds; the "
               f"test set is only read at the chosen lr (metric compared: {METRIC_BY_KEY[acc_key].title}).")
    out.append("")
    for base, ls in grids.items():
        rows = []
        for l in ls:
            s = l.summary
            rows.append([("**" + fmt_lr(l.lr) + "** (chosen)") if pick.get(base) is l else fmt_lr(l.lr),
                         f"{len(l.used)}/{len(l.runs)}", f"{mean_std(s['final_val_acc'], 'acc')} {ci(s['final_val_acc'], 'acc')}",
                         f"{mean_std(s['test_acc'], 'acc')}" if pick.get(base) is l else "(not looked at)"])
        out += [f"**{base}**", "", *md_table(["lr", "runs used", "final val acc %", "test acc %"], rows), ""]
    rows = []
    for base, l in sorted(pick.items(), key=lambda kv: -(kv[1].summary[acc_key].mean if kv[1].summary[acc_key].n else -1)):
        s = l.summary[acc_key]
        rows.append([base, fmt_lr(l.lr), str(s.n), mean_std(s, "acc"), ci(s, "acc")])
    out += ["Ranking at the chosen lrs:", "",
            *md_table(["optimizer", "chosen lr", "n", f"{METRIC_BY_KEY[acc_key].title} (%)", "95 % CI"], rows), ""]
    if claims:
        out += claims_section(claims, "### The blog's claims at tuned learning rates", table=True)
    return out


def label_table(lab: Label) -> list[str]:
    n_used, n_all = len(lab.used), len(lab.runs)
    blog_row, note = blog.blog_row_for(lab.name, lab.optimizer, lab.lr)
    final_is_blog = lab.epochs == blog.BLOG_EPOCH
    rows = []
    for m in METRICS:
        if m.key.startswith(("max_val_loss", "val_loss_spikes", "min_val_loss", "val_loss_rise", "val_acc_since",
                             "late_progress", "eff_lr")):
            continue  # these belong to the claims/observations sections
        if m.key.endswith(f"_e{blog.BLOG_EPOCH}") and (final_is_blog or lab.epochs < blog.BLOG_EPOCH):
            continue  # identical to "final" at 20 epochs; undefined for shorter runs
        at = re.search(r"_e(\d+)$", m.key)
        if at and int(at.group(1)) > lab.epochs:
            continue  # an epoch these runs never reached
        s = lab.summary[m.key]
        if m.key.startswith(("epochs_to_", "wall_to_")):
            cell = f"not reached (0/{n_used})" if s.n == 0 else mean_std(s, m.kind)
            ncell = f"{s.n}/{n_used} reached"
        else:
            cell, ncell = mean_std(s, m.kind), str(s.n)
        b = "–"
        if blog_row is not None and m.blog_attr:
            at_blog_epoch = (m.key.endswith(f"_e{blog.BLOG_EPOCH}") or m.key.startswith("val_acc_e")
                             or (m.key.startswith("final_") and final_is_blog))
            if at_blog_epoch:
                b = fmt(getattr(blog_row, m.blog_attr), m.kind)
        rows.append([m.title + (" (%)" if m.kind == "acc" else ""), cell, ci(s, m.kind), ncell, b])
    out = [f"### {lab.name}", "",
           f"Optimizer `{lab.optimizer}`, lr {fmt_lr(lab.lr)}, {n_used} of {n_all} runs used "
           f"(seeds {', '.join(str(r.seed) for r in lab.used) or 'none'}), {lab.epochs} epochs."]
    if blog_row is not None:
        extra = f" Note: {note}." if note else ""
        if not final_is_blog and lab.epochs < blog.BLOG_EPOCH:
            extra += f" The blog's epoch-{blog.BLOG_EPOCH} numbers have no counterpart: these runs stopped at epoch {lab.epochs}."
        out.append(f"Blog column: the blog's single run ({blog_row.name}, seed {blog.BLOG_SEED}, Keras).{extra}")
    elif note:
        out.append(f"Blog column: {note}.")
    out.append("")
    out += md_table(["metric", "mean ± std", "95 % CI", "n", "blog (1 seed)"], rows)
    return out + [""]
