"""The per-step scalars of the optimizer kernels, by name.

Each optimizer module declares its kernel's inputs once: ``Scalars``, the doubles computed on the
host every step (the shared :data:`PROLOGUE` first, then the optimizer's own: bias corrections,
step sizes ...), and ``Flags``, the integers that pick a variant (``amsgrad``, ``nesterov`` ...).
Every kernel reads them by these names:

- the C kernel (``csrc/kernels.c``) as ``struct <name>_scalars`` / ``struct <name>_flags``,
  whose field lists the library exports and the loader compares with the module's;
- the torch-op flat kernel (``_flat_device`` in each module) as attributes of a named tuple of
  0-d tensors cut from one device tensor (:func:`device_scalars`), so a compiled kernel or a
  captured CUDA graph reads new values every step without being recompiled or re-captured;
  host-side it may only branch on :func:`branches` of the values (0, 1 or "other").
"""

from __future__ import annotations

from collections import namedtuple
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["PROLOGUE", "scalar_fields", "flag_fields", "device_scalars", "branches", "tensor_fields",
           "GRAPH_WIDTH"]

# Weight decay and maximize, the same in every kernel:
#   w <- w*decoupled_mult - (w*keras_wd)*keras_lr;  g <- grad_sign*g + l2_wd*w
# decoupled_mult = 1 - lr*wd is torch's decoupled decay (AdamW), keras_wd, keras_lr = wd, lr is
# Keras's ``variable - variable * wd * lr`` (same rounding), l2_wd = wd torch's L2 penalty.
PROLOGUE = ("l2_wd", "decoupled_mult", "grad_sign", "keras_wd", "keras_lr")
GRAPH_WIDTH = 16  # floats per bucket in the CUDA-graph path's coefficient tensor (every list fits)


def scalar_fields(name: str, *fields: str) -> type:
    """A named tuple type of the :data:`PROLOGUE` followed by ``fields``."""
    if len(PROLOGUE) + len(fields) > GRAPH_WIDTH:
        raise ValueError(f"{name}: at most {GRAPH_WIDTH} scalars")
    return namedtuple(name, PROLOGUE + fields)


def flag_fields(name: str, *fields: str) -> type:
    return namedtuple(name, fields)


def prologue_values(lr: float, weight_decay: float, maximize: bool, *, decoupled: bool,
                    keras: bool) -> dict[str, float]:
    """The :data:`PROLOGUE` fields for one group: torch's L2 penalty, torch's decoupled decay or
    Keras's decay (always decoupled, before the update)."""
    out = {"l2_wd": 0.0, "decoupled_mult": 1.0, "grad_sign": -1.0 if maximize else 1.0,
           "keras_wd": 0.0, "keras_lr": 0.0}
    if weight_decay != 0:
        if keras:
            out["keras_wd"], out["keras_lr"] = weight_decay, lr
        elif decoupled:
            out["decoupled_mult"] = 1.0 - lr * weight_decay
        else:
            out["l2_wd"] = weight_decay
    return out


def device_scalars(values: list[float], device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Host scalars as a tensor on ``device``; to CUDA from a fresh pinned block, without a host
    sync (the caching host allocator keeps the block alive until the copy has run)."""
    h = torch.tensor(values, dtype=dtype)
    return h.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else h.to(device)


def branches(values: Any) -> Any:
    """What a torch-op kernel may read of the host scalars: 0.0, 1.0, or 2.0 for any other value
    (it only picks branches with them), so a compiled kernel's guards do not change per step.
    Same named tuple type as ``values``."""
    return type(values)(*[x if x in (0.0, 1.0) else 2.0 for x in map(float, values)])


def tensor_fields(fields: Callable[..., Any], h: Tensor) -> Any:
    """The named tuple ``fields`` of 0-d tensors cut from the coefficient tensor ``h``."""
    return fields(*h[:len(fields._fields)].unbind())  # type: ignore[attr-defined]


def lerp_(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    """``a.lerp_(b, weight)`` with a 0-d tensor weight (torch's rounding); for params of another
    dtype than the float32/float64 scalars (float16, bfloat16) the same formula in ops that
    accept a weight of another dtype."""
    if a.dtype == weight.dtype:
        return a.lerp_(b, weight)
    return a.add_((b - a) * weight)


def device_prologue(p: Tensor, g: Tensor, s: Any, c: Any) -> Tensor:
    """The :data:`PROLOGUE` in torch ops: weight decay applied to ``p`` in place, ``maximize`` and
    the L2 penalty applied to the gradient (a new tensor; ``g`` itself is only read). ``s``: the
    scalars as tensors, ``c``: their :func:`branches`."""
    if c.decoupled_mult != 1.0:
        p.mul_(s.decoupled_mult)
    if c.keras_wd != 0.0:
        p.sub_(p * s.keras_wd * s.keras_lr)
    if c.grad_sign != 1.0:
        g = -g
    if c.l2_wd != 0.0:
        g = g + p * s.l2_wd
    return g
