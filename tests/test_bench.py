"""Tests of ``python -m torchopt_review.bench``: every subcommand runs on tiny sizes with
``--quick`` and prints its tables; argument errors are one line and exit status 2; the timing
and profiling helpers do what they say. No timing is asserted (the machine may be shared)."""

from __future__ import annotations

import json
import re

import pytest
import torch

from torchopt_review.bench import main
from torchopt_review.bench import optim as bench_optim
from torchopt_review.bench.profile import CategoryTimer, instrument_training_path
from torchopt_review.bench.timing import interleave, table


def test_optim_quick_prints_every_table(capsys, tmp_path):
    out_json = tmp_path / "optim.json"
    rc = main(["optim", "--quick", "--opts", "sgd,adam,nadam", "--rounds", "1", "--repeats", "2",
               "--no-first-step", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0
    for heading in ("[blog] 276,260 params in 12 tensors, 1 torch thread(s)", "[large]", "[overhead]", "targets:",
                    "[memory, large set"):
        assert heading in out
    for contender in ("ours torch", "ours keras", "torch for-loop", "torch foreach", "torch fused"):
        assert contender in out
    data = json.loads(out_json.read_text())
    assert data["threads"] == [1]
    assert [r["name"] for r in data["sets"]["blog"]] == ["sgd", "adam", "nadam"]
    assert data["sets"]["blog"][1]["bytes_per_param"] == 28
    assert {r["threads"] for r in data["sets"]["large"]} == {1}
    assert set(data["overhead"]) == {"sgd", "adam", "nadam"}


def test_optim_threads_list_times_every_contender_at_each_count(capsys, tmp_path, monkeypatch):
    seen: dict[int, set[str]] = {}
    real_step_timer = bench_optim.step_timer

    def recording_step_timer(opt, steps, sync):
        run = real_step_timer(opt, steps, sync)

        def timed():  # which thread count this contender's round really ran at
            seen.setdefault(torch.get_num_threads(), set()).add(type(opt).__module__.split(".")[0])
            return run()
        return timed

    monkeypatch.setattr(bench_optim, "step_timer", recording_step_timer)
    threads_before = torch.get_num_threads()
    out_json = tmp_path / "optim.json"
    rc = main(["optim", "--quick", "--opts", "adam", "--sets", "blog", "--threads", "1,2", "--rounds", "1",
               "--repeats", "1", "--no-memory", "--no-first-step", "--json", str(out_json)])
    torch.set_num_threads(threads_before)
    out = capsys.readouterr().out
    assert rc == 0
    assert "1 and 2 torch threads" in out
    assert "[blog] 276,260 params in 12 tensors, 1 torch thread(s)" in out
    assert "[blog] 276,260 params in 12 tensors, 2 torch thread(s)" in out
    assert seen[1] == seen[2] == {"torch", "torchopt_review"}  # ours and torch's, at both counts
    data = json.loads(out_json.read_text())
    assert data["threads"] == [1, 2]
    assert [(r["name"], r["threads"]) for r in data["sets"]["blog"]] == [("adam", 1), ("adam", 2)]
    targets = out[out.index("targets:"):]
    assert re.search(r"^blog\s+1\s+adam\s", targets, re.M) and re.search(r"^blog\s+2\s+adam\s", targets, re.M)


def test_optim_first_step_subprocess(capsys):
    # one fresh process per row, cache warm and empty: the kernel build path is exercised
    rc = main(["optim", "--quick", "--opts", "sgd", "--sets", "blog", "--rounds", "1", "--repeats", "1",
               "--no-memory"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[first step]" in out and "empty cache" in out and "torch.optim.Adam(fused=True)" in out


def test_epoch_quick_on_synthetic_files(capsys, synthetic_data_dir):
    rc = main(["epoch", "--quick", "--data-dir", str(synthetic_data_dir), "--no-keras", "--steps", "4",
               "--lightning-default"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "(a) plain loop" in out and "(c) real path" in out and "Keras 3: skipped (--no-keras)" in out
    assert "(e) Lightning's default loop" in out
    assert "MEASURED EPOCHS OF 4 STEPS ONLY" in out
    assert "[profile] real path" in out and "optimizer step" in out and "[profile] plain loop" in out


def test_review_quick_on_synthetic_files(capsys, synthetic_data_dir):
    rc = main(["review", "--quick", "--data-dir", str(synthetic_data_dir), "--opts", "sgd", "--steps", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "EXTRAPOLATION to the full blog review" in out
    assert "pool, 1 worker(s)" in out and "stacked (1 process)" in out  # both engines, side by side
    assert "full review, stacked vs the best pool" in out


# ---- argument errors: one line, exit status 2, nothing measured ----------------------------

@pytest.mark.parametrize("argv, message", [
    (["optim", "--threads", "0"], "error: --threads 0: must be at least 1"),
    (["optim", "--threads", "1,x"], "error: argument --threads: expected comma-separated integers"),
    (["optim", "--rounds", "0"], "error: --rounds 0: must be at least 1"),
    (["optim", "--repeats", "0"], "error: --repeats 0: must be at least 1"),
    (["optim", "--opts", "adamw"], "error: --opts: unknown 'adamw'"),
    (["optim", "--sets", "tiny"], "error: --sets: unknown 'tiny'"),
    (["epoch", "--batch-sizes", "0"], "error: --batch-sizes 0: must be at least 1"),
    (["epoch", "--threads", "2,0"], "error: --threads 0: must be at least 1"),
    (["epoch", "--rounds", "0"], "error: --rounds 0: must be at least 1"),
    (["review", "--engines", "warp"], "error: --engines: unknown 'warp'; valid: pool, stacked"),
    (["review", "--workers", "0"], "error: --workers 0: must be at least 1"),
    (["review", "--keep", "somewhere"], "error: --keep DIR only applies with --full"),
    (["optim", "--no-such-flag"], "error: unrecognized arguments: --no-such-flag"),
    ([], "error: the following arguments are required: optim|epoch|review"),
])
def test_argument_errors_are_one_line_and_exit_2(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert captured.out == ""  # rejected before anything ran


@pytest.mark.parametrize("cmd", ["optim", "epoch", "review"])
def test_json_target_is_checked_before_running(capsys, tmp_path, cmd):
    assert main([cmd, "--quick", "--json", str(tmp_path)]) == 2
    assert main([cmd, "--quick", "--json", str(tmp_path / "missing" / "out.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"error: --json {tmp_path}: is a directory")
    assert err[1].startswith("error: --json") and "does not exist" in err[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
@pytest.mark.parametrize("cmd", ["optim", "epoch", "review"])
def test_gpu_without_cuda_is_one_line_and_exit_2(capsys, cmd):
    assert main([cmd, "--accelerator", "gpu", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --accelerator gpu: no CUDA device is visible")


# ---- helpers ---------------------------------------------------------------------------------

def test_table_aligns_columns():
    text = table(["a", "bb"], [["x", 1], ["yyyy", 22]])
    lines = text.splitlines()
    assert lines[0] == "a     bb" and lines[1] == "----  --" and lines[3] == "yyyy  22"


def test_interleave_rotates_the_order_each_round():
    calls: list[str] = []
    out = interleave({n: (lambda n=n: calls.append(n) or n) for n in "abc"}, 4)
    assert calls == list("abc" "bca" "cab" "abc")
    assert out == {"a": ["a"] * 4, "b": ["b"] * 4, "c": ["c"] * 4}


class _Work:
    def outer(self):
        return self.inner() + 1

    def inner(self):
        return 1

    def batches(self):
        yield from range(3)


def test_category_timer_counts_exclusive_time_and_restores():
    originals = dict(vars(_Work))
    timer = CategoryTimer()
    timer.patch(_Work, "outer", "outer")
    timer.patch(_Work, "inner", "inner")
    timer.patch_generator(_Work, "batches", "data")
    timer.patch(_Work, "no_such_method", "skipped")  # a name that does not exist is skipped
    w = _Work()
    assert w.outer() == 2 and list(w.batches()) == [0, 1, 2]
    assert timer.calls == {"inner": 1, "outer": 1, "data": 4}  # 3 items, then the next() that stops
    assert set(timer.totals) == {"inner", "outer", "data"} and all(t >= 0 for t in timer.totals.values())
    timer.restore()
    assert dict(vars(_Work)) == originals


def test_category_timer_absorbing_category_is_not_split():
    class Loop:
        def run(self):
            return _Work().outer()

    timer = CategoryTimer()
    timer.patch(Loop, "run", CategoryTimer.ABSORBING[0])
    timer.patch(_Work, "inner", "inner")
    try:
        assert Loop().run() == 2
    finally:
        timer.restore()
    assert timer.calls == {CategoryTimer.ABSORBING[0]: 1}  # inner ran inside it: not counted apart


def test_bench_imports_no_private_names():
    # Public names only; the one exception is the profiler's hook into Lightning's evaluation loop.
    import ast
    from pathlib import Path

    allowed = {("profile.py", "lightning.pytorch.loops.evaluation_loop", "_EvaluationLoop")}
    bench_dir = Path(__file__).resolve().parents[1] / "torchopt_review" / "bench"
    for path in sorted(bench_dir.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                module = node.module or ""
                private_module = any(part.startswith("_") for part in module.split("."))
                for alias in node.names:
                    if (private_module or alias.name.startswith("_")) and \
                            (path.name, module, alias.name) not in allowed:
                        pytest.fail(f"{path.name} imports {alias.name} from private {module}")


def test_instrumenting_the_training_path_is_undone_by_restore():
    import lightning as L

    from lightning_module import Classifier, RunRecorder

    from torchopt_review.optim import Adam

    owners = (L.Trainer, Classifier, RunRecorder, Adam, torch.Tensor)
    before = [dict(vars(o)) for o in owners]
    timer = CategoryTimer()
    instrument_training_path(timer)
    assert getattr(Adam.step, "hooked", False) and Classifier.training_step is not before[1]["training_step"]
    timer.restore()
    assert [dict(vars(o)) for o in owners] == before
