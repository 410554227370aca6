"""``opt.step()`` inside a function compiled by torch.compile: one eager call for the host work (the
C kernels included), the torch-op kernel traced into the graph where there is no C kernel. A new lr
every step must not recompile, and the numbers must be the eager ones.

Before: the step broke the graph at the ctypes call, baked lr and bias corrections into the graph
as constants, and recompiled for every new lr (17 graphs for 60 steps of the blog MLP).
"""

from __future__ import annotations

import pytest
import torch

from optim_testlib import grad_sequence, make_params, use_torch_ops
from torchopt_review.optim.registry import create_optimizer

pytestmark = pytest.mark.slow


def _run(name, semantics, compiled, steps=8):
    import torch._dynamo
    from torch._dynamo.utils import counters

    params = make_params(torch.float32)
    opt = create_optimizer(name, params, semantics=semantics)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)  # a new lr every step

    def step():
        opt.step()

    fn = torch.compile(step) if compiled else step
    torch._dynamo.reset()
    counters.clear()
    graphs = []
    for row in grad_sequence(steps, torch.float32):
        for p, g in zip(params, row):
            p.grad = g.clone()
        fn()
        sched.step()
        graphs.append(counters["stats"]["unique_graphs"])
    return [p.detach().clone() for p in params], graphs


@pytest.mark.parametrize("backend", ["c", "torch_ops"])
@pytest.mark.parametrize(("name", "semantics"), [("adam", "keras"), ("nadam", "keras"), ("nesterov", "keras"),
                                                 ("rmsprop", "torch")])
def test_compiled_step_no_recompile_when_lr_changes(name, semantics, backend, monkeypatch):
    if backend == "torch_ops":
        use_torch_ops(monkeypatch)
    eager, _ = _run(name, semantics, compiled=False)
    compiled, graphs = _run(name, semantics, compiled=True)
    # the first two steps may compile (the first lays out the buckets and state eagerly), then never
    assert graphs[-1] == graphs[2], graphs
    tol = dict(rtol=0, atol=0) if backend == "c" else dict(rtol=1e-5, atol=1e-6)  # same C kernel / Inductor
    for a, b in zip(compiled, eager):
        torch.testing.assert_close(a, b, **tol)
