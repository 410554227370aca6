"""Determinism: the same command twice gives the same numbers.

What is and is not deterministic
--------------------------------

CPU (tested here):

- The same command, on the same machine, with the same torch thread count, gives a
  byte-identical metrics.csv except the ``wall_s`` column, a byte-identical diagnostics.csv, the
  same test metrics in run.json and bit-identical weights in last.ckpt. Everything random is
  seeded by ``--seed`` alone: the model's init (``torch.manual_seed(seed)`` right before it is
  built), the split (``random`` split: a generator seeded from the seed), and each epoch's order
  (a generator seeded from (seed, epoch), so a resumed run sees the order an uninterrupted one
  saw). Nothing depends on the process, the time, the PID, hash randomisation or the start method.
- The torch *thread count* is part of "the same command": intra-op reductions (matmul, sums) split
  the work by thread, so ``--threads 1`` and ``--threads 2`` agree only to float rounding (~1e-7
  relative), not bit for bit (``test_thread_count_changes_only_rounding``). The default is torch's
  (the core count), and a review gives each worker ``cores // workers`` threads, so resuming a run
  on a machine with another core count or another ``--workers`` continues with rounding-level
  differences. ``wall_s`` is wall-clock time and never reproducible.
- Across machines (another CPU, BLAS/oneDNN build, torch version, compiler for the C kernels)
  results agree to rounding, not bitwise.

GPU (not tested here: this suite must run without one; stated from how the code and CUDA work):

- The blog MLP uses matmuls (cuBLAS), ReLU, cross-entropy and our optimizers' elementwise
  kernels; none uses atomics, so repeated runs on the *same* GPU model, driver, torch/CUDA
  version and settings are normally bit-identical. Not guaranteed: cuBLAS may pick different
  algorithms across GPU models, library versions or workspace settings (set
  ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for a guarantee), Lightning's ``deterministic=False`` is kept
  for speed (``torch.use_deterministic_algorithms`` is off), and the ``cnn`` model's cuDNN
  convolutions may choose nondeterministic algorithms.
- ``--precision tf32`` or ``bf16-mixed`` change the numbers (by design); the default ``32`` turns
  TF32 off so GPU results stay close to CPU's, but GPU and CPU never agree bitwise.
- A CUDA-graph replay computes the same kernels as eager mode, in the same order.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch

from proc_harness import cli, fresh_cli

TRAIN = "torchopt_review.train"


def args(data_dir: Path, *extra: str) -> list[str]:
    return ["--opt", "nadam", "--epochs", "2", "--data-dir", str(data_dir), "--limit-batches", "6",
            "--set", "trainer.steps_per_batch=2", "--set", "data.val_size=200", "--set", "data.split=random",
            "--set", "trainer.diagnostics_every_n_steps=4", "--seed", "3", "--threads", "2", "--no-progress", *extra]


def run_dir(cwd: Path) -> Path:
    return cwd / "runs" / "default" / "nadam" / "seed3"


def without_wall(path: Path) -> str:
    """metrics.csv as text, the wall_s column cut out (every other byte kept)."""
    rows = list(csv.reader(path.read_text().splitlines()))
    col = rows[0].index("wall_s")
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([r[:col] + r[col + 1:] for r in rows])
    return out.getvalue()


def outputs(cwd: Path) -> dict:
    d = run_dir(cwd)
    record = json.loads((d / "run.json").read_text())
    ckpt = torch.load(d / "last.ckpt", map_location="cpu", weights_only=True)
    return {"metrics": without_wall(d / "metrics.csv"), "diagnostics": (d / "diagnostics.csv").read_text(),
            "test": record["test"], "status": record["status"], "weights": ckpt["state_dict"],
            "optimizer": ckpt["optimizer_states"][0]["state"]}


def assert_identical(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] == "done"
    assert a["metrics"] == b["metrics"]
    assert a["diagnostics"] == b["diagnostics"]
    assert a["test"] == b["test"]
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        assert torch.equal(a["weights"][k], b["weights"][k]), k
    for i in a["optimizer"]:
        for k, v in a["optimizer"][i].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(b["optimizer"][i][k])), (i, k)


@pytest.fixture(scope="module")
def zygote_run(synthetic_data_dir, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("zygote-run")
    res = cli(TRAIN, *args(synthetic_data_dir), cwd=cwd)
    assert res.returncode == 0, res.stderr
    return cwd


def test_same_command_twice_in_fresh_interpreters(zygote_run, synthetic_data_dir, tmp_path):
    """Two genuinely fresh ``python -m torchopt_review.train`` processes (run at the same time),
    and a third forked from the test zygote: byte-identical results but for wall_s."""
    cwds = [tmp_path / "a", tmp_path / "b", zygote_run]
    procs = []
    for c in cwds[:2]:
        c.mkdir()
        procs.append(fresh_cli(TRAIN, *args(synthetic_data_dir), cwd=c))
    for p in procs:
        _, err = p.communicate(timeout=400)
        assert p.returncode == 0, err
    a, b, c = map(outputs, cwds)
    assert len(a["metrics"].splitlines()) == 3
    assert_identical(a, b)
    assert_identical(a, c)
    walls = [[r["wall_s"] for r in csv.DictReader(open(run_dir(x) / "metrics.csv"))] for x in cwds]
    assert all(float(w) > 0 for ws in walls for w in ws)  # the one column left out is real, not constant


def test_the_seed_matters(zygote_run, synthetic_data_dir, tmp_path):
    """The comparison above is not vacuous: another seed gives other numbers."""
    res = cli(TRAIN, *args(synthetic_data_dir, "--seed", "4"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    a = without_wall(run_dir(zygote_run) / "metrics.csv")
    b = without_wall(tmp_path / "runs/default/nadam/seed4/metrics.csv")
    assert a.splitlines()[0] == b.splitlines()[0] and a != b


def test_thread_count_changes_only_rounding(synthetic_data_dir, tmp_path):
    """Documented above: 1 vs 2 threads agree to rounding. (Bitwise equality is not promised.)"""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    for cwd, n in ((one, "1"), (two, "2")):
        res = cli(TRAIN, *args(synthetic_data_dir), "--threads", n, cwd=cwd)
        assert res.returncode == 0, res.stderr
    rows = [list(csv.DictReader(open(run_dir(c) / "metrics.csv"))) for c in (one, two)]
    for r1, r2 in zip(*rows):
        assert (r1["epoch"], r1["step"], r1["lr"]) == (r2["epoch"], r2["step"], r2["lr"])
        for k in ("train_loss", "val_loss", "train_acc", "val_acc"):
            assert float(r1[k]) == pytest.approx(float(r2[k]), rel=1e-5, abs=1e-6), k
