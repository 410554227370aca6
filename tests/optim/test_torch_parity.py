"""``semantics="torch"`` against ``torch.optim`` itself, driven by torch's own optimizer test
database (``torch.testing._internal.common_optimizers``, shipped in the wheel; importing it
needs ``expecttest``).

* every ``optim_inputs_func_*`` configuration of the six classes, float32 and float64, through
  our reference kernel (``fused=False``) and our fast path (``fused=True``): ours and torch's
  from the same init and the same gradients agree on params and state after many steps;
* the CUDA-only configurations (``capturable=True`` ...), run on the CPU: torch raises there,
  so ours must raise the same exception type; where torch does not raise, the trajectories
  must agree;
* every ``optim_error_inputs_func_*`` case raises (or warns) the same type from ours;
* an ``lr_scheduler.StepLR`` and a tensor lr (where torch accepts one) give the same
  trajectory.

The gradients are a fixed random sequence (magnitudes 1e-4 ... 1) rather than a loss's, so
a difference cannot hide behind feedback; one param gets a gradient only on even steps, so the
skip-params-without-grad logic is exercised too.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

pytest.importorskip("expecttest")  # common_optimizers imports it
from torch.testing._internal.common_optimizers import (  # noqa: E402
    OptimizerErrorEnum,
    optim_db,
)

import torchopt_review.optim as ours_mod  # noqa: E402

CLASSES = ("SGD", "Adagrad", "RMSprop", "Adam", "NAdam", "Adamax")
INFO = {info.optim_cls.__name__: info for info in optim_db if info.optim_cls.__name__ in CLASSES}
STEPS = 30
SHAPES = [(5, 3), (7,), (2, 3, 4), ()]
DTYPES = {"float32": torch.float32, "float64": torch.float64}
IMPLS = {"reference": False, "fused": True}
# float32: torch's for-loop and our flat kernels round in different orders; after 30 steps the
# gap is a few ulps of the params (~1e-6) -- anything semantic is orders of magnitude larger.
TOL = {torch.float32: dict(rtol=2e-5, atol=2e-6), torch.float64: dict(rtol=1e-11, atol=1e-13)}


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _configs(device: str) -> list[tuple[str, str, dict]]:
    """(class, id, kwargs) for every optim_inputs_func configuration torch lists for device."""
    out = []
    for name in CLASSES:
        seen: dict[str, int] = {}
        for inp in INFO[name].optim_inputs_func(device=device, dtype=torch.float32):
            assert inp.params is None  # torch's inputs leave params to the test
            slug = _slug(inp.desc)
            seen[slug] = seen.get(slug, 0) + 1
            if seen[slug] > 1:  # torch reuses a desc now and then
                slug = f"{slug}_{seen[slug]}"
            out.append((name, slug, inp.kwargs))
    return out


CPU_CONFIGS = _configs("cpu")
_cpu_keys = {(c, s) for c, s, _ in CPU_CONFIGS}
CUDA_ONLY_CONFIGS = [c for c in _configs("cuda") if (c[0], c[1]) not in _cpu_keys]


def make_params(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]


def make_grads(dtype: torch.dtype, steps: int = STEPS, seed: int = 1) -> list[list]:
    """grads[t][i]: the gradient of param i at step t (None: param i has no grad then)."""
    g = torch.Generator().manual_seed(seed)
    scales = [1.0, 1e-2, 1e-4, 0.3]
    out = []
    for t in range(steps):
        row = []
        for i, (s, scale) in enumerate(zip(SHAPES, scales)):
            x = (torch.randn(s, generator=g, dtype=torch.float64) * scale).to(dtype)
            row.append(None if (i == 1 and t % 2 == 1) else x)
        out.append(row)
    return out


def run(cls, init, grads, kwargs, *, scheduler=None, lr_tensor=False):
    """Params and optimizer after len(grads) steps."""
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = cls(params, **copy.deepcopy(kwargs))
    sched = scheduler(opt) if scheduler is not None else None
    for row in grads:
        for p, g in zip(params, row):
            p.grad = None if g is None else g.clone()
        opt.step()
        if sched is not None:
            sched.step()
    return params, opt


def assert_same(torch_run, ours_run, dtype):
    (tp, topt), (op, oopt) = torch_run, ours_run
    for i, (a, b) in enumerate(zip(op, tp)):
        torch.testing.assert_close(a.detach(), b.detach(), **TOL[dtype],
                                   msg=lambda m, i=i: f"param {i}: {m}")
    for i, (a, b) in enumerate(zip(op, tp)):
        ts, os_ = topt.state.get(b, {}), oopt.state.get(a, {})
        assert set(os_) == set(ts), f"param {i}: state keys {sorted(os_)} != torch's {sorted(ts)}"
        for key, tv in ts.items():
            # compare as float64 so 0-d float32 `step` tensors and floats compare alike
            ov = torch.as_tensor(os_[key]).detach().to(torch.float64)
            tv = torch.as_tensor(tv).detach().to(torch.float64)
            torch.testing.assert_close(ov, tv, **TOL[dtype],
                                       msg=lambda m, i=i, k=key: f"param {i} state {k}: {m}")


def _ids(configs):
    return [f"{c}-{s}" for c, s, _ in configs]


# --------------------------------------------------------------------------------------------
# every configuration torch tests on the CPU


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("cls_name,desc,kwargs", CPU_CONFIGS, ids=_ids(CPU_CONFIGS))
def test_config_matches_torch(cls_name, desc, kwargs, dtype_name, impl):
    dtype = DTYPES[dtype_name]
    init, grads = make_params(dtype), make_grads(dtype)
    kw = {**kwargs, "semantics": "torch", "fused": IMPLS[impl]}
    reference = run(getattr(torch.optim, cls_name), init, grads, kwargs)
    mine = run(getattr(ours_mod, cls_name), init, grads, kw)
    assert_same(reference, mine, dtype)


def test_database_covers_the_six_classes():
    assert {c for c, _, _ in CPU_CONFIGS} == set(CLASSES)
    assert len(CPU_CONFIGS) >= 40


# --------------------------------------------------------------------------------------------
# configurations torch lists for CUDA only: on the CPU, do what torch does


@pytest.mark.parametrize("cls_name,desc,kwargs", CUDA_ONLY_CONFIGS, ids=_ids(CUDA_ONLY_CONFIGS))
def test_cuda_only_config_on_cpu_mirrors_torch(cls_name, desc, kwargs):
    dtype = torch.float32
    init, grads = make_params(dtype), make_grads(dtype, steps=5)
    try:
        reference = run(getattr(torch.optim, cls_name), init, grads, kwargs)
    except Exception as exc:  # noqa: BLE001 - the point is to mirror whatever torch raises
        with pytest.raises(type(exc)):
            run(getattr(ours_mod, cls_name), init, grads, {**kwargs, "semantics": "torch"})
        return
    mine = run(getattr(ours_mod, cls_name), init, grads, {**kwargs, "semantics": "torch"})
    assert_same(reference, mine, dtype)


# --------------------------------------------------------------------------------------------
# bad inputs

ERROR_CASES = []
for _name in CLASSES:
    for _j, _err in enumerate(INFO[_name].optim_error_inputs_func(device="cpu", dtype=torch.float32)):
        ERROR_CASES.append(pytest.param(_name, _err, id=f"{_name}-{_slug(_err.optimizer_error_input.desc)}"))


def _error_args(err):
    inp = err.optimizer_error_input
    params = inp.params
    if params is None:  # torch's test passes None: the hyperparameter check must fire first
        params = [torch.nn.Parameter(torch.randn(2, 2))]
    return params, copy.deepcopy(inp.kwargs)


def _provoke(cls, err):
    params, kwargs = _error_args(err)
    opt = cls(params, **kwargs)
    if err.error_on == OptimizerErrorEnum.STEP_ERROR:
        for p in opt.param_groups[0]["params"]:
            p.grad = torch.ones_like(p)
        opt.step()


@pytest.mark.parametrize("cls_name,err", ERROR_CASES)
def test_error_input_raises_like_torch(cls_name, err):
    torch_cls, our_cls = getattr(torch.optim, cls_name), getattr(ours_mod, cls_name)
    if issubclass(err.error_type, Warning):
        with pytest.warns(err.error_type, match=err.error_regex):  # torch's own behaviour
            _provoke(torch_cls, err)
        with pytest.warns(err.error_type):
            _provoke(our_cls, err)
    else:
        with pytest.raises(err.error_type, match=err.error_regex):  # torch's own behaviour
            _provoke(torch_cls, err)
        with pytest.raises(err.error_type):
            _provoke(our_cls, err)


# --------------------------------------------------------------------------------------------
# lr schedules and tensor lr

SCHED_KWARGS = {
    "SGD": dict(lr=0.1, momentum=0.9),
    "Adagrad": dict(lr=0.1),
    "RMSprop": dict(lr=0.01, momentum=0.5),
    "Adam": dict(lr=0.01),
    "NAdam": dict(lr=0.01),
    "Adamax": dict(lr=0.01),
}


def _steplr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("lr_kind", ["float_lr", "tensor_lr"])
@pytest.mark.parametrize("cls_name", CLASSES)
def test_steplr_matches_torch(cls_name, lr_kind, impl):
    dtype = torch.float64
    init, grads = make_params(dtype), make_grads(dtype, steps=20)
    kwargs = dict(SCHED_KWARGS[cls_name])
    if lr_kind == "tensor_lr":
        # in the params' dtype: torch's Adam/NAdam/Adamax do the lr / bias-correction division
        # in the lr tensor's dtype, ours in double -- with a float32 lr on float64 params that
        # alone differs by ~1e-9, which would hide nothing but fail the float64 tolerance
        kwargs["lr"] = torch.tensor(kwargs["lr"], dtype=dtype)
    try:
        reference = run(getattr(torch.optim, cls_name), init, grads, kwargs, scheduler=_steplr)
    except Exception as exc:  # noqa: BLE001
        with pytest.raises(type(exc)):
            run(getattr(ours_mod, cls_name), init, grads,
                {**kwargs, "semantics": "torch", "fused": IMPLS[impl]}, scheduler=_steplr)
        return
    mine = run(getattr(ours_mod, cls_name), init, grads,
               {**kwargs, "semantics": "torch", "fused": IMPLS[impl]}, scheduler=_steplr)
    assert_same(reference, mine, dtype)
    # the schedule really ran: lr is 0.5^(20/4) of the start in both
    assert float(mine[1].param_groups[0]["lr"]) == pytest.approx(
        float(reference[1].param_groups[0]["lr"]))
    assert float(mine[1].param_groups[0]["lr"]) == pytest.approx(
        float(SCHED_KWARGS[cls_name]["lr"]) * 0.5 ** 5)


@pytest.mark.parametrize("cls_name", CLASSES)
def test_tensor_lr_accepted_where_torch_accepts_it(cls_name):
    """Without a scheduler, a 0-d tensor lr gives torch's trajectory (torch's for-loop path
    accepts one for all six classes on the CPU)."""
    dtype = torch.float32
    init, grads = make_params(dtype), make_grads(dtype)
    kwargs = dict(SCHED_KWARGS[cls_name], lr=torch.tensor(0.01), foreach=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither side should need to warn about it
        reference = run(getattr(torch.optim, cls_name), init, grads, kwargs)
        mine = run(getattr(ours_mod, cls_name), init, grads, {**kwargs, "semantics": "torch"})
    assert_same(reference, mine, dtype)
