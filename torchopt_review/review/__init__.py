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
  epoch, ETA from the measured seconds per epoch), redrawn with ``\\r`` at most twice a second
  when stderr is a terminal; otherwise a plain line per finished run.
- **Locks the experiment**: ``runs/<experiment>/.lock`` (``fcntl.flock``) stops a second review
  of the same experiment; it exits 2 naming the holder's PID. Locks live on the local file
  system's semantics: on NFS, prefer ``--shard`` (one process per shard) over racing reviews.

Exit status: 0 when every run is ``done`` or ``diverged``; 1 when some run failed (or the report
could not be written); 2 for a usage or configuration error, a missing dataset (looked for before
anything is written), a locked experiment, or an error the user must fix that a run hit (the
review then stops starting runs); 130 when interrupted by Ctrl-C, 143 by SIGTERM (either stops
the workers at once; their finished epochs are checkpointed and their ``run.json`` says
``running``: run the same command to resume).

Limits, checked before anything is written: seeds are integers in ``0..2**32-1`` (a seed also
derives the data order's and the split's generator seeds, which must stay below torch's 2**64),
at most 1,000 of them in one review; an experiment name or run label is a string that is one
plain folder name of at most 255 bytes (no ``/``, ``\\`` or control character, no leading ``.``).

Past one machine (README "Past one machine"): ``--executor slurm`` submits every run (or stack of
runs) as a task of one SLURM job array through submitit, watches the scheduler and the run folders,
resubmits what the cluster lost, requeues a pre-empted task, and writes the report (``--no-wait``:
submit and return; the same command later waits for those jobs). See :mod:`.slurm`.

Or shard it yourself: ``--shard i/n`` with **1-based** ``i`` in ``1..n`` runs the runs whose
position in the review's (deterministic, seed-major) run list is ``i-1`` modulo ``n``: the ``n``
shards cover every run exactly once, *provided every shard gets the same options* (config,
``--opts``, ``--seeds``, ``--lrs``...). Shards lock ``.lock.shard<i>of<n>`` and hold ``.lock``
shared: shards do not exclude each other, but a whole-experiment review started while shards run
exits 2 (and the other way round). Shards do not write the report; gather it afterwards
(``python -m torchopt_review.report runs/<experiment>``). The README's ``review.sbatch`` is such a
SLURM array, and ``make test-slurm`` runs it as written.

The function API (``review(cfg, workers=...)``) takes a :class:`ReviewConfig` or a mapping with
the YAML keys, and a ``run_fn`` with :func:`torchopt_review.train.run`'s signature (tests pass a
fast fake; with worker processes it must be picklable, i.e. a module-level function).

The package, one job a module (the run folders themselves belong to :mod:`torchopt_review.runs`)::

    plan.py       ReviewConfig: the YAML keys, their validation, load_review; --seeds/--opts/--shard
    expand.py     labels x lrs x seeds -> RunConfigs; the shard of them; review.json's plan
    lock.py       runs/<experiment>/.lock (and the per-shard locks)
    progress.py   the progress line
    worker.py     one run as the review calls it; the worker process; its log file
    pool.py       the scheduler: in this process, stacked, or in worker processes; failure isolation
    results.py    RunOutcome, ReviewResult (the exit status), the summary
    engine.py     review(): plan -> lock -> skip finished -> train -> report; the engine choice
    slurm.py      --executor slurm: the runs as a submitit job array; watching, resubmitting, requeueing
    cli.py        the command line (__main__.py runs it)
"""

from ..errors import ConfigError, UserError
from .cli import main
from .engine import ENGINES, resolve_engine, review
from .expand import expand, shard_runs
from .lock import ExperimentLock
from .plan import ReviewConfig, load_review, parse_opts, parse_seeds, parse_shard
from .pool import default_workers
from .results import ReviewResult, RunOutcome

__all__ = [
    "ReviewConfig", "ReviewResult", "RunOutcome", "load_review", "expand", "parse_seeds", "parse_opts",
    "parse_shard", "shard_runs", "review", "resolve_engine", "ENGINES", "default_workers", "ExperimentLock", "main",
    "ConfigError", "UserError",
]
