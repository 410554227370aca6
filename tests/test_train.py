"""The training CLI end to end on synthetic IDX files: files written, TensorBoard tags, resume."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "data.val_size=200", "--limit-batches", "6", "--set", "trainer.steps_per_batch=4",
        "--set", "trainer.diagnostics_every_n_steps=4"]
SMALL = [*TINY, "--no-progress"]


def train(*args: str, cwd: Path, check: bool = True, path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if path is not None:
        env["PATH"] = f"{path}:{env['PATH']}"
    proc = subprocess.run([sys.executable, "-m", "torchopt_review.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def smoke_run(synthetic_data_dir, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("smoke")
    # a machine with SLURM's srun on PATH (a login node): Lightning must not ask for srun
    bin_dir = cwd / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "srun").chmod(0o755)
    # with the progress line on: stderr is a pipe here, not a terminal
    proc = train("--opt", "adam", "--epochs", "2", "--data-dir", str(synthetic_data_dir), *TINY, cwd=cwd, path=bin_dir)
    return cwd, cwd / "runs" / "default" / "adam" / "seed0", proc


def test_files_and_csv(smoke_run):
    cwd, run_dir, proc = smoke_run
    names = {p.name for p in run_dir.iterdir()}
    assert {"metrics.csv", "run.json", "last.ckpt", "diagnostics.csv", "hparams.yaml"} <= names
    assert any(n.startswith("events.out.tfevents") for n in names)
    table = rows(run_dir / "metrics.csv")
    assert list(table[0]) == ["epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]
    assert [r["epoch"] for r in table] == ["1", "2"] and [r["step"] for r in table] == ["6", "12"]
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["train_loss"]) > 0 for r in table)
    assert float(table[1]["train_loss"]) < float(table[0]["train_loss"])  # it learns
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "done" and record["epochs_completed"] == 2
    assert 0 <= record["test"]["acc"] <= 1 and record["config"]["optim"]["name"] == "adam"
    assert record["versions"]["torch"] and record["device"] == "cpu"
    assert "epoch   2/2" in proc.stderr and "test accuracy" in proc.stderr  # one summary line per epoch


def test_tensorboard_tags(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir, _ = smoke_run
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr/group0", "train/loss_step"} <= tags
    assert "weights/eff_lr_p50/fc1.weight" in tags  # diagnostics after the curves, named by layer (test_tensorboard.py)
    assert [e.step for e in acc.Scalars("val/acc")] == [6, 12]
    csv_val = [float(r["val_acc"]) for r in rows(run_dir / "metrics.csv")]
    assert [round(e.value, 5) for e in acc.Scalars("val/acc")] == [round(v, 5) for v in csv_val]


def test_redirected_output_is_one_line_per_epoch(smoke_run):
    """Not a terminal (a file, a pipe, CI): no progress line redrawn as new lines, nothing on
    stdout; the summary line of each epoch and the test result are the whole output (also with
    srun on PATH: no Lightning hint to launch a one-process run with srun)."""
    _, _, proc = smoke_run
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr and len(lines) == 3, lines
    assert lines[0].startswith("epoch   1/2  train loss") and lines[1].startswith("epoch   2/2  train loss")
    assert lines[2].startswith("test accuracy")


def test_same_command_again_skips_finished_run(smoke_run, synthetic_data_dir):
    cwd, run_dir, _ = smoke_run
    before = (run_dir / "metrics.csv").read_text()
    proc = train("--opt", "adam", "--epochs", "2", "--data-dir", str(synthetic_data_dir), *SMALL, cwd=cwd)
    assert "already done" in proc.stderr and (run_dir / "metrics.csv").read_text() == before


def test_resume_extends_exactly(synthetic_data_dir, tmp_path):
    """2 epochs, then the same run to 3 epochs == 3 epochs straight (all but wall-clock)."""
    common = ["--opt", "nesterov", "--data-dir", str(synthetic_data_dir), *SMALL]
    train(*common, "--epochs", "3", "--experiment", "straight", cwd=tmp_path)
    train(*common, "--epochs", "2", "--experiment", "resumed", cwd=tmp_path)
    train(*common, "--epochs", "3", "--experiment", "resumed", cwd=tmp_path)
    strip = lambda p: [{k: v for k, v in r.items() if k != "wall_s"} for r in rows(p)]
    a = strip(tmp_path / "runs/straight/nesterov/seed0/metrics.csv")
    b = strip(tmp_path / "runs/resumed/nesterov/seed0/metrics.csv")
    assert len(a) == 3 and a == b


def test_changed_config_refuses_checkpoint_until_restart(synthetic_data_dir, tmp_path):
    common = ["--opt", "sgd", "--data-dir", str(synthetic_data_dir), *SMALL]
    train(*common, "--epochs", "2", cwd=tmp_path)
    run_dir = tmp_path / "runs/default/sgd/seed0"
    record = json.loads((run_dir / "run.json").read_text())
    record["status"] = "running"  # as if killed after the checkpoint
    (run_dir / "run.json").write_text(json.dumps(record))
    proc = train(*common, "--epochs", "2", "--lr", "0.05", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--restart" in proc.stderr and "Traceback" not in proc.stderr
    proc = train(*common, "--epochs", "2", "--lr", "0.05", "--restart", cwd=tmp_path)
    assert json.loads((run_dir / "run.json").read_text())["lr"] == 0.05


def test_help_lists_every_optimizer():
    from torchopt_review.optim.registry import REGISTRY

    proc = subprocess.run([sys.executable, "-m", "torchopt_review.train", "--help"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0
    for name, spec in REGISTRY.items():
        assert f"{name}  " in proc.stdout and spec.description[:30] in proc.stdout.replace("\n", " ")


def test_help_is_fast_and_imports_no_torch():
    """--help and argument errors answer before torch is imported (seconds on a loaded machine)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "torchopt_review.train", "--help"], capture_output=True,
                              text=True, env=env, timeout=60)
        times.append(time.perf_counter() - t0)
        assert proc.returncode == 0 and "optimizers:" in proc.stdout
    assert sorted(times)[1] < 2.0, times  # median of 3; ~0.3 s on an idle machine, >4 s when torch is imported
    probe = ("import sys\nfrom torchopt_review.train import main\n"
             "for argv in (['--help'], ['--bogus'], ['--data-dir', 'no/such/dir']):\n"
             "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
             "print('torch' in sys.modules, 'lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "False False", proc.stdout + proc.stderr
    assert "Fashion-MNIST not found: no/such/dir does not exist" in proc.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Module:
    """What the progress line reads of the LightningModule."""

    def __init__(self):
        self.opt_steps, self.running_metrics = 0, None


def _trainer(epoch: int):
    return types.SimpleNamespace(current_epoch=epoch, state=types.SimpleNamespace(fn="fit"))


def test_progress_line_counts_steps_from_epoch_1_on_a_terminal():
    from lightning_module.progress import StepProgress

    out, module = _Terminal(), _Module()
    bar = StepProgress(2, 1688, stream=out, refresh_s=0.0)
    bar.on_train_epoch_start(_trainer(0), module)
    module.opt_steps, module.running_metrics = 960, (0.51234, 0.8123)
    bar.on_train_batch_end(_trainer(0), module, None, None, 29)  # Lightning's batch 30 of 53: step 960
    shown = out.getvalue().split("\r")[-1]
    assert shown.startswith("epoch 1/2   960/1688 [") and "loss 0.5123  acc 81.23%" in shown and "ETA" in shown
    bar.on_train_epoch_end(_trainer(0), module)  # erased: the epoch's summary line takes its place
    assert out.getvalue().endswith("\r" + " " * len(shown) + "\r")
    # the second epoch counts its own steps, from 1
    bar.on_train_epoch_start(_trainer(1), module)
    module.opt_steps = 960 + 1688
    bar.on_train_batch_end(_trainer(1), module, None, None, 52)
    assert out.getvalue().split("\r")[-1].startswith("epoch 2/2  1688/1688 [================]")
    assert "\n" not in out.getvalue()  # redrawn in place, never a new line


def test_progress_line_draws_nothing_when_not_a_terminal():
    from lightning_module.progress import StepProgress

    out, module = io.StringIO(), _Module()
    bar = StepProgress(2, 100, stream=out, refresh_s=0.0)
    bar.on_train_epoch_start(_trainer(0), module)
    module.opt_steps = 50
    bar.on_train_batch_end(_trainer(0), module, None, None, 1)
    bar.on_train_epoch_end(_trainer(0), module)
    assert out.getvalue() == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tensorboard_serves_the_run(smoke_run):
    """TensorBoard started in-process on a free localhost port lists the run and its scalar tags."""
    from tensorboard import program

    cwd, run_dir, _ = smoke_run
    port = _free_port()
    tb = program.TensorBoard()
    tb.configure(argv=[None, "--logdir", str(cwd / "runs"), "--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"])
    server = tb._make_server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        runs: list[str] = []
        while time.time() < deadline:
            runs = json.loads(urllib.request.urlopen(f"{base}/data/runs", timeout=10).read())
            if runs:
                break
            time.sleep(0.5)
        assert "default/adam/seed0" in runs
        tags = json.loads(urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=10).read())
        assert "val/acc" in tags["default/adam/seed0"]
    finally:
        server.shutdown()


def test_mistakes_grid_shows_the_test_images_the_model_gets_wrong(smoke_run, synthetic_data_dir):
    """The torchvision grid at the end of a run holds exactly the first (up to 64) misclassified
    test images, re-computed here from the checkpoint's weights with a plain model."""
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from torchopt_review.data import load_fashion_mnist, to_float
    from torchopt_review.models import build_model

    _, run_dir, _ = smoke_run
    state = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    model = build_model("blog_mlp")
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    ds = load_fashion_mnist(str(synthetic_data_dir))
    x, y = ds.test_images[:1000], ds.test_labels[:1000]
    with torch.no_grad():
        wrong = int((model(to_float(x)).argmax(1) != y).sum())
    shown = min(wrong, 64)
    assert shown > 0
    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    (image,) = acc.Images("test/mistakes")
    cols, rows_ = min(shown, 8), -(-shown // 8)  # make_grid: 8 per row, 2 px padding around 28 px images
    assert (image.width, image.height) == (cols * 30 + 2, rows_ * 30 + 2)
