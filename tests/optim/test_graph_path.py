"""The CUDA-graph half-steps (``graph_coefficients`` + ``graph_apply``, i.e. each module's
``_flat_device`` reading its per-step scalars from a tensor) against the readable reference kernel.

They run eagerly on CPU here, which is the same code the GPU compiles and captures; the captured
version is compared with the eager step in ``tests/test_gpu.py``. The scalars travel as float32
(as they do on the GPU), so the tolerance is fp32 round-off even for float64 params.
"""

from __future__ import annotations

import pytest
import torch

from torchopt_review.optim.registry import create_optimizer, optimizer_names

from optim_testlib import compile_on_cpu, grad_sequence, make_params

# (name, extra kwargs): every registry entry, plus the branches the blog settings do not take
CASES = [(name, {}) for name in optimizer_names()] + [
    ("adam", {"weight_decay": 0.1}), ("adam", {"amsgrad": True}), ("adam", {"maximize": True}),
    ("nadam", {"weight_decay": 0.05}), ("rmsprop", {"centered": True, "momentum": 0.5}),
    ("rmsprop", {"weight_decay": 0.01}), ("adagrad", {"lr_decay": 0.01, "weight_decay": 0.02}),
    ("adamax", {"weight_decay": 0.1}), ("momentum", {"weight_decay": 0.1, "dampening": 0.1}),
    ("nesterov", {"maximize": True}), ("sgd", {"weight_decay": 0.01}),
]


def _ids(case):
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


# Keras SGD has no dampening (it raises; validated elsewhere)
GRID = [(c, sem) for c in CASES for sem in ("torch", "keras") if not (sem == "keras" and c[1].get("dampening"))]


@pytest.mark.parametrize(("case", "semantics"), GRID, ids=[f"{_ids(c)}-{s}" for c, s in GRID])
def test_graph_halves_equal_reference(case, semantics):
    name, kw = case
    steps = 12
    grads = grad_sequence(steps, torch.float32)
    ref_p, dev_p = make_params(torch.float32), make_params(torch.float32)
    ref = create_optimizer(name, ref_p, semantics=semantics, fused=False, **kw)
    dev = create_optimizer(name, dev_p, semantics=semantics, **kw)
    for i, row in enumerate(grads):
        for p, q, g in zip(ref_p, dev_p, row):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        dev.step() if i == 0 else dev.graph_step()  # the first step lays out buckets and state
    for a, b in zip(dev_p, ref_p):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)
    sa, sb = dev.state_dict()["state"], ref.state_dict()["state"]
    for i in sb:
        for k, v in sb[i].items():
            torch.testing.assert_close(torch.as_tensor(sa[i][k]).float(), torch.as_tensor(v).float(),
                                       rtol=2e-5, atol=2e-6, msg=lambda m, i=i, k=k: f"param {i} {k}: {m}")


def test_graph_step_before_first_step_is_refused():
    p = make_params(torch.float32)
    opt = create_optimizer("adam", p)
    for q in p:
        q.grad = torch.ones_like(q)
    with pytest.raises(RuntimeError, match="step"):
        opt.graph_step()


def test_coefficients_tensor_size_is_checked():
    p = make_params(torch.float32)
    opt = create_optimizer("adam", p)
    for q in p:
        q.grad = torch.ones_like(q)
    opt.step()
    with pytest.raises(ValueError, match="coefficients"):
        opt.bind_graph_coefficients(torch.zeros(3))


# the recorded real-Keras 3 trajectories (tests/fixtures/keras_trajectories.json), every step after
# the first through the graph half-steps: the device kernels against Keras itself
from test_keras_parity import CASES, compare, fp32_tol, run_ours  # noqa: E402


@pytest.mark.parametrize("name", list(CASES))
def test_graph_halves_match_recorded_keras(name):
    case = CASES[name]
    compare(run_ours(case, torch.float32, None, graph=True), case["float32"], what=f"{name} graph halves",
            **fp32_tol(case))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "semantics"), [("adam", "keras"), ("nadam", "keras"), ("rmsprop", "torch")])
def test_compiled_device_kernel_equals_eager_without_recompiling(name, semantics, monkeypatch):
    """What CUDA runs: ``_flat_device`` compiled by torch.compile (here by Inductor's CPU backend).
    It must equal the eager kernel, and compile once: the per-step scalars are tensor data, the
    host values only pick branches, so no step's new bias corrections trigger a recompile."""
    import torch._dynamo

    grads = grad_sequence(8, torch.float32)
    out = []
    for compiled in (False, True):
        compile_on_cpu(monkeypatch, compiled)
        torch._dynamo.reset()
        params = make_params(torch.float32)
        opt = create_optimizer(name, params, semantics=semantics)
        frames = []
        for i, row in enumerate(grads):
            for p, g in zip(params, row):
                p.grad = g.clone()
            opt.step() if i == 0 else opt.graph_step()
            frames.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
        out.append([p.detach().clone() for p in params])
        if compiled:
            assert frames[-1] == frames[1] >= 1, frames  # compiled at the first graph step, never again
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
