"""The C kernels split a large bucket between torch's intra-op threads (one contiguous chunk per
thread, called through ctypes from a small thread pool). The updates are elementwise, so the result
must be the single-threaded one bit for bit -- with chunk boundaries inside tensors too."""

from __future__ import annotations

import pytest
import torch

from optim_testlib import grad_sequence, make_params
from torchopt_review.optim import _cext, load_kernels
from torchopt_review.optim.registry import create_optimizer, optimizer_names

SHAPES = [(37, 29), (1,), (301,), (4, 3, 2), (513,)]  # chunk boundaries fall inside tensors


@pytest.fixture
def threads():
    if load_kernels() is None:
        pytest.skip("no C compiler")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _run(name, semantics, n_threads, dtype):
    torch.set_num_threads(n_threads)
    params = make_params(dtype, shapes=SHAPES)
    opt = create_optimizer(name, params, semantics=semantics, weight_decay=0.01)
    for row in grad_sequence(5, dtype, shapes=SHAPES):
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()
    assert opt._plans[id(opt.param_groups[0])].buckets[0].c_fn is not None
    return params, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("semantics", ["torch", "keras"])
@pytest.mark.parametrize("name", optimizer_names())
def test_threaded_kernel_is_bit_identical(name, semantics, dtype, threads, monkeypatch):
    single = _run(name, semantics, 1, dtype)
    calls = []
    real = _cext._executor

    def spy(workers):
        calls.append(workers)
        return real(workers)

    monkeypatch.setattr(_cext, "MIN_CHUNK", 97)  # ~1,500 elements: several chunks
    monkeypatch.setattr(_cext, "_executor", spy)
    multi = _run(name, semantics, 4, dtype)
    assert calls and max(calls) == 3  # 4 chunks: 3 in the pool, 1 in the calling thread
    for a, b in zip(multi[0], single[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(multi[0], single[0]):
        for key, value in single[1].state[b].items():
            torch.testing.assert_close(multi[1].state[a][key], value, rtol=0, atol=0)


def test_small_buckets_stay_single_threaded(threads, monkeypatch):
    calls = []
    monkeypatch.setattr(_cext, "_executor", lambda workers: calls.append(workers))
    _run("adam", "torch", 4, torch.float32)  # 1,500 elements, far below MIN_CHUNK
    assert not calls
