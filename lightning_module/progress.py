"""The training CLI's progress line, read like Keras's ``fit``: optimizer steps (not Lightning's
batches, each of which runs ``steps_per_batch`` steps), 1-based epochs, the running training loss
and accuracy, the time per step and the time left::

    epoch 1/20   960/1688 [=========>      ]  loss 0.5123  acc 81.23%  ETA 1 s  1.9 ms/step

On a terminal the line is redrawn in place (at most every ``refresh_s`` seconds) and erased at
the end of the epoch, where the epoch's summary line (printed by
:class:`~lightning_module.callbacks.RunRecorder`) takes its place. When stderr is not a terminal
(a file, a pipe, a CI log) nothing is drawn: each redraw would be one more line there, and the
summary lines, one per epoch, are the log.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

import lightning as L

BAR = 16  # characters of the bar between the brackets (the line fits 80 columns)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60}:{seconds % 60:02d}"


def progress_line(epoch: int, epochs: int, step: int, steps: int, metrics: tuple[float, float] | None,
                  elapsed: float, note: str = "", width: int = 200) -> str:
    """One state of the line (``metrics``: running loss and accuracy, or None before the first),
    at most ``width`` characters: the parts at its end (time per step, then the time left) are
    left out first."""
    done = min(step / steps, 1.0) if steps else 1.0
    filled = int(done * BAR)
    bar = "=" * filled + (">" if filled < BAR else "") + " " * (BAR - filled - 1)
    parts = [f"epoch {epoch}/{epochs}  {step:>{len(str(steps))}}/{steps} [{bar}]"]
    if metrics is not None:
        parts.append(f"loss {metrics[0]:.4f}  acc {100 * metrics[1]:.2f}%")
    if note:
        parts.append(note)
    if step:
        per_step = elapsed / step
        if step < steps:
            parts.append(f"ETA {_duration(per_step * (steps - step))}")
        parts.append(f"{1000 * per_step:.1f} ms/step")
    while len(parts) > 1 and len("  ".join(parts)) > width:
        parts.pop()
    return "  ".join(parts)[:width]


class StepProgress(L.Callback):
    """The progress line of one run (see the module docstring); list it before the recorder, so
    the line is erased before the epoch's summary line is printed.

    Args:
        epochs: the run's epochs (the ``/N`` of ``epoch k/N``).
        steps_per_epoch: optimizer steps per epoch (the data module's ``steps_per_epoch``).
        stream: where to draw; default: ``sys.stderr`` at the time of drawing (where the summary
            lines go).
        refresh_s: the least time between two redraws.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, *, stream: TextIO | None = None, refresh_s: float = 0.1):
        self.epochs, self.steps = epochs, steps_per_epoch
        self._stream, self.refresh_s = stream, refresh_s
        self._shown = 0  # characters of the line on screen now (0: none)
        self._drawn_at = 0.0
        self._t0 = 0.0
        self._steps0 = 0
        self._epoch = 0

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def _live(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    def _draw(self, pl_module: Any, note: str = "", force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._drawn_at < self.refresh_s:
            return
        if not self._live():
            return
        self._drawn_at = now
        step = pl_module.opt_steps - self._steps0
        # the module resets its running means after the callbacks' epoch start: none before a step
        metrics = pl_module.running_metrics if step else None
        line = progress_line(self._epoch, self.epochs, step, self.steps, metrics, now - self._t0, note,
                             width=max(shutil.get_terminal_size().columns - 1, 20))  # a wrapped line cannot be redrawn
        self.stream.write("\r" + line + " " * max(self._shown - len(line), 0))
        self.stream.flush()
        self._shown = len(line)

    def _erase(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._epoch = trainer.current_epoch + 1
        self._steps0 = pl_module.opt_steps
        self._t0 = time.perf_counter()
        self._draw(pl_module, force=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._draw(pl_module)

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.state.fn == "fit":  # the epoch's validation, not a trainer.validate() call
            self._draw(pl_module, note="validating", force=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._erase()

    def on_exception(self, trainer: L.Trainer, pl_module: Any, exception: BaseException) -> None:
        if self._shown:  # keep the line where it stopped; what is printed next starts below it
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0
