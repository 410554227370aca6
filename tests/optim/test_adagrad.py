"""Adagrad specifics: Keras's update (eps inside the sqrt) by hand, fast == reference, errors."""

from __future__ import annotations

import math

import pytest
import torch

from optim_testlib import assert_fast_equals_reference, check_keras, fast_backend  # noqa: F401
from torchopt_review.optim import Adagrad

LR, IAV, EPS, WD = 0.05, 0.1, 1e-7, 0.1


def keras_adagrad(wd=0.0, maximize=False):
    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR
        acc = s["acc"] = s.get("acc", IAV) + g * g
        return w - LR * g / math.sqrt(acc + EPS)     # eps inside the square root
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_adagrad()),
    "weight_decay": ({"weight_decay": WD}, keras_adagrad(WD)),
    "wd_maximize": ({"weight_decay": WD, "maximize": True}, keras_adagrad(WD, True)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(Adagrad, {"lr": LR, "initial_accumulator_value": IAV, "eps": EPS, **kwargs},
                update, fused=fused)


def test_torch_emulates_keras_exactly():
    """OPTIMIZERS.md row 2: torch semantics with iav = 0.1 + eps, eps = 0 is Keras's update."""
    params = [torch.randn(9, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    keras = Adagrad(params, lr=LR, initial_accumulator_value=IAV, eps=EPS, semantics="keras")
    torch_sem = Adagrad(twins, lr=LR, initial_accumulator_value=IAV + EPS, eps=0.0)
    for _ in range(4):
        for p, q in zip(params, twins):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        keras.step(), torch_sem.step()
    for p, q in zip(params, twins):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [
    {}, {"lr_decay": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
    {"maximize": True, "eps": 1e-3},
], ids=["plain", "decay_wd_iav", "maximize_eps"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    assert_fast_equals_reference(Adagrad, {"lr": 0.05, "semantics": semantics, **kwargs}, dtype)


def test_state_is_created_at_construction_like_torch():
    p = torch.zeros(3, requires_grad=True)
    ours = Adagrad([p], initial_accumulator_value=0.5)
    theirs = torch.optim.Adagrad([p], initial_accumulator_value=0.5)
    sa, sb = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert sorted(sa[0]) == sorted(sb[0]) == ["step", "sum"]
    torch.testing.assert_close(sa[0]["sum"], sb[0]["sum"])
    assert sa[0]["step"].dtype == sb[0]["step"].dtype == torch.float32


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"lr_decay": -1.0}, "Invalid lr_decay value"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"initial_accumulator_value": -1.0}, "Invalid initial_accumulator_value value"),
        ({"eps": -1.0}, "Invalid epsilon value"),
    ]:
        with pytest.raises(ValueError, match=match):
            Adagrad(p, **kwargs)


def test_sparse_grads_like_torch():
    w0 = torch.rand(5, 2, dtype=torch.float64)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours, theirs = Adagrad([a], lr=0.1), torch.optim.Adagrad([b], lr=0.1)
    for step in range(3):
        g = torch.sparse_coo_tensor(torch.tensor([[step, 3, 3]]),
                                    torch.randn(3, 2, dtype=torch.float64), (5, 2))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.state[a]["sum"], theirs.state[b]["sum"])
    wd = Adagrad([a], weight_decay=0.1)
    a.grad = torch.sparse_coo_tensor(torch.tensor([[0]]), torch.ones(1, 2, dtype=torch.float64), (5, 2))
    with pytest.raises(RuntimeError, match="weight_decay option is not compatible with sparse"):
        wd.step()
