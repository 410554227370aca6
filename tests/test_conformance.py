"""One table-driven conformance suite over every registry entry.

Every test is parametrized on ``optimizer_names()``, so adding an optimizer to the registry
adds its tests here. References are independent of our code: ``torch.optim`` (torch
semantics), the optimizer's own other path (fused vs reference), or a second run of ours
that must be identical by construction (two groups vs two optimizers, a checkpoint resumed).
The per-optimizer YAML files (``configs/optim/<name>.yaml``) are tested elsewhere.
"""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from torchopt_review.optim.registry import create_optimizer, get_spec, optimizer_names

NAMES = optimizer_names()
SEMANTICS = ["torch", "keras"]
SHAPES = [(6, 4), (5,), (2, 3, 2)]


def accepts(name: str, kwarg: str) -> bool:
    return kwarg in inspect.signature(get_spec(name).cls.__init__).parameters


def torch_class(name: str) -> type[torch.optim.Optimizer]:
    return getattr(torch.optim, get_spec(name).cls.__name__)


def torch_kwargs(name: str, **overrides) -> dict:
    """The registry's kwargs for ``semantics="torch"``, without our two extra arguments."""
    kw = get_spec(name).kwargs(semantics="torch", **overrides)
    kw.pop("semantics")
    kw.pop("fused", None)
    return kw


def make_params(dtype=torch.float64, seed=0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float64).to(dtype))
            for s in SHAPES]


def clone_params(params) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def grad_sequence(steps, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    scales = [1.0, 1e-3, 0.1]
    return [[(torch.randn(s, generator=g, dtype=torch.float64) * c).to(dtype)
             for s, c in zip(SHAPES, scales)] for _ in range(steps)]


def feed(opt, params, grads, *, sched=None):
    for row in grads:
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()


def assert_params_equal(a, b, **tol):
    for i, (x, y) in enumerate(zip(a, b)):
        torch.testing.assert_close(x.detach(), y.detach(), **tol, msg=lambda m, i=i: f"param {i}: {m}")


def assert_state_equal(opt_a, params_a, opt_b, params_b, **tol):
    for i, (pa, pb) in enumerate(zip(params_a, params_b)):
        sa, sb = opt_a.state.get(pa, {}), opt_b.state.get(pb, {})
        assert set(sa) == set(sb), f"param {i}: state keys {sorted(sa)} vs {sorted(sb)}"
        for k in sa:
            x = torch.as_tensor(sa[k]).detach().to(torch.float64)
            y = torch.as_tensor(sb[k]).detach().to(torch.float64)
            torch.testing.assert_close(x, y, **tol, msg=lambda m, i=i, k=k: f"param {i} state {k}: {m}")


TIGHT = dict(rtol=1e-12, atol=1e-14)  # float64, same arithmetic in a different order at most


# --------------------------------------------------------------------------------------------
# it optimizes: a quadratic and the Rosenbrock function, both semantics

# A learning rate that suits each optimizer on each problem (found on this grid; the same for
# both semantics). A registry entry missing here is tried on the whole grid instead.
LR_GRID = [1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1]
QUADRATIC_LR = {"sgd": 0.1, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.3, "rmsprop": 0.03,
                "adam": 0.1, "nadam": 0.1, "adamax": 0.1}
ROSENBROCK_LR = {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 0.3, "rmsprop": 0.01,
                 "adam": 0.1, "nadam": 0.03, "adamax": 0.1}


def quadratic_run(name, semantics, lr, steps=300):
    """0.5 * sum a_i (w_i - c_i)^2, curvatures 1 ... 10; (f at start, f at end)."""
    a = torch.logspace(0, 1, 8, dtype=torch.float64)
    c = torch.linspace(-1, 1, 8, dtype=torch.float64)
    w = torch.nn.Parameter(torch.full((8,), 2.0, dtype=torch.float64))
    opt = create_optimizer(name, [w], lr=lr, semantics=semantics)
    f = lambda: float(0.5 * (a * (w.detach() - c) ** 2).sum())  # noqa: E731
    first = f()
    for _ in range(steps):
        w.grad = a * (w.detach() - c)
        opt.step()
    return first, f()


def rosenbrock_run(name, semantics, lr, steps=1500):
    """(1 - x)^2 + 100 (y - x^2)^2 from (-1.5, 2); (f at start, f at end)."""
    xy = torch.nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
    opt = create_optimizer(name, [xy], lr=lr, semantics=semantics)

    def f():
        x, y = xy.detach()
        return float((1 - x) ** 2 + 100 * (y - x * x) ** 2)

    first = f()
    for _ in range(steps):
        x, y = xy.detach()
        xy.grad = torch.stack([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        opt.step()
    return first, f()


def _best(run, table, name, semantics):
    lrs = [table[name]] if name in table else LR_GRID
    results = {lr: run(name, semantics, lr) for lr in lrs}
    first = next(iter(results.values()))[0]
    finite = {lr: r[1] for lr, r in results.items() if r[1] == r[1]}
    assert finite, f"{name}/{semantics}: NaN for every lr tried {lrs}"
    best_lr = min(finite, key=finite.get)
    return first, best_lr, finite[best_lr]


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_decreases_a_quadratic(name, semantics):
    """The loss falls by 100x in 300 steps."""
    first, lr, last = _best(quadratic_run, QUADRATIC_LR, name, semantics)
    assert last < 1e-2 * first, f"{name}/{semantics}: {last:.3g} (lr {lr}) from {first:.3g}"


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_decreases_rosenbrock(name, semantics):
    """From (-1.5, 2) (f = 12.5) to f < 1 in 1500 steps: f < 1 implies x > 0, i.e. the
    iterate went round the bend of the curved valley (x: -1.5 -> 1)."""
    first, lr, last = _best(rosenbrock_run, ROSENBROCK_LR, name, semantics)
    assert last < 1.0, f"{name}/{semantics}: {last:.3g} (lr {lr}) from {first:.3g}"


# --------------------------------------------------------------------------------------------
# fused == reference


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_fused_equals_reference(name, semantics, dtype):
    steps = 60
    grads = grad_sequence(steps, dtype)
    runs = []
    for fused in (False, True):
        params = make_params(dtype)
        opt = create_optimizer(name, params, semantics=semantics, fused=fused, weight_decay=0.01, lr=1e-2)
        feed(opt, params, grads)
        runs.append((opt, params))
    (ref_opt, ref_p), (fus_opt, fus_p) = runs
    tol = TIGHT if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    assert_params_equal(fus_p, ref_p, **tol)
    assert_state_equal(fus_opt, fus_p, ref_opt, ref_p, **tol)
    for p in fus_p:  # torch's state names, as the registry lists them
        assert set(get_spec(name).state_keys) <= set(fus_opt.state[p])


# --------------------------------------------------------------------------------------------
# param groups


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_two_groups_equal_two_optimizers(name, semantics, fused):
    grads = grad_sequence(40)
    params = make_params()
    a, b = params[:2], params[2:]
    both = create_optimizer(name, [{"params": a, "lr": 3e-2, "weight_decay": 0.1}, {"params": b}],
                            semantics=semantics, fused=fused)
    feed(both, params, grads)

    sep = make_params()
    opt_a = create_optimizer(name, sep[:2], semantics=semantics, fused=fused, lr=3e-2, weight_decay=0.1)
    opt_b = create_optimizer(name, sep[2:], semantics=semantics, fused=fused)
    for row in grads:
        for p, g in zip(sep, row):
            p.grad = g.clone()
        opt_a.step()
        opt_b.step()
    assert_params_equal(params, sep, **TIGHT)


# --------------------------------------------------------------------------------------------
# state_dict round trips: ours -> ours, torch -> ours, ours -> torch


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_ours(name, semantics, fused):
    grads = grad_sequence(30)
    params = make_params()
    opt = create_optimizer(name, params, semantics=semantics, fused=fused)
    feed(opt, params, grads[:15])
    saved, saved_params = copy.deepcopy(opt.state_dict()), clone_params(params)
    feed(opt, params, grads[15:])

    resumed = saved_params
    opt2 = create_optimizer(name, resumed, semantics=semantics, fused=fused)
    opt2.load_state_dict(saved)
    feed(opt2, resumed, grads[15:])
    assert_params_equal(resumed, params, **TIGHT)
    assert_state_equal(opt2, resumed, opt, params, **TIGHT)


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_from_torch(name, fused):
    """torch.optim runs 15 steps, ours resumes from its state_dict; torch continuing is the
    reference."""
    grads = grad_sequence(30)
    params = make_params()
    topt = torch_class(name)(params, **torch_kwargs(name))
    feed(topt, params, grads[:15])
    saved, saved_params = copy.deepcopy(topt.state_dict()), clone_params(params)
    feed(topt, params, grads[15:])

    opt = create_optimizer(name, saved_params, semantics="torch", fused=fused)
    opt.load_state_dict(saved)
    feed(opt, saved_params, grads[15:])
    assert_params_equal(saved_params, params, rtol=1e-11, atol=1e-13)
    assert_state_equal(opt, saved_params, topt, params, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_to_torch(name, fused):
    """Ours runs 15 steps, torch.optim resumes from our state_dict; ours continuing must agree."""
    grads = grad_sequence(30)
    params = make_params()
    opt = create_optimizer(name, params, semantics="torch", fused=fused)
    feed(opt, params, grads[:15])
    saved, saved_params = copy.deepcopy(opt.state_dict()), clone_params(params)
    feed(opt, params, grads[15:])

    topt = torch_class(name)(saved_params, **torch_kwargs(name))
    topt.load_state_dict(saved)
    feed(topt, saved_params, grads[15:])
    assert_params_equal(params, saved_params, rtol=1e-11, atol=1e-13)
    assert_state_equal(opt, params, topt, saved_params, rtol=1e-11, atol=1e-13)


# --------------------------------------------------------------------------------------------
# closure


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_closure_called_once_and_loss_returned(name, semantics, fused):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    opt = create_optimizer(name, [w], semantics=semantics, fused=fused, lr=1e-2)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss

    for i in range(5):
        before = w.detach().clone()
        expected = float((before ** 2).sum())
        loss = opt.step(closure)
        assert len(calls) == i + 1, "closure must run exactly once per step"
        assert float(loss.detach()) == pytest.approx(expected), "step must return the closure's loss"
        assert not torch.equal(w.detach(), before), "the step must use the closure's gradient"
    assert opt.step() is None  # no closure: None, as torch.optim


# --------------------------------------------------------------------------------------------
# lr schedulers


def _plan_builds(opt) -> list[int]:
    """Counts layout (re)builds if the library has a ``_build_plan`` (its flat-bucket layout)."""
    count = [0]
    inner = getattr(opt, "_build_plan", None)
    if inner is None:
        return count

    def counting(*args, **kwargs):
        count[0] += 1
        return inner(*args, **kwargs)

    opt._build_plan = counting
    return count


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_is_honoured_without_rebuild(name, semantics, fused):
    """StepLR halving the lr every 5 steps: identical to the constant-lr run for 5 steps, then
    different; identical to a run whose lr is set by hand at the same steps; no layout rebuild
    when the lr changes."""
    grads = grad_sequence(20)

    p_const = make_params()
    opt_const = create_optimizer(name, p_const, semantics=semantics, fused=fused, lr=1e-2)
    p_sched = make_params()
    opt_sched = create_optimizer(name, p_sched, semantics=semantics, fused=fused, lr=1e-2)
    builds = _plan_builds(opt_sched)
    sched = torch.optim.lr_scheduler.StepLR(opt_sched, step_size=5, gamma=0.5)
    p_hand = make_params()
    opt_hand = create_optimizer(name, p_hand, semantics=semantics, fused=fused, lr=1e-2)

    for t, row in enumerate(grads):
        for ps in (p_const, p_sched, p_hand):
            for p, g in zip(ps, row):
                p.grad = g.clone()
        opt_const.step()
        opt_sched.step()
        opt_hand.step()
        sched.step()
        for group in opt_hand.param_groups:
            group["lr"] = 1e-2 * 0.5 ** ((t + 1) // 5)
        if t == 0:
            builds_after_first = builds[0]
        if t == 4:
            assert_params_equal(p_sched, p_const, rtol=0, atol=0)
    assert_params_equal(p_sched, p_hand, rtol=0, atol=0)
    assert any(not torch.allclose(a, b) for a, b in zip(p_sched, p_const)), "lr change had no effect"
    assert builds[0] == builds_after_first, f"{builds[0] - builds_after_first} rebuilds after lr changes"


@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_lr_scheduler_matches_torch(name, fused):
    """Under torch semantics, the scheduled trajectory is torch.optim's."""
    grads = grad_sequence(20)
    p_t, p_o = make_params(), make_params()
    topt = torch_class(name)(p_t, **torch_kwargs(name, lr=1e-2))
    opt = create_optimizer(name, p_o, semantics="torch", fused=fused, lr=1e-2)
    feed(topt, p_t, grads, sched=torch.optim.lr_scheduler.StepLR(topt, step_size=5, gamma=0.5))
    feed(opt, p_o, grads, sched=torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5))
    assert_params_equal(p_o, p_t, rtol=1e-11, atol=1e-13)


# --------------------------------------------------------------------------------------------
# bad hyperparameters, unknown names

def _bad_hyperparameters(name: str) -> list[tuple[str, dict]]:
    cases = [("negative lr", {"lr": -1e-3})]
    if accepts(name, "eps"):
        cases.append(("negative eps", {"eps": -1e-8}))
    if accepts(name, "betas"):
        cases += [("beta1 = 1", {"betas": (1.0, 0.999)}), ("beta2 = 1", {"betas": (0.9, 1.0)}),
                  ("negative beta1", {"betas": (-0.1, 0.999)}),
                  ("negative beta2", {"betas": (0.9, -0.1)})]
    if accepts(name, "weight_decay"):
        cases.append(("negative weight_decay", {"weight_decay": -1e-4}))
    if accepts(name, "momentum"):
        cases.append(("negative momentum", {"momentum": -0.5}))
    if accepts(name, "alpha"):
        cases.append(("negative alpha (rho)", {"alpha": -0.1}))
    if accepts(name, "lr_decay"):
        cases.append(("negative lr_decay", {"lr_decay": -0.1}))
    if accepts(name, "initial_accumulator_value"):
        cases.append(("negative initial_accumulator_value", {"initial_accumulator_value": -0.1}))
    if accepts(name, "momentum_decay"):
        cases.append(("negative momentum_decay", {"momentum_decay": -0.1}))
    cases.append(("unknown semantics", {"semantics": "jax"}))
    return cases


BAD = [pytest.param(n, kw, id=f"{n}-{desc.replace(' ', '_')}")
       for n in NAMES for desc, kw in _bad_hyperparameters(n)]


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("name,bad", BAD)
def test_bad_hyperparameter_raises_value_error(name, bad, semantics):
    w = torch.nn.Parameter(torch.zeros(3))
    kw = {"semantics": semantics, **bad}
    with pytest.raises(ValueError):
        create_optimizer(name, [w], **kw)


@pytest.mark.parametrize("name", [n for n in NAMES if accepts(n, "dampening")])
def test_keras_semantics_rejects_dampening(name):
    """Keras's SGD has no dampening; a silent fall-back to torch's rule would be wrong."""
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError):
        create_optimizer(name, [w], semantics="keras", momentum=0.9, dampening=0.5, nesterov=False)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        create_optimizer("adamw_typo", [torch.nn.Parameter(torch.zeros(1))])
    message = str(info.value)
    for name in NAMES:
        assert name in message


# --------------------------------------------------------------------------------------------
# the registry entry builds what it says


@pytest.mark.parametrize("name", NAMES)
def test_registry_entry_builds_its_class_with_blog_hyperparameters(name):
    spec = get_spec(name)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = create_optimizer(name, [w])
    assert isinstance(opt, spec.cls) and isinstance(opt, torch.optim.Optimizer)
    group = opt.param_groups[0]
    assert group["semantics"] == "keras"
    for key, value in {**spec.blog, **spec.fixed}.items():
        assert group[key] == value, f"{name}: {key} = {group[key]!r}, registry says {value!r}"
    assert spec.description
