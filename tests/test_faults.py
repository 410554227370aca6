"""Faults during a run: divergence, SIGKILL at any moment, a review killed or interrupted.

All with real processes and real signals (processes forked by the zygote of
tests/proc_harness.py: each is a separate process in its own process group, killed with
``SIGKILL``), on the small synthetic IDX files, on CPU.

- Divergence (a NaN/inf loss) is a *result*: train exits 0, run.json says ``diverged`` with the
  epoch and the exact optimizer step (checked against an independent re-computation of the loss
  sequence without Lightning), metrics.csv and TensorBoard keep exactly the epochs before it, and
  a review goes on with its other runs.
- Kill -9 at many moments (after k epochs, mid-epoch, in validation, before/while/after the
  checkpoint write, in the test pass, at seeded random offsets, several kills in a row); after
  each kill every file of the run folder must be readable, and the same command must finish with
  exactly the metrics.csv (all but wall_s), diagnostics.csv, test metrics and TensorBoard curves
  of an uninterrupted run: no epoch lost or duplicated, no event duplicated after resume.
  Deterministic kill points are monkeypatched in by tests/killpoints/killpoints.py when
  ``KILL_PAUSE`` is set (the process announces the point on stderr and sleeps there).
- A review killed (SIGKILL to its process group, workers included) or interrupted (SIGINT, as
  Ctrl-C sends it) and started again: every run ends ``done`` exactly once, finished runs are not
  retrained, no CSV has a duplicated row.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import re
import signal
import textwrap
import time
from pathlib import Path

import pytest
import torch

from proc_harness import Child, assert_every_file_parses, cli, zygote

TRAIN, REVIEW = "torchopt_review.train", "torchopt_review.review"
EPOCHS = 3


def small(data_dir: Path, *extra: str, opt: str = "adam", epochs: int = EPOCHS) -> list[str]:
    """3 Lightning batches of 2 optimizer steps per epoch; diagnostics and the step curve every 4
    steps, so TensorBoard holds events in the middle of epochs too (what a resume must purge)."""
    return ["--opt", opt, "--epochs", str(epochs), "--data-dir", str(data_dir), "--limit-batches", "6",
            "--set", "trainer.steps_per_batch=2", "--set", "data.val_size=200", "--set", "trainer.log_every_n_steps=4",
            "--set", "trainer.diagnostics_every_n_steps=4", "--no-progress", *extra]


def csv_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in rows]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the run as TensorBoard shows it (purges applied)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def run_dir_of(cwd: Path, opt: str = "adam") -> Path:
    return cwd / "runs" / "default" / opt / "seed0"


# -- divergence -------------------------------------------------------------------------------------

def first_nonfinite_step(data_dir: Path, opt: str, lr: float, *, steps_per_epoch: int, epochs: int) -> tuple[int, int] | None:
    """(epoch, step) of the first non-finite training loss, recomputed without Lightning from the
    library pieces (same init seed, split, per-epoch order, mini-batches): the oracle for the step
    that run.json must report."""
    import torch.nn.functional as F

    from torchopt_review.config import load_config
    from torchopt_review.data import epoch_permutation, load_fashion_mnist, split_indices, to_float
    from torchopt_review.models import build_model
    from torchopt_review.optim import create_optimizer

    cfg = load_config(opt, [], {"optim": {"lr": lr}, "data": {"val_size": 200}})
    ds = load_fashion_mnist(data_dir)
    train_idx, _ = split_indices(len(ds.train_labels), cfg.data.split, cfg.data.val_size, cfg.seed)
    x, y = ds.train_images[train_idx], ds.train_labels[train_idx]
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model.name)
    optimizer = create_optimizer(opt, model.parameters(), semantics=cfg.optim.semantics, lr=cfg.optim.lr, **cfg.optim.kwargs)
    bs, step = cfg.trainer.batch_size, 0
    for epoch in range(epochs):
        order = epoch_permutation(len(y), cfg.seed, epoch)
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            loss = F.cross_entropy(model(to_float(x[idx])), y[idx])
            step += 1
            if not torch.isfinite(loss):
                return epoch + 1, step
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return None


DIVERGING = [  # (optimizer, lr, log_every_n_steps): the window size moves where the NaN is noticed
    ("sgd", "1e6", 50),
    ("adagrad", "1e9", 50),
    ("sgd", "1", 50),
    ("sgd", "1", 1),
    ("momentum", "0.5", 4),
    ("nesterov", "0.5", 2),
]


@pytest.mark.parametrize("opt, lr, every", DIVERGING, ids=[f"{o}-lr{l}-log{e}" for o, l, e in DIVERGING])
def test_divergence_is_a_clean_result(opt, lr, every, synthetic_data_dir, tmp_path):
    epochs, steps_per_epoch = 6, 3
    args = ["--opt", opt, "--lr", lr, "--epochs", str(epochs), "--data-dir", str(synthetic_data_dir),
            "--limit-batches", str(steps_per_epoch), "--set", "trainer.steps_per_batch=2", "--set", "data.val_size=200",
            "--set", f"trainer.log_every_n_steps={every}", "--set", "trainer.diagnostics_every_n_steps=2", "--no-progress"]
    res = cli(TRAIN, *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr  # a result, not a failure
    assert "Traceback" not in res.stderr
    expected = first_nonfinite_step(synthetic_data_dir, opt, float(lr), steps_per_epoch=steps_per_epoch, epochs=epochs)
    assert expected is not None, f"{opt} lr {lr} no longer diverges in {epochs} epochs: pick a larger lr"
    epoch, step = expected
    run_dir = run_dir_of(tmp_path, opt)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "diverged" and record["diverged"] == {"epoch": epoch, "step": step}
    assert record["epochs_completed"] == epoch - 1 and record["test"] is None
    assert res.stderr.strip().splitlines()[-1].startswith(f"diverged: non-finite loss at epoch {epoch}, step {step}")
    rows = csv_rows(run_dir / "metrics.csv")  # exactly the epochs before the divergence
    assert [int(r["epoch"]) for r in rows] == list(range(1, epoch))
    assert [int(r["step"]) for r in rows] == [e * steps_per_epoch for e in range(1, epoch)]
    assert all(math.isfinite(float(r[k])) for r in rows for k in ("train_loss", "val_loss"))
    curves = scalars(run_dir)
    assert [s for s, _ in curves.get("val/acc", [])] == [e * steps_per_epoch for e in range(1, epoch)]
    assert all(s < step for s, _ in curves.get("train/loss_step", []))  # nothing logged from the NaN on
    assert_every_file_parses(run_dir, allow_temp=False)
    again = cli(TRAIN, *args, cwd=tmp_path)  # the same command: a result already, not retried
    assert again.returncode == 0 and "already diverged" in again.stderr
    assert json.loads((run_dir / "run.json").read_text()) == record


def test_the_divergence_table_covers_later_epochs(synthetic_data_dir):
    """The table must hold divergences after epoch 1 (so 'metrics up to there' is not vacuous)."""
    epochs = {first_nonfinite_step(synthetic_data_dir, o, float(l), steps_per_epoch=3, epochs=6)[0] for o, l, _ in DIVERGING}
    assert min(epochs) == 1 and max(epochs) >= 2, epochs


def test_review_goes_on_after_a_divergence(synthetic_data_dir, tmp_path):
    (tmp_path / "r.yaml").write_text(textwrap.dedent("""\
        experiment: nan
        seeds: [0]
        overrides: {data: {val_size: 200}, trainer: {epochs: 2, steps_per_batch: 2, diagnostics: false}}
        runs:
          sgd-huge: {optim: {name: sgd, lr: 1.0e+6}}
          adam: {}
    """))
    res = cli(REVIEW, "--config", "r.yaml", "--logdir", "runs", "--data-dir", str(synthetic_data_dir),
              "--limit-batches", "3", "--in-process", "--no-report", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "1 done, 1 diverged, 0 failed" in res.stderr
    assert re.search(r"diverged: sgd-huge/seed0 at epoch 1, step \d", res.stderr)
    exp = tmp_path / "runs" / "nan"
    assert json.loads((exp / "sgd-huge/seed0/run.json").read_text())["status"] == "diverged"
    assert json.loads((exp / "adam/seed0/run.json").read_text())["status"] == "done"


# -- kill -9 during a run --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference(synthetic_data_dir, tmp_path_factory) -> dict:
    """The uninterrupted run every killed-and-resumed run must reproduce."""
    cwd = tmp_path_factory.mktemp("reference")
    t0 = time.monotonic()
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=cwd)
    duration = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    run_dir = run_dir_of(cwd)
    return {
        "run_dir": run_dir, "duration": duration,
        "metrics": without_wall(csv_rows(run_dir / "metrics.csv")),
        "diagnostics": (run_dir / "diagnostics.csv").read_text(),
        "test": json.loads((run_dir / "run.json").read_text())["test"],
        "scalars": scalars(run_dir),
    }


def epoch_lines(child: Child) -> int:
    return len(re.findall(r"^epoch +\d+/", child.stderr, flags=re.M))


def start(cwd: Path, data_dir: Path, pause: str | None = None) -> Child:
    env = {"KILL_PAUSE": pause, "KILL_PAUSE_S": "120"} if pause else {}
    return zygote().spawn(TRAIN, small(data_dir), cwd=cwd, env=env)


def kill_at_pause(cwd: Path, data_dir: Path, point: str) -> None:
    child = start(cwd, data_dir, pause=point)
    child.wait_for(lambda: f"test-pause: {point}" in child.stderr, what=f"the pause at {point}")
    assert child.kill() == -signal.SIGKILL


def assert_same_as_reference(cwd: Path, ref: dict) -> None:
    run_dir = run_dir_of(cwd)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "done" and record["epochs_completed"] == EPOCHS
    assert without_wall(csv_rows(run_dir / "metrics.csv")) == ref["metrics"]
    assert (run_dir / "diagnostics.csv").read_text() == ref["diagnostics"]
    assert record["test"] == ref["test"]
    assert_every_file_parses(run_dir, allow_temp=False)
    curves = scalars(run_dir)
    val = curves["val/acc"]  # one point per epoch, steps strictly increasing: nothing duplicated
    assert [s for s, _ in val] == [s for s, _ in ref["scalars"]["val/acc"]]
    for tag, points in curves.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicated or out-of-order steps after resume: {steps}"
    assert set(curves) == set(ref["scalars"])
    for tag in ("val/acc", "val/loss", "train/loss", "train/loss_step", "lr/group0"):
        assert curves[tag] == ref["scalars"][tag], tag


def test_sigterm_mid_epoch_exits_143_and_the_same_command_resumes(reference, synthetic_data_dir, tmp_path):
    """SIGTERM (a scheduler's pre-emption, scancel) in the middle of epoch 2: one line, exit status
    143 (not 0: a scheduler must not see success), run.json says terminated, epoch 1 kept; the
    same command then finishes exactly as the uninterrupted run."""
    child = zygote().spawn(TRAIN, small(synthetic_data_dir), cwd=tmp_path,
                           env={"KILL_PAUSE": "train_batch@2", "KILL_PAUSE_S": "3"})
    child.wait_for(lambda: "test-pause: train_batch@2" in child.stderr, what="the pause in epoch 2")
    child.signal(signal.SIGTERM, group=False)
    assert child.wait(120) == 143, child.stderr
    assert "terminated (SIGTERM)" in child.stderr and "Traceback" not in child.stderr
    run_dir = run_dir_of(tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "terminated (SIGTERM)"
    assert len(csv_rows(run_dir / "metrics.csv")) == 1 and record["epochs_completed"] == 1
    assert_every_file_parses(run_dir, allow_temp=False)
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(tmp_path, reference)


SLOW = pytest.mark.slow  # more of the same kind of kill point: `make test-slow`

HOOK_POINTS = [  # (id, pauses in order, one process each, then the same command to the end)
    ("mid-epoch-2", ["train_batch@2"]),
    ("validation-2", ["val@2"]),
    ("before-checkpoint-2", ["before_ckpt@2"], SLOW),
    ("checkpoint-tmp-1", ["ckpt_tmp@1"]),  # no checkpoint yet: the run starts over, nothing of the first try kept
    ("checkpoint-tmp-2", ["ckpt_tmp@2"]),
    ("after-checkpoint-before-csv-2", ["before_csv@2"]),
    ("test-pass", [f"test@{EPOCHS}"]),
    ("three-kills", ["before_csv@1", "train_batch@2", f"val@{EPOCHS}"]),
]


@pytest.mark.parametrize("points", [pytest.param(h[1], id=h[0], marks=h[2:]) for h in HOOK_POINTS])
def test_kill_at_a_chosen_point_then_resume(points, reference, synthetic_data_dir, tmp_path):
    for point in points:
        kill_at_pause(tmp_path, synthetic_data_dir, point)
        run_dir = run_dir_of(tmp_path)
        assert_every_file_parses(run_dir)
        assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
        name, epoch = point.split("@")
        epoch = int(epoch)
        # what the kill left: the CSV lags the checkpoint only between the rename and the rewrite
        in_ckpt = {"test": epoch, "before_csv": epoch}.get(name, epoch - 1)
        in_csv = epoch if name == "test" else epoch - 1
        assert len(csv_rows(run_dir / "metrics.csv")) == in_csv
        if in_ckpt:
            state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
            assert state["opt_steps"] == 6 * in_ckpt
        else:
            assert not (run_dir / "last.ckpt").exists()
        if name == "ckpt_tmp":
            assert list(run_dir.glob(".last.ckpt.*.tmp"))  # the kill hit between the write and the rename
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(tmp_path, reference)


@pytest.mark.parametrize("k", [1, pytest.param(2, marks=SLOW)])
def test_kill_after_k_epoch_lines_then_resume(k, reference, synthetic_data_dir, tmp_path):
    child = start(tmp_path, synthetic_data_dir)
    child.wait_for(lambda: epoch_lines(child) >= k, what=f"{k} epoch lines")
    child.kill()
    assert_every_file_parses(run_dir_of(tmp_path))
    assert len(csv_rows(run_dir_of(tmp_path) / "metrics.csv")) >= k
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"epoch   {k}/" not in res.stderr  # resumed after epoch k, not retrained
    assert_same_as_reference(tmp_path, reference)


def test_ctrl_c_then_resume(reference, synthetic_data_dir, tmp_path):
    """SIGINT (Ctrl-C) mid-epoch: exit 130 with the resume hint, no traceback; the same command
    resumes. (Lightning turns Ctrl-C into sys.exit(1) and then ignores SIGINT; train.run gives the
    interrupt back.)"""
    child = start(tmp_path, synthetic_data_dir, pause="train_batch@2")
    child.wait_for(lambda: "test-pause: train_batch@2" in child.stderr, what="the pause")
    child.signal(signal.SIGINT)
    assert child.wait(60) == 130, child.stderr
    lines = [l for l in child.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("interrupted: finished epochs are checkpointed; run the same command to resume")
    assert "Traceback" not in child.stderr
    record = json.loads((run_dir_of(tmp_path) / "run.json").read_text())
    assert record["status"] == "failed" and record["error"].startswith("interrupted")
    assert_every_file_parses(run_dir_of(tmp_path), allow_temp=False)
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(tmp_path, reference)


SEED = int(os.environ.get("FAULT_SEED", "20240607"))


@pytest.mark.parametrize("i", [0, pytest.param(1, marks=SLOW), pytest.param(2, marks=SLOW)])
def test_kill_at_a_random_moment_then_resume(i, reference, synthetic_data_dir, tmp_path):
    """SIGKILL after a seeded random fraction of the uninterrupted run's duration (set
    FAULT_SEED to explore other moments); a run that finished first is fine too."""
    delay = random.Random(SEED + i).uniform(0.05, 0.95) * reference["duration"]
    child = start(tmp_path, synthetic_data_dir)
    time.sleep(delay)
    status = child.kill()
    print(f"killed after {delay:.2f} s (status {status}, {epoch_lines(child)} epoch lines)")
    run_dir = run_dir_of(tmp_path)
    if run_dir.exists():
        assert_every_file_parses(run_dir)
    res = cli(TRAIN, *small(synthetic_data_dir), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert_same_as_reference(tmp_path, reference)


# -- a review killed or interrupted, then started again --------------------------------------------------

REVIEW_YAML = """\
experiment: k
seeds: [0, 1]
overrides: {data: {val_size: 200}, trainer: {epochs: 2, steps_per_batch: 2, diagnostics_every_n_steps: 2}}
runs: {sgd: {}, adam: {}}
"""


def review_args(data_dir: Path, *extra: str) -> list[str]:
    return ["--config", "r.yaml", "--logdir", "runs", "--data-dir", str(data_dir), "--limit-batches", "4", *extra]


def assert_no_duplicated_csv_rows(folder: Path) -> int:
    n = 0
    for p in folder.rglob("*.csv"):
        lines = p.read_text().splitlines()
        assert len(lines) == len(set(lines)), f"{p} has duplicated rows"
        n += 1
    return n


def run_jsons(exp: Path) -> dict[str, dict]:
    return {f"{p.parent.parent.name}/{p.parent.name}": json.loads(p.read_text()) for p in exp.glob("*/seed*/run.json")}


@pytest.mark.parametrize("mode, sig", [
    (["--in-process"], signal.SIGKILL),
    (["--in-process"], signal.SIGINT),
    (["--workers", "1"], signal.SIGKILL),
], ids=["in-process-kill9", "in-process-ctrl-c", "worker-kill9-group"])
def test_review_killed_then_restarted(mode, sig, synthetic_data_dir, tmp_path):
    (tmp_path / "r.yaml").write_text(REVIEW_YAML)
    exp = tmp_path / "runs" / "k"
    # the review's run order is seed-major: sgd/seed0, adam/seed0, sgd/seed1, adam/seed1. Pause the
    # second run (adam/seed0) in its second epoch, after sgd/seed0 finished.
    env = {"KILL_PAUSE": "adam/seed0:train_batch@2", "KILL_PAUSE_S": "120"}
    first = zygote().spawn(REVIEW, review_args(synthetic_data_dir, *mode, "--no-report"), cwd=tmp_path, env=env)
    log = lambda: "".join(p.read_text(errors="replace") for p in [first.stderr_path, *exp.glob(".review-logs/*.log")]
                          if p.exists())
    first.wait_for(lambda: "test-pause: train_batch@2" in log(), timeout=240, what="the first run to pause")
    done_before = {k: v for k, v in run_jsons(exp).items() if v["status"] == "done"}
    first.signal(sig)  # to the whole process group, workers included, as a terminal's Ctrl-C does
    status = first.wait(120)
    if sig == signal.SIGINT:
        assert status == 130, first.stderr
        assert "interrupted" in first.stderr and "Traceback" not in first.stderr
    else:
        assert status == -signal.SIGKILL
    for run_dir in exp.glob("*/seed*"):
        assert_every_file_parses(run_dir)
    second = cli(REVIEW, *review_args(synthetic_data_dir, *mode), cwd=tmp_path, timeout=400)
    assert second.returncode == 0, second.stderr
    assert "4 runs: 4 done, 0 diverged, 0 failed" in second.stderr
    records = run_jsons(exp)
    assert sorted(records) == ["adam/seed0", "adam/seed1", "sgd/seed0", "sgd/seed1"]
    for key, rec in records.items():
        assert rec["status"] == "done" and rec["epochs_completed"] == 2, key
        rows = csv_rows(exp / key / "metrics.csv")
        assert [r["epoch"] for r in rows] == ["1", "2"], key
        assert_every_file_parses(exp / key, allow_temp=False)
        val_steps = [s for s, _ in scalars(exp / key)["val/acc"]]
        assert val_steps == [4, 8], (key, val_steps)
    for key, rec in done_before.items():  # finished before the kill: skipped, not retrained
        assert records[key]["started"] == rec["started"], key
    assert "sgd/seed0" in done_before and f"{len(done_before)} finished before (skipped)" in second.stderr
    assert assert_no_duplicated_csv_rows(exp) >= 8 + 1  # 4 x (metrics, diagnostics) + the report's summary.csv
    assert (exp / "report.md").exists()
    third = cli(REVIEW, *review_args(synthetic_data_dir, *mode, "--no-report"), cwd=tmp_path)
    assert third.returncode == 0 and "4 finished before (skipped), 0 to run" in third.stderr
    assert run_jsons(exp) == records


@pytest.mark.parametrize("point", ["ckpt_tmp@2", "before_ckpt@2", "ckpt_tmp@1"])
def test_stacked_review_killed_resumes_to_the_uninterrupted_result(point, synthetic_data_dir, tmp_path):
    """The stacked engine killed with SIGKILL while one run's checkpoint is half written (the
    stack's runs then hold checkpoints of different epochs): the same command finishes, and every
    run's metrics.csv (all but wall_s), diagnostics.csv, test metrics and TensorBoard val curve
    equal those of an uninterrupted stacked review."""
    (tmp_path / "r.yaml").write_text(REVIEW_YAML)
    args = lambda logdir: ["--config", "r.yaml", "--logdir", logdir, "--data-dir", str(synthetic_data_dir),  # noqa: E731
                           "--limit-batches", "4", "--engine", "stacked", "--no-report"]
    ref = cli(REVIEW, *args("ref"), cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    env = {"KILL_PAUSE": f"sgd/seed0:{point}", "KILL_PAUSE_S": "120"}
    first = zygote().spawn(REVIEW, args("runs"), cwd=tmp_path, env=env)
    first.wait_for(lambda: f"test-pause: {point}" in first.stderr, timeout=240, what="the pause")
    assert first.kill() == -signal.SIGKILL
    exp, ref_exp = tmp_path / "runs" / "k", tmp_path / "ref" / "k"
    for run_dir in exp.glob("*/seed*"):
        assert_every_file_parses(run_dir)
    second = cli(REVIEW, *args("runs"), cwd=tmp_path, timeout=400)
    assert second.returncode == 0, second.stderr
    assert "4 runs: 4 done, 0 diverged, 0 failed" in second.stderr
    got, want = run_jsons(exp), run_jsons(ref_exp)
    assert sorted(got) == sorted(want) == ["adam/seed0", "adam/seed1", "sgd/seed0", "sgd/seed1"]
    for key in want:
        assert got[key]["status"] == "done" and got[key]["engine"] == "stacked"
        assert got[key]["test"] == want[key]["test"], key
        assert without_wall(csv_rows(exp / key / "metrics.csv")) == without_wall(csv_rows(ref_exp / key / "metrics.csv"))
        assert csv_rows(exp / key / "diagnostics.csv") == csv_rows(ref_exp / key / "diagnostics.csv"), key
        assert scalars(exp / key)["val/acc"] == scalars(ref_exp / key)["val/acc"], key
        assert_every_file_parses(exp / key, allow_temp=False)
    assert assert_no_duplicated_csv_rows(exp) >= 8
