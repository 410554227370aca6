"""The single source of optimizer names, classes, blog hyperparameters and descriptions.

Everything that lists optimizers reads this table: the ``--opt`` choices and ``--help`` of the
CLIs, ``configs/optim/<name>.yaml`` (checked against it by the tests), the README table, the
review grid and the table-driven test suite. Adding an optimizer is one module, one entry here
and one YAML file.

``blog`` holds the hyperparameters the blog's Keras code ran with (Keras 3 defaults at
lr = 1e-3, see ``shared/BLOG.md``); they are what ``create_optimizer(name, params)`` uses unless
overridden, together with ``semantics="keras"``. The classes' own defaults stay torch's.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch

from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .nadam import NAdam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["OptimizerSpec", "REGISTRY", "optimizer_names", "get_spec", "create_optimizer"]


@dataclass(frozen=True)
class OptimizerSpec:
    """One registry entry.

    Attributes:
        name: the name users type (``--opt``), folder names in ``runs/`` and YAML file names.
        cls: the optimizer class in :mod:`torchopt_review.optim`.
        fixed: keyword arguments that define this entry (``momentum`` is SGD with momentum 0.9);
            the user may override them, but then it is a different optimizer.
        blog: the hyperparameters of the blog's run (Keras defaults, lr 1e-3).
        description: one line for ``--help`` and the README table.
        state_keys: names of the per-parameter state tensors (torch's names).
    """

    name: str
    cls: type[torch.optim.Optimizer]
    description: str
    fixed: dict[str, Any] = field(default_factory=dict)
    blog: dict[str, Any] = field(default_factory=dict)
    state_keys: tuple[str, ...] = ()

    def kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Blog hyperparameters, then the fixed ones, then ``overrides``; semantics defaults to keras."""
        return {"semantics": "keras", **self.blog, **self.fixed, **overrides}


# Keras 3 defaults, at the blog's lr = 1e-3 (shared/BLOG.md, shared/OPTIMIZERS.md).
_KERAS_EPS = 1e-7

REGISTRY: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            "sgd", SGD, "plain stochastic gradient descent: w -= lr * g",
            blog={"lr": 1e-3},
            state_keys=(),
        ),
        OptimizerSpec(
            "momentum", SGD, "SGD with heavy-ball momentum 0.9 (velocity form in Keras semantics)",
            fixed={"momentum": 0.9},
            blog={"lr": 1e-3},
            state_keys=("momentum_buffer",),
        ),
        OptimizerSpec(
            "nesterov", SGD, "SGD with Nesterov momentum 0.9 (NAG)",
            fixed={"momentum": 0.9, "nesterov": True},
            blog={"lr": 1e-3},
            state_keys=("momentum_buffer",),
        ),
        OptimizerSpec(
            "adagrad", Adagrad, "per-coordinate lr / sqrt(sum of squared gradients); stalls as the sum grows",
            blog={"lr": 1e-3, "initial_accumulator_value": 0.1, "eps": _KERAS_EPS},
            state_keys=("sum",),
        ),
        OptimizerSpec(
            "rmsprop", RMSprop, "lr / sqrt(moving average of squared gradients); the blog's final code used rho 0.99",
            blog={"lr": 1e-3, "alpha": 0.99, "eps": _KERAS_EPS},
            state_keys=("square_avg",),
        ),
        OptimizerSpec(
            "adam", Adam, "momentum + RMSprop scaling with bias correction (Kingma & Ba, 2015)",
            blog={"lr": 1e-3, "betas": (0.9, 0.999), "eps": _KERAS_EPS},
            state_keys=("exp_avg", "exp_avg_sq"),
        ),
        OptimizerSpec(
            "nadam", NAdam, "Adam with Nesterov momentum and a warming momentum schedule (Dozat, 2016)",
            blog={"lr": 1e-3, "betas": (0.9, 0.999), "eps": _KERAS_EPS},
            state_keys=("exp_avg", "exp_avg_sq", "mu_product"),
        ),
        OptimizerSpec(
            "adamax", Adamax, "Adam with the infinity norm of past gradients in the denominator",
            blog={"lr": 1e-3, "betas": (0.9, 0.999), "eps": _KERAS_EPS},
            state_keys=("exp_avg", "exp_inf"),
        ),
    )
}


def optimizer_names() -> list[str]:
    """Registry names in the blog's order (``sgd`` ... ``adamax``)."""
    return list(REGISTRY)


def get_spec(name: str) -> OptimizerSpec:
    """The registry entry for ``name``; a ``ValueError`` naming the valid ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown optimizer {name!r}{hint}; valid names: {', '.join(REGISTRY)}"
        ) from None


def create_optimizer(name: str, params: Iterable[Any], **overrides: Any) -> torch.optim.Optimizer:
    """Build the registry optimizer ``name`` over ``params``.

    Uses the blog's hyperparameters and ``semantics="keras"`` unless ``overrides`` says otherwise::

        create_optimizer("nesterov", model.parameters(), lr=1e-2)
        create_optimizer("adam", model.parameters(), semantics="torch")
    """
    spec = get_spec(name)
    return spec.cls(params, **spec.kwargs(**overrides))
