"""Smoke tests of ``python -m torchopt_review.bench``: every subcommand runs on tiny sizes with
``--quick`` and prints its tables. No timing is asserted (the machine may be shared)."""

from __future__ import annotations

import json

import pytest
import torch

from torchopt_review import bench


def test_optim_quick_prints_every_table(capsys, tmp_path):
    out_json = tmp_path / "optim.json"
    rc = bench.main(["optim", "--quick", "--opts", "sgd,adam,nadam", "--rounds", "1", "--repeats", "2",
                     "--no-first-step", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    for heading in ("[blog] 276,260 params in 12 tensors", "[large]", "targets:", "[memory, large set"):
        assert heading in out
    for contender in ("ours torch", "ours keras", "torch for-loop", "torch foreach", "torch fused"):
        assert contender in out
    data = json.loads(out_json.read_text())
    assert [r["name"] for r in data["sets"]["blog"]] == ["sgd", "adam", "nadam"]
    assert data["sets"]["blog"][1]["bytes_per_param"] == 28


def test_optim_first_step_subprocess(capsys):
    # one fresh process per row, cache warm and empty: the kernel build path is exercised
    rc = bench.main(["optim", "--quick", "--opts", "sgd", "--sets", "blog", "--rounds", "1", "--repeats", "1",
                     "--no-memory"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[first step]" in out and "empty cache" in out and "torch.optim.Adam(fused=True)" in out


def test_epoch_quick_on_synthetic_files(capsys, synthetic_data_dir):
    rc = bench.main(["epoch", "--quick", "--data-dir", str(synthetic_data_dir), "--no-keras", "--steps", "4",
                     "--lightning-default"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "(a) plain loop" in out and "(c) real path" in out and "Keras 3: skipped (--no-keras)" in out
    assert "(e) Lightning's default loop" in out
    assert "MEASURED EPOCHS OF 4 STEPS ONLY" in out
    assert "[profile] real path" in out and "optimizer step" in out and "[profile] plain loop" in out


def test_review_quick_on_synthetic_files(capsys, synthetic_data_dir):
    rc = bench.main(["review", "--quick", "--data-dir", str(synthetic_data_dir), "--opts", "sgd", "--steps", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EXTRAPOLATION to the full blog review" in out
    assert "pool, 1 worker(s)" in out and "stacked (1 process)" in out  # both engines, side by side
    assert "full review, stacked vs the best pool" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize("cmd", ["optim", "epoch", "review"])
def test_gpu_without_cuda_is_one_line_and_exit_2(capsys, cmd):
    assert bench.main([cmd, "--accelerator", "gpu", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --accelerator gpu: no CUDA device is visible")


def test_table_aligns_columns():
    text = bench.table(["a", "bb"], [["x", 1], ["yyyy", 22]])
    lines = text.splitlines()
    assert lines[0] == "a     bb" and lines[1] == "----  --" and lines[3] == "yyyy  22"
