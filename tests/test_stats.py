"""torchopt_review.stats against numbers worked out by hand (formulas written out below)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from torchopt_review.stats import cohens_dz, describe, holm, paired_test, t_interval

# Student t quantile t_{0.975, 4}: the standard table value (4 degrees of freedom).
T975_DF4 = 2.7764451051977934


def t4_cdf(t: float) -> float:
    """Closed-form CDF of Student's t with 4 degrees of freedom:
    F(t) = 1/2 + (3/4) x (1 - x^2/3), x = t / sqrt(4 + t^2)."""
    x = t / math.sqrt(4.0 + t * t)
    return 0.5 + 0.75 * x * (1.0 - x * x / 3.0)


def test_t4_cdf_closed_form_matches_the_table_quantile():
    # guards the helper itself: F(t_{0.975,4}) must be 0.975
    assert t4_cdf(T975_DF4) == pytest.approx(0.975, abs=1e-9)


def test_describe_mean_std_and_interval_by_hand():
    x = [0.85, 0.86, 0.87, 0.86, 0.86]
    s = describe(x)
    # mean 4.30 / 5 = 0.86; squared deviations 1e-4, 0, 1e-4, 0, 0 -> var = 2e-4 / 4 = 5e-5
    assert s.n == 5
    assert s.mean == pytest.approx(0.86, abs=1e-12)
    assert s.std == pytest.approx(math.sqrt(5e-5), rel=1e-9)
    half = T975_DF4 * math.sqrt(5e-5) / math.sqrt(5)
    assert s.ci_low == pytest.approx(0.86 - half, rel=1e-9)
    assert s.ci_high == pytest.approx(0.86 + half, rel=1e-9)
    assert t_interval(x) == pytest.approx((0.86 - half, 0.86 + half), rel=1e-9)


def test_describe_drops_nan_and_handles_tiny_samples():
    s = describe([1.0, float("nan"), 3.0])
    assert s.n == 2 and s.mean == 2.0
    assert s.std == pytest.approx(math.sqrt(2.0))           # ((1-2)^2 + (3-2)^2) / 1
    one = describe([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    none = describe([float("nan")])
    assert none.n == 0 and math.isnan(none.mean)


def test_paired_t_by_hand():
    a = np.array([11.0, 12.0, 13.0, 14.0, 15.0])
    b = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    r = paired_test(a, b, seeds=[0, 1, 2, 3, 4])
    # d = 1..5: mean 3, sd sqrt(2.5), se sqrt(2.5/5) = sqrt(0.5), t = 3 / sqrt(0.5) = 4.2426...
    t = 3.0 / math.sqrt(0.5)
    assert r.n == 5
    assert r.mean_diff == pytest.approx(3.0)
    assert r.sd_diff == pytest.approx(math.sqrt(2.5))
    assert r.t_stat == pytest.approx(t)
    assert r.p_t == pytest.approx(2.0 * (1.0 - t4_cdf(t)), rel=1e-9)    # 0.013236
    assert r.p_t == pytest.approx(0.0132356, abs=1e-6)
    assert r.ci_low == pytest.approx(3.0 - T975_DF4 * math.sqrt(0.5))
    assert r.ci_high == pytest.approx(3.0 + T975_DF4 * math.sqrt(0.5))
    assert r.d_z == pytest.approx(3.0 / math.sqrt(2.5))                 # 1.8974
    assert r.seeds == (0, 1, 2, 3, 4)


def test_paired_t_sign_and_symmetry():
    a = [1.0, 2.0, 3.0, 4.0, 6.0]
    b = [1.5, 2.1, 3.9, 4.2, 6.6]
    ab, ba = paired_test(a, b), paired_test(b, a)
    assert ab.mean_diff == pytest.approx(-ba.mean_diff)
    assert ab.p_t == pytest.approx(ba.p_t)
    assert ab.mean_diff < 0 and ab.d_z < 0


def test_wilcoxon_exact_by_hand():
    # all five differences positive: W- = 0; P(W <= 0) = 1/32 (only the empty set), two-sided 2/32
    r = paired_test([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    assert r.w_stat == 0.0
    assert r.p_wilcoxon == pytest.approx(2.0 / 32.0)
    # d = 1, 2, -3, 4, 5: ranks 1..5, W- = 3, W+ = 12; subsets of {1..5} with sum <= 3 are
    # {}, {1}, {2}, {3}, {1,2}: P = 5/32, two-sided 10/32
    r = paired_test([1.0, 2.0, -3.0, 4.0, 5.0], [0.0] * 5)
    assert r.w_stat == 3.0
    assert r.p_wilcoxon == pytest.approx(10.0 / 32.0)


def test_pairs_with_nan_are_dropped():
    r = paired_test([1.0, float("nan"), 3.0, 5.0], [0.0, 0.0, 1.0, 2.0], seeds=[1, 2, 3, 4])
    # kept pairs: d = 1, 2, 3
    assert r.n == 3 and r.mean_diff == pytest.approx(2.0) and r.seeds == (1, 3, 4)


def test_degenerate_differences():
    same = paired_test([0.9] * 5, [0.9] * 5)
    assert same.p_t == 1.0 and same.p_wilcoxon == 1.0 and same.d_z == 0.0
    const = paired_test([0.93] * 5, [0.90] * 5)
    assert const.p_t == 0.0 and math.isinf(const.t_stat) and const.t_stat > 0
    assert math.isinf(const.d_z)
    single = paired_test([1.0], [0.0])
    assert single.n == 1 and math.isnan(single.p_t) and math.isnan(single.p_wilcoxon)


def test_cohens_dz_by_hand():
    # d = 2, 4, 6: mean 4, sd 2 -> d_z = 2
    assert cohens_dz([2.0, 4.0, 6.0]) == pytest.approx(2.0)
    assert cohens_dz([-2.0, -4.0, -6.0]) == pytest.approx(-2.0)
    assert math.isnan(cohens_dz([1.0]))


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> max(0.06, 0.04) = 0.06)
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_keeps_order_and_skips_nan():
    p = [0.6, float("nan"), 0.02, 0.5]
    adj = holm(p)
    # family of 3: 0.02 x3 = 0.06; 0.5 x2 = 1.0; 0.6 x1 = 0.6 -> monotone: 1.0
    assert adj[2] == pytest.approx(0.06)
    assert adj[3] == pytest.approx(1.0)
    assert adj[0] == pytest.approx(1.0)
    assert math.isnan(adj[1])
    assert holm([]) == []
    assert holm([0.04]) == pytest.approx([0.04])
