"""RMSprop specifics: Keras's update (eps inside the sqrt, lr inside the momentum) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from optim_testlib import assert_fast_equals_reference, check_keras, fast_backend  # noqa: F401
from torchopt_review.optim import RMSprop

LR, RHO, EPS, MU, WD = 0.01, 0.9, 1e-7, 0.8, 0.1


def keras_rmsprop(centered=False, momentum=0.0, wd=0.0, maximize=False):
    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR
        v = s["v"] = RHO * s.get("v", 0.0) + (1 - RHO) * g * g
        if centered:
            gbar = s["gbar"] = RHO * s.get("gbar", 0.0) + (1 - RHO) * g
            denominator = v - gbar * gbar + EPS
        else:
            denominator = v + EPS
        increment = LR * g / math.sqrt(denominator)
        if momentum > 0:
            m = s["m"] = momentum * s.get("m", 0.0) + increment     # lr inside the buffer
            return w - m
        return w - increment
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_rmsprop()),
    "centered": ({"centered": True}, keras_rmsprop(centered=True)),
    "momentum": ({"momentum": MU}, keras_rmsprop(momentum=MU)),
    "centered_momentum_wd": ({"centered": True, "momentum": MU, "weight_decay": WD},
                             keras_rmsprop(True, MU, WD)),
    "maximize": ({"maximize": True, "momentum": MU}, keras_rmsprop(momentum=MU, maximize=True)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(RMSprop, {"lr": LR, "alpha": RHO, "eps": EPS, **kwargs}, update, fused=fused)


def test_keras_momentum_keeps_old_lr():
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = RMSprop([w], lr=1.0, alpha=0.5, eps=0.0, momentum=0.5, semantics="keras")
    w.grad = torch.ones(1, dtype=torch.float64)
    opt.step()                               # v = .5, inc = 1/sqrt(.5), m = inc
    opt.param_groups[0]["lr"] = 0.0
    opt.step()                               # inc = 0, m = .5 m: the old lr still moves w
    first = 1 / math.sqrt(0.5)
    assert w.item() == pytest.approx(-(first + 0.5 * first), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [
    {}, {"centered": True}, {"momentum": 0.9, "weight_decay": 0.1},
    {"centered": True, "momentum": 0.9, "maximize": True, "weight_decay": 0.1},
], ids=["plain", "centered", "momentum_wd", "centered_momentum_maximize_wd"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    assert_fast_equals_reference(RMSprop, {"lr": 0.01, "semantics": semantics, **kwargs}, dtype)


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"momentum": -1.0}, "Invalid momentum value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"alpha": -1.0}, "Invalid alpha value"),
    ]:
        with pytest.raises(ValueError, match=match):
            RMSprop(p, **kwargs)
    w = torch.zeros(4, 2, requires_grad=True)
    opt = RMSprop([w])
    w.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, 2), (4, 2))
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_capturable_on_cpu_raises_like_torch():
    w = torch.zeros(3, requires_grad=True)
    w.grad = torch.ones(3)
    with pytest.raises(AssertionError, match="capturable=True"):
        RMSprop([w], capturable=True).step()
    with pytest.raises(AssertionError, match="capturable=True"):
        torch.optim.RMSprop([w], capturable=True).step()
