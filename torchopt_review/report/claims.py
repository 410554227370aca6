"""The blog's six claims as paired tests across seeds, and a verdict on each.

Each claim is a two-sided paired t-test on an explicitly defined metric (the Wilcoxon signed-rank
test beside it as a check); Holm's correction runs over the claim tests of one regime. A test is
*supported* when its Holm p < ALPHA and the difference has the claimed sign, *contradicted* when it
is significant with the opposite sign, *not resolved* otherwise. Claim 5 ("Adam and Nadam end best")
is an intersection-union test: Adam and Nadam each against every other optimizer; its p-value is
the largest component p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import blog
from ..stats import PairedResult, holm, paired_test
from .fmt import fmt_diff, fmt_p
from .labels import Label
from .scalars import LATE_WINDOW, METRIC_BY_KEY

__all__ = ["ALPHA", "SLIGHT_MARGIN", "ClaimTest", "Claim", "judge_claims", "plain_sentence"]

ALPHA = 0.05                 # family-wise error rate of the claim tests (Holm)
SLIGHT_MARGIN = 0.01         # claim 2: "slightly" = less than 1 pp of val accuracy


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
    qualifier: str = ""        # claim 2: what its CI says about "only slightly"


def _make_test(claim: int, test_id: str, key: str, la: Label | None, lb: Label | None, expected: int,
               role: str = "test", a_name: str = "", b_name: str = "") -> ClaimTest:
    a_name = la.name if la else a_name
    b_name = lb.name if lb else b_name
    missing = [name for lab, name in ((la, a_name), (lb, b_name)) if lab is None or not lab.used]
    if missing:
        return ClaimTest(claim, test_id, key, a_name, b_name, expected, role, None, verdict="not tested",
                         note="no finished runs of " + " or ".join(repr(m) for m in missing))
    seeds = sorted(set(la.scalars) & set(lb.scalars))
    a, b = la.values(key, seeds), lb.values(key, seeds)
    res = paired_test(a, b, seeds=seeds)
    d = a - b
    wins = int(np.sum(np.sign(d[np.isfinite(d)]) == expected))
    t = ClaimTest(claim, test_id, key, a_name, b_name, expected, role, res, wins=wins)
    if res.n == 0:
        t.verdict, t.result = "not tested", None
        t.note = _why_undefined(key, la, lb, seeds)
    elif res.n < 2:
        t.verdict, t.note = "not resolved (n<2)", f"{res.n} paired seed(s)"
    return t


def _why_undefined(key: str, la: Label, lb: Label, seeds: list[int]) -> str:
    """Why no seed gives both labels a value of ``key``."""
    if not seeds:
        return f"no seed finished for both {la.name!r} and {lb.name!r}"
    epochs = min(la.epochs, lb.epochs)
    if key == "late_progress" and epochs <= LATE_WINDOW:
        return f"the runs have {epochs} epochs; progress over the last {LATE_WINDOW} needs more than {LATE_WINDOW}"
    if key == "eff_lr_log_ratio":
        return "no diagnostics.csv spanning more than one epoch for both"
    return f"{METRIC_BY_KEY[key].title} is undefined for every paired seed"


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

    claims.append(Claim(1, blog.CLAIMS[1], f"{acc_title}, momentum - sgd, paired by seed; the claim predicts > 0.",
                        [_make_test(1, "1", acc_key, L("momentum"), L("sgd"), +1, a_name="momentum", b_name="sgd")]))
    claims.append(Claim(2, blog.CLAIMS[2],
                        f"{acc_title}, nesterov - momentum, paired by seed; 'better' = the difference is > 0, "
                        f"'only slightly' = its 95 % CI stays below {SLIGHT_MARGIN * 100:.0f} pp. "
                        f"A CI wholly above {SLIGHT_MARGIN * 100:.0f} pp contradicts 'slightly'.",
                        [_make_test(2, "2", acc_key, L("nesterov"), L("momentum"), +1, a_name="nesterov", b_name="momentum")]))
    t3 = [_make_test(3, "3a", "eff_lr_log_ratio", L("adagrad"), L("rmsprop"), -1, a_name="adagrad", b_name="rmsprop"),
          _make_test(3, "3b", "late_progress", L("adagrad"), L("rmsprop"), -1, a_name="adagrad", b_name="rmsprop")]
    if t3[0].verdict == "not tested" and not t3[0].note.startswith("no finished runs"):
        t3[0].note = "no diagnostics.csv for both adagrad and rmsprop"
    claims.append(Claim(3, blog.CLAIMS[3],
                        "(3a, the mechanism) log of the median coordinate's effective step size at the last logged "
                        "step over its value at the end of the first epoch (after the moving averages' warm-up), "
                        "from diagnostics.csv, adagrad - rmsprop: the claim predicts < 0 "
                        "(AdaGrad's step shrinks more than RMSprop's, which forgets old gradients). "
                        f"(3b, the stall) relative train-loss decrease over the last {LATE_WINDOW} epochs, "
                        "1 - L(E)/L(E-5), adagrad - rmsprop: the claim predicts < 0 (AdaGrad makes less late "
                        "progress). Supported only if every sub-test that ran is supported.", t3))
    claims.append(Claim(4, blog.CLAIMS[4], f"{acc_title}, rmsprop - adagrad, paired by seed; the claim predicts > 0.",
                        [_make_test(4, "4", acc_key, L("rmsprop"), L("adagrad"), +1, a_name="rmsprop", b_name="adagrad")]))
    # Claim 5 is about the blog's whole set: Adam and Nadam ahead of each of the other six. With
    # some of them missing it would be a different, weaker claim, so it is then not tested.
    others = [o for o in blog.OPTIMIZER_ORDER if o not in ("adam", "nadam")]
    absent = [o for o in blog.OPTIMIZER_ORDER if o not in by_opt or not by_opt[o].used]
    comps = [_make_test(5, f"5:{x}>{y}", acc_key, L(x), L(y), +1, role="component", a_name=x, b_name=y)
             for x in ("adam", "nadam") for y in others if x not in absent and y not in absent]
    agg = ClaimTest(5, "5", acc_key, "adam, nadam", "each other optimizer", +1, "test", None)
    claims.append(Claim(5, blog.CLAIMS[5],
                        f"{acc_title}: adam - X and nadam - X for every other optimizer X the blog compared "
                        f"({', '.join(others)}), paired by seed; tested only when all eight ran. Intersection-union test: supported only "
                        "if every difference is > 0 and significant, so the claim's p-value is the largest "
                        "component p; contradicted if some X beats Adam or Nadam significantly "
                        "(Bonferroni over the components, then Holm with the other claims).",
                        [agg] + comps))
    claims.append(Claim(6, blog.CLAIMS[6], f"{acc_title}, nadam - adam, paired by seed; the claim predicts > 0. "
                        "'Usually' is also shown as the number of seeds on which Nadam wins.",
                        [_make_test(6, "6", acc_key, L("nadam"), L("adam"), +1, a_name="nadam", b_name="adam")]))

    # Claim 5's aggregate p-value (intersection-union / Bonferroni, see the definition).
    ran = [c for c in comps if c.result is not None and c.result.n >= 2 and math.isfinite(c.result.p_t)]
    if absent:
        agg.verdict = "not tested"
        agg.note = (f"the claim is about all {len(blog.OPTIMIZER_ORDER)} of the blog's optimizers; "
                    f"no finished runs of {', '.join(absent)}")
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
        cl.qualifier = cl.reason
        return
    parts = []
    for t in ran:
        prefix = f"{t.test_id}: " if len(ran) > 1 else ""
        if t.result is None:
            parts.append(f"{prefix}{t.verdict}" + (f" ({t.note})" if t.note else ""))
            continue
        r = t.result
        parts.append(f"{prefix}{t.a} − {t.b} = {fmt_diff(t.metric, r.mean_diff)} "
                     f"[{fmt_diff(t.metric, r.ci_low)}, {fmt_diff(t.metric, r.ci_high)}], d_z {r.d_z:.2f}, "
                     f"claimed sign on {t.wins}/{r.n} seeds, Holm p = {fmt_p(t.p_holm)}")
    if cl.number == 5 and cl.tests[0].verdict != "not tested":
        comps = [c for c in cl.tests if c.role == "component" and c.result is not None and c.result.n >= 2]
        losers = [f"{c.a} − {c.b} = {fmt_diff(c.metric, c.result.mean_diff)} (p = {fmt_p(c.result.p_t)})"
                  for c in comps if c.result.mean_diff <= 0]
        if losers:
            parts = ["not ahead: " + ", ".join(losers)]
        elif comps:
            weakest = max(comps, key=lambda c: c.result.p_t)
            parts = [f"{len(comps)} pairwise differences all > 0; the weakest is {weakest.a} − {weakest.b} = "
                     f"{fmt_diff(weakest.metric, weakest.result.mean_diff)} (raw p = {fmt_p(weakest.result.p_t)}); "
                     f"Holm p = {fmt_p(cl.tests[0].p_holm)}"]
    cl.reason = "; ".join(parts)


# -- in plain words -------------------------------------------------------------------------------

def _says(t: ClaimTest) -> str:
    """What the claim predicts for one seed, in words."""
    a, b = blog.NAMES.get(t.a, t.a), blog.NAMES.get(t.b, t.b)
    if t.metric == "eff_lr_log_ratio":
        return f"{a}'s effective step size shrank more than {b}'s"
    if t.metric == "late_progress":
        return f"{a} made less progress than {b} over the last {LATE_WINDOW} epochs"
    return f"{a} beat {b}"


def _test_sentence(t: ClaimTest) -> str:
    r = t.result
    if r is None or t.verdict == "not tested":
        return f"not tested: {t.note}" if t.note else "not tested"
    seeds = "seed" if r.n == 1 else "seeds"
    head = f"{_says(t)} on {t.wins} of {r.n} {seeds}"
    if r.n < 2:
        return f"{head}; one seed cannot separate a difference from seed-to-seed noise"
    diff = f"the average difference, {fmt_diff(t.metric, r.mean_diff)},"
    p = f"Holm p = {fmt_p(t.p_holm)}"
    if t.verdict == "supported":
        return f"{head}; {diff} is larger than seed-to-seed noise ({p})"
    if t.verdict == "contradicted":
        return f"{head}; {diff} goes against the claim and is larger than seed-to-seed noise ({p})"
    return f"{head}; {diff} is within noise ({p})"


def _sentence(text: str) -> str:
    text = text.strip().rstrip(".")
    return text[:1].upper() + text[1:] + "." if text else ""


def plain_sentence(cl: Claim) -> str:
    """The verdict in one or two plain sentences, from the same numbers as the statistics."""
    main = [t for t in cl.tests if t.role == "test"]
    if cl.number == 5:
        agg = main[0]
        comps = [c for c in cl.tests if c.role == "component" and c.result is not None and c.result.n >= 2]
        if agg.verdict == "not tested" or not comps:
            return _sentence(f"not tested: {agg.note}" if agg.note else "not tested")
        if agg.verdict.startswith("not resolved (n<2)"):
            return _sentence("fewer than 2 seeds paired in some comparison, so the claim cannot be tested")
        ahead = sum(1 for c in comps if c.result.mean_diff > 0)
        head = f"Adam and Nadam were ahead on average in {ahead} of {len(comps)} pairwise comparisons"
        p = f"Holm p = {fmt_p(agg.p_holm)}"
        if agg.verdict == "supported":
            return _sentence(f"{head}, every gap larger than seed-to-seed noise ({p})")
        if agg.verdict == "contradicted":
            return _sentence(f"{head}; some other optimizer is ahead of one of them by more than noise ({p})")
        return _sentence(f"{head}; not every gap is larger than seed-to-seed noise ({p})")
    if all(t.verdict == "not tested" for t in main):
        notes = list(dict.fromkeys(t.note for t in main if t.note))
        return _sentence("not tested: " + "; ".join(notes) if notes else "not tested")
    parts = [_test_sentence(t) for t in main]
    if len(main) > 1:
        parts = [f"{t.test_id}: {p}" for t, p in zip(main, parts)]
    out = " ".join(_sentence(p) for p in parts)
    if cl.qualifier:
        out += " " + _sentence(cl.qualifier)
    return out
