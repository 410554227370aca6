"""The review itself: plan -> lock -> skip what is finished -> train the rest with the chosen
engine -> report. :func:`review` is the function API the CLI and ``bench`` call."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO

from ..config import RunConfig
from ..errors import ConfigError, Terminated, UserError
from ..runs import NO_SPACE, atomic_write_json, is_finished, read_record, stored_mismatch
from .expand import expand, review_record, shard_runs
from .lock import ExperimentLock
from .plan import ReviewConfig, parse_shard
from .pool import Scheduler, default_workers
from .progress import Progress, one_line, plural
from .results import ReviewResult, RunOutcome, key_of, outcome_of, print_summary

ENGINES = ("auto", "pool", "stacked")
EXECUTORS = ("local", "slurm")  # where the runs train: here, or as SLURM jobs (review/slurm.py)
REVIEW_JSON = "review.json"  # runs/<experiment>/review.json: the plan, for the report and for people


def resolve_engine(engine: str, todo: list[RunConfig], run_fn: Callable[..., dict] | None) -> str:
    """``auto``: stacked when every run trains on a GPU (and ``train.run`` is the run function)."""
    if engine != "auto":
        if engine == "stacked" and run_fn is not None:
            raise ConfigError("engine='stacked' trains with its own loop: it cannot take a run_fn")
        return engine
    if run_fn is not None or not todo:
        return "pool"
    from ..train import resolve_device

    return "stacked" if all(resolve_device(c.trainer.accelerator) == "cuda" for c in todo) else "pool"


def _slurm_stacked(engine: str, todo: list[RunConfig], run_fn: Callable[..., dict] | None, gpus: int | None) -> bool:
    """On SLURM the runs' device is the nodes', not this machine's: ``auto`` stacks the runs when
    they ask for a GPU (``accelerator: gpu``, or ``auto`` with ``--slurm-gpus-per-task``)."""
    if engine != "auto":
        resolve_engine(engine, todo, run_fn)  # the same refusals as locally
        return engine == "stacked"
    return bool(run_fn is None and todo and all(
        c.trainer.accelerator in ("gpu", "cuda") or (c.trainer.accelerator == "auto" and gpus) for c in todo))


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
    executor: str = "local",
    slurm: Mapping[str, Any] | None = None,
    wait: bool = True,
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
        threads: torch threads per worker (default 1: see the package docstring's measurement).
        engine: ``pool`` (one run per worker process), ``stacked`` (every stackable run of the
            review trained together as one batched model in this process, see
            :mod:`torchopt_review.stacked`) or ``auto``: stacked when the runs train on a GPU,
            where it is ~100x faster, the pool on CPU, where it is not faster (``bench review``).
        executor: ``local`` (this machine) or ``slurm``: every run (or stack) a task of a SLURM job
            array submitted with submitit; this process watches, resubmits what the cluster lost and
            writes the report (see :mod:`torchopt_review.review.slurm`).
        slurm: SLURM settings over the config's ``slurm:`` block (``SlurmOptions``' keys).
        wait: with ``slurm``: ``False`` submits and returns (the runs go on; run the same review
            again to wait for them, or ``report`` when they have finished).
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
    if executor not in EXECUTORS:
        raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    options = None
    if executor == "slurm":
        from .slurm import SlurmOptions, check_commands

        if shard is not None:
            raise ConfigError("--shard is for your own sbatch scripts; --executor slurm submits every run itself")
        if in_process:
            raise ConfigError("--in-process trains here; it cannot go with --executor slurm")
        options = SlurmOptions.from_mapping(cfg.slurm, "slurm").replace(**dict(slurm or {}))
        check_commands()
    elif not wait:
        raise ConfigError("--no-wait only applies to --executor slurm (a local review trains in this process)")

    all_runs = expand(cfg)
    mine = shard_runs(all_runs, shard)
    if run_fn is None:
        # The dataset is every run's first need: find and check it (magic numbers, sizes, labels)
        # before anything is written or spawned. Loading it is ~0.5 s and cached per process.
        from ..data import load_fashion_mnist

        for data_dir in dict.fromkeys(r.data.data_dir for r in mine):
            load_fashion_mnist(data_dir)
    exp_dir = cfg.exp_dir()
    lock = ExperimentLock(exp_dir, shard).acquire()
    try:
        _write_plan(exp_dir / REVIEW_JSON, review_record(cfg, all_runs))
        outcomes = _finished_before(mine, restart)
        todo = [rc for rc in mine if key_of(rc) not in outcomes]

        title = f"review {cfg.experiment}" + (f" shard {shard[0]}/{shard[1]}" if shard else "")
        if options is not None:
            stacked = _slurm_stacked(engine, todo, run_fn, options.gpus_per_task)
            n_workers = max(1, min(len(todo), options.array_parallelism or len(todo)))
        else:
            stacked = False
            if todo:
                _refuse_live_slurm_jobs(exp_dir)
            engine = resolve_engine(engine, todo, run_fn)
            n_workers = 1 if in_process or engine == "stacked" else max(1, min(workers, len(todo)))
        progress = Progress(stream, len(mine), {key_of(c): c.trainer.epochs for c in todo}, title, workers=n_workers)
        progress.count_before(list(outcomes.values()))
        if stream is not None:
            skipped = f", {len(outcomes)} finished before (skipped)" if outcomes else ""
            where = ("as SLURM jobs" + (" (stacked)" if stacked else "") if options is not None
                     else "stacked in one process" if engine == "stacked"
                     else f"on {n_workers} worker{'s' * (n_workers != 1)}")
            print(f"{title}: {plural(len(mine), 'run')}{skipped}, {len(todo)} to run"
                  + (f" {where}" if todo else ""), file=stream, flush=True)
        sched = Scheduler(todo, run_fn=run_fn, restart=restart, progress=progress)
        left: list[str] = []
        try:
            if todo and options is not None:
                from .slurm import submit_and_wait

                left = submit_and_wait(todo, exp_dir=exp_dir, experiment=cfg.experiment, options=options,
                                       finish=sched.finish, progress=progress, restart=restart,
                                       stacked=stacked, threads=threads, run_fn=run_fn, wait=wait)
            else:
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
        ordered = [outcomes[key_of(rc)] for rc in mine if key_of(rc) in outcomes]
        result = ReviewResult(cfg.experiment, exp_dir, ordered, time.monotonic() - t0, shard, submitted=left)
    finally:
        lock.release()

    if report and shard is None and not left:
        result.report, result.report_error = _write_report(exp_dir, review_record(cfg, all_runs), stream)
    if stream is not None:
        print_summary(result, stream)
    return result


def _refuse_live_slurm_jobs(exp_dir: Path) -> None:
    """A local review must not train run folders that SLURM jobs of this experiment are writing."""
    from .slurm import live_jobs

    live = live_jobs(exp_dir)
    if live:
        raise UserError(f"experiment {exp_dir.name!r} has SLURM jobs still queued or running ({', '.join(live)}); "
                        "wait for them with the same review command and --executor slurm, or scancel them")


def _write_plan(path: Path, record: dict[str, Any]) -> None:
    """review.json, atomically (a failed write leaves no temporary file); a full disk, a quota or a
    file-size limit is the user's to fix: one line, not a traceback."""
    try:
        atomic_write_json(path, record)
    except OSError as exc:
        hint = ("disk full, quota or file-size limit; free some space and run the same command"
                if exc.errno in NO_SPACE else "choose another --logdir")
        raise UserError(f"cannot write {path}: {exc.strerror or exc} ({hint})") from None


def _finished_before(runs: list[RunConfig], restart: bool) -> dict[str, RunOutcome]:
    """The runs whose run.json already holds their result (skipped), by key. A run folder that
    holds a run of another configuration stops the review (UserError) unless ``restart``."""
    outcomes: dict[str, RunOutcome] = {}
    if restart:
        return outcomes
    for rc in runs:
        stored = read_record(rc.run_dir)
        if not stored:
            continue
        diff = stored_mismatch(rc, stored)
        if diff:
            raise UserError(
                f"{rc.run_dir} holds a run with a different configuration ({diff}); "
                f"use another --experiment, or --restart to retrain it"
            )
        if is_finished(rc, stored):
            outcomes[key_of(rc)] = outcome_of(rc, stored, skipped=True)
    return outcomes


def _write_report(exp_dir: Path, record: dict[str, Any], stream: TextIO | None) -> tuple[Path | None, str | None]:
    try:
        from ..report import write_report
    except ImportError as exc:
        if stream is not None:
            print(f"report: not written: torchopt_review.report is not available ({exc})", file=stream)
        return None, None  # an incomplete install, not a failed review
    try:
        return Path(write_report(exp_dir, config=record)), None
    except Terminated:
        raise
    except Exception as exc:  # noqa: BLE001 - the runs are safe on disk; say how to retry
        msg = f"{type(exc).__name__}: {one_line(str(exc))}"
        if stream is not None:
            print(f"report: failed ({msg}); retry with: python -m torchopt_review.report {exp_dir}", file=stream)
        return None, msg
