"""``python -m torchopt_review.review``: every optimizer x seed (x learning rate), in parallel,
resumable, then the report.

A review is described by a YAML file (``configs/review/blog.yaml`` is the blog-faithful one, its
comments document every key). It expands into ordinary training runs, each exactly the run that
``python -m torchopt_review.train --opt X --seed k`` makes with the same settings, in the same
folder ``runs/<experiment>/<label>/seed<k>/``, so ``tensorboard --logdir runs/<experiment>``
overlays them and ``train`` can resume or extend any of them::

    python -m torchopt_review.review                                  # blog.yaml: 8 optimizers x seeds 0-4
    python -m torchopt_review.review --opts adam,nadam --seeds 0-9
    python -m torchopt_review.review --opts all,momentum-0.99,rmsprop-rho0.9   # + the blog's text readings
    python -m torchopt_review.review --variants --epochs 5 --experiment quick
    python -m torchopt_review.review --config geron                   # configs/review/geron.yaml
    python -m torchopt_review.review --lrs 1e-4,1e-3,1e-2 --experiment lr-grid   # labels adam-lr0.01, ...

What it does:

- **Skips finished runs**: a run whose ``run.json`` says ``done`` or ``diverged`` (with at least
  the requested epochs, train.run's own rule) is a result already; ``--restart`` retrains
  everything from scratch.
  An interrupted run resumes from its last checkpoint (``train.run`` does it). A run folder that
  holds a run of a *different* configuration stops the review before anything runs (use another
  ``--experiment``, or ``--restart``).
- **Runs in parallel**: ``--workers K`` worker processes (default: the CPU cores this process
  may use, which under SLURM/cgroups is the allotment, not the node's count; 1 with
  ``--accelerator gpu``), started with the ``spawn`` method, each limited to one torch/OpenMP
  thread (``--threads``). Why one: on a 2-core machine (busy with other jobs too), the blog MLP
  at batch 32 ran ~240 optimizer steps/s in total with 2 workers x 1 thread and ~12 with 2
  workers x 2 threads (OpenMP threads spinning against each other); a real 4-run review
  (3 epochs of 219 steps each) took 24-39 s with 2 x 1 and 235-253 s with 2 x 2. Even a
  single process ran slower with 2 threads than with 1: a batch of 32 is too small to split,
  so the parallelism belongs across runs, not inside one.
- **Isolates failures**: a run that raises, or whose worker process dies (killed, out of memory,
  segfault), is marked ``failed`` in its ``run.json`` with the error, and the other runs go on.
  A diverged run (NaN loss) is recorded by ``train`` as ``diverged``: that is a *result* of the
  optimizer, not a failure of the tool. What a worker prints during a run (warnings, tracebacks)
  goes to ``runs/<experiment>/.review-logs/<label>-seed<k>.log``.
- **One progress line** on stderr for the whole review (runs done/total, running runs with their
  epoch, ETA from the measured seconds per epoch), redrawn with ``\r`` at most twice a second
  when stderr is a terminal; otherwise a plain line per finished run.
- **Locks the experiment**: ``runs/<experiment>/.lock`` (``fcntl.flock``) stops a second review
  of the same experiment; it exits 2 naming the holder's PID. Locks live on the local file
  system's semantics: on NFS, prefer ``--shard`` (one process per shard) over racing reviews.

Exit status: 0 when every run is ``done`` or ``diverged``; 1 when some run failed (or the report
could not be written); 2 for a usage or configuration error, a missing dataset (looked for before
anything is written), a locked experiment, or an error the user must fix that a run hit (the
review then stops starting runs); 130 when interrupted (Ctrl-C stops the workers at once; their
finished epochs are checkpointed and their ``run.json`` says ``running``: run the same command
to resume).

Sharding (one machine is not enough): ``--shard i/n`` with **1-based** ``i`` in ``1..n`` runs
the runs whose position in the review's (deterministic, seed-major) run list is ``i-1`` modulo
``n``: the ``n`` shards cover every run exactly once, *provided every shard gets the same
options* (config, ``--opts``, ``--seeds``, ``--lrs``...). Shards lock ``.lock.shard<i>of<n>``
and hold ``.lock`` shared: shards do not exclude each other, but a whole-experiment review
started while shards run exits 2 (and the other way round). Shards do not write the report;
gather it afterwards. A SLURM array::

    #!/bin/bash
    #SBATCH --job-name=optim-review
    #SBATCH --array=1-8                 # shards are 1-based: 1..n
    #SBATCH --cpus-per-task=4
    #SBATCH --time=04:00:00
    #SBATCH --output=slurm-%A_%a.out
    python -m torchopt_review.review --config configs/review/blog.yaml \\
        --shard "${SLURM_ARRAY_TASK_ID}/8" --workers "${SLURM_CPUS_PER_TASK}"

    # when the array has finished (e.g. sbatch --dependency=afterany:<array job id>):
    python -m torchopt_review.report runs/blog

The function API (``review(cfg, workers=...)``) takes a :class:`ReviewConfig` or a mapping with
the YAML keys, and a ``run_fn`` with :func:`torchopt_review.train.run`'s signature (tests pass a
fast fake; with worker processes it must be picklable, i.e. a module-level function).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import math
import os
import pickle
import shutil
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

from .config import CONFIG_DIR, RunConfig, build_config, load_config, load_yaml, merge
from .errors import ConfigError, UserError, cli_entry

__all__ = [
    "ReviewConfig", "ReviewResult", "RunOutcome", "load_review", "expand", "parse_seeds",
    "parse_shard", "shard_runs", "review", "main",
]

# Keys of a review YAML file (configs/review/blog.yaml documents them).
YAML_KEYS = ("experiment", "description", "seeds", "lrs", "overrides", "runs", "variants")
# RunConfig fields the review itself sets for every run; a run entry or `overrides` may not.
_IDENTITY_KEYS = ("experiment", "seed", "label", "logdir")
FINAL_STATUSES = ("done", "diverged")  # results: skipped by a later review, exit status 0
RUN_JSON = "run.json"
LOG_DIR = ".review-logs"  # runs/<exp>/.review-logs/<label>-seed<k>.log: a worker's output during a run


# -- the review configuration ----------------------------------------------------------------

def _default_runs() -> dict[str, dict[str, Any]]:
    from .optim.registry import optimizer_names

    return {name: {} for name in optimizer_names()}


@dataclass
class ReviewConfig:
    """What to run. The first seven fields are the YAML keys; the rest come from the CLI.

    Attributes:
        experiment: folder under ``logdir``: ``runs/<experiment>/<label>/seed<k>/``.
        description: free text, copied into ``review.json`` for the report.
        seeds: the seeds every run is repeated with (the same list for every optimizer: a paired design).
        lrs: optional learning-rate grid; each run is repeated per lr with the label ``<label>-lr<lr>``.
        overrides: RunConfig keys applied to every run (below each run's own entry).
        runs: ``label -> RunConfig overrides`` of the default set; ``optim.name`` defaults to the label.
        variants: like ``runs``, opt-in: named in ``opts`` or all of them with ``include_variants``.
        opts: which labels (or registry names) to run; ``None``: ``runs``. ``"all"`` means ``runs``.
        include_variants: add every variant (``--variants``).
        cli_overrides: RunConfig keys applied last, above each run's entry (``--epochs`` ...).
        logdir: root of the run folders.
        config_dir: where ``base.yaml`` and ``optim/<name>.yaml`` live.
        source: the YAML file this came from, if any.
    """

    experiment: str = "review"
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    lrs: list[float] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=_default_runs)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    opts: list[str] | None = None
    include_variants: bool = False
    cli_overrides: dict[str, Any] = field(default_factory=dict)
    logdir: str = "runs"
    config_dir: Path = CONFIG_DIR
    source: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str | None = None) -> "ReviewConfig":
        """Validate a mapping (a parsed YAML file, or the API's dict): unknown keys name the nearest valid one."""
        where = f"{source}: " if source else ""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}a review config must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(YAML_KEYS)}"
                raise ConfigError(f"{where}unknown review key '{key}'{hint}")
        kw: dict[str, Any] = dict(data)
        if "experiment" in kw:
            kw["experiment"] = _folder_name(kw["experiment"], f"{where}experiment")
        if "description" in kw:
            kw["description"] = "" if kw["description"] is None else str(kw["description"])
        if "seeds" in kw:
            kw["seeds"] = _seeds_value(kw["seeds"], f"{where}seeds")
        if "lrs" in kw:
            kw["lrs"] = _lrs_value(kw["lrs"], f"{where}lrs")
        for name in ("overrides", "cli_overrides"):
            if name in kw:
                kw[name] = _overrides_value(kw[name], f"{where}{name}")
        for name in ("runs", "variants"):
            if name in kw:
                kw[name] = _runs_value(kw[name], f"{where}{name}")
        if "opts" in kw and kw["opts"] is not None:
            kw["opts"] = parse_opts(kw["opts"]) if isinstance(kw["opts"], str) else [str(o) for o in kw["opts"]]
        if "include_variants" in kw:
            kw["include_variants"] = bool(kw["include_variants"])
        if "logdir" in kw:
            kw["logdir"] = str(kw["logdir"])
        if "config_dir" in kw:
            kw["config_dir"] = Path(kw["config_dir"])
        kw.setdefault("source", source)
        cfg = cls(**kw)
        clash = sorted(set(cfg.runs) & set(cfg.variants))
        if clash:
            raise ConfigError(f"{where}label {clash[0]!r} is both a run and a variant; rename one")
        if not cfg.runs and not cfg.variants:
            raise ConfigError(f"{where}runs is empty: list at least one optimizer")
        return cfg

    def exp_dir(self) -> Path:
        return Path(self.logdir) / self.experiment


def _folder_name(value: Any, where: str) -> str:
    text = "" if value is None else str(value)
    if not text or "/" in text or "\\" in text or text.startswith("."):
        raise ConfigError(f"{where} {text!r} must be a plain folder name (no '/', not starting with '.')")
    return text


def parse_seeds(text: str | int | Iterable[int]) -> list[int]:
    """``"0-4"`` -> [0..4], ``"0,2,5"``, ``"0-2,7"``, ``3``, or a list; duplicates and negatives are errors."""
    return _seeds_value(text, "--seeds")


def _seeds_value(value: Any, where: str) -> list[int]:
    usage = f"{where} must be seeds like '0-4', '0,2,5' or a list of integers >= 0"
    if isinstance(value, bool):
        raise ConfigError(f"{usage}, got {value!r}")
    if isinstance(value, int):
        items: list[Any] = [value]
    elif isinstance(value, str):
        items = []
        for part in value.replace(" ", "").split(","):
            lo, sep, hi = part.partition("-")
            if not (lo.isdigit() and (not sep or hi.isdigit())):
                raise ConfigError(f"{usage}, got {value!r}")
            if sep:
                if int(hi) < int(lo):
                    raise ConfigError(f"{where}: the range {part!r} is empty (write low-high)")
                items.extend(range(int(lo), int(hi) + 1))
            else:
                items.append(int(lo))
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ConfigError(f"{usage}, got {value!r}")
    seeds: list[int] = []
    for s in items:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"{usage}, got {value!r}")
        if s in seeds:
            raise ConfigError(f"{where}: seed {s} is listed twice")
        seeds.append(s)
    if not seeds:
        raise ConfigError(f"{usage}, got an empty list")
    return seeds


def _lrs_value(value: Any, where: str) -> list[float] | None:
    if value is None:
        return None
    items = [v for v in str(value).replace(" ", "").split(",") if v] if isinstance(value, str) else value
    if isinstance(items, (int, float)) and not isinstance(items, bool):
        items = [items]
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"{where} must be a list of learning rates like [1e-4, 1e-3, 1e-2], got {value!r}")
    out: list[float] = []
    for v in items:
        try:
            lr = float(v)  # YAML reads 1e-3 (no dot) as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {v!r} is not a number") from None
        if isinstance(v, bool) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"{where}: learning rates must be positive numbers, got {v!r}")
        if lr in out:
            raise ConfigError(f"{where}: learning rate {v!r} is listed twice")
        out.append(lr)
    return out


def _overrides_value(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping of run settings (e.g. trainer: {{epochs: 20}}), got {value!r}")
    for key in _IDENTITY_KEYS:
        if key in value:
            hint = {"experiment": "the review's 'experiment' key or --experiment", "seed": "'seeds' or --seeds",
                    "label": "the run's name in 'runs'", "logdir": "--logdir"}[key]
            raise ConfigError(f"{where}.{key} is set by the review; use {hint}")
    return dict(value)


def _runs_value(value: Any, where: str) -> dict[str, dict[str, Any]]:
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):  # shorthand: a list of registry names
        value = {str(v): {} for v in value}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map run labels to settings (e.g. adam: {{}}), got {value!r}")
    out: dict[str, dict[str, Any]] = {}
    for label, entry in value.items():
        label = _folder_name(label, f"{where} label")
        if label.lower() in ("all", "variants"):
            raise ConfigError(f"{where}: {label!r} is reserved for --opts; choose another label")
        out[label] = _overrides_value(entry, f"{where}.{label}")
    return out


def load_review(path: str | Path, **fields: Any) -> ReviewConfig:
    """A review YAML file (``yaml.safe_load``), with CLI/API ``fields`` on top."""
    data = load_yaml(path)
    source = str(path)
    cfg = ReviewConfig.from_mapping(data, source=source)
    if fields:
        cfg = ReviewConfig.from_mapping({**_yaml_part(cfg), **_api_part(cfg), **fields}, source=source)
    return cfg


def _yaml_part(cfg: ReviewConfig) -> dict[str, Any]:
    return {k: getattr(cfg, k) for k in YAML_KEYS}


def _api_part(cfg: ReviewConfig) -> dict[str, Any]:
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in YAML_KEYS and f.name != "source"}


# -- expansion -------------------------------------------------------------------------------

def parse_opts(text: str) -> list[str]:
    return [t for t in (s.strip() for s in str(text).split(",")) if t]


def _selected(cfg: ReviewConfig) -> list[tuple[str, dict[str, Any]]]:
    """The chosen (label, entry) pairs, in order, without duplicates."""
    from .optim.registry import optimizer_names

    names = optimizer_names()
    chosen: dict[str, dict[str, Any]] = {}

    def add(label: str, entry: dict[str, Any]) -> None:
        chosen.setdefault(label, entry)

    tokens = cfg.opts if cfg.opts is not None else ["all"]
    if not tokens:
        raise ConfigError("--opts is empty: name optimizers, run labels or 'all'")
    for tok in tokens:
        if tok == "all":
            for label, entry in cfg.runs.items():
                add(label, entry)
        elif tok == "variants":
            for label, entry in cfg.variants.items():
                add(label, entry)
        elif tok in cfg.runs:
            add(tok, cfg.runs[tok])
        elif tok in cfg.variants:
            add(tok, cfg.variants[tok])
        elif tok in names:  # a registry name the review file does not list: its registry/blog settings
            add(tok, {})
        else:
            valid = ["all"] + list(dict.fromkeys([*cfg.runs, *names]))
            close = difflib.get_close_matches(tok, valid + list(cfg.variants), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            variants = f"; variants: {', '.join(cfg.variants)}" if cfg.variants else ""
            raise ConfigError(f"unknown optimizer or run label {tok!r}{hint}; valid: {', '.join(valid)}{variants}")
    if cfg.include_variants:
        for label, entry in cfg.variants.items():
            add(label, entry)
    return list(chosen.items())


def _lr_label(label: str, lr: float) -> str:
    return f"{label}-lr{lr:g}"


def expand(cfg: ReviewConfig | Mapping[str, Any]) -> list[RunConfig]:
    """Every run of the review as a validated :class:`RunConfig`, seed-major (all optimizers of
    seed 0, then seed 1, ...: an interrupted review leaves complete paired sets behind).

    Each is built by :func:`torchopt_review.config.load_config` from ``base.yaml`` +
    ``optim/<name>.yaml`` + ``overrides`` + the run's entry + ``cli_overrides`` (+ the grid's lr),
    i.e. the run ``python -m torchopt_review.train`` makes with those settings.
    """
    if not isinstance(cfg, ReviewConfig):
        cfg = ReviewConfig.from_mapping(cfg)
    from .optim.registry import optimizer_names

    names = optimizer_names()
    where = f"{cfg.source}: " if cfg.source else ""
    plan: list[tuple[str, str, dict[str, Any], float | None]] = []  # (label, registry name, settings, lr)
    for label, entry in _selected(cfg):
        opt = (entry.get("optim") or {}).get("name") if isinstance(entry.get("optim"), Mapping) else None
        opt = opt or label
        if opt not in names:
            close = difflib.get_close_matches(str(opt), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where}run {label!r}: {opt!r} is not a registry optimizer{hint}; set optim.name to one of: {', '.join(names)}"
            )
        settings = merge(merge(cfg.overrides, entry), cfg.cli_overrides)
        for lr in cfg.lrs or [None]:
            plan.append((label if lr is None else _lr_label(label, lr), opt, settings, lr))

    runs: list[RunConfig] = []
    seen: set[tuple[str, int]] = set()
    for seed in cfg.seeds:
        for label, opt, settings, lr in plan:
            if (label, seed) in seen:
                raise ConfigError(f"{where}two runs are both labelled {label!r}; rename one")
            seen.add((label, seed))
            ov = merge(settings, {"optim": {"lr": lr}}) if lr is not None else settings
            # The label stays unset when it is the optimizer's name: then the run is byte-for-byte
            # the one `train --opt <name>` makes (same folder, same checkpoint fingerprint).
            ov = merge(ov, {"experiment": cfg.experiment, "seed": seed, "logdir": cfg.logdir,
                            "label": None if label == opt else label})
            try:
                runs.append(load_config(opt, [], ov, config_dir=cfg.config_dir))
            except ConfigError as exc:
                raise ConfigError(f"{where}run {label!r}: {exc}") from None
    return runs


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 1-based ``i`` (1 <= i <= n) -> ``(i, n)``."""
    i_s, sep, n_s = str(text).strip().partition("/")
    if not (sep and i_s.strip().isdigit() and n_s.strip().isdigit()):
        raise ConfigError(f"--shard must be i/n with 1 <= i <= n (e.g. 2/8), got {text!r}")
    i, n = int(i_s), int(n_s)
    if n < 1:
        raise ConfigError(f"--shard {text}: the number of shards must be >= 1")
    if not 1 <= i <= n:
        extra = " (shards are 1-based; with SLURM use --array=1-n)" if i == 0 else ""
        raise ConfigError(f"--shard {text}: i must be between 1 and {n}{extra}")
    return i, n


def shard_runs(runs: list[Any], shard: tuple[int, int] | None) -> list[Any]:
    """The runs of shard ``(i, n)`` (1-based): positions ``i-1, i-1+n, ...`` of the run list."""
    if shard is None:
        return list(runs)
    i, n = shard
    return list(runs[i - 1::n])


# -- run state on disk -----------------------------------------------------------------------

def _read_run_json(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / RUN_JSON).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _record_failure(cfg: RunConfig, error: str) -> dict[str, Any]:
    """Mark the run failed in its run.json (kept fields from train's own run.json, if any)."""
    data = _read_run_json(cfg.run_dir) or {}
    data.update({
        "status": "failed", "error": error, "label": cfg.run_label, "optimizer": cfg.optim.name,
        "seed": cfg.seed, "lr": cfg.optim.lr,
    })
    data.setdefault("config", cfg.to_dict())
    data.setdefault("diverged", None)
    data.setdefault("epochs_completed", 0)
    data["failed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write_json_atomic(cfg.run_dir / RUN_JSON, data)
    return data


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            d = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if d:
                return d
        return None
    return None if a == b else f"{path} {a!r} -> {b!r}"


def _normal(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))  # tuples -> lists, as in run.json


def _stored_mismatch(cfg: RunConfig, stored: Mapping[str, Any]) -> str | None:
    """How the run in a run.json differs from ``cfg`` in what changes the numbers (train's
    fingerprint); None when alike or unknown (then train.run judges its checkpoint)."""
    old = stored.get("fingerprint")
    if not isinstance(old, Mapping):
        conf = stored.get("config")
        if not isinstance(conf, Mapping):
            return None
        try:
            old = build_config(conf).fingerprint()
        except Exception:  # an older schema
            return None
    return _first_difference(_normal(old), _normal(cfg.fingerprint()))


def _finished(cfg: RunConfig, stored: Mapping[str, Any] | None) -> bool:
    """A result already, by train.run's own rule: done or diverged with at least the requested epochs."""
    if not stored or stored.get("status") not in FINAL_STATUSES:
        return False
    asked = stored.get("epochs", stored.get("epochs_completed"))
    try:
        return int(asked) >= cfg.trainer.epochs
    except (TypeError, ValueError):
        return False


# -- the experiment lock -------------------------------------------------------------------------

class _Lock:
    """``runs/<exp>/.lock``: exclusive for a whole review, shared (+ an exclusive per-shard file) for shards."""

    def __init__(self, exp_dir: Path, shard: tuple[int, int] | None):
        self.exp_dir, self.shard = exp_dir, shard
        self.fds: list[int] = []

    def _pids(self, *names: str) -> list[str]:
        pids = []
        for name in names:
            for p in sorted(self.exp_dir.glob(name)):
                try:
                    pid = int(p.read_text().split()[0])
                    os.kill(pid, 0)
                except (OSError, ValueError, IndexError):
                    continue
                pids.append(str(pid))
        return sorted(set(pids), key=int)

    def _take(self, path: Path, exclusive: bool) -> int:
        import fcntl

        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        self.fds.append(fd)
        return fd

    @staticmethod
    def _write_pid(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def acquire(self) -> "_Lock":
        try:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create {self.exp_dir}: {exc.strerror}; pass --logdir DIR somewhere writable") from None
        try:
            import fcntl  # noqa: F401
        except ImportError:  # Windows: no flock; the user keeps reviews apart
            print("warning: no file locking on this platform: do not run two reviews of one experiment at once", file=sys.stderr)
            return self
        exp = self.exp_dir.name
        try:
            fd = self._take(self.exp_dir / ".lock", exclusive=self.shard is None)
        except OSError:
            holders = self._pids(".lock", ".lock.shard*")
            who = f"PID {', '.join(holders)}" if holders else "another process"
            raise UserError(
                f"experiment {exp!r} is locked by another review ({who}, lock {self.exp_dir / '.lock'}); "
                f"wait for it to finish, or use --experiment NAME for a separate experiment"
            ) from None
        if self.shard is None:
            self._write_pid(fd)
            return self
        i, n = self.shard
        name = f".lock.shard{i}of{n}"
        try:
            self._write_pid(self._take(self.exp_dir / name, exclusive=True))
        except OSError:
            self.release()
            holders = self._pids(name)
            who = f"PID {', '.join(holders)}" if holders else "another process"
            raise UserError(f"shard {i}/{n} of experiment {exp!r} is already running ({who}); each shard runs once") from None
        return self

    def release(self) -> None:
        for fd in reversed(self.fds):
            try:
                os.close(fd)  # closing drops the flock
            except OSError:
                pass
        self.fds.clear()


# -- outcomes --------------------------------------------------------------------------------

@dataclass
class RunOutcome:
    """One run's result in this review."""

    label: str
    seed: int
    run_dir: Path
    status: str  # done | diverged | failed
    skipped: bool = False  # finished before this review started
    error: str | None = None
    result: dict[str, Any] | None = None  # the run.json dict

    @property
    def key(self) -> str:
        return f"{self.label}/seed{self.seed}"


@dataclass
class ReviewResult:
    experiment: str
    exp_dir: Path
    outcomes: list[RunOutcome]
    wall_s: float
    shard: tuple[int, int] | None = None
    report: Path | None = None
    report_error: str | None = None  # the report was asked for and could not be written

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def exit_status(self) -> int:
        """0: every run done or diverged (divergence is a result); 1: some run failed or the report did not write."""
        return 1 if self.failed or self.report_error else 0


def _outcome(cfg: RunConfig, result: Mapping[str, Any] | None, *, skipped: bool = False, error: str | None = None) -> RunOutcome:
    status = (result or {}).get("status")
    if error is None and status not in ("done", "diverged", "failed"):
        error = f"the run returned no known status ({status!r})"
    if error is not None:
        status = "failed"
        error = error or (result or {}).get("error")
    elif status == "failed":
        error = (result or {}).get("error") or "failed (no error recorded)"
    return RunOutcome(cfg.run_label, cfg.seed, cfg.run_dir, status, skipped, error, dict(result) if result else None)


# -- progress --------------------------------------------------------------------------------

def _fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _headline(result: Mapping[str, Any] | None) -> str:
    """A few numbers of a finished run for its progress line."""
    if not result:
        return ""
    parts = []
    test = result.get("test") or {}
    if isinstance(test, Mapping):  # train.run: {"loss": ..., "acc": ...}
        acc = next((v for k, v in test.items() if "acc" in str(k) and isinstance(v, (int, float))), None)
        if acc is not None:
            parts.append(f"test acc {100 * acc:.2f}%")
    if isinstance(result.get("wall_s"), (int, float)):
        parts.append(_fmt_s(result["wall_s"]))
    return ", ".join(parts)


class _Progress:
    """The review's one progress display on ``stream`` (stderr).

    TTY: one status line rewritten with ``\\r`` at most every ``interval`` seconds, and a
    permanent line only for a failed or diverged run. Otherwise: a plain line per finished run.
    """

    def __init__(self, stream: TextIO | None, total: int, epochs: dict[str, int], title: str, interval: float = 0.5,
                 workers: int = 1):
        self.stream, self.workers = stream, max(1, workers)
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.total, self.epochs, self.title, self.interval = total, epochs, title, interval
        self.finished = 0
        self.bad = {"diverged": 0, "failed": 0}
        self.running: dict[str, int] = {}  # key -> epochs completed
        self.last_event: dict[str, float] = {}  # key -> time of its start or last finished epoch
        self.epoch_time, self.epochs_timed = 0.0, 0
        self.last_draw = 0.0
        self.width = 0

    def start(self, key: str) -> None:
        self.running.setdefault(key, 0)
        self.last_event[key] = time.monotonic()
        self.draw()

    def epoch(self, key: str, info: Mapping[str, Any]) -> None:
        done = _epochs_done(info)
        if done is None:
            return
        now = time.monotonic()
        # One epoch's duration: since the run's previous epoch (or its start: setup counts too).
        if key in self.last_event:
            self.epoch_time += now - self.last_event[key]
            self.epochs_timed += 1
        self.last_event[key] = now
        self.running[key] = done
        if isinstance(info.get("epochs"), int):
            self.epochs[key] = info["epochs"]
        self.draw()

    def end(self, key: str, outcome: RunOutcome) -> None:
        self.running.pop(key, None)
        self.epochs.pop(key, None)  # nothing left to do for it, whatever its epoch count
        self.finished += 1
        if outcome.status in self.bad:
            self.bad[outcome.status] += 1
        if self.stream is None:
            return
        line = f"[{self.finished}/{self.total}] {outcome.key}: {outcome.status}"
        if outcome.status == "failed":
            line += f": {_one_line(outcome.error)}"
        elif outcome.status == "diverged":
            d = (outcome.result or {}).get("diverged") or {}
            line += f" at epoch {d.get('epoch', '?')}, step {d.get('step', '?')}" if isinstance(d, Mapping) else ""
        else:
            extra = _headline(outcome.result)
            line += f" ({extra})" if extra else ""
        if self.tty:
            if outcome.status != "done":
                self._clear()
                print(line, file=self.stream, flush=True)
            self.draw(force=True)
        else:
            print(line, file=self.stream, flush=True)

    def eta(self) -> float | None:
        """Seconds left: the epochs still to train at the measured seconds per epoch, spread over
        the workers, but no less than the longest single run still has to go."""
        if not self.epochs_timed:
            return None
        per_epoch = self.epoch_time / self.epochs_timed
        left = {k: max(0, e - self.running.get(k, 0)) for k, e in self.epochs.items()}
        if not left:
            return 0.0
        return per_epoch * max(sum(left.values()) / self.workers, max(left.values()))

    def line(self) -> str:
        bad = ", ".join(f"{v} {k}" for k, v in self.bad.items() if v)
        head = f"{self.title}: {self.finished}/{self.total} runs" + (f" ({bad})" if bad else "")
        running = " ".join(f"{k} {e}/{self.epochs.get(k, '?')}" for k, e in self.running.items())
        eta = self.eta()
        tail = f"ETA {_fmt_s(eta)}" if eta is not None else "ETA ?"
        return f"{head} | {tail}" + (f" | {running}" if running else "")

    def _clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.width = 0

    def draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        cols = shutil.get_terminal_size((100, 20)).columns - 1
        text = self.line()[:cols]
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\n")
            self.stream.flush()
            self.width = 0


def _epochs_done(info: Mapping[str, Any]) -> int | None:
    """Epochs completed according to an on_epoch row (train.run's ``epoch`` counts from 1)."""
    e = info.get("epoch")
    return e if isinstance(e, int) and not isinstance(e, bool) else None


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _one_line(text: str | None) -> str:
    lines = [l for l in str(text or "").strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else "unknown error"


# -- workers ---------------------------------------------------------------------------------

def _thread_env(threads: int) -> dict[str, str]:
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")}


def _resolve_run_fn(run_fn: Callable[..., dict] | None) -> Callable[..., dict]:
    if run_fn is not None:
        return run_fn
    from .train import run  # lazily: torch and Lightning load here, after the thread settings

    return run


def _call_run(run_fn: Callable[..., dict], cfg: RunConfig, restart: bool, on_epoch: Callable[[dict], None]) -> tuple[str, Any]:
    """Run one training run; never raises (except KeyboardInterrupt): ("ok", run.json dict) |
    ("user", message) | ("error", traceback text)."""
    try:
        result = run_fn(cfg, restart=restart, progress=False, on_epoch=on_epoch)
    except UserError as exc:
        return "user", str(exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a run's crash must not take the review down
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return "error", f"{type(exc).__name__}: {exc}\n{tb}"
    if not isinstance(result, Mapping):
        return "error", f"run returned {type(result).__name__}, not the run.json dict"
    return "ok", json.loads(json.dumps(dict(result), default=str))


def _worker_main(conn: Any, run_fn_blob: bytes | None, threads: int) -> None:
    """A worker process: thread limits first, then torch; then runs tasks sent by the parent."""
    os.environ.update(_thread_env(threads))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us cleanly
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None:  # the review died (kill -9): stop at once instead of writing unlocked run folders
        def watch() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            os._exit(3)

        threading.Thread(target=watch, daemon=True).start()
    run_fn = _resolve_run_fn(pickle.loads(run_fn_blob) if run_fn_blob else None)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)

    def send(msg: tuple) -> None:
        try:
            conn.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(3)

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        key, cfg, restart = task
        send(("start", key, None))
        with _output_to(_log_path(cfg)):
            kind, payload = _call_run(run_fn, cfg, restart, lambda info, key=key: send(("epoch", key, dict(info))))
        send(("end", key, (kind, payload)))


def _log_path(cfg: RunConfig) -> Path:
    # Beside the run folder, not in it: train.run empties a fresh run's folder before it starts.
    return Path(cfg.logdir) / cfg.experiment / LOG_DIR / f"{cfg.run_label}-seed{cfg.seed}.log"


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout/stderr (file descriptors 1 and 2: Lightning's and C libraries'
    too) to ``path`` while a run trains, so the review's progress line stays readable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield  # the run itself will report the unwritable folder
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        with contextlib.suppress(OSError):
            if path.stat().st_size == 0:
                path.unlink()  # a quiet run leaves no log


@dataclass
class _Slot:
    proc: Any
    conn: Any
    task: tuple[str, RunConfig] | None = None


def _death_message(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process died: killed by {name}{hint}"
    return f"the worker process died with exit code {exitcode}"


class _Scheduler:
    """Runs the to-do list in-process or in worker processes, feeding progress and outcomes."""

    def __init__(self, todo: list[RunConfig], *, run_fn: Callable[..., dict] | None, restart: bool,
                 progress: _Progress):
        self.todo = todo
        self.run_fn, self.restart, self.progress = run_fn, restart, progress
        self.by_key = {_key(c): c for c in todo}
        self.outcomes: dict[str, RunOutcome] = {}
        self.user_error: str | None = None  # first UserError a run hit: stop starting runs

    def _finish(self, key: str, kind: str, payload: Any) -> None:
        cfg = self.by_key[key]
        if kind == "user":
            # Input the user must fix (missing data, a foreign checkpoint): not the run's failure.
            self.user_error = self.user_error or f"{cfg.run_dir}: {payload}"
            self.progress.running.pop(key, None)
            self.progress.epochs.pop(key, None)
            return
        if kind == "ok":
            out = _outcome(cfg, payload)
            if out.status == "failed" and (_read_run_json(cfg.run_dir) or {}).get("status") != "failed":
                _record_failure(cfg, out.error or "failed")
        else:
            out = _outcome(cfg, _record_failure(cfg, payload), error=payload)
        self.outcomes[key] = out
        self.progress.end(key, out)

    def run_in_process(self) -> None:
        run_fn = _resolve_run_fn(self.run_fn)
        for cfg in self.todo:
            if self.user_error:
                break
            key = _key(cfg)
            self.progress.start(key)
            kind, payload = _call_run(run_fn, cfg, self.restart, lambda info, key=key: self.progress.epoch(key, info))
            self._finish(key, kind, payload)

    def run_stacked(self) -> list[RunConfig]:
        """Train the stackable runs here as stacked models (:mod:`torchopt_review.stacked`), one
        stack per compatible configuration; returns the runs that cannot be stacked."""
        from .stacked import stack_key, train_stacked

        stacks: dict[tuple, list[RunConfig]] = {}
        rest: list[RunConfig] = []
        for cfg in self.todo:
            key = stack_key(cfg)
            if key is None:
                rest.append(cfg)
            else:
                stacks.setdefault(key, []).append(cfg)
        for cfgs in stacks.values():
            if self.user_error:
                break
            results = train_stacked(cfgs, restart=self.restart, on_start=self.progress.start,
                                    on_epoch=lambda key, info: self.progress.epoch(key, info))
            for key, (kind, payload) in results.items():
                self._finish(key, kind, payload)
        return rest

    def run_processes(self, workers: int, threads: int) -> None:
        import multiprocessing
        from multiprocessing.connection import wait

        ctx = multiprocessing.get_context("spawn")  # never fork a process whose torch threads exist
        blob = pickle.dumps(self.run_fn) if self.run_fn is not None else None
        pending = deque(self.todo)
        slots: list[_Slot] = []

        def spawn() -> _Slot:
            parent_conn, child_conn = ctx.Pipe(duplex=True)
            proc = ctx.Process(target=_worker_main, args=(child_conn, blob, threads), daemon=True,
                               name=f"review-worker-{len(slots)}")
            proc.start()
            child_conn.close()
            return _Slot(proc, parent_conn)

        def handle(slot: _Slot, msg: tuple) -> None:
            what, key, payload = msg
            if what == "start":
                self.progress.start(key)
            elif what == "epoch":
                self.progress.epoch(key, payload)
            elif what == "end":
                slot.task = None
                self._finish(key, *payload)

        try:
            while True:
                # Hand out work; replace dead workers while there is some.
                for idx, slot in enumerate(slots):
                    if slot.task is None and not slot.proc.is_alive() and pending and not self.user_error:
                        slot.conn.close()
                        slots[idx] = spawn()
                while len(slots) < min(workers, len(self.todo)) and pending and not self.user_error:
                    slots.append(spawn())
                for slot in slots:
                    if slot.task is None and pending and not self.user_error and slot.proc.is_alive():
                        cfg = pending.popleft()
                        slot.task = (_key(cfg), cfg)
                        try:
                            slot.conn.send((slot.task[0], cfg, self.restart))
                        except (BrokenPipeError, OSError):
                            pass  # it died: the sentinel says so below
                busy = [s for s in slots if s.task is not None]
                if not busy:
                    break
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=self.progress.interval)
                for slot in busy:
                    try:
                        while slot.conn.poll():
                            handle(slot, slot.conn.recv())
                    except (EOFError, OSError):
                        pass
                    if slot.task is not None and slot.proc.sentinel in ready:
                        slot.proc.join(timeout=5)
                        key, cfg = slot.task
                        slot.task = None
                        self._finish(key, "error", _death_message(slot.proc.exitcode))
                self.progress.draw()
        finally:
            for slot in slots:
                if slot.task is not None:
                    # Interrupted mid-run: stop it at once. Its last finished epoch is checkpointed
                    # (atomically) and its run.json still says "running": the next review resumes it.
                    # (SIGTERM would let Lightning turn the stop into a "failed" run.)
                    slot.proc.kill()
                else:
                    try:
                        slot.conn.send(None)
                    except (BrokenPipeError, OSError):
                        pass
            deadline = time.monotonic() + 10
            for slot in slots:
                slot.proc.join(timeout=max(0.1, deadline - time.monotonic()))
                if slot.proc.is_alive():
                    slot.proc.kill()
                    slot.proc.join(timeout=5)
                slot.conn.close()


ENGINES = ("auto", "pool", "stacked")


def resolve_engine(engine: str, todo: list[RunConfig], run_fn: Callable[..., dict] | None) -> str:
    """``auto``: stacked when every run trains on a GPU (and ``train.run`` is the run function)."""
    if engine != "auto":
        if engine == "stacked" and run_fn is not None:
            raise ConfigError("engine='stacked' trains with its own loop: it cannot take a run_fn")
        return engine
    if run_fn is not None or not todo:
        return "pool"
    from .train import resolve_device

    return "stacked" if all(resolve_device(c.trainer.accelerator) == "cuda" for c in todo) else "pool"


def _key(cfg: RunConfig) -> str:
    return f"{cfg.run_label}/seed{cfg.seed}"


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may use (SLURM/cgroup cpusets), not the node's count
    except AttributeError:
        return os.cpu_count() or 1


def default_workers() -> int:
    return _cpus()


# -- the review --------------------------------------------------------------------------------

def _review_record(cfg: ReviewConfig, runs: list[RunConfig]) -> dict[str, Any]:
    """What ``runs/<exp>/review.json`` holds: the resolved plan, for the report and for people."""
    base: dict[str, str] = {}
    for label, _ in _selected(cfg):
        for lr in cfg.lrs or [None]:
            base[label if lr is None else _lr_label(label, lr)] = label
    labels: dict[str, Any] = {}
    for r in runs:
        b = base.get(r.run_label, r.run_label)
        labels.setdefault(r.run_label, {
            "optimizer": r.optim.name, "lr": r.optim.lr, "kwargs": r.optim.kwargs, "semantics": r.optim.semantics,
            "base": b, "variant": b in cfg.variants,
        })
    return {
        "experiment": cfg.experiment, "description": cfg.description, "source": cfg.source,
        "seeds": cfg.seeds, "lrs": cfg.lrs, "runs": labels,
        "overrides": merge(cfg.overrides, cfg.cli_overrides),
        "settings": runs[0].to_dict() if runs else None,
    }


def review(
    cfg: ReviewConfig | Mapping[str, Any],
    *,
    workers: int | None = None,
    run_fn: Callable[..., dict] | None = None,
    restart: bool = False,
    shard: tuple[int, int] | str | None = None,
    report: bool = True,
    in_process: bool = False,
    threads: int | None = None,
    engine: str = "auto",
    stream: TextIO | None | object = "stderr",
) -> ReviewResult:
    """Run a review: expand, lock, skip finished runs, run the rest, record failures, report.

    Args:
        cfg: a :class:`ReviewConfig` or a mapping with its keys.
        workers: worker processes (default: the usable CPU cores); at most one per run to do.
        run_fn: ``train.run`` (default, imported in each worker) or a stand-in with its signature;
            with worker processes it must be picklable (a module-level function).
        restart: retrain every run from scratch (checkpoints and finished results are ignored).
        shard: ``(i, n)`` or ``"i/n"``, 1-based: run only this shard; no report.
        report: write ``runs/<exp>/report.md`` (via :mod:`torchopt_review.report`) at the end.
        in_process: run in this process, one run after the other (tests, debugging).
        threads: torch threads per worker (default 1: see the module docstring's measurement).
        engine: ``pool`` (one run per worker process), ``stacked`` (every stackable run of the
            review trained together as one batched model in this process, see
            :mod:`torchopt_review.stacked`) or ``auto``: stacked when the runs train on a GPU,
            where it is ~100x faster, the pool on CPU, where it is not faster (``bench review``).
        stream: where progress and the summary go (default: ``sys.stderr`` at call time; ``None``: silent).

    Raises:
        UserError: bad configuration, a locked experiment, a run folder holding a different
            configuration, or an error a run hit that the user must fix (the review stops).
    """
    t0 = time.monotonic()
    if stream == "stderr":
        stream = sys.stderr
    if not isinstance(cfg, ReviewConfig):
        cfg = ReviewConfig.from_mapping(cfg)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    elif shard is not None:
        shard = parse_shard(f"{shard[0]}/{shard[1]}")
    if workers is None:
        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {workers!r}")
    if threads is not None and threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads!r}")
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")

    all_runs = expand(cfg)
    mine = shard_runs(all_runs, shard)
    if run_fn is None:
        # The dataset is every run's first need: find and check it (magic numbers, sizes, labels)
        # before anything is written or spawned. Loading it is ~0.5 s and cached per process.
        from .data import load_fashion_mnist

        for data_dir in dict.fromkeys(r.data.data_dir for r in mine):
            load_fashion_mnist(data_dir)
    exp_dir = cfg.exp_dir()
    lock = _Lock(exp_dir, shard).acquire()
    try:
        _write_json_atomic(exp_dir / "review.json", _review_record(cfg, all_runs))
        outcomes: dict[str, RunOutcome] = {}
        todo: list[RunConfig] = []
        for rc in mine:
            stored = _read_run_json(rc.run_dir)
            if not restart and stored:
                diff = _stored_mismatch(rc, stored)
                if diff:
                    raise UserError(
                        f"{rc.run_dir} holds a run with a different configuration ({diff}); "
                        f"use another --experiment, or --restart to retrain it"
                    )
                if _finished(rc, stored):
                    outcomes[_key(rc)] = _outcome(rc, stored, skipped=True)
                    continue
            todo.append(rc)

        title = f"review {cfg.experiment}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
        engine = resolve_engine(engine, todo, run_fn)
        n_workers = 1 if in_process or engine == "stacked" else max(1, min(workers, len(todo)))
        progress = _Progress(stream, len(mine), {_key(c): c.trainer.epochs for c in todo}, title, workers=n_workers)
        progress.finished = len(outcomes)
        for o in outcomes.values():
            if o.status in progress.bad:
                progress.bad[o.status] += 1
        if stream is not None:
            skipped = f", {len(outcomes)} finished before (skipped)" if outcomes else ""
            where = ("stacked in one process" if engine == "stacked"
                     else f"on {n_workers} worker{'s' * (n_workers != 1)}")
            print(f"{title}: {_plural(len(mine), 'run')}{skipped}, {len(todo)} to run"
                  + (f" {where}" if todo else ""), file=stream, flush=True)
        sched = _Scheduler(todo, run_fn=run_fn, restart=restart, progress=progress)
        try:
            if todo and engine == "stacked":
                sched.todo = sched.run_stacked()  # what cannot be stacked (a CNN) goes on below
            if sched.todo and not sched.user_error and in_process:
                sched.run_in_process()
            elif sched.todo and not sched.user_error:
                sched.run_processes(n_workers, threads or 1)
        finally:
            progress.close()
        outcomes.update(sched.outcomes)
        if sched.user_error:
            raise UserError(sched.user_error)
        ordered = [outcomes[_key(rc)] for rc in mine if _key(rc) in outcomes]
        result = ReviewResult(cfg.experiment, exp_dir, ordered, time.monotonic() - t0, shard)
    finally:
        lock.release()

    if report and shard is None:
        result.report, result.report_error = _write_report(exp_dir, _review_record(cfg, all_runs), stream)
    if stream is not None:
        _print_summary(result, stream)
    return result


def _write_report(exp_dir: Path, record: dict[str, Any], stream: TextIO | None) -> tuple[Path | None, str | None]:
    try:
        from .report import write_report
    except ImportError as exc:
        if stream is not None:
            print(f"report: not written: torchopt_review.report is not available ({exc})", file=stream)
        return None, None  # an incomplete install, not a failed review
    try:
        return Path(write_report(exp_dir, config=record)), None
    except Exception as exc:  # noqa: BLE001 - the runs are safe on disk; say how to retry
        msg = f"{type(exc).__name__}: {_one_line(str(exc))}"
        if stream is not None:
            print(f"report: failed ({msg}); retry with: python -m torchopt_review.report {exp_dir}", file=stream)
        return None, msg


def _print_summary(result: ReviewResult, stream: TextIO) -> None:
    n = len(result.outcomes)
    skipped = sum(o.skipped for o in result.outcomes)
    parts = [f"{result.count('done')} done", f"{result.count('diverged')} diverged", f"{result.count('failed')} failed"]
    where = f" shard {result.shard[0]}/{result.shard[1]}" if result.shard else ""
    print(f"review {result.experiment}{where}: {_plural(n, 'run')}: {', '.join(parts)}"
          + (f" ({skipped} finished before)" if skipped else "") + f" in {_fmt_s(result.wall_s)}", file=stream)
    for o in result.outcomes:
        if o.status == "diverged" and not o.skipped:
            d = (o.result or {}).get("diverged") or {}
            at = f" at epoch {d.get('epoch')}, step {d.get('step')}" if isinstance(d, Mapping) and d else ""
            print(f"  diverged: {o.key}{at} (a result: recorded, not retried)", file=stream)
    for o in result.failed:
        log = o.run_dir.parent.parent / LOG_DIR / f"{o.label}-seed{o.seed}.log"
        where = f"{o.run_dir / RUN_JSON}" + (f", {log}" if log.exists() else "")
        print(f"  failed: {o.key}: {_one_line(o.error)}  ({where}; rerun the same command to retry)", file=stream)
    if result.report is not None:
        print(f"report: {result.report}", file=stream)
    elif result.shard is not None:
        print(f"when every shard has finished: python -m torchopt_review.report {result.exp_dir}", file=stream)
    stream.flush()


# -- CLI ---------------------------------------------------------------------------------------

def _config_path(text: str) -> Path:
    p = Path(text)
    if not p.exists() and "/" not in text and not text.endswith((".yaml", ".yml")):
        named = CONFIG_DIR / "review" / f"{text}.yaml"  # --config geron
        if named.is_file():
            return named
    return p


class _Parser(argparse.ArgumentParser):
    """A usage error is one line (``error: ...``, exit status 2), like every other error here."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def _parser() -> argparse.ArgumentParser:
    from .optim.registry import optimizer_names

    p = _Parser(
        prog="python -m torchopt_review.review",
        description="Train every optimizer x seed of a review (in parallel, resumable), then write the report.",
        epilog="Exit status: 0 all runs done or diverged (divergence is a result); 1 some run failed; "
               "2 usage/config error or locked experiment; 130 interrupted (rerun to resume).",
    )
    p.add_argument("--config", default=str(CONFIG_DIR / "review" / "blog.yaml"),
                   help="review YAML, or a name in configs/review/ (blog, geron); default: configs/review/blog.yaml")
    p.add_argument("--opts", help=f"comma-separated run labels or optimizer names, 'all' (the config's runs) "
                                  f"and/or variant labels; registry: {', '.join(optimizer_names())}")
    p.add_argument("--variants", action="store_true", help="also run every variant of the config")
    p.add_argument("--seeds", help="e.g. 0-4 or 0,2,5 (default: the config's)")
    p.add_argument("--lrs", help="learning-rate grid, e.g. 1e-4,1e-3,1e-2 (labels get -lr<lr>)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the config's)")
    p.add_argument("--workers", type=int, help="worker processes (default: the usable CPU cores; 1 with --accelerator gpu)")
    p.add_argument("--threads", type=int, help="torch threads per worker (default 1: runs in parallel beat threads in a run)")
    p.add_argument("--experiment", help="runs/<experiment>/ (default: the config's)")
    p.add_argument("--logdir", help="root of the run folders (default: runs)")
    p.add_argument("--shard", help="i/n, 1-based: run only shard i of n (no report; see the module docs)")
    p.add_argument("--restart", action="store_true", help="retrain every run from scratch")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--limit-batches", type=int, help="smoke test: optimizer steps per epoch")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files")
    p.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), help="default: the config's (cpu)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="pool: one run per worker process; stacked: all runs as one batched model in this process "
                        "(one CUDA graph per step on a GPU); auto (default): stacked on a GPU, pool on CPU")
    p.add_argument("--precision", choices=("32", "tf32", "bf16-mixed"), help="default 32 (fp32, TF32 off)")
    p.add_argument("--in-process", action="store_true", help="no worker processes: one run after the other here")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    return p


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("workers", "threads", "epochs", "limit_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    shard = parse_shard(args.shard) if args.shard else None
    cli: dict[str, Any] = {}
    if args.epochs is not None:
        cli = merge(cli, {"trainer": {"epochs": args.epochs}})
    if args.limit_batches is not None:
        cli = merge(cli, {"trainer": {"limit_batches": args.limit_batches}})
    if args.accelerator is not None:
        cli = merge(cli, {"trainer": {"accelerator": args.accelerator}})
    if args.precision is not None:
        cli = merge(cli, {"trainer": {"precision": args.precision}})
    if args.data_dir is not None:
        cli = merge(cli, {"data": {"data_dir": args.data_dir}})
    fields: dict[str, Any] = {"cli_overrides": cli, "include_variants": args.variants}
    if args.opts is not None:
        fields["opts"] = parse_opts(args.opts)
    if args.seeds is not None:
        fields["seeds"] = parse_seeds(args.seeds)
    if args.lrs is not None:
        fields["lrs"] = args.lrs
    if args.experiment is not None:
        fields["experiment"] = args.experiment
    if args.logdir is not None:
        fields["logdir"] = args.logdir
    cfg = load_review(_config_path(args.config), **fields)
    workers = args.workers
    accelerator = (cfg.cli_overrides.get("trainer") or {}).get("accelerator") or (cfg.overrides.get("trainer") or {}).get("accelerator")
    if workers is None and accelerator in ("gpu", "cuda"):
        workers = 1  # one GPU: one process drives it (what cannot be stacked runs one after the other)
    result = review(cfg, workers=workers, restart=args.restart, shard=shard, report=not args.no_report,
                    in_process=args.in_process, threads=args.threads, engine=args.engine)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
