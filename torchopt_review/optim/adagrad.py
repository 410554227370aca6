"""Adagrad: torch.optim.Adagrad's math or Keras 3's (eps inside the square root)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import as_float, check_lr, real_views, ref_step, scalar_value
from ._docs import fill_doc
from .scalars import flag_fields, prologue_values, scalar_fields

__all__ = ["Adagrad"]

# The kernels' per-step inputs (csrc/kernels.c: ADAGRAD_SCALARS), after the prologue:
#   clr  lr / (1 + (t - 1) * lr_decay);  eps_in / eps_out  eps inside (keras) or outside the sqrt
AdagradScalars = scalar_fields("AdagradScalars", "clr", "eps_in", "eps_out")
AdagradFlags = flag_fields("AdagradFlags")


class Adagrad(FlatOptimizer):
    __doc__ = fill_doc(r"""Adagrad: per-coordinate steps scaled by the root of the summed squared gradients.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \gamma \text{ (lr)}, \: \theta_0 \text{ (params)}, \:
                f(\theta) \text{ (objective)}, \: \lambda \text{ (weight decay)},           \\
            &\hspace{12mm}    \tau \text{ (initial accumulator value)}, \: \eta\text{ (lr decay)},
                \: \epsilon                                                                 \\
            &\textbf{initialize} :  state\_sum_0 \leftarrow \tau                          \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm} \tilde{\gamma} \leftarrow \gamma / (1 +(t-1) \eta)                  \\
            &\hspace{5mm}\textbf{if} \: \lambda \neq 0: g_t \leftarrow g_t + \lambda\theta_{t-1}
                \text{ (torch) or } \theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\theta_{t-1}
                \text{ (keras)}                                                             \\
            &\hspace{5mm}state\_sum_t  \leftarrow  state\_sum_{t-1} + g^2_t                 \\
            &\hspace{5mm}\textbf{torch:}\: \theta_t \leftarrow \theta_{t-1} - \tilde{\gamma}
                \frac{g_t}{\sqrt{state\_sum_t}+\epsilon}                                    \\
            &\hspace{5mm}\textbf{keras:}\: \theta_t \leftarrow \theta_{t-1} - \tilde{\gamma}
                \frac{g_t}{\sqrt{state\_sum_t+\epsilon}}                                    \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    The accumulator is ``state["sum"]``; as in torch, state is created for every param at
    construction.

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 1e-2)
        lr_decay (float, optional): learning rate decay. (default: 0)
        weight_decay (float, optional): weight decay. (default: 0)
        initial_accumulator_value (float, optional): initial value of the sum of squares
            (Keras's default is 0.1). (default: 0)
        eps (float, optional): term added to the denominator (Keras's default is 1e-7).
            (default: 1e-10)
        {flags}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.Adagrad`` (sparse gradients supported on the
        reference path, as in torch).  ``semantics="keras"`` is Keras 3's
        ``keras/src/optimizers/adagrad.py`` (``update_step``, lines 78-92): ``eps`` inside
        the square root, ``w -= lr * g / sqrt(acc + eps)``.  Keras has no ``lr_decay``;
        here it still scales the lr (by the optimizer's global step).  With
        ``initial_accumulator_value=0.1+eps, eps=0`` torch semantics reproduce Keras exactly.
        {keras_common}

    References:
        Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR 2011.
    """)

    _kernel = "adagrad"
    Scalars, Flags = AdagradScalars, AdagradFlags
    _supports_sparse = True
    _sparse_error = "with fused=True does not support sparse gradients"

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        semantics: str = "torch",
    ) -> None:
        check_lr(lr)
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(
                f"Invalid initial_accumulator_value value: {initial_accumulator_value}"
            )
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused,
                        semantics=semantics)
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch initialises Adagrad's state eagerly
            for p in group["params"]:
                self._ensure_state(group, p)

    def share_memory(self) -> None:
        """Calls ``tensor.share_memory_()`` on the state sum tensors (as torch)."""
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["sum"].share_memory_()

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group):
        return ("sum",)

    def _init_state(self, group, p, state) -> None:
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        iv = group.get("initial_accumulator_value", self.defaults["initial_accumulator_value"])
        init_value = complex(iv, iv) if torch.is_complex(p) else iv
        state["sum"] = torch.full_like(p, init_value, memory_format=torch.preserve_format)

    # ---------------------------------------------------------------- fused path

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        step = self._advance_step(b)
        keras = group["semantics"] == "keras"
        t = self._keras_step() if keras else step
        eps = float(group["eps"])
        ein, eout = (eps, 0.0) if keras else (0.0, eps)  # keras: eps inside the sqrt
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=keras, keras=keras)
        H = AdagradScalars(**prologue, clr=lr / (1 + (t - 1) * group["lr_decay"]), eps_in=ein, eps_out=eout)
        return H, AdagradFlags()

    def _flat_device(self, p, g, S, s, c, F) -> None:
        acc = S["sum"]
        acc.add_(g * g)
        denom = (acc + s.eps_in).sqrt() if c.eps_in != 0.0 else acc.sqrt()  # keras: eps inside the sqrt
        if c.eps_out != 0.0:
            denom = denom + s.eps_out
        p.sub_(g / denom * s.clr)

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        step = ref_step(state, False)
        keras = group["semantics"] == "keras"
        adagrad_reference(
            p, grad, state["sum"], step=self._keras_step() if keras else step,
            lr=as_float(group["lr"], group["differentiable"]), lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"], eps=group["eps"],
            maximize=group["maximize"], keras=keras,
        )


def adagrad_reference(param: Tensor, grad: Tensor, state_sum: Tensor, *, step: float, lr: Any,
                      lr_decay: float, weight_decay: float, eps: float, maximize: bool,
                      keras: bool) -> None:
    """One Adagrad step of one tensor in plain torch ops: the readable ground truth."""
    grad = grad if not maximize else -grad
    clr = lr / (1 + (step - 1) * lr_decay)
    if keras:
        if grad.is_sparse:
            grad = grad.to_dense()
        if weight_decay != 0:
            param.sub_(param * weight_decay * lr)  # Keras: variable - variable * wd * lr
        param, grad, state_sum = real_views(param, grad, state_sum)
        state_sum.add_(grad * grad)
        # Keras adagrad.py:86-91: eps inside the square root
        param.sub_(clr * grad / (state_sum + eps).sqrt())
        return

    if weight_decay != 0:
        if grad.is_sparse:
            raise RuntimeError("weight_decay option is not compatible with sparse gradients")
        grad = grad.add(param, alpha=weight_decay)
    if grad.is_sparse:
        grad = grad.coalesce()  # the update is non-linear so indices must be unique
        indices, values = grad._indices(), grad._values()
        size = grad.size()
        state_sum.add_(torch.sparse_coo_tensor(indices, values.pow(2), size))
        std = state_sum.sparse_mask(grad)
        std_values = std._values().sqrt_().add_(eps)
        param.add_(torch.sparse_coo_tensor(indices, values / std_values, size), alpha=-clr)
        return
    param, grad, state_sum = real_views(param, grad, state_sum)
    state_sum.addcmul_(grad, grad, value=1)
    std = state_sum.sqrt() + eps
    param.sub_(clr * (grad / std))
