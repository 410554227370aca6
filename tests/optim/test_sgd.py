"""SGD specifics: Keras's velocity form by hand, fast == reference, errors, sparse grads."""

from __future__ import annotations

import pytest
import torch

from optim_testlib import assert_fast_equals_reference, check_keras, fast_backend  # noqa: F401
from torchopt_review.optim import SGD

LR, MU, WD = 0.05, 0.9, 0.1


def keras_sgd(momentum=0.0, nesterov=False, wd=0.0, maximize=False):
    def update(w, g, s, t):
        g = -g if maximize else g
        w = w - w * wd * LR                         # decoupled weight decay, before the update
        if momentum == 0:
            return w - LR * g
        v = momentum * s.get("v", 0.0) - LR * g    # velocity: lr inside the buffer
        s["v"] = v
        return w + momentum * v - LR * g if nesterov else w + v
    return update


KERAS_VARIANTS = {
    "plain": ({}, keras_sgd()),
    "momentum": ({"momentum": MU}, keras_sgd(MU)),
    "nesterov": ({"momentum": MU, "nesterov": True}, keras_sgd(MU, True)),
    "weight_decay": ({"momentum": MU, "weight_decay": WD}, keras_sgd(MU, wd=WD)),
    "nesterov_wd_maximize": ({"momentum": MU, "nesterov": True, "weight_decay": WD,
                              "maximize": True}, keras_sgd(MU, True, WD, True)),
}


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("variant", list(KERAS_VARIANTS))
def test_keras_by_hand(variant, fused, fast_backend):
    kwargs, update = KERAS_VARIANTS[variant]
    check_keras(SGD, {"lr": LR, **kwargs}, update, fused=fused)


def test_keras_velocity_keeps_old_lr_after_lr_change():
    """Keras's buffer holds lr*g: after an lr change the velocity still carries the old lr."""
    w = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = SGD([w], lr=1.0, momentum=0.5, semantics="keras")
    w.grad = torch.ones(1, dtype=torch.float64)
    opt.step()                       # v = -1, w = -1
    opt.param_groups[0]["lr"] = 0.1
    opt.step()                       # v = 0.5*(-1) - 0.1 = -0.6, w = -1.6
    assert w.item() == pytest.approx(-1.6, abs=1e-15)
    # the state holds torch's buffer b; Keras's velocity is v = -lr * b (lr of the last step)
    assert -0.1 * opt.state[w]["momentum_buffer"].item() == pytest.approx(-0.6, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("kwargs", [
    {}, {"momentum": 0.9}, {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1},
    {"momentum": 0.9, "nesterov": True, "maximize": True, "weight_decay": 0.1},
], ids=["plain", "momentum", "dampening_wd", "nesterov_maximize_wd"])
def test_fast_equals_reference(kwargs, semantics, dtype, fast_backend):
    if semantics == "keras" and kwargs.get("dampening"):
        # Keras has no dampening (rejected: test_errors); its momentum + weight-decay path still runs here
        kwargs = {k: v for k, v in kwargs.items() if k != "dampening"}
    assert_fast_equals_reference(SGD, {"lr": 0.05, "semantics": semantics, **kwargs}, dtype)


def test_errors():
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="Invalid learning rate"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="Invalid momentum value"):
        SGD(p, momentum=-0.1)
    with pytest.raises(ValueError, match="Invalid weight_decay value"):
        SGD(p, weight_decay=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        SGD(p, nesterov=True)
    with pytest.raises(ValueError, match="dampening"):
        SGD(p, momentum=0.9, dampening=0.1, semantics="keras")
    with pytest.raises(ValueError, match="semantics"):
        SGD(p, semantics="tf")
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        SGD(p, lr=torch.tensor([0.1, 0.2]))
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together"):
        SGD(p, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        SGD(p, fused=True, differentiable=True)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sparse_grad_like_torch(momentum):
    """torch.optim.SGD supports sparse gradients; so does ours (reference path)."""
    w0 = torch.randn(6, 3, dtype=torch.float64)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours, theirs = SGD([a], lr=0.1, momentum=momentum), torch.optim.SGD([b], lr=0.1, momentum=momentum)
    for step in range(3):
        idx = torch.tensor([[step, 4]])
        g = torch.sparse_coo_tensor(idx, torch.randn(2, 3, dtype=torch.float64), (6, 3))
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(a, b)


def test_sparse_grad_with_fused_true_raises():
    w = torch.zeros(4, 2, requires_grad=True)
    opt = SGD([w], lr=0.1, fused=True)
    w.grad = torch.sparse_coo_tensor(torch.tensor([[1]]), torch.ones(1, 2), (4, 2))
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_first_momentum_step_falls_back_cleanly():
    """A non-contiguous grad on the very first momentum step: the reference path creates the
    buffer from the grad (torch's rule), and the next fast step continues from it."""
    w0 = torch.randn(4, 4, dtype=torch.float64)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours = SGD([a], lr=0.1, momentum=0.9, dampening=0.5)
    theirs = torch.optim.SGD([b], lr=0.1, momentum=0.9, dampening=0.5)
    g = torch.randn(4, 4, dtype=torch.float64)
    a.grad, b.grad = g.t().contiguous().t(), g.clone()      # transposed layout: not fast-eligible
    ours.step(), theirs.step()
    for _ in range(2):
        g = torch.randn(4, 4, dtype=torch.float64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ours.state[a]["momentum_buffer"], theirs.state[b]["momentum_buffer"])


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_keras_velocity_with_lr_changes_and_skipped_params(fused, nesterov):
    """Keras's rule by hand (velocity v = mu v - lr g, lr inside) with the lr changing every few
    steps, dropping to 0 once, and one param without a gradient for some steps (Keras leaves its
    velocity as it is) -- the state is kept in torch's units, so this exercises the rescaling."""
    lrs = [0.1, 0.1, 0.05, 0.05, 0.0, 0.2, 0.2, 0.01, 0.01, 0.3]
    skip = {2, 3, 6}  # steps at which param 1 has no gradient
    g = torch.Generator().manual_seed(0)
    w0 = [torch.randn(4, generator=g, dtype=torch.float64) for _ in range(2)]
    grads = [[torch.randn(4, generator=g, dtype=torch.float64) for _ in range(2)] for _ in lrs]
    params = [w.clone().requires_grad_() for w in w0]
    opt = SGD(params, lr=lrs[0], momentum=MU, nesterov=nesterov, semantics="keras", fused=fused)
    w = [x.clone() for x in w0]
    v = [torch.zeros(4, dtype=torch.float64) for _ in range(2)]
    for t, (lr, row) in enumerate(zip(lrs, grads)):
        opt.param_groups[0]["lr"] = lr
        for i, (p, gi) in enumerate(zip(params, row)):
            p.grad = None if (i == 1 and t in skip) else gi.clone()
            if p.grad is None:
                continue
            v[i] = MU * v[i] - lr * gi
            w[i] = w[i] + (MU * v[i] - lr * gi if nesterov else v[i])
        opt.step()
    for p, expected in zip(params, w):
        torch.testing.assert_close(p.detach(), expected, rtol=1e-12, atol=1e-14)


def test_keras_rules_for_momentum_and_nesterov():
    """Keras 3 (keras/src/optimizers/sgd.py): momentum must lie in [0, 1]; Nesterov with momentum
    0 is accepted (plain SGD). torch's rules stay torch's."""
    p = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="between 0 and 1"):
        SGD(p, momentum=1.5, semantics="keras")
    with pytest.raises(ValueError, match="Invalid momentum value"):
        SGD(p, momentum=-0.1, semantics="keras")
    SGD(p, momentum=1.0, semantics="keras")
    SGD(p, momentum=1.5)  # torch accepts any momentum >= 0
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        SGD(p, nesterov=True)
    w0 = torch.randn(5, dtype=torch.float64)
    for fused in (None, False):
        a = w0.clone().requires_grad_()
        opt = SGD([a], lr=0.1, nesterov=True, semantics="keras", fused=fused)
        expected = w0.clone()
        for _ in range(3):
            g = torch.randn(5, dtype=torch.float64)
            a.grad = g.clone()
            opt.step()
            expected = expected - 0.1 * g  # Keras: w = w - lr * g when momentum is 0
        torch.testing.assert_close(a.detach(), expected, rtol=0, atol=1e-15)
