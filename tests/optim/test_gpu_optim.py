"""The optimizer library on CUDA (marked ``gpu``; skipped with its reason where CUDA is absent).

- torch parity: every registry optimizer, torch semantics, against ``torch.optim`` on the GPU;
- Keras parity: the recorded real-Keras trajectories (tests/fixtures) on the GPU, through the flat
  torch-op path and through the graph half-steps (the compiled ``_flat_device`` kernels);
- fused == reference on the GPU.
"""

from __future__ import annotations

import pytest
import torch

from optim_testlib import grad_sequence, make_params
from test_keras_parity import CASES, compare, fp32_tol, run_ours
from torchopt_review.optim.registry import create_optimizer, get_spec, optimizer_names

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _torch_optim(name, params):
    spec = get_spec(name)
    kw = spec.kwargs(semantics="torch")
    kw.pop("semantics")
    kw.pop("fused", None)
    return getattr(torch.optim, spec.cls.__name__)(params, **kw)


@pytest.mark.parametrize("graph", [False, True], ids=["flat", "graph-halves"])
@pytest.mark.parametrize("name", optimizer_names())
def test_cuda_matches_torch_optim(name, graph):
    ref = [p.detach().cuda().requires_grad_() for p in make_params(torch.float32)]
    ours = [p.detach().cuda().requires_grad_() for p in make_params(torch.float32)]
    o_ref = _torch_optim(name, ref)
    o_ours = create_optimizer(name, ours, semantics="torch")
    for i, row in enumerate(grad_sequence(20, torch.float32)):
        for a, b, g in zip(ref, ours, row):
            a.grad, b.grad = g.cuda(), g.cuda()
        o_ref.step()
        o_ours.graph_step() if graph and i else o_ours.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("graph", [False, True], ids=["flat", "graph-halves"])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_matches_keras(name, graph):
    case = CASES[name]
    ours = run_ours(case, torch.float32, None, device="cuda", graph=graph)
    compare(ours, case["float32"], what=f"{name} cuda float32", **fp32_tol(case))


@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("name", optimizer_names())
def test_cuda_fused_equals_reference(name, semantics):
    pa = [p.detach().cuda().requires_grad_() for p in make_params(torch.float32)]
    pb = [p.detach().cuda().requires_grad_() for p in make_params(torch.float32)]
    fast = create_optimizer(name, pa, semantics=semantics)
    ref = create_optimizer(name, pb, semantics=semantics, fused=False)
    for row in grad_sequence(12, torch.float32):
        for a, b, g in zip(pa, pb, row):
            a.grad, b.grad = g.cuda(), g.cuda()
        fast.step()
        ref.step()
    for a, b in zip(pa, pb):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)
