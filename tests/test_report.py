"""torchopt_review.report on fake experiments whose answers are known by construction.

Each fake run writes metrics.csv / run.json (/ diagnostics.csv) through the run folder's schema
and writers (:mod:`torchopt_review.runs`), as the training path does. Final val accuracies are ``level[label] + SEED_EFFECT[seed] + noise[label][seed]``, so the
means, the time-to-target epochs and the verdicts can be worked out by hand below.
"""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torchopt_review import runs as rf
from torchopt_review.report import write_report
from torchopt_review.report.markdown import RESULTS_HEADING, SETUP_HEADING

SEEDS = [0, 1, 2, 3, 4]
SEED_EFFECT = [0.0030, -0.0050, 0.0010, 0.0060, -0.0020]   # shared by every optimizer: a paired design
T975_DF4 = 2.7764451051977934                               # Student t table, 4 degrees of freedom
WALL_PER_EPOCH = 2.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

NOISE = {  # per label, per seed; small next to the gaps the tests rely on
    "sgd": [0.0, 0.0, 0.0, 0.0, 0.0],
    "momentum": [0.0010, -0.0020, 0.0000, 0.0020, -0.0010],
    "nesterov": [-0.0010, 0.0015, -0.0005, 0.0010, -0.0005],
    "adagrad": [0.0, 0.0, 0.0, 0.0, 0.0],
    "rmsprop": [0.0010, -0.0020, 0.0000, 0.0020, -0.0010],
    "adam": [0.0005, 0.0010, -0.0015, 0.0000, 0.0005],
    "nadam": [0.0010, -0.0015, 0.0005, -0.0010, 0.0005],
    "adamax": [0.0, 0.0, 0.0, 0.0, 0.0],
}
LEVEL = {"sgd": 0.860, "momentum": 0.890, "nesterov": 0.890, "adagrad": 0.855, "rmsprop": 0.870,
         "adam": 0.905, "nadam": 0.905, "adamax": 0.880}
# val accuracy climbs 1 pp per epoch from this start until it meets the run's final value
RAMP_START = {"sgd": 0.805, "adagrad": 0.805}  # the others start at 0.835


def _train_loss(label: str, seed: int, e: int) -> float:
    if label == "adagrad":       # stalls: flat after the first few epochs
        return 0.38 + 0.01 * seed + 0.4 * 0.6 ** (e - 1)
    if label == "rmsprop":       # still improving linearly at the end
        return 0.70 + 0.01 * seed - 0.015 * e
    return 0.20 + 0.01 * seed + 0.5 * 0.8 ** (e - 1)


def _val_loss(label: str, seed: int, e: int) -> float:
    if label in ("adam", "nadam"):                       # overfits: minimum at epoch 10
        return 0.30 + 0.01 * seed + 0.002 * (e - 10) ** 2
    spike = 0.5 if label == "rmsprop" and e in (7, 15) else 0.0
    return 0.30 + 0.01 * seed + 0.3 * 0.7 ** (e - 1) + spike


def write_run(root: Path, label: str, seed: int, *, optimizer: str | None = None, final: float | None = None,
              epochs: int = 20, lr: float = 1e-3, status: str = "done", diagnostics: bool = True,
              val_curve: list[float] | None = None, error: str | None = None) -> Path:
    optimizer = optimizer or label
    d = root / label / f"seed{seed}"
    d.mkdir(parents=True)
    if val_curve is None:
        start = RAMP_START.get(optimizer, 0.835)
        val_curve = [min(final, start + 0.01 * e) for e in range(1, epochs + 1)]
    rows = []
    for e in range(1, len(val_curve) + 1):
        tl = _train_loss(optimizer, seed, e)
        rows.append(rf.epoch_row(e, 1688 * e, WALL_PER_EPOCH * e, tl, 1.0 - tl / 3, _val_loss(optimizer, seed, e),
                                 val_curve[e - 1], lr))
    rf.atomic_write_text(d / rf.METRICS_CSV, rf.csv_text(rf.METRIC_COLUMNS, rows))
    if diagnostics:
        diag = []
        for k, step in enumerate(range(100, 1688 * len(val_curve), 1688)):
            for param in ("layers.0.weight", "layers.0.bias"):
                if optimizer == "adagrad":   # lr / sqrt(accumulated g^2): shrinks like 1/sqrt(step)
                    eff = lr / math.sqrt(0.1 + 1e-3 * step * (1 + 0.05 * seed))
                else:
                    eff = lr * (1.0 + 0.02 * ((seed + k) % 3))
                diag.append(rf.diag_row(k + 1, step, param, [eff / 3, eff, eff * 3], 10 * eff, 1.0))
        rf.atomic_write_text(d / rf.DIAG_CSV, rf.csv_text(rf.DIAG_COLUMNS, diag))
    cfg = {"experiment": root.name, "seed": seed, "data": {"split": "keras", "val_size": 6000},
           "model": {"name": "blog_mlp"}, "trainer": {"epochs": epochs, "batch_size": 32, "accelerator": "cpu"},
           "optim": {"name": optimizer, "semantics": "keras", "lr": lr, "kwargs": {}}}
    done = status == "done"
    info = {"status": status, "label": label, "optimizer": optimizer, "seed": seed, "lr": lr, "config": cfg,
            "versions": {"python": "3.11.7", "torch": "2.14.1", "lightning": "2.5"}, "device": "cpu",
            "hardware": "test box", "test": {"loss": 0.3, "acc": val_curve[-1] - 0.005} if done else None,
            "diverged": {"epoch": len(val_curve), "step": 1688 * len(val_curve)} if status == "diverged" else None,
            "error": error, "epochs_completed": len(val_curve), "wall_s": WALL_PER_EPOCH * len(val_curve)}
    rf.atomic_write_json(d / rf.RUN_JSON, info)
    return d


def make_experiment(root: Path, *, level: dict[str, float] | None = None, seeds=SEEDS, diagnostics=True,
                    extra_bad_runs: bool = True, only: tuple[str, ...] | None = None) -> Path:
    level = {**LEVEL, **(level or {})}
    level = {k: v for k, v in level.items() if only is None or k in only}
    for label, lev in level.items():
        for s in seeds:
            write_run(root, label, s, final=lev + SEED_EFFECT[s] + NOISE[label][s], diagnostics=diagnostics)
    if extra_bad_runs:
        # a diverged RMSprop run and a failed Adamax run: listed, never averaged
        write_run(root, "rmsprop", 9, val_curve=[0.10, 0.10, 0.10], status="diverged")
        d = root / "adamax" / "seed8"
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({
            "status": "failed", "label": "adamax", "optimizer": "adamax", "seed": 8, "lr": 1e-3, "config": {},
            "versions": {}, "device": "cpu", "hardware": "", "test": None, "diverged": None,
            "error": "Traceback ...\nRuntimeError: worker killed (out of memory)", "epochs_completed": 0, "wall_s": 0.0}))
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def claim_verdicts(exp: Path, regime: str = "fixed") -> dict[int, str]:
    return {int(r["claim"]): r["claim_verdict"] for r in read_csv(exp / "claims.csv") if r["regime"] == regime}


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    exp = make_experiment(tmp_path_factory.mktemp("runs") / "known")
    write_report(exp)
    return exp


def test_verdicts_on_a_known_experiment(known):
    v = claim_verdicts(known)
    assert v[1] == "supported"          # momentum = sgd + 3 pp on every seed
    assert v[2] == "not resolved"       # nesterov = momentum +- 0.2 pp
    assert v[3] == "supported"          # adagrad's step shrinks and its loss is flat late
    assert v[4] == "supported"          # rmsprop = adagrad + 1.5 pp
    assert v[5] == "supported"          # adam, nadam >= 1.5 pp above everything else
    assert v[6] == "not resolved"       # nadam = adam +- noise


def test_claims_csv_numbers(known):
    rows = {r["test"]: r for r in read_csv(known / "claims.csv") if r["regime"] == "fixed"}
    one = rows["1"]
    # momentum - sgd = 0.03 + momentum noise (mean 0): mean diff 0.03 exactly, over 5 pairs
    assert int(one["n"]) == 5 and float(one["mean_diff"]) == pytest.approx(0.03, abs=1e-12)
    d = np.array(NOISE["momentum"])          # the differences minus 0.03
    sd = math.sqrt(np.sum(d ** 2) / 4)       # noise has mean 0
    assert float(one["d_z"]) == pytest.approx(0.03 / sd, rel=1e-6)
    assert int(one["wins"]) == 5
    # 7 tests in the Holm family (1, 2, 3a, 3b, 4, 5, 6): the smallest p is multiplied by 7 at most
    fam = [r for r in rows.values() if r["role"] == "test" and r["p_family"]]
    assert len(fam) == 7
    for r in fam:
        assert float(r["p_holm"]) >= float(r["p_family"]) - 1e-15
    # claim 5 is intersection-union over adam/nadam x 6 others
    comps = [r for r in rows.values() if r["role"] == "component"]
    assert len(comps) == 12
    assert float(rows["5"]["p_family"]) == pytest.approx(max(float(r["p_t"]) for r in comps))
    # claim 2's CI lies within +-1 pp -> the report says so
    assert -0.01 < float(rows["2"]["ci_low"]) and float(rows["2"]["ci_high"]) < 0.01


def test_summary_csv_against_hand_computed_means(known):
    rows = {r["label"]: r for r in read_csv(known / "summary.csv")}
    sgd = rows["sgd"]
    # 0.860 + seed effects (0.003, -0.005, 0.001, 0.006, -0.002): mean 0.8606;
    # deviations 0.0024, -0.0056, 0.0004, 0.0054, -0.0026 -> sum of squares 7.32e-5 -> var 1.83e-5
    assert float(sgd["final_val_acc_mean"]) == pytest.approx(0.8606, abs=1e-12)
    assert float(sgd["final_val_acc_std"]) == pytest.approx(math.sqrt(7.32e-5 / 4), rel=1e-9)
    half = T975_DF4 * math.sqrt(7.32e-5 / 4) / math.sqrt(5)
    assert float(sgd["final_val_acc_ci_low"]) == pytest.approx(0.8606 - half, rel=1e-9)
    assert float(sgd["final_val_acc_ci_high"]) == pytest.approx(0.8606 + half, rel=1e-9)
    assert int(sgd["final_val_acc_n"]) == 5
    # test acc = final val acc - 0.005 in run.json
    assert float(sgd["test_acc_mean"]) == pytest.approx(0.8556, abs=1e-12)
    # time per epoch = 2 s; best val acc at the last epoch for the ramp curves
    assert float(sgd["time_per_epoch_mean"]) == pytest.approx(2.0)
    # final train loss for sgd (generic curve): 0.20 + 0.01*seed + 0.5*0.8^19, seeds 0..4 -> mean seed 2
    assert float(sgd["final_train_loss_mean"]) == pytest.approx(0.22 + 0.5 * 0.8 ** 19, rel=1e-9)
    # the diverged rmsprop seed 9 (val acc 0.10) is excluded: mean = 0.870 + 0.0006 + 0 (noise mean 0)
    rms = rows["rmsprop"]
    assert float(rms["final_val_acc_mean"]) == pytest.approx(0.8706, abs=1e-12)
    assert (rms["n_runs"], rms["n_used"], rms["n_diverged"]) == ("6", "5", "1")
    ada = rows["adamax"]
    assert (ada["n_runs"], ada["n_used"], ada["n_failed"]) == ("6", "5", "1")
    # blog columns come from the blog's table (momentum: val acc 88.47 %)
    assert float(rows["momentum"]["blog_val_acc"]) == pytest.approx(0.8847)


def test_time_to_target(known):
    rows = {r["label"]: r for r in read_csv(known / "summary.csv")}
    sgd = rows["sgd"]
    # ramp 0.805 + 0.01 e: 0.845 at epoch 4, 0.855 at epoch 5 -> 85 % at epoch 5, 10 s; 88 % never
    assert float(sgd["epochs_to_85_mean"]) == pytest.approx(5.0) and sgd["epochs_to_85_n"] == "5"
    assert float(sgd["wall_to_85_mean"]) == pytest.approx(10.0)
    assert sgd["epochs_to_88_n"] == "0" and sgd["epochs_to_88_mean"] == ""
    # adamax finals 0.883, 0.875, 0.881, 0.886, 0.878: seeds 0, 2, 3 reach 88 %, at epoch 5 (ramp 0.885)
    ada = rows["adamax"]
    assert ada["epochs_to_88_n"] == "3" and float(ada["epochs_to_88_mean"]) == pytest.approx(5.0)
    md = (known / "report.md").read_text()
    assert "not reached (0/5)" in md
    assert "3/5 reached" in md


def test_failed_and_diverged_runs_are_listed(known):
    md = (known / "report.md").read_text()
    section = md.split("## Runs that diverged, failed or are incomplete")[1].split("\n## ")[0]
    assert "| rmsprop | 9 | diverged | epoch 3, step 5064 |" in section
    assert "| adamax | 8 | failed |" in section and "worker killed (out of memory)" in section
    assert "| sgd |" not in section


def test_observations_in_numbers(known):
    rows = {r["label"]: r for r in read_csv(known / "summary.csv")}
    # rmsprop's spikes: +0.5 at epochs 7 and 15 on a falling curve -> the largest jump is just under 0.5
    jump = float(rows["rmsprop"]["max_val_loss_jump_mean"])
    base15 = 0.3 * 0.7 ** 14 - 0.3 * 0.7 ** 13          # the smooth part's change into epoch 15
    base7 = 0.3 * 0.7 ** 6 - 0.3 * 0.7 ** 5
    assert jump == pytest.approx(0.5 + max(base15, base7), rel=1e-9)
    assert float(rows["rmsprop"]["val_loss_spikes_mean"]) == pytest.approx(2.0)
    # adagrad's logged step size lr / sqrt(0.1 + 1e-3 * step * (1 + 0.05 seed)): reference = the
    # last logged step of epoch 1 (step 100), last = step 100 + 19 * 1688 = 32172
    f = [1 + 0.05 * s for s in SEEDS]
    expect = np.mean([-0.5 * math.log((0.1 + 1e-3 * 32172 * fs) / (0.1 + 1e-3 * 100 * fs)) for fs in f])
    assert float(rows["adagrad"]["eff_lr_log_ratio_mean"]) == pytest.approx(expect, rel=1e-9)
    # adam: val loss 0.30 + 0.002 (e - 10)^2 -> minimum at epoch 10, +0.2 by epoch 20
    assert float(rows["adam"]["min_val_loss_epoch_mean"]) == pytest.approx(10.0)
    assert float(rows["adam"]["val_loss_rise_mean"]) == pytest.approx(0.2)


def test_pngs_written_and_embedded(known):
    md = (known / "report.md").read_text()
    for name in ("train_loss.png", "validation.png", "pairings.png", "effective_lr.png", "test_acc.png"):
        data = (known / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name
        assert f"]({name})" in md, name
    assert not (known / "lr_sweep.png").exists()   # no lr grid here


def test_report_shows_setup_and_blog_numbers(known):
    md = (known / "report.md").read_text()
    assert "torch 2.14.1" in md and "test box" in md
    assert "Seeds: 0, 1, 2, 3, 4, 8, 9" in md
    mom = md.split("### momentum")[1].split("\n### ")[0]
    assert "| 88.47 |" in mom          # the blog's val acc at epoch 20 beside ours
    assert "momentum 0.99" in mom      # the blog's text/code note


def test_contradicted_when_nadam_is_much_worse(tmp_path):
    exp = make_experiment(tmp_path / "worse", level={"nadam": 0.905 - 0.04}, extra_bad_runs=False)
    write_report(exp, plots=False)
    assert not list(exp.glob("*.png"))
    v = claim_verdicts(exp)
    assert v[6] == "contradicted"      # nadam 4 pp below adam on every seed
    assert v[5] == "contradicted"      # nadam (0.865) is beaten by momentum, nesterov, rmsprop, adamax
    assert v[1] == "supported"


def test_single_seed_is_not_resolved(tmp_path):
    exp = make_experiment(tmp_path / "one", seeds=[0], extra_bad_runs=False, diagnostics=False)
    write_report(exp, plots=False)
    v = claim_verdicts(exp)
    assert all(x == "not resolved (n<2)" for x in v.values()), v
    md = (exp / "report.md").read_text()
    assert "not resolved (n<2)" in md
    rows = {r["label"]: r for r in read_csv(exp / "summary.csv")}
    assert float(rows["sgd"]["final_val_acc_mean"]) == pytest.approx(0.863)   # 0.860 + 0.003
    assert rows["sgd"]["final_val_acc_std"] == ""


def test_without_diagnostics_claim3_uses_the_loss_and_plot_is_skipped(tmp_path):
    exp = make_experiment(tmp_path / "nodiag", diagnostics=False, extra_bad_runs=False, only=("adagrad", "rmsprop"))
    write_report(exp)
    assert not (exp / "effective_lr.png").exists()
    md = (exp / "report.md").read_text()
    assert "Skipped: no run in the fixed-lr regime has a diagnostics.csv" in md
    rows = {r["test"]: r for r in read_csv(exp / "claims.csv")}
    assert rows["3a"]["test_verdict"] == "not tested"
    assert rows["3b"]["test_verdict"] == "supported"
    assert claim_verdicts(exp)[3] == "supported"


def test_tuned_regime_is_kept_apart(tmp_path):
    exp = tmp_path / "grid"
    # val acc level per (optimizer, lr); sgd is best at 0.1, adam at 0.001
    grid = {("sgd", 0.01): 0.870, ("sgd", 0.1): 0.885, ("sgd", 0.001): 0.860,
            ("adam", 0.001): 0.900, ("adam", 0.01): 0.880}
    for (opt, lr), lev in grid.items():
        for s in SEEDS:
            write_run(exp, f"{opt}-lr{lr:g}", s, optimizer=opt, lr=lr, final=lev + SEED_EFFECT[s] + NOISE[opt][s],
                      diagnostics=False)
    write_report(exp, config={"experiment": "grid", "seeds": [0, 1, 2, 3, 4, 5], "lrs": [0.001, 0.01, 0.1]})
    md = (exp / "report.md").read_text()
    assert "Planned seeds (review.json) with no run at all: 5." in md
    tuned = md.split("## Tuned-lr regime")[1]
    assert "**0.1** (chosen)" in tuned and "**0.001** (chosen)" in tuned
    assert "3 lrs (0.001, 0.01, 0.1)" in tuned
    assert (exp / "lr_sweep.png").read_bytes()[:8] == PNG_MAGIC
    # the fixed regime is the blog-lr members only: sgd at 1e-3 (0.860) vs adam 1e-3 (0.900)
    overview = md.split(RESULTS_HEADING)[1].split("\n## ")[0]
    assert "sgd-lr0.001" in overview and "sgd-lr0.1" not in overview
    rows = {r["label"]: r for r in read_csv(exp / "summary.csv")}
    assert rows["sgd-lr0.1"]["regime"] == "lr-grid" and rows["sgd-lr0.001"]["regime"] == "fixed+lr-grid"
    assert {r["regime"] for r in read_csv(exp / "claims.csv")} == {"fixed", "tuned"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torchopt_review.report", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)


def test_cli_missing_and_empty_dir_exit_2(tmp_path):
    for target in (tmp_path / "nope", tmp_path):
        p = _cli(str(target))
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: ")
        assert p.stdout == ""


def test_cli_usage_errors_are_one_line_like_every_entry_point(tmp_path):
    for args in (["--plots-please", str(tmp_path)], []):
        p = _cli(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr and p.stdout == ""
        assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error: "), p.stderr
    compare = subprocess.run([sys.executable, "-m", "torchopt_review.compare", str(tmp_path / "a")],
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert compare.returncode == 2 and len(compare.stderr.strip().splitlines()) == 1, compare.stderr
    assert compare.stderr.startswith("error: ")


def test_cli_success_prints_one_line_and_imports_no_torch(tmp_path):
    exp = make_experiment(tmp_path / "cli", seeds=[0, 1], extra_bad_runs=False, diagnostics=False, only=("sgd", "adam"))
    code = ("import sys, runpy; sys.argv = ['report', sys.argv[1]]\n"
            "try:\n    runpy.run_module('torchopt_review.report', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    p = subprocess.run([sys.executable, "-c", code, str(exp)], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines == [f"report written to {exp / 'report.md'}", "no torch"]


def test_optimizer_order_matches_the_registry():
    # read the registry's entries from its source, so this needs neither torch nor the optimizers
    import ast

    from torchopt_review.blog import BLOG_TABLE, NAMES, OPTIMIZER_ORDER

    src = (Path(__file__).resolve().parents[1] / "torchopt_review" / "optim" / "registry.py").read_text()
    names = [node.args[0].value for node in ast.walk(ast.parse(src))
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "OptimizerSpec"
             and node.args and isinstance(node.args[0], ast.Constant)]
    assert list(OPTIMIZER_ORDER) == names
    assert set(BLOG_TABLE) == set(OPTIMIZER_ORDER) == set(NAMES)


def test_holm_can_overturn_a_raw_significant_result(tmp_path):
    # nadam 0.26 pp above adam: differences 0.0026 + (nadam noise - adam noise) per seed
    d = 0.0026 + np.array(NOISE["nadam"]) - np.array(NOISE["adam"])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(5))
    x = t / math.sqrt(4 + t * t)                         # closed-form t CDF, 4 degrees of freedom
    p_raw = 2 * (1 - (0.5 + 0.75 * x * (1 - x * x / 3)))
    assert 0.025 < p_raw < 0.05                          # significant on its own ...
    exp = make_experiment(tmp_path / "holm", level={"nadam": 0.905 + 0.0026}, extra_bad_runs=False)
    write_report(exp, plots=False)
    rows = {r["test"]: r for r in read_csv(exp / "claims.csv")}
    assert float(rows["6"]["p_t"]) == pytest.approx(p_raw, rel=1e-9)
    # ... but 6th of the 7 family p-values (only claim 2's, ~0.9, is larger): Holm multiplies by 2
    assert float(rows["6"]["p_holm"]) == pytest.approx(2 * p_raw, rel=1e-9)
    assert rows["6"]["claim_verdict"] == "not resolved"


def test_incomplete_and_malformed_runs_are_listed_not_counted(tmp_path):
    exp = make_experiment(tmp_path / "odd", seeds=[0, 1], extra_bad_runs=False, diagnostics=False)
    write_run(exp, "adam", 5, val_curve=[0.80, 0.84], status="running")          # still training
    d = exp / "sgd" / "seed6"
    d.mkdir()
    (d / "run.json").write_text("{not json")                                      # torn file
    d = exp / "sgd" / "seed7"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"status": "done", "label": "sgd", "optimizer": "sgd", "seed": None,
                                            "config": None, "test": None}))      # not a record we wrote
    (exp / "notes").mkdir()                                                       # not a label: no seed folders
    write_report(exp, plots=False)
    md = (exp / "report.md").read_text()
    section = md.split("## Runs that diverged, failed or are incomplete")[1].split("\n## ")[0]
    assert "| adam | 5 | running |" in section
    assert "| sgd | 6 | unknown |" in section and "unreadable run.json" in section
    # a run.json that is not a record this tool wrote is reported as such, never half-used
    assert "| sgd | 7 | unknown |" in section and "unusable run.json (seed is None)" in section
    rows = {r["label"]: r for r in read_csv(exp / "summary.csv")}
    assert rows["sgd"]["n_used"] == "2" and rows["adam"]["n_used"] == "2"
    assert "notes" not in rows
    # sgd: 0.860 + seed effects 0.003 and -0.005 -> mean 0.859
    assert float(rows["sgd"]["final_val_acc_mean"]) == pytest.approx(0.859)


def test_report_and_compare_go_through_runs_and_use_no_private_names():
    # One owner of the run folder (torchopt_review.runs): the report and compare neither parse its
    # files themselves nor write anything except through its atomic writer; and no module imports
    # another module's underscore names.
    import ast
    import re

    pkg = Path(__file__).resolve().parents[1] / "torchopt_review"
    files = sorted((pkg / "report").glob("*.py")) + [pkg / "compare.py"]
    for path in files:
        src = path.read_text()
        for banned in (r"DictReader", r"json\.loads?\(", r"\.read_(text|bytes)\(", r"\.write_(text|bytes)\(",
                       r"(?<![\w.])open\(", r"\.savefig\((?!tmp)"):
            assert not re.search(banned, src), f"{path.name} matches {banned}: read and write through runs"
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private names {private} from {node.module}"


# The optimizers each claim is about (claim 5: the blog's whole set).
CLAIM_OPTIMIZERS = {1: {"momentum", "sgd"}, 2: {"nesterov", "momentum"}, 3: {"adagrad", "rmsprop"},
                    4: {"rmsprop", "adagrad"}, 5: set(LEVEL), 6: {"nadam", "adam"}}


def test_a_small_review_reads_true(tmp_path):
    # 3 optimizers x 2 seeds x 2 epochs, plus a momentum whose runs all failed. Nadam is ahead of
    # Adam, and both of SGD, by the same margin on every seed (p = 0), so a claim tested on this
    # partial set would come out "supported".
    exp = tmp_path / "small"
    curves = {"sgd": (0.80, 0.82), "adam": (0.84, 0.86), "nadam": (0.845, 0.87)}
    for label, (e1, e2) in curves.items():
        for s in (0, 1):
            write_run(exp, label, s, val_curve=[e1, e2 + 0.001 * s])
    for s in (0, 1):
        write_run(exp, "momentum", s, val_curve=[0.5], status="failed", error="RuntimeError: boom")
    write_report(exp)
    md = (exp / "report.md").read_text()

    # results first: the headline figure, the verdicts, the numbers beside the blog's; set-up last, folded
    results, setup = md.index(RESULTS_HEADING), md.index(SETUP_HEADING)
    assert results < setup and md.rstrip().endswith("</details>")
    head = md[results:].split("\n## ")[0]
    assert head.index("](train_loss.png)") < head.index("| the blog's claim | verdict | in plain words")
    assert "blog val acc %" in head
    assert "<details>" in md[setup:] and "```json" not in md[:setup]

    # the numbers it states are the ones that ran: seeds 0 and 1, 2 epochs, 2 pairs
    assert "on seeds 0, 1 for 2 epochs: 6 runs finished" in md
    assert "2 more diverged, failed or are incomplete" in md
    assert set(re.findall(r"with (\d+) pairs", md)) == {"2"}
    assert re.findall(r"runs used \(seeds ([\d, ]+)\), (\d+) epochs", md) == [("0, 1", "2")] * 3
    assert "Epochs completed by finished runs: 2." in md
    assert "5 pairs" not in md and "5 seeds" not in md
    assert md.count("its runs stopped at epoch 2, and the observation is about what happens after epoch ~10") == 2
    assert "Nadam beat Adam on 2 of 2 seeds" in md

    # no claim about optimizers that did not all run is decided; those that did are
    verdicts = claim_verdicts(exp)
    ran = {"sgd", "adam", "nadam"}
    for claim, needs in CLAIM_OPTIMIZERS.items():
        if not needs <= ran:
            assert verdicts[claim] == "not tested", (claim, verdicts[claim])
    assert verdicts[6] == "supported"
    five = next(r for r in read_csv(exp / "claims.csv") if r["test"] == "5")
    assert "no finished runs of momentum, nesterov, adagrad, rmsprop, adamax" in five["note"]
    one = next(r for r in read_csv(exp / "claims.csv") if r["test"] == "1")
    assert one["note"] == "no finished runs of 'momentum'"

    # a largest increase is never negative (val loss only falls here)
    for row in read_csv(exp / "summary.csv"):
        if row["max_val_loss_jump_n"] != "0":
            assert float(row["max_val_loss_jump_mean"]) >= 0.0, row["label"]

    # every figure the report embeds exists
    embedded = re.findall(r"\]\(([\w.]+\.png)\)", md)
    assert {"train_loss.png", "validation.png", "pairings.png", "test_acc.png"} <= set(embedded)
    for name in embedded:
        assert (exp / name).read_bytes()[:8] == PNG_MAGIC, name


def test_a_report_that_fails_half_way_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    """Writes that replace earlier output are atomic as a set: the new PNGs are drawn aside and
    swapped in only when everything is ready, so a failure (a full disk, a plotting error) after
    the first figure keeps the old report.md, tables and figures, and leaves no staging folder."""
    from torchopt_review.report import plots, write

    exp = make_experiment(tmp_path / "exp")
    write_report(exp)
    before = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    assert "report.md" in before and "train_loss.png" in before

    real = plots._make_plots

    def draw_one_then_fail(plt, out_dir, *args):
        (out_dir / "train_loss.png").write_bytes(b"half a new figure")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plots, "_make_plots", draw_one_then_fail)
    with pytest.raises(OSError):
        write.write_report(exp)
    after = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in exp.iterdir() if p.name.startswith(".report-")] == []
    monkeypatch.setattr(plots, "_make_plots", real)
