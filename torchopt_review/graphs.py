"""One training step replayed from a CUDA graph.

At batch 32 the blog MLP is launch-bound on a GPU: an eager step is ~40 kernel launches and a few
Python-side microseconds each, so an H100 trains it *slower* than two CPU cores (shared/
OPTIMIZERS.md). Captured once in a CUDA graph, the whole step (forward, backward, optimizer) is one
launch. What changes from step to step has to live in static tensors that the graph reads:

- the batch: copied (or gathered, as indices) into static input buffers before each replay;
- the optimizers' per-step scalars (bias corrections, Keras's NAdam products): computed on the
  host by ``FlatOptimizer.graph_coefficients`` -- the same code the CPU kernels use -- and copied
  into one static device tensor, from pinned memory, without a host sync;
- the gradients: kept allocated (zeroed inside the graph, never set to None).

:class:`GraphedStep` does the capture (after a warm-up on a side stream, with every state the
warm-up touches restored, so capturing costs no training step) and the replay. With
``capture=False`` it runs the very same body eagerly, with the same static buffers and device
half-steps: that is how the CPU test suite checks everything but the capture itself.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from .optim import device_scalars

__all__ = ["GraphedStep"]


class GraphedStep:
    """``body()`` -> tensors, replayed from a CUDA graph (or run eagerly when ``capture=False``).

    Args:
        body: the step; reads only static tensors (its inputs are filled before each call), runs
            ``opt.graph_apply()`` for its optimizers, returns its outputs (e.g. loss, correct count).
        optimizers: :class:`~torchopt_review.optim.FlatOptimizer` instances that have taken
            one ordinary ``step()`` (it lays out their buckets and state).
        mutable: every tensor the body changes besides the optimizers' state (the parameters):
            restored after the warm-up and capture.
        capture: capture a CUDA graph (default: when the parameters are on a CUDA device).
    """

    def __init__(self, body: Callable[[], Sequence[Tensor]], optimizers: Sequence[torch.optim.Optimizer],
                 mutable: Sequence[Tensor], *, capture: bool | None = None, warmup: int = 2):
        self.body, self.optimizers = body, list(optimizers)
        device = mutable[0].device
        self.device = device
        self.capture = device.type == "cuda" if capture is None else capture
        widths = [opt.graph_width() for opt in self.optimizers]  # type: ignore[attr-defined]
        self.h = torch.zeros(sum(widths), dtype=torch.float32, device=device)
        off = 0
        for opt, w in zip(self.optimizers, widths):
            opt.bind_graph_coefficients(self.h[off:off + w])  # type: ignore[attr-defined]
            off += w
        self.outputs: Sequence[Tensor] = ()
        self.graph = None
        self._mutable, self._warmup = list(mutable), warmup

    def _state(self, mutable: list[Tensor]) -> list[Tensor]:
        out = list(mutable)
        for opt in self.optimizers:
            for _, b in opt.graph_buckets():  # type: ignore[attr-defined]
                out.extend(b.flat.values())
        return out

    def _capture(self, mutable: list[Tensor], warmup: int) -> None:
        state = self._state(mutable)
        saved = [t.detach().clone() for t in state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # cuBLAS workspaces, autograd's AccumulateGrad, torch.compile
            for _ in range(warmup):
                self.body()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self.body()
        with torch.no_grad():
            for t, v in zip(state, saved):  # the warm-up's steps are not training steps: undo them
                t.copy_(v)

    def _load_coefficients(self) -> None:
        H: list[float] = []
        for opt in self.optimizers:
            H.extend(opt.graph_coefficients())  # type: ignore[attr-defined]
        self.h.copy_(device_scalars(H, self.device))  # device to device: ordered, no host wait

    def __call__(self) -> list[Tensor]:
        """One step: fresh optimizer scalars, then the graph (or the eager body). The outputs are
        copies, valid after later steps too."""
        self._load_coefficients()
        if self.capture and self.graph is None:
            # captured on the first call, with this step's scalars already in place (the
            # warm-up's branch decisions read them), then replayed for the step itself
            self._capture(self._mutable, self._warmup)
        if self.graph is not None:
            self.graph.replay()
            return [o.clone() for o in self.outputs]
        return [o.detach().clone() for o in self.body()]
