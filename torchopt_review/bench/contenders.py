"""What ``bench optim`` times: the parameter sets, and per registry entry the optimizers that
race on them -- ours (per semantics) against every torch.optim path -- plus the timers of one
round of steps and of the in-place ``add_`` that sets the bandwidth floor."""

from __future__ import annotations

import functools
import statistics
import time
from typing import Any, Callable

from .timing import Sync

# Bytes a step must read + write per fp32 parameter (OPTIMIZERS.md): param, grad and state.
BYTES_PER_PARAM = {"sgd": 12, "momentum": 16, "nesterov": 16, "adagrad": 20, "rmsprop": 20,
                   "adam": 28, "nadam": 28, "adamax": 28}
# torch.optim has fused CPU/CUDA kernels for these classes only.
TORCH_FUSED = ("SGD", "Adagrad", "Adam", "AdamW")
SEMANTICS = ["torch", "keras"]


# ---- parameter sets ----------------------------------------------------------------------

def blog_shapes() -> list[tuple[int, ...]]:
    """The blog MLP's parameter shapes: 784-300-100-50-50-50-10, 276,260 params in 12 tensors."""
    sizes = [784, 300, 100, 50, 50, 50, 10]
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


def large_shapes(quick: bool = False) -> list[tuple[int, ...]]:
    """~20.9 M params in 200 tensors (100 square 457x457 layers with biases); --quick: ~1 M in 40."""
    n, layers = (160, 20) if quick else (457, 100)
    return [s for _ in range(layers) for s in ((n, n), (n,))]


def huge_shapes(quick: bool = False) -> list[tuple[int, ...]]:
    """~355 M params in 300 tensors (150 square 1538x1538 layers with biases): the GPU's large model
    (shared/OPTIMIZERS.md); --quick: ~10 M in 60."""
    n, layers = (400, 30) if quick else (1538, 150)
    return [s for _ in range(layers) for s in ((n, n), (n,))]


PARAM_SETS: dict[str, Callable[[bool], list[tuple[int, ...]]]] = {
    "blog": lambda quick: blog_shapes(), "large": large_shapes, "huge": huge_shapes}


def make_params(shapes: list[tuple[int, ...]], device: str, seed: int = 0) -> list[Any]:
    """Separately allocated leaf tensors (as a model's parameters are) with fixed random grads."""
    import torch

    g = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=g) * 0.05).to(device))
        p.grad = (torch.randn(s, generator=g) * 1e-2).to(device)
        params.append(p)
    return params


# ---- contenders --------------------------------------------------------------------------

def build_contenders(name: str, params: list[Any], *, reference: bool, semantics: list[str]) -> dict[str, Any]:
    """``label -> optimizer`` for one registry entry: ours (fused path, per semantics), optionally
    ours on the reference path, and torch's for-loop, foreach and (where it exists) fused paths,
    all with the registry entry's (blog) hyperparameters."""
    import torch

    from ..optim.registry import create_optimizer, get_spec

    spec = get_spec(name)
    out: dict[str, Any] = {}
    for sem in semantics:
        out[f"ours {sem}"] = create_optimizer(name, params, semantics=sem)
    if reference:
        out["ours ref (fused=False)"] = create_optimizer(name, params, semantics=semantics[0], fused=False)
    cls = getattr(torch.optim, spec.cls.__name__)
    kw = {**spec.blog, **spec.fixed}
    out["torch for-loop"] = cls(params, foreach=False, **kw)
    out["torch foreach"] = cls(params, foreach=True, **kw)
    if cls.__name__ in TORCH_FUSED:
        try:
            opt = cls(params, fused=True, **kw)
            opt.step()  # some builds reject a device/dtype only at the first step
            out["torch fused"] = opt
        except (RuntimeError, ValueError):
            pass
    return out


def _round_timer(op: Callable[[], Any], steps: int, sync: Sync) -> Callable[[], float]:
    """One round: ``steps`` calls of ``op``; the median call time (CPU), or the mean (CUDA, where a
    call only queues work, so the round is timed whole between two synchronisations)."""
    clock = time.perf_counter

    def run() -> float:
        if sync.cuda:
            sync()
            t0 = clock()
            for _ in range(steps):
                op()
            sync()
            return (clock() - t0) / steps
        ts = []
        for _ in range(steps):
            t0 = clock()
            op()
            ts.append(clock() - t0)
        return statistics.median(ts)

    return run


def step_timer(opt: Any, steps: int, sync: Sync) -> Callable[[], float]:
    """One round of ``opt``: ``steps`` steps on the gradients already set."""
    return _round_timer(opt.step, steps, sync)


def add_timer(numel: int, device: str, steps: int, sync: Sync) -> Callable[[], float]:
    """One round of an in-place ``a.add_(b)`` over ``numel`` floats (12 bytes moved per float)."""
    import torch

    a = torch.randn(numel, device=device)
    b = torch.randn(numel, device=device) * 1e-6
    return _round_timer(functools.partial(a.add_, b), steps, sync)
