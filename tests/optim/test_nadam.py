"""NAdam specifics: Keras's schedule and global product by hand, fast == reference, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from optim_testlib import (assert_fast_equals_reference, check_keras, fast_backend,  # noqa: F401
                           feed, grad_sequence, make_params)
from torchopt_review.optim import NAdam

LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-7, 0.1


def keras_nadam(wd=0.0, maximize=False, psi=1.0):
    U = {}  # the global product, one per step (shared by all elements)

    def u(t):
        return B1 * (1 - 0.5 * 0.96 ** (psi * t))

    def product(t):
        if t not in U:
            U[t] = math.prod(u(i) for i in range(1, t + 1))
        return U[t]

    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR
        m = s["m"] = s.get("m", 0.0) + (g - s.get("m", 0.0)) * (1 - B1)
        v = s["v"] = s.get("v", 0.0) + (g * g - s.get("v", 0.0)) * (1 - B2)
        m_hat = u(t + 1) * m / (1 - product(t) * u(t + 1)) + (1 - u(t)) * g / (1 - product(t))
        v_hat = v / (1 - B2 ** t)
        return w - m_hat * LR / (math.sqrt(v_hat) + EPS)
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_nadam()),
    "weight_decay": ({"weight_decay": WD}, keras_nadam(WD)),
    "wd_maximize": ({"weight_decay": WD, "maximize": True}, keras_nadam(WD, True)),
    "tf_keras_2_10_schedule": ({"momentum_decay": 0.004}, keras_nadam(psi=0.004)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(NAdam, {"lr": LR, "betas": (B1, B2), "eps": EPS, **kwargs}, update, fused=fused,
                steps=8)


def test_momentum_decay_default_depends_on_semantics():
    p = [torch.zeros(1, requires_grad=True)]
    assert NAdam(p).defaults["momentum_decay"] == 0.004
    assert NAdam(p, semantics="keras").defaults["momentum_decay"] == 1.0
    assert NAdam(p, momentum_decay=0.5, semantics="keras").defaults["momentum_decay"] == 0.5


def test_global_product_saved_and_restored():
    """The keras product lives in state_dict()['global_state'] and resumes exactly; a state
    from torch.optim (no such key) gets it recomputed from the schedule."""
    grads = grad_sequence(6)
    params = make_params()
    opt = NAdam(params, lr=LR, semantics="keras")
    feed(opt, params, grads[:3])
    sd = copy.deepcopy(opt.state_dict())  # as if saved: torch.optim's load aliases the tensors
    assert "global_state" in sd and sd["global_state"]["step"] == 3
    twin = [p.detach().clone().requires_grad_() for p in params]
    opt2 = NAdam(twin, lr=LR, semantics="keras")
    opt2.load_state_dict(sd)
    sd_no_global = {k: v for k, v in sd.items() if k != "global_state"}
    twin3 = [p.detach().clone().requires_grad_() for p in params]
    opt3 = NAdam(twin3, lr=LR, semantics="keras")
    opt3.load_state_dict(sd_no_global)
    feed(opt, params, grads[3:])
    feed(opt2, twin, grads[3:])
    feed(opt3, twin3, grads[3:])
    for a, b, c in zip(params, twin, twin3):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=1e-14, atol=1e-16)


def test_keras_product_is_global_not_per_param():
    """A param that joins late uses U_t of the optimizer (Keras), not a fresh product."""
    a = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = NAdam([a, b], lr=1.0, eps=0.0, semantics="keras")
    for _ in range(2):
        a.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    a.grad = torch.ones(1, dtype=torch.float64)
    b.grad = torch.ones(1, dtype=torch.float64)
    opt.step()                                            # t = 3, b's first gradient

    def u(t):
        return B1 * (1 - 0.5 * 0.96 ** t)
    U3 = u(1) * u(2) * u(3)
    m, v = 1 - B1, 1 - B2
    m_hat = u(4) * m / (1 - U3 * u(4)) + (1 - u(3)) / (1 - U3)
    expected = -m_hat / math.sqrt(v / (1 - B2 ** 3))
    assert b.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [
    {}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
    {"momentum_decay": 0.1},
], ids=["plain", "wd", "decoupled_maximize", "psi"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    assert_fast_equals_reference(NAdam, {"lr": 0.01, "semantics": semantics, **kwargs}, dtype)


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs, match in [
        ({"lr": -1.0}, "Invalid learning rate"),
        ({"eps": -1.0}, "Invalid epsilon value"),
        ({"betas": (1.0, 0.999)}, "Invalid beta parameter at index 0"),
        ({"betas": (0.9, 1.0)}, "Invalid beta parameter at index 1"),
        ({"weight_decay": -1.0}, "Invalid weight_decay value"),
        ({"momentum_decay": -1.0}, "Invalid momentum_decay value"),
    ]:
        with pytest.raises(ValueError, match=match):
            NAdam(p, **kwargs)


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
def test_keras_product_with_beta1_from_a_scheduler(fused):
    """OneCycleLR(cycle_momentum=True) changes beta1 every step: Keras keeps ONE running product,
    multiplied each step by u_t of the current beta1 (nadam.py: u_product_t = u_product * u_t).
    Against that rule by hand in float64; the saved state stays one number per group."""
    steps = 12
    grads = grad_sequence(steps)
    params = make_params()
    w0 = [p.detach().clone() for p in params]
    opt = NAdam(params, lr=LR, betas=(B1, B2), eps=EPS, semantics="keras", fused=fused)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, cycle_momentum=True,
                                                base_momentum=0.8, max_momentum=0.95)
    used = []  # (lr, beta1) of every step
    for row in grads:
        used.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()
        sched.step()
    assert len({b for _, b in used}) > 5  # beta1 really moved

    U, out = 1.0, []
    flat_w = torch.cat([w.reshape(-1) for w in w0]).tolist()
    m, v = [0.0] * len(flat_w), [0.0] * len(flat_w)
    for t, ((lr, b1), row) in enumerate(zip(used, grads), start=1):
        u_t, u_next = b1 * (1 - 0.5 * 0.96 ** t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        U = U * u_t
        flat_g = torch.cat([g.reshape(-1) for g in row]).tolist()
        for i, g in enumerate(flat_g):
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            v[i] = v[i] + (g * g - v[i]) * (1 - B2)
            m_hat = u_next * m[i] / (1 - U * u_next) + (1 - u_t) * g / (1 - U)
            flat_w[i] = flat_w[i] - lr * m_hat / (math.sqrt(v[i] / (1 - B2 ** t)) + EPS)
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, torch.tensor(flat_w, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert opt.state_dict()["global_state"]["u_product"] == [pytest.approx(U, rel=1e-14)]


def test_older_global_product_format_still_resumes():
    """Checkpoints of this library before one product per group kept {"beta1,psi": U}."""
    grads = grad_sequence(6)
    params = make_params()
    opt = NAdam(params, lr=LR, semantics="keras")
    feed(opt, params, grads[:3])
    sd = copy.deepcopy(opt.state_dict())
    (U,) = sd["global_state"]["u_product"]
    sd["global_state"]["u_product"] = {f"{0.9!r},{1.0!r}": U}
    twin = [p.detach().clone().requires_grad_() for p in params]
    opt2 = NAdam(twin, lr=LR, semantics="keras")
    opt2.load_state_dict(sd)
    feed(opt, params, grads[3:])
    feed(opt2, twin, grads[3:])
    for a, b in zip(params, twin):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
