"""Security: files the tool reads cannot make it run code, and TensorBoard stays on localhost.

- Checkpoints: every ``torch.load`` on the resume path uses ``weights_only=True`` — ours (the
  verification in train.run) *and* Lightning's (``trainer.fit(ckpt_path=..., weights_only=True)``;
  Lightning 2.6 otherwise passes ``weights_only=None``, i.e. torch's default, which the
  environment variable ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns into full unpickling).
  Checked with a spy on ``torch.load`` inside the real CLI process, with that variable set.
- A tampered ``last.ckpt`` (a pickle whose ``__reduce__`` runs a command that creates a marker
  file; as a bare pickle and inside a torch zip checkpoint) is refused with one clear line, exit 2,
  and the command never runs.
- YAML is read with ``safe_load``: a ``!!python/...`` tag in a --config file, in a --set value or
  in a review file is refused and never executed; no project source calls an unsafe loader.
- ``make tensorboard`` binds TensorBoard to localhost: the Makefile's recipe says so, and the
  recipe's command, started for real, listens on the loopback address only.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from proc_harness import ROOT, assert_one_line_error, cli

TRAIN, REVIEW = "torchopt_review.train", "torchopt_review.review"
QUICK = ["--limit-batches", "2", "--set", "data.val_size=200", "--set", "trainer.steps_per_batch=2",
         "--set", "trainer.diagnostics=false", "--no-progress"]
UNSAFE_ENV = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}

SPY = """
import json, os, torch
_load = torch.load
def _spy(*args, **kwargs):
    with open(os.environ["TORCH_LOAD_SPY"], "a") as f:
        f.write(json.dumps({"weights_only": kwargs.get("weights_only"), "what": str(getattr(args[0], "path", args[0]))}) + "\\n")
    return _load(*args, **kwargs)
torch.load = _spy
"""


@pytest.fixture(scope="module")
def one_epoch(synthetic_data_dir, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("one-epoch")
    res = cli(TRAIN, "--opt", "adam", "--epochs", "1", "--data-dir", str(synthetic_data_dir), *QUICK, cwd=cwd)
    assert res.returncode == 0, res.stderr
    return cwd


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst / "runs" / "default" / "adam" / "seed0"


def test_every_checkpoint_load_on_resume_is_weights_only(one_epoch, synthetic_data_dir, tmp_path):
    cwd = tmp_path / "cwd"
    copy_run(one_epoch, cwd)
    log = tmp_path / "loads.jsonl"
    res = cli(TRAIN, "--opt", "adam", "--epochs", "2", "--data-dir", str(synthetic_data_dir), *QUICK, cwd=cwd,
              pre=SPY, env={**UNSAFE_ENV, "TORCH_LOAD_SPY": str(log)})
    assert res.returncode == 0, res.stderr
    assert "epoch   1/2" not in res.stderr and "epoch   2/2" in res.stderr  # it did resume
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    ckpt_calls = [c for c in calls if "last.ckpt" in c["what"]]
    assert len(ckpt_calls) >= 2, calls  # train.run's verification + Lightning's restore
    assert all(c["weights_only"] is True for c in calls), calls


class _RunsCode:
    """Unpickling this runs ``touch <marker>`` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bare_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": {}, "opt_steps": 1, "payload": _RunsCode(marker)}))


def _inside_a_checkpoint(path: Path, marker: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["callbacks"] = {"payload": _RunsCode(marker)}
    torch.save(state, path)  # a real checkpoint, every tensor intact, plus one poisoned object


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # our own sanity load of the bare pickle
@pytest.mark.parametrize("tamper", [_bare_pickle, _inside_a_checkpoint], ids=["bare-pickle", "inside-a-checkpoint"])
@pytest.mark.parametrize("env", [{}, UNSAFE_ENV], ids=["default-env", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_a_tampered_checkpoint_runs_no_code(tamper, env, one_epoch, synthetic_data_dir, tmp_path):
    run_dir = copy_run(one_epoch, tmp_path / "cwd")
    marker = tmp_path / "pwned"
    record = json.loads((run_dir / "run.json").read_text())
    record["status"] = "running"  # as if killed: the next command resumes from last.ckpt
    (run_dir / "run.json").write_text(json.dumps(record))
    tamper(run_dir / "last.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):  # the safe loader refuses it (the unsafe one runs it: below)
        torch.load(run_dir / "last.ckpt", weights_only=True)
    tampered = (run_dir / "last.ckpt").read_bytes()
    res = cli(TRAIN, "--opt", "adam", "--epochs", "2", "--data-dir", str(synthetic_data_dir), *QUICK,
              cwd=tmp_path / "cwd", env=env)
    assert not marker.exists(), "unpickling the checkpoint ran code"
    line = assert_one_line_error(res.returncode, res.stderr, "last.ckpt is not a checkpoint this tool can load safely",
                                 "weights_only=True", "--restart")
    assert ("GLOBAL posix.system" in line) if tamper is _inside_a_checkpoint else ("Unsupported operand" in line), line
    assert (run_dir / "last.ckpt").read_bytes() == tampered  # evidence kept, nothing half-written
    res = cli(TRAIN, "--opt", "adam", "--epochs", "2", "--data-dir", str(synthetic_data_dir), *QUICK, "--restart",
              cwd=tmp_path / "cwd", env=env)
    assert res.returncode == 0 and not marker.exists()


@pytest.mark.parametrize("tamper", [_bare_pickle, _inside_a_checkpoint], ids=["bare-pickle", "inside-a-checkpoint"])
def test_the_payload_runs_when_loaded_unsafely(tamper, one_epoch, tmp_path):
    """The poisoned files really run their command under a full unpickler, so the tests above can fail."""
    run_dir = copy_run(one_epoch, tmp_path / "cwd")
    marker = tmp_path / "pwned"
    tamper(run_dir / "last.ckpt", marker)
    try:  # a bare pickle is not torch's format: torch unpickles its first object, *then* fails
        torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=False)
    except RuntimeError as exc:
        assert "magic number" in str(exc) and tamper is _bare_pickle
    assert marker.exists()


# -- YAML ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["train-config", "train-set", "review-config"])
def test_yaml_python_tags_are_refused(where, tmp_path, synthetic_data_dir):
    marker = tmp_path / "pwned"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    if where == "train-config":
        (tmp_path / "c.yaml").write_text(f"seed: {tag}\n")
        res = cli(TRAIN, "--config", "c.yaml", "--data-dir", str(synthetic_data_dir), cwd=tmp_path)
    elif where == "train-set":
        res = cli(TRAIN, "--set", f"seed={tag}", "--data-dir", str(synthetic_data_dir), cwd=tmp_path)
    else:
        (tmp_path / "r.yaml").write_text(f"experiment: x\nseeds: {tag}\nruns: {{sgd: {{}}}}\n")
        res = cli(REVIEW, "--config", "r.yaml", "--logdir", "runs", cwd=tmp_path)
    assert not marker.exists()
    assert_one_line_error(res.returncode, res.stderr, "could not determine a constructor", "python/object/apply:os.system")
    assert not (tmp_path / "runs").exists()


def _project_sources() -> list[Path]:
    return sorted(p for d in ("torchopt_review", "lightning_module", "tools") for p in (ROOT / d).rglob("*.py"))


def test_no_unsafe_yaml_or_torch_load_in_the_sources():
    """Static check: YAML only through safe_load / safe_dump; every torch.load passes weights_only=True."""
    problems = []
    for path in _project_sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
            name = node.func.attr
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load", "full_load_all"):
                problems.append(f"{where}: yaml.{name}")
            if owner == "torch" and name == "load":
                wo = [k for k in node.keywords if k.arg == "weights_only"]
                if not wo or not (isinstance(wo[0].value, ast.Constant) and wo[0].value.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert not problems, problems
    assert len(_project_sources()) > 10


# -- TensorBoard on localhost -------------------------------------------------------------------------------

def _makefile_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if re.match(rf"^{target}\s*:", l))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def _listening(port: int) -> list[str]:
    """Local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # LISTEN
                found.append(addr)
    return found


def test_make_tensorboard_binds_to_localhost(tmp_path):
    recipe = _makefile_recipe("tensorboard")
    cmds = [c for c in recipe if "tensorboard" in c and "--logdir" in c]
    assert len(cmds) == 1, recipe
    cmd = cmds[0]
    assert re.search(r"--host[ =](localhost|127\.0\.0\.1)\b", cmd), cmd
    assert "--bind_all" not in cmd and "0.0.0.0" not in cmd
    for path in [ROOT / "README.md", *_project_sources()]:  # nothing else starts it on every interface
        if path.exists():
            text = path.read_text()
            assert "--bind_all" not in text and "--host 0.0.0.0" not in text, path
    # Start the recipe's command for real (our venv's tensorboard, a free port) and look at the socket.
    exe = Path(sys.executable).parent / "tensorboard"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = cmd.split()
    argv[0] = str(exe)  # $(VENV)/bin/tensorboard
    argv[argv.index("--logdir") + 1] = str(tmp_path)
    proc = subprocess.Popen([*argv, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        addrs: list[str] = []
        while time.monotonic() < deadline and proc.poll() is None:
            addrs = _listening(port)
            if addrs:
                break
            time.sleep(0.2)
        assert addrs, f"tensorboard did not listen on {port}: {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}"
        loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
        assert set(addrs) <= loopback, f"listening on {addrs}, not only on loopback"
    finally:
        proc.kill()
        proc.wait(timeout=30)
