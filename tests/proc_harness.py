"""Run the CLIs as real processes, fast: a pre-warmed "zygote" that forks them.

On this project's CI machines a fresh ``python -m torchopt_review.train`` spends 5-10 s importing
torch and Lightning before it looks at its arguments, which would make a table of ~50 bad inputs
and a dozen kill/resume cycles take many minutes. So the reliability tests (test_cli_errors.py,
test_faults.py, test_security.py, test_determinism.py) start one helper process that imports
torch, Lightning, TensorBoard and the project's library once, then ``fork()``s a child per
command. Each child is a real, separate process that behaves like ``python -m <module> ARGS``:

- its own session / process group (so a test can SIGKILL the group, workers included),
- its own cwd, environment, stdin (/dev/null), stdout and stderr (files the test reads),
- optional ``RLIMIT_FSIZE`` (a "full disk"), and an optional Python snippet run first (spies),
- the module run with ``runpy.run_module(..., run_name="__main__")``: the same code path as
  ``python -m``; an exception that escapes prints the interpreter's traceback and exits 1.

The modules the CLIs *are* (torchopt_review.train / review) are not pre-imported, so ``-m``
semantics (and runpy's warnings) match a fresh interpreter. What the zygote cannot reproduce
is output a fresh interpreter prints while importing torch/Lightning; the tests keep a few rows
that run a genuinely fresh ``python -m`` process to catch that (see ``fresh_cli``).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLPOINTS = Path(__file__).resolve().parent / "killpoints"  # test-only kill points (killpoints.py)
PY = sys.executable

_ZYGOTE_SRC = r'''
import json, os, resource, runpy, signal, sys, time, traceback
import torch, yaml, lightning, lightning.pytorch  # the slow imports, once
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: F401
import torchopt_review.config, torchopt_review.data, torchopt_review.runs, torchopt_review.errors  # noqa: F401
import lightning_module  # noqa: F401
import tensorboard.backend.event_processing.event_accumulator  # noqa: F401

reply = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
children = {}
reply.write(json.dumps({"ready": os.getpid()}) + "\n")

def child(cmd):
    code = 1
    try:
        os.setsid()
        # a fresh interpreter started from a terminal: Ctrl-C raises KeyboardInterrupt, whatever
        # disposition the test process that spawned the zygote had at the time
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.chdir(cmd["cwd"])
        os.environ.clear()
        os.environ.update(cmd["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, cmd["stdout"]), (2, cmd["stderr"])):
            f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(f, fd)
            os.close(f)
        reply.close()
        if cmd.get("fsize") is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (cmd["fsize"], cmd["fsize"]))
        sys.argv = [cmd["module"], *cmd["argv"]]
        if cmd.get("pre"):
            exec(cmd["pre"], {"__name__": "__pre__"})
        try:
            runpy.run_module(cmd["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

for line in sys.stdin:
    cmd = json.loads(line)
    op = cmd["op"]
    if op == "spawn":
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(cmd)
        children[pid] = None
        reply.write(json.dumps({"pid": pid}) + "\n")
    elif op == "wait":
        pid, deadline = cmd["pid"], time.monotonic() + cmd["timeout"]
        status = children.get(pid)
        while status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = children[pid] = os.waitstatus_to_exitcode(st)
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        reply.write(json.dumps({"status": status}) + "\n")
'''


@dataclass
class Child:
    """A CLI process forked by the zygote."""

    zygote: "Zygote"
    pid: int
    cwd: Path
    stdout_path: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def wait(self, timeout: float = 300) -> int:
        """The exit status (negative: killed by that signal); AssertionError on timeout."""
        status = self.zygote._wait(self.pid, timeout)
        if status is None:
            self.kill()
            raise AssertionError(f"process {self.pid} did not finish in {timeout} s; stderr:\n{self.stderr[-3000:]}")
        return status

    def poll(self) -> int | None:
        return self.zygote._wait(self.pid, 0)

    def signal(self, sig: int, group: bool = True) -> None:
        try:
            if group:
                os.killpg(self.pid, sig)  # the child leads its own process group (setsid)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> int:
        self.signal(signal.SIGKILL)
        return self.zygote._wait(self.pid, 60)

    def wait_for(self, predicate, timeout: float = 180, what: str = "condition") -> None:
        """Poll until ``predicate()`` is true; fail if the process ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.poll() is not None:
                if predicate():
                    return
                raise AssertionError(f"process ended (status {self.poll()}) before {what}; stderr:\n{self.stderr[-3000:]}")
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"timed out waiting for {what}; stderr:\n{self.stderr[-3000:]}")


class Zygote:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
        env.pop("TORCHOPT_DATA_DIR", None)
        self.proc = subprocess.Popen([PY, "-c", _ZYGOTE_SRC], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, cwd=str(ROOT), env=env, bufsize=1)
        self.lock = threading.Lock()
        self.pids: list[int] = []
        first = self.proc.stdout.readline()
        if not first:
            raise RuntimeError("the test zygote failed to start (imports failed?)")
        self.n = 0

    def _call(self, cmd: dict) -> dict:
        with self.lock:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the test zygote died")
        return json.loads(line)

    def spawn(self, module: str, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None,
              fsize: int | None = None, pre: str | None = None, name: str | None = None) -> Child:
        cwd = Path(cwd)
        self.n += 1
        tag = name or f"proc{self.n}"
        out, err = cwd / f".{tag}.stdout", cwd / f".{tag}.stderr"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **(env or {})}
        if "TORCHOPT_DATA_DIR" not in (env or {}):
            full_env.pop("TORCHOPT_DATA_DIR", None)
        full_env.pop("PYTEST_CURRENT_TEST", None)
        if full_env.get("KILL_PAUSE"):  # kill points: this child, and the worker processes it spawns
            full_env["PYTHONPATH"] = f"{KILLPOINTS}{os.pathsep}{full_env['PYTHONPATH']}"
            pre = f"import sys; sys.path.insert(0, {str(KILLPOINTS)!r}); import killpoints\n{pre or ''}"
        reply = self._call({"op": "spawn", "module": module, "argv": [str(a) for a in argv], "cwd": str(cwd),
                            "env": full_env, "stdout": str(out), "stderr": str(err), "fsize": fsize, "pre": pre})
        self.pids.append(reply["pid"])
        return Child(self, reply["pid"], cwd, out, err)

    def _wait(self, pid: int, timeout: float) -> int | None:
        return self._call({"op": "wait", "pid": pid, "timeout": timeout})["status"]

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.kill()
        self.proc.wait(timeout=30)


_ZYGOTE: Zygote | None = None


def zygote() -> Zygote:
    """The process-wide zygote, started on first use and stopped at exit."""
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.proc.poll() is not None:
        _ZYGOTE = Zygote()
        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(module: str, *argv: str, cwd: Path, env: dict[str, str] | None = None, fsize: int | None = None,
        pre: str | None = None, timeout: float = 300) -> Result:
    """Run ``python -m <module> ARGV`` (forked from the zygote) to completion."""
    child = zygote().spawn(module, list(argv), cwd=cwd, env=env, fsize=fsize, pre=pre)
    code = child.wait(timeout)
    return Result(code, child.stdout, child.stderr)


def fresh_cli(module: str, *argv: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 300) -> subprocess.Popen:
    """Start a genuinely fresh ``python -m <module> ARGV`` (no zygote); the caller communicates."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg", **(env or {})}
    if "TORCHOPT_DATA_DIR" not in (env or {}):
        full_env.pop("TORCHOPT_DATA_DIR", None)
    return subprocess.Popen([PY, "-m", module, *argv], cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def assert_one_line_error(code: int, stderr: str, *needles: str) -> str:
    """Exit status 2, exactly one non-empty stderr line, starting with 'error:', no traceback."""
    lines = error_lines(stderr)
    assert code == 2, f"exit status {code}, expected 2; stderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr[-3000:]}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in: {lines[0]}"
    return lines[0]


def tree(path: Path) -> list[str]:
    """Every file and folder under ``path`` (relative), ignoring the harness's own .proc* logs."""
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.name.startswith(".proc"))


def assert_every_file_parses(run_dir: Path, *, allow_temp: bool = True) -> list[str]:
    """Every file a run folder holds is complete: run.json and hparams.yaml parse, the CSVs have a
    header and whole rows, last.ckpt loads (weights_only), event files read to the end. Temporary
    files of a killed writer (``.*.tmp``) are allowed (they are never read) unless ``allow_temp`` is
    False. Returns the names checked."""
    import csv
    import yaml
    import torch

    checked = []
    for p in sorted(run_dir.iterdir()):
        name = p.name
        if name.startswith(".proc"):
            continue
        if name.startswith(".") and name.endswith(".tmp"):
            assert allow_temp, f"left-over temporary file {p}"
            continue
        if name == "run.json":
            assert isinstance(json.loads(p.read_text()), dict)
        elif name == "hparams.yaml":
            yaml.safe_load(p.read_text())
        elif name.endswith(".csv"):
            text = p.read_text()
            assert text.endswith("\n"), f"{p} ends mid-line"
            rows = list(csv.reader(text.splitlines()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), f"{p} has a torn row"
        elif name == "last.ckpt":
            state = torch.load(p, map_location="cpu", weights_only=True)
            assert "state_dict" in state and "opt_steps" in state
        elif name.startswith("events.out.tfevents"):
            from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

            list(RawEventFileLoader(str(p)).Load())
        else:
            raise AssertionError(f"unexpected file in the run folder: {p}")
        checked.append(name)
    return checked
