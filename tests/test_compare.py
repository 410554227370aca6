"""``python -m torchopt_review.compare``: two reviews side by side (hand-built run folders with
known per-seed values, so every mean, difference and range check is computed by hand here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchopt_review import compare as cmp
from torchopt_review import runs as rf


def make_review(root: Path, values: dict[str, list[float]]) -> Path:
    """One run per (label, seed): final val acc = the given value, test acc = value - 0.01."""
    for label, accs in values.items():
        for seed, acc in enumerate(accs):
            d = root / label / f"seed{seed}"
            d.mkdir(parents=True)
            rf.atomic_write_json(d / rf.RUN_JSON, {"status": rf.DONE, "label": label, "optimizer": label, "seed": seed,
                                                   "lr": 1e-3, "test": {"loss": 0.3, "acc": acc - 0.01}})
            rf.atomic_write_text(d / rf.METRICS_CSV, rf.csv_text(rf.METRIC_COLUMNS, [
                rf.epoch_row(1, 10, 1.0, 0.5, 0.8, 0.4, acc, 0.001)]))
    return root


def test_same_results_pass_and_the_numbers_are_right(tmp_path):
    a = make_review(tmp_path / "a", {"adam": [0.88, 0.89, 0.90], "sgd": [0.85, 0.86, 0.84]})
    b = make_review(tmp_path / "b", {"adam": [0.885, 0.895, 0.89], "sgd": [0.85, 0.855, 0.845], "nadam": [0.9] * 3})
    rows, ok = cmp.compare(a, b)
    assert ok
    assert {r["label"] for r in rows} == {"adam", "sgd"}  # only labels both reviews have
    adam = next(r for r in rows if r["label"] == "adam" and r["metric"] == "val acc %")
    assert adam["a_mean"] == pytest.approx(89.0) and adam["b_mean"] == pytest.approx(89.0)
    assert adam["a_std"] == pytest.approx(1.0)  # sample std of 88, 89, 90
    test = next(r for r in rows if r["label"] == "sgd" and r["metric"] == "test acc %")
    assert test["diff"] == pytest.approx(0.0) and test["a_mean"] == pytest.approx(84.0)


def test_a_mean_outside_the_other_range_fails(tmp_path, capsys):
    a = make_review(tmp_path / "a", {"adam": [0.88, 0.89, 0.90]})
    b = make_review(tmp_path / "b", {"adam": [0.91, 0.92, 0.915]})
    rows, ok = cmp.compare(a, b)
    assert not ok
    row = next(r for r in rows if r["metric"] == "val acc %")
    assert not row["inside"] and row["diff"] == pytest.approx(2.5)
    assert cmp.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "| adam | val acc % |" in out and "NO" in out and "NOT the same" in out


def test_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    assert cmp.main([str(tmp_path / "nope"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a review folder" in err[0]


def test_welch_p_value_matches_the_formula(tmp_path):
    import math

    from scipy import stats

    a = make_review(tmp_path / "a", {"adam": [0.88, 0.89, 0.90]})
    b = make_review(tmp_path / "b", {"adam": [0.885, 0.90, 0.91]})
    row = next(r for r in cmp.compare(a, b)[0] if r["metric"] == "val acc %")
    # Welch by hand: t = (mb - ma) / sqrt(va/na + vb/nb), Welch-Satterthwaite df
    xa, xb = [88.0, 89.0, 90.0], [88.5, 90.0, 91.0]
    ma, mb = sum(xa) / 3, sum(xb) / 3
    va = sum((x - ma) ** 2 for x in xa) / 2
    vb = sum((x - mb) ** 2 for x in xb) / 2
    se2 = va / 3 + vb / 3
    t = (mb - ma) / math.sqrt(se2)
    df = se2 ** 2 / ((va / 3) ** 2 / 2 + (vb / 3) ** 2 / 2)
    assert row["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-6)
