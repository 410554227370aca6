"""The flat-bucket machinery: it must behave like torch.optim around a training loop.

Every test compares with ``torch.optim`` run side by side (or with itself before/after the
operation), never with numbers produced by the code under test alone.
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from optim_testlib import fast_backend, relocate_on_cpu, use_torch_ops  # noqa: F401
from torchopt_review.optim import SGD, Adagrad, Adam, Adamax, NAdam, RMSprop

ALL = [SGD, Adagrad, RMSprop, Adam, NAdam, Adamax]
KW = {SGD: dict(lr=0.05, momentum=0.9), Adagrad: dict(lr=0.05), RMSprop: dict(lr=0.01, momentum=0.5),
      Adam: dict(lr=0.01), NAdam: dict(lr=0.01), Adamax: dict(lr=0.01)}
ids = [c.__name__ for c in ALL]


def mlp(seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 13), torch.nn.Tanh(), torch.nn.Linear(13, 3)).to(dtype)


def batch(i, dtype=torch.float32):
    g = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 7, generator=g, dtype=dtype), torch.randint(0, 3, (16,), generator=g)


def train(model, opt, steps, start=0, clip=None, dtype=torch.float32):
    for i in range(start, start + steps):
        x, y = batch(i, dtype)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def twins(cls, dtype=torch.float32, **extra):
    """(our model, our optimizer, torch's model, torch's optimizer), same init."""
    a, b = mlp(dtype=dtype), mlp(dtype=dtype)
    kw = {**KW[cls], **extra}
    return a, cls(a.parameters(), **kw), b, getattr(torch.optim, cls.__name__)(b.parameters(), **kw)


def assert_models_close(a, b, rtol=1e-5, atol=1e-6):
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=lambda m, n=n: f"{n}: {m}")


# ------------------------------------------------------------------------------ flat state


def test_state_is_views_of_one_flat_buffer_per_key(fast_backend):
    model = mlp()
    opt = Adam(model.parameters())
    train(model, opt, 1)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        bases = {id(opt.state[p][key]._base) for p in model.parameters()}
        assert len(bases) == 1, key
    # memory: exactly torch's per-param state, nothing retained besides it
    n = sum(p.numel() for p in model.parameters())
    base = opt.state[next(model.parameters())]["exp_avg"]._base
    assert base.numel() == n


def test_torch_save_not_larger_than_torch():
    a, ours, b, theirs = twins(Adam)
    train(a, ours, 2), train(b, theirs, 2)
    sizes = []
    for opt in (ours, theirs):
        buf = io.BytesIO()
        torch.save(opt.state_dict(), buf)
        sizes.append(len(buf.getvalue()))
    assert sizes[0] <= sizes[1], sizes


# ------------------------------------------------------------------------------ training loop


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_clip_grad_norm_and_zero_grad_set_to_none(cls):
    a, ours, b, theirs = twins(cls)
    train(a, ours, 5, clip=0.1), train(b, theirs, 5, clip=0.1)
    assert_models_close(a, b)


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_zero_grad_in_place_keeps_grad_storage(cls):
    a, ours, b, theirs = twins(cls)
    for opt, model in ((ours, a), (theirs, b)):
        for i in range(4):
            x, y = batch(i)
            opt.zero_grad(set_to_none=False)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    assert_models_close(a, b)


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_grads_none_for_some_params_and_frozen_params(cls, fast_backend):
    """Some steps leave some grads None; one param is frozen throughout (never has state)."""
    a, ours, b, theirs = twins(cls, dtype=torch.float64)
    a[0].bias.requires_grad_(False), b[0].bias.requires_grad_(False)
    for i in range(8):
        for model, opt in ((a, ours), (b, theirs)):
            x, y = batch(i, torch.float64)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if i % 3 == 1:
                model[2].weight.grad = None
            if i in (4, 5):
                model[0].weight.grad = None
            opt.step()
    assert_models_close(a, b, rtol=1e-10, atol=1e-12)
    ours_sd, theirs_sd = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert sorted(ours_sd) == sorted(theirs_sd)
    for k in theirs_sd:
        for key, v in theirs_sd[k].items():
            torch.testing.assert_close(ours_sd[k][key], v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_add_param_group_later(cls, fast_backend):
    a, b = mlp(), mlp()
    ours = cls(a[0].parameters(), **KW[cls])
    theirs = getattr(torch.optim, cls.__name__)(b[0].parameters(), **KW[cls])
    train(a, ours, 2), train(b, theirs, 2)
    ours.add_param_group({"params": a[2].parameters(), "lr": 0.003})
    theirs.add_param_group({"params": b[2].parameters(), "lr": 0.003})
    train(a, ours, 3, start=2), train(b, theirs, 3, start=2)
    assert_models_close(a, b)


@pytest.mark.parametrize("cls", [SGD, Adam, NAdam], ids=["SGD", "Adam", "NAdam"])
def test_lr_scheduler_without_rebuild(cls, fast_backend):
    a, ours, b, theirs = twins(cls)
    sa = torch.optim.lr_scheduler.ExponentialLR(ours, gamma=0.7)
    sb = torch.optim.lr_scheduler.ExponentialLR(theirs, gamma=0.7)
    plans = []
    for i in range(5):
        train(a, ours, 1, start=i), train(b, theirs, 1, start=i)
        sa.step(), sb.step()
        plan = ours._plans[id(ours.param_groups[0])]
        plans.append((plan, list(plan.buckets)))
    assert all(p is plans[0][0] and bk == plans[0][1] for p, bk in plans)  # never rebuilt
    assert_models_close(a, b)


def test_tensor_lr_with_scheduler():
    a, ours, b, theirs = twins(Adam, lr=torch.tensor(0.01))
    sa = torch.optim.lr_scheduler.StepLR(ours, 2, 0.5)
    sb = torch.optim.lr_scheduler.StepLR(theirs, 2, 0.5)
    for i in range(5):
        train(a, ours, 1, start=i), train(b, theirs, 1, start=i)
        sa.step(), sb.step()
    assert_models_close(a, b)


def test_model_load_state_dict_in_place():
    """model.load_state_dict copies into the same storages: the cached layout stays valid."""
    a, ours, b, theirs = twins(Adam)
    train(a, ours, 2), train(b, theirs, 2)
    snapshot = mlp(seed=5).state_dict()
    a.load_state_dict(snapshot), b.load_state_dict(snapshot)
    train(a, ours, 3, start=2), train(b, theirs, 3, start=2)
    assert_models_close(a, b)


@pytest.mark.parametrize("cls", [Adam, RMSprop], ids=["Adam", "RMSprop"])
def test_model_to_dtype_rebuilds(cls):
    """After model.double() the params have new storages and dtype: state follows the params
    (as torch.optim's load_state_dict casts it) and the float64 kernel runs."""
    a, ours, b, theirs = twins(cls)
    train(a, ours, 2), train(b, theirs, 2)
    a.double(), b.double()
    # torch.optim keeps float32 state next to float64 params; give it cast state the public way
    theirs.load_state_dict(theirs.state_dict())
    train(a, ours, 2, start=2, dtype=torch.float64), train(b, theirs, 2, start=2, dtype=torch.float64)
    assert_models_close(a, b)
    for p in a.parameters():
        assert opt_state_dtypes(ours, p) == {torch.float64}


def opt_state_dtypes(opt, p):
    return {v.dtype for k, v in opt.state[p].items() if k not in ("step", "mu_product")}


def test_params_views_of_one_flat_buffer_torch_ops_alias(monkeypatch):
    """With the flat torch-op path, params that are consecutive views of one buffer are
    updated through one alias (no gather/scatter)."""
    use_torch_ops(monkeypatch)
    flat_a = torch.randn(40, dtype=torch.float64)
    flat_b = flat_a.clone()
    pa = [torch.nn.Parameter(v) for v in flat_a.split([10, 1, 29])]
    pb = [torch.nn.Parameter(v) for v in flat_b.split([10, 1, 29])]
    ours, theirs = NAdam(pa, lr=0.1), torch.optim.NAdam(pb, lr=0.1)
    for _ in range(3):
        for x, y in zip(pa, pb):
            x.grad = torch.randn_like(x)
            y.grad = x.grad.clone()
        ours.step(), theirs.step()
    bucket = ours._plans[id(ours.param_groups[0])].buckets[0]
    assert bucket.pviews is None and bucket.pflat.data_ptr() == pa[0].data_ptr()
    for x, y in zip(pa, pb):
        torch.testing.assert_close(x, y)


def test_channels_last_params_take_the_fast_path():
    conv_a = torch.nn.Conv2d(3, 5, 3).to(memory_format=torch.channels_last)
    conv_b = copy.deepcopy(conv_a)
    ours, theirs = Adam(conv_a.parameters(), lr=0.01), torch.optim.Adam(conv_b.parameters(), lr=0.01)
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)
    for _ in range(3):
        for conv, opt in ((conv_a, ours), (conv_b, theirs)):
            opt.zero_grad()
            conv(x).square().mean().backward()
            opt.step()
    assert not ours._plans[id(ours.param_groups[0])].reference
    assert ours.state[conv_a.weight]["exp_avg"].stride() == conv_a.weight.stride()
    torch.testing.assert_close(conv_a.weight, conv_b.weight, rtol=1e-5, atol=1e-6)


def test_non_contiguous_grad_falls_back_to_reference():
    w0 = torch.randn(5, 4)
    a, b = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    ours, theirs = RMSprop([a], lr=0.01, centered=True), torch.optim.RMSprop([b], lr=0.01, centered=True)
    for i in range(4):
        g = torch.randn(4, 5)
        a.grad = g.t() if i == 1 else g.t().contiguous()
        b.grad = g.t().contiguous()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cpu_uses_torch_ops(dtype):
    a = torch.randn(33).to(dtype).requires_grad_()
    b = a.detach().clone().requires_grad_()
    ours, theirs = Adam([a], lr=0.01), torch.optim.Adam([b], lr=0.01)
    for _ in range(3):
        g = torch.randn(33).to(dtype)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    assert ours._plans[id(ours.param_groups[0])].buckets[0].c_fn is None
    torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------ state_dict, copies


@pytest.mark.parametrize("direction", ["ours_to_torch", "torch_to_ours"])
def test_state_dict_round_trip_with_torch(direction):
    a, ours, b, theirs = twins(NAdam, weight_decay=0.01)
    src_model, src_opt, dst_model, dst_opt = (a, ours, b, theirs) if direction == "ours_to_torch" else (b, theirs, a, ours)
    train(src_model, src_opt, 3)
    dst_model.load_state_dict(src_model.state_dict())
    dst_opt.load_state_dict(copy.deepcopy(src_opt.state_dict()))
    train(src_model, src_opt, 3, start=3), train(dst_model, dst_opt, 3, start=3)
    assert_models_close(src_model, dst_model)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_deepcopy_and_pickle_continue_identically(cls, how):
    model = mlp()
    opt = cls(model.parameters(), semantics="keras", **KW[cls])
    train(model, opt, 2)
    if how == "deepcopy":
        model2, opt2 = copy.deepcopy((model, opt))
    else:
        model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    train(model, opt, 3, start=2), train(model2, opt2, 3, start=2)
    assert_models_close(model, model2, rtol=0, atol=0)
    assert opt2._global_state == opt._global_state


# ------------------------------------------------------------------------------ step() protocol


def test_closure_runs_once_with_grad_and_returns_loss():
    model = mlp()
    opt = Adam(model.parameters())
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = model(batch(0)[0]).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and isinstance(loss, torch.Tensor)
    assert torch.is_grad_enabled()


def test_step_hooks_and_version_counter():
    model = mlp()
    opt = SGD(model.parameters(), lr=0.1)
    seen = []
    h1 = opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    h2 = opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    w = model[0].weight
    before = w._version
    train(model, opt, 1)
    assert seen == ["pre", "post"]
    assert w._version > before  # in-place update visible to autograd, as with torch's kernels
    h1.remove(), h2.remove()


def test_fused_false_and_fused_true_on_torch_optimizers_without_fused():
    """fused is ours on RMSprop/NAdam/Adamax: False = reference kernel, True = fast path."""
    for cls in (RMSprop, NAdam, Adamax):
        a, b = mlp(), mlp()
        opt_ref, opt_fast = cls(a.parameters(), fused=False), cls(b.parameters(), fused=True)
        train(a, opt_ref, 3), train(b, opt_fast, 3)
        assert not opt_ref._plans and opt_fast._plans
        assert_models_close(a, b)


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_fused_true_on_an_unsupported_device_raises_torchs_error(cls):
    """Params on ``meta``: torch's SGD/Adagrad/Adam(fused=True) raise at the first step; ours too
    (all six classes), with torch's message; fused=None still steps there, as torch's default."""
    match = r"`fused=True` requires all the params to be floating point Tensors of supported devices"

    def meta_param():
        p = torch.nn.Parameter(torch.zeros(3, 2, device="meta"))
        p.grad = torch.zeros(3, 2, device="meta")
        return p

    if cls.__name__ in ("SGD", "Adagrad", "Adam"):  # torch's own behaviour
        with pytest.raises(RuntimeError, match=match):
            getattr(torch.optim, cls.__name__)([meta_param()], lr=0.1, fused=True).step()
    opt = cls([meta_param()], lr=0.1, fused=True)
    with pytest.raises(RuntimeError, match=match):
        opt.step()
    cls([meta_param()], lr=0.1).step()


# ------------------------------------------------------------------------------ the C extension


def _run_py(code, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_no_ext_fallback_warns_once_and_matches_torch(tmp_path):
    code = """
        import warnings, torch
        warnings.simplefilter("always")
        from torchopt_review.optim import Adam
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            a = torch.randn(50, requires_grad=True); b = a.detach().clone().requires_grad_()
            ours = Adam([a], lr=0.1); theirs = torch.optim.Adam([b], lr=0.1)
            for _ in range(3):
                g = torch.randn(50); a.grad = g.clone(); b.grad = g.clone()
                ours.step(); theirs.step()
            Adam([torch.zeros(3, requires_grad=True)]).step()
        msgs = [str(w.message) for w in rec if "C optimizer kernels" in str(w.message)]
        print(len(msgs), float((a - b).abs().max()))
    """
    # no working C compiler, an empty cache
    out = _run_py(code, {"CC": str(tmp_path / "no-such-cc"), "TORCHOPT_REVIEW_CACHE": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    n_warnings, err = out.stdout.split()
    assert n_warnings == "1" and float(err) < 1e-6
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_compile_into_cache_dir_concurrently(tmp_path, monkeypatch):
    """A cold cache: two builders race for the same file (atomic rename), and load_kernels
    compiles into TORCHOPT_REVIEW_CACHE and loads a library that computes like torch."""
    import threading

    from torchopt_review.optim import _cext
    cc = os.environ.get("CC", "cc")
    try:
        _cext.compiler_id(cc)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("no working C compiler here")
    target = tmp_path / "race" / "kernels-test.so"
    errors = []

    def build():
        try:
            _cext.build(cc, target, native=False)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(2)]
    [t.start() for t in threads], [t.join() for t in threads]
    assert not errors and [f.name for f in target.parent.iterdir()] == [target.name]

    monkeypatch.setenv("TORCHOPT_REVIEW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(_cext, "_state", {"tried": False, "lib": None, "warned": False})
    kernels = _cext.load_kernels()
    assert kernels is not None and kernels.path.parent == tmp_path / "cache"
    assert [f.suffix for f in (tmp_path / "cache").iterdir()] == [".so"]  # no temp files left
    a = torch.randn(9, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    ours, theirs = Adamax([a], lr=0.1), torch.optim.Adamax([b], lr=0.1)
    a.grad, b.grad = torch.ones(9), torch.ones(9)
    ours.step(), theirs.step()
    assert ours._plans[id(ours.param_groups[0])].buckets[0].c_fn is not None
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_cuda_flat_path_matches_cpu_reference(cls):
    for semantics in ("torch", "keras"):
        a = mlp()
        b = copy.deepcopy(a).cuda()
        opt_a = cls(a.parameters(), fused=False, semantics=semantics, **KW[cls])
        opt_b = cls(b.parameters(), semantics=semantics, **KW[cls])
        for i in range(4):
            x, y = batch(i)
            for model, opt, dev in ((a, opt_a, "cpu"), (b, opt_b, "cuda")):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
                opt.step()
        assert opt_b._plans and all(bk.c_fn is None for bk in opt_b._plans[id(opt_b.param_groups[0])].buckets)
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q.cpu(), rtol=1e-4, atol=1e-5)


def test_relocated_params_keep_identity_and_match_reference(monkeypatch):
    """The CUDA layout (params moved into one flat buffer, ``.data`` re-pointed), forced on CPU."""
    use_torch_ops(monkeypatch)
    relocate_on_cpu(monkeypatch)
    a = mlp()
    b = copy.deepcopy(a)
    ids = [id(p) for p in a.parameters()]
    opt_a = Adam(a.parameters(), lr=0.01)
    opt_b = Adam(b.parameters(), lr=0.01, fused=False)
    for i in range(5):
        x, y = batch(i)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    params = list(a.parameters())
    assert [id(p) for p in params] == ids  # the same Parameter objects (modules still hold them)
    ptr, item = params[0].data_ptr(), params[0].element_size()
    for p in params:  # now laid end to end in one storage
        assert p.data_ptr() == ptr
        ptr += p.numel() * item
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
