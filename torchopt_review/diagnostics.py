"""Optimizer diagnostics, computed from an optimizer's state: the per-coordinate effective step
size, and the quantiles and samples both engines report (the Lightning callback per parameter
tensor, the stacked engine per optimizer block). What is written where: :mod:`torchopt_review.runs`."""

from __future__ import annotations

import math
from typing import Any

import torch

QUANTILES = (0.1, 0.5, 0.9)  # diagnostics.csv: eff_lr_p10, eff_lr_p50, eff_lr_p90
QUANTILE_SAMPLE = 16_384
_Q = torch.tensor(QUANTILES, dtype=torch.float64)


def effective_lr(state: dict[str, Any], group: dict[str, Any]) -> torch.Tensor | None:
    """Per-coordinate step size multiplying the (momentum of the) gradient, from one parameter's
    optimizer ``state``: lr / denominator. None for SGD-like optimizers (the step size is lr everywhere)."""
    lr = float(group["lr"])
    keras = group.get("semantics", "torch") == "keras"
    eps = float(group.get("eps", 0.0))
    if "sum" in state:  # Adagrad
        s = state["sum"]
        return lr / (s + eps).sqrt() if keras else lr / (s.sqrt() + eps)
    if "square_avg" in state:  # RMSprop
        v = state["square_avg"]
        return lr / (v + eps).sqrt() if keras else lr / (v.sqrt() + eps)
    if "exp_avg_sq" in state:  # Adam, NAdam
        step = float(state["step"])
        b1, b2 = group["betas"]
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        return lr / bc1 / (state["exp_avg_sq"].sqrt() / math.sqrt(bc2) + eps)
    if "exp_inf" in state:  # Adamax
        step = float(state["step"])
        b1 = group["betas"][0]
        return lr / (1 - b1 ** step) / (state["exp_inf"] + eps)
    return None


def quantile_sample(values: torch.Tensor) -> torch.Tensor:
    """Along the last dimension of ``values`` (a flat tensor, or [runs, n] in the stacked engine):
    above 16,384 coordinates, an evenly strided sample of them (exact enough for a diagnostic, and
    ~20x cheaper than sorting a 235k-weight layer)."""
    values = values.detach()
    n = values.shape[-1]
    return values[..., :: -(-n // QUANTILE_SAMPLE)] if n > QUANTILE_SAMPLE else values


def quantiles(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """10th/50th/90th percentiles of :func:`quantile_sample` (float64): of the flattened tensor, or
    along the last dimension of a [runs, n] tensor with ``dim=1`` (then shaped [3, runs])."""
    if dim is None:
        values = values.flatten()
    sample = quantile_sample(values).double()
    return torch.quantile(sample, _Q.to(sample.device), dim=dim)
