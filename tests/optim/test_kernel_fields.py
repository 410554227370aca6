"""The per-step scalars are named once per optimizer (``Scalars`` / ``Flags`` in its module) and
every kernel reads them by those names: the C structs must have the same fields in the same
order, and the torch-op kernel gets them as a named tuple."""

from __future__ import annotations

import re

import pytest
import torch

from torchopt_review.optim import SGD, Adagrad, Adam, Adamax, NAdam, RMSprop, load_kernels
from torchopt_review.optim._cext import KERNEL_SOURCE, fields_string
from torchopt_review.optim.scalars import GRAPH_WIDTH, PROLOGUE, branches

ALL = [SGD, Adagrad, RMSprop, Adam, NAdam, Adamax]
ids = [c.__name__ for c in ALL]


def _c_list(macro: str) -> tuple[str, ...]:
    """The names of an X-macro list in kernels.c (TOR_PROLOGUE expanded)."""
    src = KERNEL_SOURCE.read_text().replace("\\\n", " ")  # join continued lines
    m = re.search(rf"^#define {macro}\(X\)(.*)$", src, re.M)
    assert m, f"no #define {macro}(X) in kernels.c"
    body = m.group(1).replace("TOR_PROLOGUE(X)", " ".join(f"X({n})" for n in PROLOGUE))
    return tuple(re.findall(r"X\((\w+)\)", body))


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_c_source_declares_the_module_field_lists(cls):
    name = cls._kernel.upper()
    assert _c_list(f"{name}_SCALARS") == cls.Scalars._fields
    assert _c_list(f"{name}_FLAGS") == cls.Flags._fields
    assert cls.Scalars._fields[:len(PROLOGUE)] == PROLOGUE
    assert len(cls.Scalars._fields) <= GRAPH_WIDTH


@pytest.mark.parametrize("cls", ALL, ids=ids)
def test_compiled_library_exports_the_same_field_lists(cls):
    kernels = load_kernels()
    if kernels is None:
        pytest.skip("no C compiler")
    assert kernels.declared_fields(cls._kernel) == fields_string(cls.Scalars._fields, cls.Flags._fields)


def test_a_library_with_other_fields_is_refused():
    kernels = load_kernels()
    if kernels is None:
        pytest.skip("no C compiler")
    from torchopt_review.optim._cext import Kernels
    fresh = Kernels(kernels.lib, kernels.path)
    with pytest.raises(RuntimeError, match="declares the fields"):
        fresh.fn("adam", torch.float32, Adam.Scalars._fields[::-1], Adam.Flags._fields)


def test_coefficients_are_named_tuples_by_field():
    p = torch.zeros(3, requires_grad=True)
    opt = Adam([p], lr=0.5, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.1, maximize=True)
    p.grad = torch.ones(3)
    opt.step()
    b = opt._plans[id(opt.param_groups[0])].buckets[0]
    H, F = opt._coefficients(opt.param_groups[0], b)  # step 2
    assert isinstance(H, Adam.Scalars) and isinstance(F, Adam.Flags)
    assert (H.one_minus_beta1, H.beta2, H.eps, H.l2_wd, H.grad_sign) == (1 - 0.8, 0.9, 1e-3, 0.1, -1.0)
    assert H.step_size == pytest.approx(0.5 / (1 - 0.8 ** 2))
    assert F.amsgrad == 0
    c = branches(H)
    assert type(c) is Adam.Scalars and c.decoupled_mult == 1.0 and c.keras_wd == 0.0 and c.beta2 == 2.0
