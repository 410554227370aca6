"""What a review ends with: one :class:`RunOutcome` per run, the :class:`ReviewResult` (its exit
status) and the summary printed at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, TextIO

from ..config import RunConfig
from ..runs import DIVERGED, DONE, FAILED, RUN_JSON, run_key
from .progress import fmt_s, one_line, plural
from .worker import review_log


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
        return run_key(self.label, self.seed)


@dataclass
class ReviewResult:
    experiment: str
    exp_dir: Path
    outcomes: list[RunOutcome]
    wall_s: float
    shard: tuple[int, int] | None = None
    report: Path | None = None
    report_error: str | None = None  # the report was asked for and could not be written
    submitted: list[str] = field(default_factory=list)  # runs left training on SLURM (--no-wait)

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def exit_status(self) -> int:
        """0: every run done or diverged (divergence is a result); 1: some run failed or the report did not write."""
        return 1 if self.failed or self.report_error else 0


def key_of(cfg: RunConfig) -> str:
    """A run's key in the review's bookkeeping and messages: ``<label>/seed<k>``."""
    return run_key(cfg.run_label, cfg.seed)


def outcome_of(cfg: RunConfig, result: Mapping[str, Any] | None, *, skipped: bool = False,
               error: str | None = None) -> RunOutcome:
    """A run's outcome from its run.json dict (``result``) or the ``error`` that stopped it."""
    status = (result or {}).get("status")
    if error is None and status not in (DONE, DIVERGED, FAILED):
        error = f"the run returned no known status ({status!r})"
    if error is not None:
        status = FAILED
        error = error or (result or {}).get("error")
    elif status == FAILED:
        error = (result or {}).get("error") or "failed (no error recorded)"
    return RunOutcome(cfg.run_label, cfg.seed, cfg.run_dir, status, skipped, error, dict(result) if result else None)


def print_summary(result: ReviewResult, stream: TextIO) -> None:
    n = len(result.outcomes) + len(result.submitted)
    skipped = sum(o.skipped for o in result.outcomes)
    parts = [f"{result.count(DONE)} done", f"{result.count(DIVERGED)} diverged", f"{result.count(FAILED)} failed"]
    if result.submitted:
        parts.append(f"{len(result.submitted)} submitted")
    where = f" shard {result.shard[0]}/{result.shard[1]}" if result.shard else ""
    print(f"review {result.experiment}{where}: {plural(n, 'run')}: {', '.join(parts)}"
          + (f" ({skipped} finished before)" if skipped else "") + f" in {fmt_s(result.wall_s)}", file=stream)
    for o in result.outcomes:
        if o.status == DIVERGED and not o.skipped:
            d = (o.result or {}).get("diverged") or {}
            at = f" at epoch {d.get('epoch')}, step {d.get('step')}" if isinstance(d, Mapping) and d else ""
            print(f"  diverged: {o.key}{at} (a result: recorded, not retried)", file=stream)
    for o in result.failed:
        log = review_log(o.run_dir.parent.parent, o.label, o.seed)
        where = f"{o.run_dir / RUN_JSON}" + (f", {log}" if log.exists() else "")
        print(f"  failed: {o.key}: {one_line(o.error)}  ({where}; rerun the same command to retry)", file=stream)
    if result.submitted:
        print(f"  {plural(len(result.submitted), 'run')} left training on SLURM (not waited for): run the same "
              f"command again to wait for them and write the report, or once they have finished: "
              f"python -m torchopt_review.report {result.exp_dir}", file=stream)
    if result.report is not None:
        print(f"report: {result.report}", file=stream)
    elif result.shard is not None:
        print(f"when every shard has finished: python -m torchopt_review.report {result.exp_dir}", file=stream)
    stream.flush()
