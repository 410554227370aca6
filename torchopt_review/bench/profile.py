"""Where one epoch of the real training path spends its time, by category, for ``bench epoch``.

:class:`CategoryTimer` wraps chosen functions for the duration of one run and adds up the
*exclusive* wall time of each category. cProfile would answer the same question, but it slows
every Python call by a large factor, and this path is dominated by small per-step calls, so it
would mostly measure itself; a wrapper costs ~1 us per wrapped call.

What :func:`instrument_training_path` patches (class attributes, restored by
:meth:`CategoryTimer.restore` even when the run fails), and why each:

- ``lightning.Trainer.__init__``, ``Classifier.__init__``, ``FashionMNISTDataModule.setup``: set-up;
- ``Classifier.training_step``, and its private ``_common_step`` (forward + loss) and ``_flush``
  (the step-loss buffer): the module's own per-step work, split from the model's;
- ``torch.Tensor.backward``; ``torchopt_review.optim.Adam.step`` and ``.zero_grad``;
- ``torchopt_review.data.ChunkedBatches.__iter__`` (each ``next()``): the data path;
- ``OptimizerDiagnostics`` and ``RunRecorder`` hooks: the recording callbacks;
- Lightning's private ``_EvaluationLoop.run``: validation and test as one absorbing category
  (no public function wraps a whole evaluation loop);
- every ``on_*`` hook of ``TQDMProgressBar``; TensorBoard's ``SummaryWriter`` writes.

These are internals (two private methods of the project's module, one private class of
Lightning): a name that no longer exists is skipped, so the profile then shows that time under
an enclosing category or the remainder instead of failing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable


class CategoryTimer:
    """Exclusive wall time per category, by wrapping chosen functions for the duration of a run.

    Entering a wrapped function pauses the enclosing category and starts its own; what no wrapped
    function covers is the remainder (Lightning's loop and hooks, set-up). Inside an *absorbing*
    category (the evaluation loops) nested wrappers do not split the time further, so validation's
    forward passes count as validation. Each wrapper costs ~1 µs a call, so unlike cProfile the
    measurement barely disturbs what it measures.
    """

    ABSORBING = ("evaluation loops (validation + test)",)

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []  # [category, started_at]
        self._patched: list[tuple[Any, str, Any, bool]] = []

    def _wrap(self, category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        timer = self
        clock = time.perf_counter

        def wrapper(*a: Any, **kw: Any) -> Any:
            stack = timer._stack
            if stack and stack[-1][0] in timer.ABSORBING:
                return fn(*a, **kw)
            now = clock()
            if stack:
                outer = stack[-1]
                timer.totals[outer[0]] = timer.totals.get(outer[0], 0.0) + now - outer[1]
            stack.append([category, now])
            try:
                return fn(*a, **kw)
            finally:
                end = clock()
                cat, t0 = stack.pop()
                timer.totals[cat] = timer.totals.get(cat, 0.0) + end - t0
                timer.calls[cat] = timer.calls.get(cat, 0) + 1
                if stack:
                    stack[-1][1] = end

        wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
        wrapper.hooked = True  # type: ignore[attr-defined]  # torch.optim: do not re-wrap our step
        return wrapper

    def patch(self, owner: Any, name: str, category: str) -> None:
        """Time ``owner.name`` under ``category`` (skipped when ``owner`` has no such attribute)."""
        if not hasattr(owner, name):
            return
        had_own = name in vars(owner)
        original = getattr(owner, name)
        setattr(owner, name, self._wrap(category, original))
        self._patched.append((owner, name, original, had_own))

    def patch_generator(self, owner: Any, name: str, category: str) -> None:
        """Time each ``next()`` of a generator method (the data module's batches)."""
        if not hasattr(owner, name):
            return
        original = getattr(owner, name)
        timed_next = self._wrap(category, next)

        def gen(obj: Any, *a: Any, **kw: Any) -> Any:
            it = original(obj, *a, **kw)
            while True:
                try:
                    item = timed_next(it)
                except StopIteration:
                    return
                yield item

        had_own = name in vars(owner)
        setattr(owner, name, gen)
        self._patched.append((owner, name, original, had_own))

    def restore(self) -> None:
        """Undo every patch, last first."""
        for owner, name, original, had_own in reversed(self._patched):
            if had_own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
        self._patched = []


def instrument_training_path(timer: CategoryTimer) -> None:
    """Patch the functions listed in this module's docstring into ``timer``'s categories."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks.progress.tqdm_progress import TQDMProgressBar
    from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop  # no public equivalent

    from lightning_module import Classifier, FashionMNISTDataModule, OptimizerDiagnostics, RunRecorder

    from .. import data as fm
    from ..optim import Adam

    setup = "set-up: Trainer, logger, module construction"
    timer.patch(L.Trainer, "__init__", setup)
    timer.patch(Classifier, "__init__", setup)
    timer.patch(FashionMNISTDataModule, "setup", "set-up: data module (split, copies)")
    timer.patch(Classifier, "training_step", "training_step's own code (loss/acc buffer, loop)")
    timer.patch(Classifier, "_common_step", "forward + loss")
    timer.patch(torch.Tensor, "backward", "backward")
    timer.patch(Adam, "step", "optimizer step")
    timer.patch(Adam, "zero_grad", "zero_grad")
    timer.patch_generator(fm.ChunkedBatches, "__iter__", "data: chunk gather (uint8)")
    timer.patch(Classifier, "_flush", "step-loss buffer flush")
    for hook in ("on_train_batch_start", "on_train_batch_end", "on_train_epoch_end"):
        timer.patch(OptimizerDiagnostics, hook, "diagnostics callback")
    timer.patch(RunRecorder, "on_train_epoch_end", "epoch end: checkpoint, CSV (RunRecorder)")
    timer.patch(_EvaluationLoop, "run", "evaluation loops (validation + test)")
    for name in [n for n in dir(TQDMProgressBar) if n.startswith("on_")]:
        timer.patch(TQDMProgressBar, name, "progress bar")
    writers = []
    with contextlib.suppress(ImportError):
        from torch.utils.tensorboard import SummaryWriter
        writers.append(SummaryWriter)
    with contextlib.suppress(ImportError):
        import tensorboardX
        writers.append(tensorboardX.SummaryWriter)
    for w in writers:
        for name in ("add_scalar", "add_scalars", "add_histogram", "add_hparams", "add_custom_scalars", "flush"):
            timer.patch(w, name, "TensorBoard writes")
