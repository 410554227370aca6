"""Helpers and fixtures shared by the per-optimizer tests (imported explicitly: a
tests/optim/conftest.py would shadow tests/conftest.py as the module `conftest`)."""

from __future__ import annotations

import math

import pytest
import torch

# Odd sizes on purpose: numel 1, sizes that are not multiples of any vector width.
SHAPES = [(3, 5), (1,), (17,), (4, 3, 2), (33,)]


@pytest.fixture(params=["c", "torch_ops"])
def fast_backend(request, monkeypatch):
    """Run the fused flat path through the C kernel or through the torch-op flat kernel
    (``_flat_device``, what CUDA runs compiled, here eager on CPU)."""
    if request.param == "torch_ops":
        use_torch_ops(monkeypatch)
    else:
        from torchopt_review.optim import load_kernels
        if load_kernels() is None:
            pytest.skip("no C compiler: the C kernels are not available")
    return request.param


def use_torch_ops(monkeypatch):
    """CPU buckets run the torch-op flat kernel instead of the C kernel (for this test)."""
    from torchopt_review.optim import _buckets
    monkeypatch.setattr(_buckets, "C_KERNELS", False)


def compile_on_cpu(monkeypatch, on=True):
    """The torch-op flat kernel compiled by torch.compile on the CPU too, as on CUDA."""
    from torchopt_review.optim import _device
    monkeypatch.setattr(_device, "COMPILE_DEVICES", ("cuda", "cpu") if on else ("cuda",))


def relocate_on_cpu(monkeypatch):
    """Params of a torch-op bucket moved into one flat buffer on the CPU too, as on CUDA."""
    from torchopt_review.optim import _buckets
    monkeypatch.setattr(_buckets, "RELOCATE_DEVICES", ("cuda", "cpu"))


def make_params(dtype=torch.float64, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


def grad_sequence(steps, dtype=torch.float64, seed=1, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=dtype) for s in shapes] for _ in range(steps)]


def feed(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()


def run(cls, kwargs, *, steps=6, dtype=torch.float64, fused=None):
    """Params and optimizer after ``steps`` steps on a fixed gradient sequence."""
    params = make_params(dtype)
    opt = cls(params, fused=fused, **kwargs)
    feed(opt, params, grad_sequence(steps, dtype))
    return params, opt


def assert_fast_equals_reference(cls, kwargs, dtype, steps=6):
    """fused=None (fast path) against fused=False (reference kernel): params and state."""
    ref_p, ref_opt = run(cls, kwargs, steps=steps, dtype=dtype, fused=False)
    fast_p, fast_opt = run(cls, kwargs, steps=steps, dtype=dtype, fused=None)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    for a, b in zip(fast_p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), **tol)
    for a, b in zip(fast_p, ref_p):
        sa, sb = fast_opt.state[a], ref_opt.state[b]
        assert sorted(sa) == sorted(sb)
        for k in sa:
            torch.testing.assert_close(sa[k].double(), sb[k].double(), **tol, msg=lambda m, k=k: f"{k}: {m}")


def keras_run(update, w0, grads, steps):
    """Apply a hand-written float64 per-element Keras update to lists of Python floats.

    ``update(w, g, s, t)`` gets one element's weight, gradient, a dict of that element's slot
    values and the 1-based global step, and returns the new weight.
    """
    flat_w = [float(x) for x in torch.cat([w.detach().reshape(-1) for w in w0])]
    slots = [dict() for _ in flat_w]
    for t in range(1, steps + 1):
        flat_g = [float(x) for x in torch.cat([g.reshape(-1) for g in grads[t - 1]])]
        flat_w = [update(w, g, s, t) for w, g, s in zip(flat_w, flat_g, slots)]
    return torch.tensor(flat_w, dtype=torch.float64)


def check_keras(cls, kwargs, update, *, steps=5, fused=None):
    """Our keras-semantics optimizer (float64) against the hand-written update."""
    w0 = make_params(torch.float64)
    grads = grad_sequence(steps)
    expected = keras_run(update, w0, grads, steps)
    params = [w.detach().clone().requires_grad_() for w in w0]
    opt = cls(params, semantics="keras", fused=fused, **kwargs)
    feed(opt, params, grads)
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


sqrt = math.sqrt
