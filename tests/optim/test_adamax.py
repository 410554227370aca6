"""Adamax specifics: Keras's update (eps outside the max) by hand, fast == reference, errors."""

from __future__ import annotations

import pytest
import torch

from optim_testlib import assert_fast_equals_reference, check_keras, fast_backend  # noqa: F401
from torchopt_review.optim import Adamax

LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-7, 0.1


def keras_adamax(wd=0.0, maximize=False):
    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR
        m = s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - B1)
        u = s["u"] = max(B2 * s.get("u", 0.0), abs(g))                 # no eps in the max
        return w - LR * m / ((1 - B1 ** t) * (u + EPS))
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_adamax()),
    "weight_decay": ({"weight_decay": WD}, keras_adamax(WD)),
    "wd_maximize": ({"weight_decay": WD, "maximize": True}, keras_adamax(WD, True)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(Adamax, {"lr": LR, "betas": (B1, B2), "eps": EPS, **kwargs}, update, fused=fused)


def test_zero_gradient_coordinates_stay_finite():
    """With exp_inf = 0 and g = 0 keras divides by eps, torch by |g| + eps: both finite."""
    for semantics in ("torch", "keras"):
        w = torch.ones(20, requires_grad=True)
        opt = Adamax([w], semantics=semantics)
        w.grad = torch.zeros(20)
        w.grad[::3] = 1.0
        opt.step()
        assert torch.isfinite(w).all()
        assert (w[1::3] == 1.0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1, "maximize": True}],
                         ids=["plain", "wd_maximize"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    assert_fast_equals_reference(Adamax, {"lr": 0.01, "semantics": semantics, **kwargs}, dtype)


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
    ]:
        with pytest.raises(ValueError, match=match):
            Adamax(p, **kwargs)
