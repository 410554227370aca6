"""The review's one progress display on stderr, and the small text helpers its lines share with
the summary: runs done/total, the running runs with their epoch, an ETA from the measured seconds
per epoch."""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING, Any, Mapping, TextIO

from ..runs import DIVERGED, DONE, FAILED

if TYPE_CHECKING:
    from .results import RunOutcome


def fmt_s(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def one_line(text: str | None) -> str:
    """The last non-empty line of an error (a traceback's is the exception)."""
    lines = [l for l in str(text or "").strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else "unknown error"


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
        parts.append(fmt_s(result["wall_s"]))
    return ", ".join(parts)


def _epochs_done(info: Mapping[str, Any]) -> int | None:
    """Epochs completed according to an on_epoch row (train.run's ``epoch`` counts from 1)."""
    e = info.get("epoch")
    return e if isinstance(e, int) and not isinstance(e, bool) else None


class Progress:
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
        self.bad = {DIVERGED: 0, FAILED: 0}
        self.running: dict[str, int] = {}  # key -> epochs completed
        self.last_event: dict[str, float] = {}  # key -> time of its start or last finished epoch
        self.epoch_time, self.epochs_timed = 0.0, 0
        self.last_draw = 0.0
        self.width = 0
        self.pending: int | None = None  # runs queued, not started (the SLURM executor's; None: not shown)

    def count_before(self, outcomes: list[RunOutcome]) -> None:
        """Runs finished before this review started (skipped) count as done lines already."""
        self.finished += len(outcomes)
        for o in outcomes:
            if o.status in self.bad:
                self.bad[o.status] += 1

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

    def drop(self, key: str) -> None:
        """A run that neither finished nor failed (it stopped the review): no longer counted."""
        self.running.pop(key, None)
        self.epochs.pop(key, None)

    def end(self, key: str, outcome: RunOutcome) -> None:
        self.drop(key)  # nothing left to do for it, whatever its epoch count
        self.finished += 1
        if outcome.status in self.bad:
            self.bad[outcome.status] += 1
        if self.stream is None:
            return
        line = f"[{self.finished}/{self.total}] {outcome.key}: {outcome.status}"
        if outcome.status == FAILED:
            line += f": {one_line(outcome.error)}"
        elif outcome.status == DIVERGED:
            d = (outcome.result or {}).get("diverged") or {}
            line += f" at epoch {d.get('epoch', '?')}, step {d.get('step', '?')}" if isinstance(d, Mapping) else ""
        else:
            extra = _headline(outcome.result)
            line += f" ({extra})" if extra else ""
        if self.tty:
            if outcome.status != DONE:
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
        if self.pending is not None:
            head += f", {len(self.running)} running, {self.pending} pending"
        running = " ".join(f"{k} {e}/{self.epochs.get(k, '?')}" for k, e in self.running.items())
        eta = self.eta()
        tail = f"ETA {fmt_s(eta)}" if eta is not None else "ETA ?"
        return f"{head} | {tail}" + (f" | {running}" if running else "")

    def note(self, text: str) -> None:
        """A permanent line (a submission, a resubmission) above the status line."""
        if self.stream is None:
            return
        self._clear()
        print(text, file=self.stream, flush=True)
        self.draw(force=True)

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
