"""Statistics for comparing optimizers across seeds: summaries, paired tests, Holm.

Everything here works on small 1-D samples (one value per seed) and is pure numpy/scipy, so the
report can be regenerated anywhere without torch.

* :func:`describe` -- mean, sample standard deviation (ddof = 1) and the 95 % Student-t interval
  ``mean +- t_{0.975, n-1} * s / sqrt(n)``. NaNs (e.g. "target never reached") are dropped and
  ``n`` counts what is left.
* :func:`paired_test` -- the runs of two optimizers paired by seed: the differences
  ``d_i = a_i - b_i`` give the mean paired difference with its t-interval, Cohen's
  ``d_z = mean(d) / sd(d)``, the two-sided paired t-test and the two-sided Wilcoxon
  signed-rank test (``scipy.stats.wilcoxon``, exact for small n without ties).
* :func:`holm` -- Holm's step-down adjustment of a family of p-values.

With five seeds the exact two-sided Wilcoxon p-value cannot go below 2 / 2**5 = 0.0625, so at
n = 5 it can corroborate a t-test but never reject on its own; the report says so.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _st

__all__ = ["Summary", "PairedResult", "describe", "t_interval", "cohens_dz", "paired_test", "holm"]


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof = 1) and t-interval of the finite values of one sample."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _finite(values: Iterable[float]) -> np.ndarray:
    x = np.asarray(list(values), dtype=float).ravel()
    return x[np.isfinite(x)]


def t_interval(values: Iterable[float], conf: float = 0.95) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean; (nan, nan) when n < 2."""
    x = _finite(values)
    n = x.size
    if n < 2:
        return (math.nan, math.nan)
    m = float(x.mean())
    half = float(_st.t.ppf(0.5 + conf / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
    return (m - half, m + half)


def describe(values: Iterable[float], conf: float = 0.95) -> Summary:
    """Summary of the finite values: n, mean, std (ddof = 1), t-interval.

    ``n = 0`` gives all-NaN; ``n = 1`` gives the value as mean and NaN for std and interval.
    """
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else math.nan
    lo, hi = t_interval(x, conf)
    return Summary(n, mean, std, lo, hi)


def cohens_dz(diffs: Iterable[float]) -> float:
    """Cohen's d_z for paired data: mean(d) / sd(d) with ddof = 1.

    ``+-inf`` when every difference is the same non-zero number, 0 when all are zero, NaN for n < 2.
    """
    d = _finite(diffs)
    if d.size < 2:
        return math.nan
    m, s = float(d.mean()), float(d.std(ddof=1))
    if s == 0.0:
        return 0.0 if m == 0.0 else math.copysign(math.inf, m)
    return m / s


@dataclass(frozen=True)
class PairedResult:
    """A paired comparison a - b over seeds present in both (two-sided tests)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    sd_diff: float
    d_z: float
    t_stat: float
    p_t: float
    w_stat: float
    p_wilcoxon: float
    seeds: tuple = ()

    def as_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["seeds"] = " ".join(str(s) for s in self.seeds)
        return out


def paired_test(a: Sequence[float], b: Sequence[float], seeds: Sequence = (), conf: float = 0.95) -> PairedResult:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``a - b``.

    ``a[i]`` and ``b[i]`` must belong to the same seed; pairs with a NaN on either side are
    dropped. Degenerate samples are handled explicitly instead of through warnings: constant
    non-zero differences give t = +-inf and p = 0; all-zero differences give p = 1.
    """
    a_ = np.asarray(a, dtype=float)
    b_ = np.asarray(b, dtype=float)
    if a_.shape != b_.shape:
        raise ValueError(f"paired samples differ in length: {a_.shape} vs {b_.shape}")
    keep = np.isfinite(a_) & np.isfinite(b_)
    d = a_[keep] - b_[keep]
    kept_seeds = tuple(s for s, k in zip(seeds, keep) if k) if len(seeds) == len(keep) else ()
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return PairedResult(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, kept_seeds)
    mean = float(d.mean())
    if n < 2:
        return PairedResult(n, mean, nan, nan, nan, nan, nan, nan, nan, nan, kept_seeds)
    sd = float(d.std(ddof=1))
    lo, hi = t_interval(d, conf)
    dz = cohens_dz(d)
    if sd == 0.0:
        t_stat = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        p_t = 1.0 if mean == 0.0 else 0.0
    else:
        t_stat = mean / (sd / math.sqrt(n))
        p_t = float(2.0 * _st.t.sf(abs(t_stat), n - 1))
    if np.all(d == 0.0):
        w_stat, p_w = 0.0, 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = _st.wilcoxon(d, alternative="two-sided")
        w_stat, p_w = float(w.statistic), float(w.pvalue)
    return PairedResult(n, mean, lo, hi, sd, dz, t_stat, p_t, w_stat, p_w, kept_seeds)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    Sort the m finite p-values ascending, p_(1) <= ... <= p_(m); the adjusted value of p_(i) is
    ``max_{j <= i} min(1, (m - j + 1) * p_(j))``. NaN entries are not part of the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out.tolist()
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()
