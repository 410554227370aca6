"""Adam specifics: Keras's epsilon-hat update by hand, fast == reference, errors."""

from __future__ import annotations

import math

import pytest
import torch

from optim_testlib import assert_fast_equals_reference, check_keras, fast_backend  # noqa: F401
from torchopt_review.optim import Adam

LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-7, 0.1


def keras_adam(amsgrad=False, wd=0.0, maximize=False):
    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR
        m = s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - B1)
        v = s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - B2)
        if amsgrad:
            v = s["vhat"] = max(s.get("vhat", 0.0), v)
        alpha = LR * math.sqrt(1 - B2 ** t) / (1 - B1 ** t)
        return w - m * alpha / (math.sqrt(v) + EPS)   # eps on the uncorrected sqrt(v)
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_adam()),
    "amsgrad": ({"amsgrad": True}, keras_adam(amsgrad=True)),
    "weight_decay": ({"weight_decay": WD}, keras_adam(wd=WD)),
    # decoupled_weight_decay is irrelevant under keras semantics (always decoupled)
    "wd_flag_ignored": ({"weight_decay": WD, "decoupled_weight_decay": True}, keras_adam(wd=WD)),
    "amsgrad_wd_maximize": ({"amsgrad": True, "weight_decay": WD, "maximize": True},
                            keras_adam(True, WD, True)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(Adam, {"lr": LR, "betas": (B1, B2), "eps": EPS, **kwargs}, update, fused=fused)


def test_keras_uses_global_step_for_bias_correction():
    """A param that starts receiving gradients late is corrected with the optimizer's count."""
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = Adam([a, b], lr=1.0, eps=0.0, semantics="keras")
    for _ in range(3):
        a.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    b.grad = torch.ones(1, dtype=torch.float64)
    a.grad = torch.ones(1, dtype=torch.float64)
    opt.step()                                   # global t = 4, b's first step
    m, v, t = 1 - B1, 1 - B2, 4
    expected = -(m * math.sqrt(1 - B2 ** t) / (1 - B1 ** t)) / math.sqrt(v)
    assert b.item() == pytest.approx(expected, rel=1e-12)
    assert opt.state[b]["step"].item() == 1.0      # the per-param count stays torch's


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [
    {}, {"amsgrad": True, "weight_decay": 0.1},
    {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
], ids=["plain", "amsgrad_wd", "decoupled_maximize"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    assert_fast_equals_reference(Adam, {"lr": 0.01, "semantics": semantics, **kwargs}, dtype)


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, -0.1)}, "Invalid beta parameter at index 1"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"betas": (torch.tensor(0.9), 0.999)}, "betas must be either both floats or both Tensors"),
        ({"lr": torch.tensor(0.01), "foreach": True}, "lr as a Tensor is not supported"),
        ({"lr": torch.tensor([0.01, 0.02])}, "Tensor lr must be 1-element"),
        ({"semantics": "jax"}, "semantics"),
        ({"fused": "yes"}, "fused"),
    ]:
        with pytest.raises(ValueError, match=match):
            Adam(p, **kwargs)
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        Adam(p, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="capturable"):
        Adam(p, fused=True, capturable=True)


def test_sparse_grad_raises_like_torch():
    w = torch.zeros(4, 2, requires_grad=True)
    opt = Adam([w])
    w.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, 2), (4, 2))
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()


def test_complex_params_match_torch():
    """Complex params take the reference path through view_as_real, as torch does."""
    w0 = torch.randn(5, dtype=torch.complex128)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours, theirs = Adam([a], lr=0.1, amsgrad=True), torch.optim.Adam([b], lr=0.1, amsgrad=True)
    for _ in range(3):
        g = torch.randn(5, dtype=torch.complex128)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b)
    with pytest.raises(RuntimeError, match="fused=True"):
        c = torch.randn(3, dtype=torch.complex64, requires_grad=True)
        opt = Adam([c], fused=True)
        c.grad = torch.ones_like(c)
        opt.step()


def test_tensor_lr_and_betas_match_torch():
    w0 = torch.randn(7, dtype=torch.float64)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    kw = dict(lr=torch.tensor(0.01), betas=(torch.tensor(0.8), torch.tensor(0.99)))
    ours, theirs = Adam([a], **kw), torch.optim.Adam([b], **kw)
    for _ in range(3):
        g = torch.randn(7, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b)


def test_differentiable_gradcheck():
    """differentiable=True runs the reference kernel under autograd: d(new param)/d(grad)."""
    p = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def one_step(grad, exp_avg, exp_avg_sq):
        w = p.clone()
        opt = Adam([w], lr=0.1, differentiable=True)
        w.grad = grad
        opt.state[w] = {"step": torch.tensor(2.0), "exp_avg": exp_avg.clone(),
                        "exp_avg_sq": exp_avg_sq.clone()}
        opt.step()
        return w

    inputs = (torch.randn(3, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True),
              torch.rand(3, dtype=torch.float64).add(0.1).requires_grad_())
    assert torch.autograd.gradcheck(one_step, inputs)
