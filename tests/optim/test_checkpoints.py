"""Checkpoints that were not written by this library's current code: torch < 1.12's numeric
``step``, and state dicts moving between torch.optim and the two semantics. References are
torch.optim itself and hand-computed float64 steps, never this library's own output."""

from __future__ import annotations

import copy

import pytest
import torch

from optim_testlib import grad_sequence, make_params
from torchopt_review.optim import SGD, Adagrad, Adam, Adamax, NAdam, RMSprop

WITH_STEP = {Adagrad: dict(lr=0.05), RMSprop: dict(lr=0.01, momentum=0.5), Adam: dict(lr=0.01),
             NAdam: dict(lr=0.01), Adamax: dict(lr=0.01)}


def feed(opt, params, grads):
    for row in grads:
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


# ------------------------------------------------------------------------------ torch < 1.12


def _as_pre_1_12(sd):
    """What torch < 1.12 saved: per-param ``step`` (and NAdam's ``mu_product``) as Python floats."""
    sd = copy.deepcopy(sd)
    for st in sd["state"].values():
        for key in ("step", "mu_product"):
            if key in st:
                st[key] = float(st[key])
    return sd


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("cls", list(WITH_STEP), ids=[c.__name__ for c in WITH_STEP])
def test_numeric_step_from_old_torch_loads_like_torch(cls, fused):
    grads = grad_sequence(8)
    params = make_params()
    theirs_cls = getattr(torch.optim, cls.__name__)
    first = theirs_cls(params, **WITH_STEP[cls])
    feed(first, params, grads[:4])
    old = _as_pre_1_12(first.state_dict())
    assert isinstance(old["state"][0]["step"], float)

    pt, po = clone_params(params), clone_params(params)
    theirs = theirs_cls(pt, **WITH_STEP[cls])
    theirs.load_state_dict(copy.deepcopy(old))  # torch converts the numbers to tensors
    ours = cls(po, fused=fused, **WITH_STEP[cls])
    ours.load_state_dict(copy.deepcopy(old))
    feed(theirs, pt, grads[4:])
    feed(ours, po, grads[4:])
    for a, b in zip(po, pt):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for i, b in enumerate(pt):
        assert float(ours.state[po[i]]["step"]) == float(theirs.state[b]["step"]) == 8.0
