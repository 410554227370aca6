"""``python -m torchopt_review.review``: the command line (see the package docstring for what it does).

Exit status: 0 every run done or diverged; 1 some run failed (or the report could not be
written); 2 a usage/config error, a missing dataset, a locked experiment, or an error a run hit
that the user must fix; 130 interrupted by Ctrl-C, 143 by SIGTERM (rerun to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from pathlib import Path
from typing import Any, Iterator

from ..config import CONFIG_DIR, merge
from ..errors import ArgumentParser, Terminated, UserError, cli_entry
from .engine import ENGINES, EXECUTORS, review
from .plan import load_review, parse_opts, parse_seeds, parse_shard


def _config_path(text: str) -> Path:
    p = Path(text)
    if not p.exists() and "/" not in text and not text.endswith((".yaml", ".yml")):
        named = CONFIG_DIR / "review" / f"{text}.yaml"  # --config geron
        if named.is_file():
            return named
    return p


def build_parser() -> argparse.ArgumentParser:
    from ..optim.registry import optimizer_names

    p = ArgumentParser(
        prog="python -m torchopt_review.review",
        description="Train every optimizer x seed of a review (in parallel, resumable), then write the report.",
        epilog="Exit status: 0 all runs done or diverged (divergence is a result); 1 some run failed; "
               "2 usage/config error or locked experiment; 130/143 interrupted by Ctrl-C/SIGTERM (rerun to resume).",
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
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default): train here; slurm: submit every run (or stack) as a task of a SLURM job "
                        "array with submitit, watch them, resubmit what the cluster lost, then write the report")
    s = p.add_argument_group("SLURM (--executor slurm; also the review YAML's slurm: block)")
    s.add_argument("--slurm-partition", help="--partition (default: the cluster's)")
    s.add_argument("--slurm-time", help="--time per task, e.g. 30 or 1:00:00 (default 1:00:00)")
    s.add_argument("--slurm-cpus-per-task", type=int, help="--cpus-per-task, also the task's torch threads (default 1)")
    s.add_argument("--slurm-gpus-per-task", type=int, help="--gpus-per-task (default: 1 with --accelerator gpu, else 0)")
    s.add_argument("--slurm-mem", help="--mem, e.g. 4G (default: the cluster's)")
    s.add_argument("--slurm-array-parallelism", type=int, help="at most this many tasks at once (--array=...%%N)")
    s.add_argument("--slurm-max-retries", type=int,
                   help="resubmissions of a task the cluster lost (cancelled, node failure, time limit; default 2)")
    s.add_argument("--slurm-extra", action="append", metavar="NAME[=VALUE]",
                   help="any other sbatch option, repeatable: --slurm-extra qos=high --slurm-extra exclusive")
    s.add_argument("--no-wait", action="store_true",
                   help="submit and return; the same command later waits for those jobs (or run report when done)")
    p.add_argument("--in-process", action="store_true", help="no worker processes: one run after the other here")
    p.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    return p


SLURM_FLAGS = ("partition", "time", "cpus_per_task", "gpus_per_task", "mem", "array_parallelism", "max_retries", "extra")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    accelerator = ((cfg.cli_overrides.get("trainer") or {}).get("accelerator")
                   or (cfg.overrides.get("trainer") or {}).get("accelerator"))
    if workers is None and accelerator in ("gpu", "cuda"):
        workers = 1  # one GPU: one process drives it (what cannot be stacked runs one after the other)
    slurm = {name: getattr(args, f"slurm_{name}") for name in SLURM_FLAGS if getattr(args, f"slurm_{name}") is not None}
    if slurm and args.executor != "slurm":
        raise UserError(f"--slurm-{next(iter(slurm)).replace('_', '-')} only applies to --executor slurm")
    with _sigterm_stops():
        result = review(cfg, workers=workers, restart=args.restart, shard=shard, report=not args.no_report,
                        in_process=args.in_process, threads=args.threads, engine=args.engine,
                        executor=args.executor, slurm=slurm, wait=not args.no_wait)
    return result.exit_status


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM stops the review the way Ctrl-C does: the first one raises
    :class:`~torchopt_review.errors.Terminated` where the main thread is (later ones, arriving
    while it unwinds, are ignored), and ``cli_entry`` prints one line and returns 143.

    Without it, SIGTERM during a run trained in this process (``--in-process``) reached
    Lightning's handler, which ended that run as failed and let the review train the next one; in
    the pool it killed the review on the spot, without a word. Now a run in this process stops at
    once (``train.run`` records it failed, resumable), worker processes are killed as on Ctrl-C,
    the lock is released, and every run resumes from its last checkpointed epoch next time.
    """
    fired = False

    def handler(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated(signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
