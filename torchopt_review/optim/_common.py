"""Small helpers shared by the six optimizer modules: hyperparameter checks (torch's messages)
and the pieces of state handling the reference kernels have in common."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["scalar_value", "check_lr", "check_betas", "check_nonneg", "zero_scalar_state",
           "real_views", "ref_step", "as_float"]


def scalar_value(x: Any) -> Any:
    """A hyperparameter that may be a 1-element tensor, as a Python number."""
    return x.item() if isinstance(x, Tensor) else x


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_betas(betas: Any) -> None:
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")


def check_nonneg(name: str, value: Any) -> None:
    if not 0.0 <= value:
        raise ValueError(f"Invalid {name} value: {value}")


def zero_scalar_state(p: Tensor, capturable: bool, value: float = 0.0) -> Tensor:
    """A 0-d float32 tensor like torch's ``state['step']``: on CPU, or the param's device."""
    if capturable:
        return torch.full((), value, dtype=torch.float32, device=p.device)
    return torch.tensor(value, dtype=torch.float32)


def real_views(*tensors: Tensor) -> list[Tensor]:
    """``torch.view_as_real`` for complex tensors, identity otherwise (reference kernels)."""
    return [torch.view_as_real(t) if t is not None and torch.is_complex(t) else t
            for t in tensors]


def ref_step(state: dict[str, Any], capturable: bool) -> Any:
    """Advance ``state['step']`` in place; its value as a float (tensor when capturable)."""
    step_t = state["step"]
    step_t += 1
    return step_t if capturable else float(step_t)


def as_float(x: Any, keep_tensor: bool) -> Any:
    if isinstance(x, Tensor) and not keep_tensor:
        return x.item()
    return x
