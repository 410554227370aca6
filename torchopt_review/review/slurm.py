"""``--executor slurm``: the review's runs as a SLURM job array, submitted with ``submitit``.

One *unit* is one job-array task: one run (the pool engine's unit), or one stack of runs when the
stacked engine trains them (one GPU per stack). A task trains its runs with the same code a local
review uses (:func:`torchopt_review.train.run`, or :func:`torchopt_review.stacked.train_stacked`),
into the same run folders, which must be on a filesystem every node sees.

The submitting process holds the experiment's lock and watches: the scheduler's job states (one
``sacct`` call per poll, through submitit) and the run folders (``run.json``, ``metrics.csv``)
give the progress line (done / running / pending / failed). A unit whose job ends without its
runs having ended (cancelled, node failure, time limit, out of memory, vanished) is resubmitted,
resuming from the runs' last checkpointed epoch, at most ``max_retries`` times; a run that failed
*on its own* (its code raised: the job completed) is recorded ``failed`` and not retried, like a
local review's. ``--no-wait`` submits and returns; the job ids are kept in
``runs/<experiment>/.slurm/jobs.json``, so the same review command run again waits for those jobs
instead of submitting them twice.

Pre-emption: submitit asks SLURM for a warning signal (``--signal=USR2@90``); a task that gets it
calls :meth:`Unit.checkpoint`, which asks for the same unit again with ``restart=False``, and
submitit requeues the job (``scontrol requeue``). Every finished epoch is already checkpointed
(atomically, by :class:`~torchopt_review.runs.RunFolder`), so the requeued task resumes from the
last one and ends with the metrics.csv an uninterrupted run writes; the epoch in flight is
trained again.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import RunConfig
from ..errors import ConfigError, Terminated, UserError
from ..runs import METRICS_CSV, atomic_write_text, is_finished, read_json, read_record
from . import worker
from .progress import plural
from .results import key_of

SLURM_DIR = ".slurm"  # runs/<exp>/.slurm/: submitit's job folders and jobs.json
JOBS_JSON = "jobs.json"

# sacct states of a job that is over; anything else (PENDING, RUNNING, REQUEUED, COMPLETING...) is not.
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                   "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"})
QUEUED = frozenset({"", "UNKNOWN", "PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED"})
# States that are over only if they last: a preempted job is normally requeued (PENDING again), and
# a job sacct does not list yet (or no longer) reads UNKNOWN. After this long they count as ended.
LINGER_S = 180.0
# sbatch options submitit writes itself: set them with the dedicated options, not --slurm-extra.
RESERVED = frozenset({"array", "output", "error", "open_mode", "wrap", "job_name", "signal", "parsable",
                      "partition", "time", "cpus_per_task", "gpus_per_task", "mem"})


# -- options --------------------------------------------------------------------------------------

def time_minutes(text: Any, where: str = "--slurm-time") -> int:
    """SLURM's time formats -> whole minutes (rounded up): ``M``, ``M:S``, ``H:M:S``, ``D-H``,
    ``D-H:M``, ``D-H:M:S``."""
    usage = f"{where} must be a SLURM time limit like 30, 1:30:00 or 2-00:00:00, got {text!r}"
    if isinstance(text, bool):
        raise ConfigError(usage)
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str) or not re.fullmatch(r"(\d+-)?\d+(:\d+){0,2}", text.strip()):
        raise ConfigError(usage)
    days_s, _, rest = text.strip().rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    days = int(days_s) if days_s else 0
    if days_s:  # D-H, D-H:M, D-H:M:S
        h, m, s = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        h, m, s = parts
    else:  # M or M:S
        h, (m, s) = 0, (parts + [0])[:2]
    minutes = math.ceil(((days * 24 + h) * 60 + m) + s / 60)
    if minutes < 1:
        raise ConfigError(f"{where} must be at least one minute, got {text!r}")
    return minutes


def _positive_int(value: Any, where: str, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ConfigError(f"{where} must be an integer >= {0 if zero else 1}, got {value!r}")
    return value


@dataclass(frozen=True)
class SlurmOptions:
    """What each task asks SLURM for (the review YAML's ``slurm:`` block; the CLI's ``--slurm-*``).

    Attributes:
        partition: ``--partition`` (None: the cluster's default).
        time: ``--time`` per task, in SLURM's format (one run, or one stack of runs).
        cpus_per_task: ``--cpus-per-task``; also the task's torch threads unless ``--threads`` says.
        gpus_per_task: ``--gpus-per-task`` (None: 1 when the runs ask for a GPU, else none).
        mem: ``--mem`` per node, e.g. ``4G`` (None: the cluster's default).
        array_parallelism: at most this many tasks at once (``--array=...%N``; None: submitit's 256).
        extra: any other sbatch option, ``{name: value}`` (``True`` for a flag), e.g. ``{qos: high}``.
        max_retries: resubmissions of a unit whose job ended without finishing its runs.
        poll_s: seconds between looks at the scheduler and the run folders.
    """

    partition: str | None = None
    time: str = "1:00:00"
    cpus_per_task: int = 1
    gpus_per_task: int | None = None
    mem: str | None = None
    array_parallelism: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    max_retries: int = 2
    poll_s: float = 5.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, where: str = "slurm") -> "SlurmOptions":
        if data is not None and not isinstance(data, Mapping):
            raise ConfigError(f"{where} must be a mapping of SLURM settings (e.g. partition: gpu), got {data!r}")
        data = dict(data or {})
        names = [f.name for f in dataclasses.fields(cls)]

        def at(key: str) -> str:  # how the user wrote it: --slurm-cpus-per-task, or slurm.cpus_per_task
            return f"--slurm-{key.replace('_', '-')}" if where == "--slurm" else f"{where}.{key}"

        for key in data:
            if key not in names:
                raise ConfigError(f"{where}: unknown key {key!r}; valid: {', '.join(names)}")
        kw: dict[str, Any] = {}
        for key, value in data.items():
            if value is None and key not in ("time", "cpus_per_task", "extra", "max_retries", "poll_s"):
                kw[key] = None
            elif key in ("partition",):
                if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
                    raise ConfigError(f"{at(key)} must be a partition name, got {value!r}")
                kw[key] = value
            elif key == "time":
                time_minutes(value, at("time"))
                kw[key] = str(value).strip()
            elif key in ("cpus_per_task", "array_parallelism"):
                kw[key] = _positive_int(value, at(key))
            elif key in ("gpus_per_task", "max_retries"):
                kw[key] = _positive_int(value, at(key), zero=True)
            elif key == "mem":
                if not isinstance(value, (str, int)) or isinstance(value, bool) or \
                        not re.fullmatch(r"[1-9][0-9]*[KMGTkmgt]?", str(value)):
                    raise ConfigError(f"{at('mem')} must be a size like 4000 (MB) or 4G, got {value!r}")
                kw[key] = str(value).upper()
            elif key == "extra":
                kw[key] = _extra_value(value, at("extra"))
            elif key == "poll_s":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= 3600:
                    raise ConfigError(f"{at('poll_s')} must be a number of seconds in 0.1..3600, got {value!r}")
                kw[key] = float(value)
        return cls(**kw)

    def replace(self, **fields: Any) -> "SlurmOptions":
        """These options with ``fields`` (the CLI's) on top, validated again; ``extra`` adds to the file's."""
        SlurmOptions.from_mapping(fields, "--slurm")  # errors name the CLI's options
        if "extra" in fields:
            fields["extra"] = {**self.extra, **_extra_value(fields["extra"], "--slurm-extra")}
        return SlurmOptions.from_mapping({**dataclasses.asdict(self), **fields})

    @property
    def minutes(self) -> int:
        return time_minutes(self.time)


def _extra_value(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, (list, tuple)):  # the CLI's repeated --slurm-extra NAME[=VALUE]
        out: dict[str, Any] = {}
        for item in value:
            name, eq, val = str(item).partition("=")
            out[name] = val if eq else True
        value = out
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must map sbatch option names to values (e.g. qos: high), got {value!r}")
    out = {}
    for name, val in value.items():
        key = str(name).strip().lstrip("-").replace("-", "_")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise ConfigError(f"{where}: {name!r} is not an sbatch option name (e.g. qos, account, constraint)")
        if key in RESERVED:
            hint = f"--slurm-{key.replace('_', '-')}" if key in ("partition", "time", "cpus_per_task", "gpus_per_task",
                                                                "mem") else "the review sets it itself"
            raise ConfigError(f"{where}: {name!r} cannot be set here ({hint})")
        if not (val is True or isinstance(val, (str, int, float)) and not isinstance(val, bool)):
            raise ConfigError(f"{where}.{key} must be a string, a number or true (a flag), got {val!r}")
        out[key] = val
    return out


def check_commands() -> None:
    """The SLURM commands the submitting process needs, or one line saying where to run it."""
    missing = [c for c in ("sbatch", "sacct", "srun") if shutil.which(c) is None]
    if missing:
        raise UserError(f"--executor slurm: {', '.join(missing)} not found; run the review where SLURM's commands "
                        "are on PATH, e.g. a login node (or use --shard in your own sbatch script)")


# -- what a task runs -----------------------------------------------------------------------------

@dataclass
class Unit:
    """One job-array task: train ``cfgs`` (one run, or one stack), as a local review would."""

    cfgs: list[RunConfig]
    restart: bool = False
    stacked: bool = False
    threads: int = 1
    run_fn: worker.RunFn | None = None  # train.run, or a stand-in (a module-level function)

    @property
    def keys(self) -> list[str]:
        return [key_of(c) for c in self.cfgs]

    def __call__(self) -> dict[str, tuple[str, Any]]:
        """``run key -> ("ok", run.json) | ("user", message) | ("error", traceback)``."""
        import torch

        torch.set_num_threads(self.threads)
        if self.stacked:
            from ..stacked import train_stacked

            return train_stacked(self.cfgs, restart=self.restart)
        run_fn = worker.resolve_run_fn(self.run_fn)
        out: dict[str, tuple[str, Any]] = {}
        for cfg in self.cfgs:
            with worker.output_to(worker.review_log(Path(cfg.logdir) / cfg.experiment, cfg.run_label, cfg.seed)):
                # SystemExit passes: it is submitit leaving after a requeue (pre-emption), not the run's failure
                out[key_of(cfg)] = worker.call_run(run_fn, cfg, self.restart, lambda info: None,
                                                   passthrough=(SystemExit,))
        return out

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this on SLURM's warning signal: the same unit, resuming (never restarting)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(dataclasses.replace(self, restart=False))


def units_of(todo: list[RunConfig], *, stacked: bool, restart: bool, threads: int,
             run_fn: worker.RunFn | None) -> list[Unit]:
    """One unit per run, or per stack (equal :func:`~torchopt_review.stacked.stack_key`) when stacked."""
    if not stacked:
        return [Unit([c], restart, False, threads, run_fn) for c in todo]
    from ..stacked import stack_key

    stacks: dict[Any, tuple[bool, list[RunConfig]]] = {}  # key -> (stackable, runs)
    for i, c in enumerate(todo):
        k = stack_key(c)
        stacks.setdefault(("unstackable", i) if k is None else k, (k is not None, []))[1].append(c)
    return [Unit(cfgs, restart, stackable, threads, run_fn) for stackable, cfgs in stacks.values()]


def wants_gpu(todo: list[RunConfig]) -> bool:
    return any(c.trainer.accelerator in ("gpu", "cuda") for c in todo)


# -- submitting and watching ----------------------------------------------------------------------

def _state(job: Any) -> str:
    """The job's state as sacct last said it (``CANCELLED by 0`` -> ``CANCELLED``)."""
    raw = job.watcher.get_info(job.job_id, mode="cache").get("State") or "UNKNOWN"
    return raw.split()[0].upper().rstrip("+")


def _live(job: Any) -> bool:
    """Queued or running, as sacct last said (a job sacct does not know is not live)."""
    state = _state(job)
    return state not in ENDED and state != "UNKNOWN"


def _recorded(folder: Path) -> list[tuple[dict[str, Any], Any]]:
    """``jobs.json``'s entries with their submitit jobs, their states freshly asked (one sacct call)."""
    record = read_json(folder / JOBS_JSON)
    if not isinstance(record, dict) or not isinstance(record.get("units"), list):
        return []
    import submitit

    out = [(e, submitit.SlurmJob(folder=folder / "%j", job_id=str(e["job_id"]))) for e in record["units"]
           if isinstance(e, dict) and "job_id" in e and isinstance(e.get("keys"), list) and e["keys"]]
    if out:
        out[0][1].watcher.update()
    return out


@dataclass
class _Tracked:
    unit: Unit
    job: Any
    attempt: int = 1
    history: list[list[str]] = field(default_factory=list)  # [job id, how it ended] of earlier attempts
    seen: str = ""  # last state seen
    since: float = field(default_factory=time.monotonic)  # when `seen` was first seen
    ran: bool = False  # seen RUNNING (a later PENDING is a requeue)
    epochs: dict[str, int] = field(default_factory=dict)


class SlurmExecutor:
    """Submits units, watches them, resubmits what the infrastructure lost, and records outcomes
    through the review's :class:`~torchopt_review.review.pool.Scheduler` (``finish``)."""

    def __init__(self, exp_dir: Path, options: SlurmOptions, *, finish: Callable[[str, str, Any], None],
                 progress: Any, experiment: str, gpus: int, threads: int):
        self.exp_dir, self.options, self.finish = exp_dir, options, finish
        self.progress, self.experiment = progress, experiment
        self.gpus, self.threads = gpus, threads  # per task: every submission of this review asks the same
        self.folder = exp_dir / SLURM_DIR
        self.tracked: list[_Tracked] = []  # units whose job has not ended
        self.ended: list[_Tracked] = []  # and those whose job has (kept in jobs.json)
        self._saved = ""  # jobs.json as last written

    def say(self, text: str) -> None:
        self.progress.note(text)

    def _executor(self) -> Any:
        import submitit

        o = self.options
        ex = submitit.SlurmExecutor(folder=self.folder / "%j", max_num_timeout=max(3, o.max_retries + 1))
        params: dict[str, Any] = {
            "job_name": f"review-{self.experiment}", "time": o.minutes, "cpus_per_task": o.cpus_per_task,
            "additional_parameters": dict(o.extra),
            # thread limits before torch loads in the task (the review's one-thread-per-run rule)
            "setup": [f"export {k}={v}" for k, v in worker.thread_env(self.threads).items()],
        }
        if o.partition:
            params["partition"] = o.partition
        if o.mem:
            params["mem"] = o.mem
        if self.gpus:
            params["gpus_per_task"] = self.gpus
        if o.array_parallelism:
            params["array_parallelism"] = o.array_parallelism
        ex.update_parameters(**params)
        return ex

    def _sbatch(self, submit: Callable[[], Any]) -> Any:
        try:
            return submit()
        except Exception as exc:  # submitit's FailedJobError: sbatch refused (bad partition, time limit ...)
            text = " ".join(str(exc).split())
            raise UserError(f"--executor slurm: sbatch refused the jobs: {text[-400:]}") from None

    def submit(self, units: list[Unit]) -> None:
        if not units:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        ex = self._executor()
        jobs = self._sbatch(lambda: ex.submit_array(units))
        self.tracked += [_Tracked(u, j) for u, j in zip(units, jobs)]
        self.save()
        ids = sorted({j.job_id.split("_")[0] for j in jobs})
        self.say(f"submitted {plural(len(units), 'task')} to SLURM (job {', '.join(ids)}; logs in {self.folder})")

    def attach(self, todo: list[RunConfig], run_fn: worker.RunFn | None = None) -> list[RunConfig]:
        """Watch the jobs a previous review of this experiment left running (``--no-wait``) instead
        of submitting their runs again; returns the runs no live job is training."""
        by_key = {key_of(c): c for c in todo}
        attached: set[str] = set()
        for entry, job in _recorded(self.folder):
            keys = [str(k) for k in entry["keys"]]
            if not all(k in by_key for k in keys) or not _live(job):
                continue
            unit = Unit([by_key[k] for k in keys], False, bool(entry.get("stacked")), int(entry.get("threads", 1)), run_fn)
            self.tracked.append(_Tracked(unit, job, int(entry.get("attempt", 1)), list(entry.get("history", []))))
            attached.update(keys)
        if attached:
            self.say(f"watching {plural(len(attached), 'run')} already submitted to SLURM "
                     f"(job {', '.join(sorted({t.job.job_id for t in self.tracked}))})")
        return [c for c in todo if key_of(c) not in attached]

    def save(self) -> None:
        """runs/<exp>/.slurm/jobs.json: which job trains which runs (for a later review or a person)."""
        units = [{"keys": t.unit.keys, "job_id": t.job.job_id, "state": t.seen or "SUBMITTED", "attempt": t.attempt,
                  "history": t.history, "stacked": t.unit.stacked, "threads": t.unit.threads}
                 for t in self.ended + self.tracked]
        text = json.dumps({"experiment": self.experiment, "units": units}, indent=2)
        if text != self._saved:  # every poll asks; the file changes only when a job's state does
            atomic_write_text(self.folder / JOBS_JSON, text + "\n")
            self._saved = text

    def wait(self) -> None:
        while self.tracked:
            self.tracked[0].job.watcher.update()  # one sacct call for every job
            for t in list(self.tracked):
                self._look(t)
            self._count_pending()
            self.progress.draw()
            self.save()
            if self.tracked:
                time.sleep(self.options.poll_s)

    def _count_pending(self) -> None:
        """Runs whose task waits in the queue (submitted, pending, requeued), for the progress line."""
        self.progress.pending = sum(len(t.unit.cfgs) for t in self.tracked if t.seen in QUEUED)

    def _look(self, t: _Tracked) -> None:
        state = _state(t.job)
        now = time.monotonic()
        if state != t.seen:
            if t.ran and state in ("PENDING", "REQUEUED"):
                self.say(f"SLURM job {t.job.job_id} ({', '.join(t.unit.keys)}) was requeued (pre-empted?): "
                         "it resumes from the last checkpointed epoch")
                t.ran = False
            t.seen, t.since = state, now
            self._count_pending()
        if state == "RUNNING":
            t.ran = True
            for cfg in t.unit.cfgs:
                key = key_of(cfg)
                if key not in t.epochs:
                    t.epochs[key] = 0
                    self.progress.start(key)
                done = _rows(cfg.run_dir / METRICS_CSV)
                if done > t.epochs[key]:
                    t.epochs[key] = done
                    self.progress.epoch(key, {"epoch": done})
        if state == "COMPLETED" or (state == "UNKNOWN" and t.job.paths.result_pickle.exists()):
            self._completed(t)
        elif state in ENDED or (state in ("PREEMPTED", "UNKNOWN") and now - t.since > LINGER_S):
            self._lost(t, state)

    def _completed(self, t: _Tracked) -> None:
        try:
            results = t.job.result()
        except Exception as exc:  # noqa: BLE001 - the task itself broke (not a run): retry it
            self._lost(t, f"COMPLETED without a result ({type(exc).__name__})")
            return
        self.tracked.remove(t)
        self.ended.append(t)
        for key, (kind, payload) in results.items():
            self.finish(key, kind, payload)

    def _lost(self, t: _Tracked, state: str) -> None:
        """The job ended with runs unfinished: what finished is kept, the rest goes again (bounded)."""
        self.tracked.remove(t)
        t.seen = state
        self.ended.append(t)
        left = []
        for cfg in t.unit.cfgs:
            stored = read_record(cfg.run_dir)
            if is_finished(cfg, stored):
                self.finish(key_of(cfg), "ok", stored)
            else:
                left.append(cfg)
        if not left:
            return
        history = t.history + [[t.job.job_id, state]]
        log = t.job.paths.stderr
        if t.attempt > self.options.max_retries:
            why = (f"SLURM job {t.job.job_id} ended {state} with the run unfinished, {plural(t.attempt, 'attempt')} "
                   f"({'; '.join(f'{j} {s}' for j, s in history)}); task log: {log}")
            for cfg in left:
                self.finish(key_of(cfg), "error", why)
            return
        unit = dataclasses.replace(t.unit, cfgs=left, restart=False)  # resume from the checkpoints
        ex = self._executor()
        job = self._sbatch(lambda: ex.submit(unit))
        self.tracked.append(_Tracked(unit, job, t.attempt + 1, history))
        for cfg in left:
            self.progress.drop(key_of(cfg))
        self.say(f"SLURM job {t.job.job_id} ({', '.join(unit.keys)}) ended {state} with the run unfinished: "
                 f"resubmitted as job {job.job_id} (retry {t.attempt} of {self.options.max_retries})")


def _rows(path: Path) -> int:
    """Data rows in a metrics.csv (its epochs so far); 0 when there is none yet."""
    try:
        with open(path, "rb") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return 0


def live_jobs(exp_dir: Path) -> list[str]:
    """The jobs listed in ``runs/<exp>/.slurm/jobs.json`` that SLURM still runs or queues (empty
    when there is no such file, or no ``sacct`` to ask)."""
    if not (exp_dir / SLURM_DIR / JOBS_JSON).exists() or not shutil.which("sacct"):
        return []
    try:
        import submitit  # noqa: F401
    except ImportError:
        return []
    return [job.job_id for _, job in _recorded(exp_dir / SLURM_DIR) if _live(job)]


def submit_and_wait(todo: list[RunConfig], *, exp_dir: Path, experiment: str, options: SlurmOptions,
                    finish: Callable[[str, str, Any], None], progress: Any, restart: bool,
                    stacked: bool, threads: int | None, run_fn: worker.RunFn | None, wait: bool) -> list[str]:
    """Train ``todo`` on SLURM. Returns the keys of runs left running (``wait=False``)."""
    gpus = options.gpus_per_task if options.gpus_per_task is not None else (1 if wants_gpu(todo) else 0)
    ex = SlurmExecutor(exp_dir, options, finish=finish, progress=progress, experiment=experiment, gpus=gpus,
                       threads=threads or options.cpus_per_task)
    if restart:
        live = live_jobs(exp_dir)
        if live:  # they would write the very run folders a restart starts again
            raise UserError(f"--restart: SLURM jobs of experiment {experiment!r} are still queued or running "
                            f"({', '.join(live)}); scancel them first")
    fresh = todo if restart else ex.attach(todo, run_fn)
    ex.submit(units_of(fresh, stacked=stacked, restart=restart, threads=ex.threads, run_fn=run_fn))
    if not wait:
        return [k for t in ex.tracked for k in t.unit.keys]
    try:
        ex.wait()
    except (KeyboardInterrupt, Terminated):  # this process stops watching; the cluster goes on
        ex.save()
        ex.say(f"stopped watching: the SLURM jobs go on (ids in {ex.folder / JOBS_JSON}); run the same command to "
               "wait for them and write the report")
        raise
    return []


__all__ = ["SlurmOptions", "Unit", "SlurmExecutor", "submit_and_wait", "live_jobs", "check_commands", "time_minutes",
           "SLURM_DIR", "JOBS_JSON"]
