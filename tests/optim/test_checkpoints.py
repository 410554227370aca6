"""Checkpoints that were not written by this library's current code: torch < 1.12's numeric
``step``, and state dicts moving between torch.optim and the two semantics. References are
torch.optim itself and hand-computed float64 steps, never this library's own output."""

from __future__ import annotations

import copy

import pytest
import torch

from optim_testlib import grad_sequence, make_params
from torchopt_review.optim import SGD, Adagrad, Adam, Adamax, NAdam, RMSprop

WITH_STEP = {Adagrad: dict(lr=0.05), RMSprop: dict(lr=0.01, momentum=0.5), Adam: dict(lr=0.01),
             NAdam: dict(lr=0.01), Adamax: dict(lr=0.01)}


def feed(opt, params, grads):
    for row in grads:
        for p, g in zip(params, row):
            p.grad = g.clone()
        opt.step()


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


# ------------------------------------------------------------------------------ torch < 1.12


def _as_pre_1_12(sd):
    """What torch < 1.12 saved: per-param ``step`` (and NAdam's ``mu_product``) as Python floats."""
    sd = copy.deepcopy(sd)
    for st in sd["state"].values():
        for key in ("step", "mu_product"):
            if key in st:
                st[key] = float(st[key])
    return sd


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("cls", list(WITH_STEP), ids=[c.__name__ for c in WITH_STEP])
def test_numeric_step_from_old_torch_loads_like_torch(cls, fused):
    grads = grad_sequence(8)
    params = make_params()
    theirs_cls = getattr(torch.optim, cls.__name__)
    first = theirs_cls(params, **WITH_STEP[cls])
    feed(first, params, grads[:4])
    old = _as_pre_1_12(first.state_dict())
    assert isinstance(old["state"][0]["step"], float)

    pt, po = clone_params(params), clone_params(params)
    theirs = theirs_cls(pt, **WITH_STEP[cls])
    theirs.load_state_dict(copy.deepcopy(old))  # torch converts the numbers to tensors
    ours = cls(po, fused=fused, **WITH_STEP[cls])
    ours.load_state_dict(copy.deepcopy(old))
    feed(theirs, pt, grads[4:])
    feed(ours, po, grads[4:])
    for a, b in zip(po, pt):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for i, b in enumerate(pt):
        assert float(ours.state[po[i]]["step"]) == float(theirs.state[b]["step"]) == 8.0


# ------------------------------------------------------------------------------ between semantics


def _train_pair(cls, kwargs, semantics, steps=5, fused=None):
    params = make_params()
    opt = cls(params, semantics=semantics, fused=fused, **kwargs)
    grads = grad_sequence(2 * steps)
    feed(opt, params, grads[:steps])
    return params, opt, grads[steps:]


@pytest.mark.parametrize("fused", [None, False], ids=["fast", "reference"])
@pytest.mark.parametrize("cls,kwargs", [
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    # eps = 0: Keras's and torch's RMSprop rules coincide, so only the buffer's units can differ
    (RMSprop, dict(lr=0.01, momentum=0.5, eps=0.0)),
    (RMSprop, dict(lr=0.01, momentum=0.5, eps=0.0, centered=True)),
], ids=["sgd_momentum", "sgd_nesterov", "rmsprop_momentum", "rmsprop_centered_momentum"])
def test_keras_state_dict_continues_in_torch_optim(cls, kwargs, fused):
    """At a constant lr Keras's SGD (velocity v = mu v - lr g) is torch's SGD; its state_dict
    holds torch's buffer b = -v / lr, so torch.optim continues exactly as this library does."""
    params, ours, rest = _train_pair(cls, kwargs, "keras", fused=fused)
    twin = clone_params(params)
    theirs = getattr(torch.optim, cls.__name__)(twin, **kwargs)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))  # the extra keys do not bother torch
    feed(ours, params, rest)
    feed(theirs, twin, rest)
    for a, b in zip(params, twin):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cls,kwargs", [
    (SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    (RMSprop, dict(lr=0.01, momentum=0.5, eps=0.0)),
], ids=["sgd_nesterov", "rmsprop_momentum"])
def test_torch_optim_state_dict_continues_under_keras_semantics(cls, kwargs):
    params = make_params()
    theirs = getattr(torch.optim, cls.__name__)(params, **kwargs)
    grads = grad_sequence(10)
    feed(theirs, params, grads[:5])
    twin = clone_params(params)
    ours = cls(twin, semantics="keras", **kwargs)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert ours.param_groups[0]["semantics"] == "keras"
    feed(theirs, params, grads[5:])
    feed(ours, twin, grads[5:])
    for a, b in zip(twin, params):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


ALL_KW = {SGD: dict(lr=0.05, momentum=0.9), Adagrad: dict(lr=0.05), RMSprop: dict(lr=0.01, momentum=0.5),
          Adam: dict(lr=0.01, amsgrad=True), NAdam: dict(lr=0.01), Adamax: dict(lr=0.01)}


@pytest.mark.parametrize("cls", list(ALL_KW), ids=[c.__name__ for c in ALL_KW])
def test_keras_state_dict_loads_and_steps_in_torch_optim(cls):
    """Our extra keys (``semantics``, ``fused``, ``global_state``) are ignored by torch.optim."""
    params, ours, rest = _train_pair(cls, ALL_KW[cls], "keras")
    twin = clone_params(params)
    theirs = getattr(torch.optim, cls.__name__)(twin, **ALL_KW[cls])
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    feed(theirs, twin, rest)
    assert all(torch.isfinite(p).all() for p in twin)


# what a state_dict saved under one semantics does when loaded under the other
REFUSED = {
    "Adamax": "exp_inf",                # max(b2 u, |g| + eps) vs max(b2 u, |g|)
    "RMSprop": "momentum buffers",      # increments g/(sqrt(v)+eps) vs g/sqrt(v+eps)
}


@pytest.mark.parametrize("direction", [("torch", "keras"), ("keras", "torch")], ids=["torch_to_keras", "keras_to_torch"])
@pytest.mark.parametrize("cls", list(ALL_KW), ids=[c.__name__ for c in ALL_KW])
def test_loading_across_semantics_continues_or_refuses(cls, direction):
    src, dst = direction
    params, saved_opt, rest = _train_pair(cls, ALL_KW[cls], src)
    sd = copy.deepcopy(saved_opt.state_dict())
    twin = clone_params(params)
    ours = cls(twin, semantics=dst, **ALL_KW[cls])
    if cls.__name__ in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[cls.__name__]):
            ours.load_state_dict(sd)
        assert not ours.state and ours.param_groups[0]["semantics"] == dst  # nothing was loaded
        return
    ours.load_state_dict(sd)
    assert ours.param_groups[0]["semantics"] == dst
    # the state is the other semantics' state: the same tensors, continuing under dst's rule
    for p, q in zip(params, twin):
        for key, value in saved_opt.state[p].items():
            torch.testing.assert_close(torch.as_tensor(ours.state[q][key]).double(),
                                       torch.as_tensor(value).double(), rtol=0, atol=0)
    fresh = clone_params(params)
    reference = cls(fresh, semantics=dst, **ALL_KW[cls])  # dst's rule from a torch.optim-style load
    reference.load_state_dict({k: v for k, v in copy.deepcopy(sd).items() if k != "global_state"}
                              | {"param_groups": [{**g, "semantics": dst} for g in sd["param_groups"]]})
    feed(ours, twin, rest)
    feed(reference, fresh, rest)
    for a, b in zip(twin, fresh):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_nadam_with_unequal_steps_refuses_to_change_semantics():
    params = make_params()
    opt = NAdam(params, lr=0.01)
    grads = grad_sequence(4)
    feed(opt, params, grads[:3])
    params[0].grad = grads[3][0].clone()  # only the first param takes a 4th step
    for p in params[1:]:
        p.grad = None
    opt.step()
    twin = clone_params(params)
    keras = NAdam(twin, lr=0.01, semantics="keras")
    with pytest.raises(ValueError, match="different numbers of steps"):
        keras.load_state_dict(copy.deepcopy(opt.state_dict()))


def test_eps_zero_makes_adamax_and_rmsprop_states_movable():
    for cls, kw in ((Adamax, dict(lr=0.01, eps=0.0)), (RMSprop, dict(lr=0.01, momentum=0.5, eps=0.0))):
        params, saved_opt, _ = _train_pair(cls, kw, "torch")
        cls(clone_params(params), semantics="keras", **kw).load_state_dict(copy.deepcopy(saved_opt.state_dict()))
