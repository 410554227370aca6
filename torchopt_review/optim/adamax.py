"""Adamax (Adam with the infinity norm): torch.optim.Adamax's math or Keras 3's."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import as_float, check_betas, check_lr, real_views, ref_step, scalar_value, zero_scalar_state
from ._docs import fill_doc
from .scalars import flag_fields, lerp_, prologue_values, scalar_fields

__all__ = ["Adamax"]

# The kernels' per-step inputs (csrc/kernels.c: ADAMAX_SCALARS), after the prologue:
#   clr  lr / (1 - beta1^t);  u = max(beta2*u, |g| + eps_in);  w -= clr * m / (u + eps_out)
#   (torch: eps_in = eps, eps_out = 0; keras: eps_in = 0, eps_out = eps)
#   one_minus_beta1: in double (as torch);  lerp_high: 1 - beta1 >= 0.5
AdamaxScalars = scalar_fields("AdamaxScalars", "one_minus_beta1", "beta2", "clr", "eps_in", "eps_out")
AdamaxFlags = flag_fields("AdamaxFlags", "lerp_high")


class Adamax(FlatOptimizer):
    __doc__ = fill_doc(r"""Adamax: Adam with the infinity norm of past gradients in the denominator.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \gamma \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)},
                \theta_0 \text{ (params)}, f(\theta) \text{ (objective)},
                \: \lambda \text{ (weight decay)}, \: \epsilon                              \\
            &\textbf{initialize} :  m_0 \leftarrow 0 \text{ (exp\_avg)},
                u_0 \leftarrow 0 \text{ (exp\_inf)}                                         \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm}\textbf{if} \: \lambda \neq 0: g_t \leftarrow g_t + \lambda\theta_{t-1}
                \text{ (torch) or } \theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\theta_{t-1}
                \text{ (keras)}                                                             \\
            &\hspace{5mm}m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t                 \\
            &\hspace{5mm}\textbf{torch:}\: u_t \leftarrow \max(\beta_2 u_{t-1}, |g_t| + \epsilon),
                \; \theta_t \leftarrow \theta_{t-1} - \frac{\gamma m_t}{(1-\beta_1^t) u_t}  \\
            &\hspace{5mm}\textbf{keras:}\: u_t \leftarrow \max(\beta_2 u_{t-1}, |g_t|),
                \; \theta_t \leftarrow \theta_{t-1} - \frac{\gamma m_t}{(1-\beta_1^t)(u_t + \epsilon)}
                                                                                            \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 2e-3)
        betas (tuple[float, float], optional): coefficients for the running average of the
            gradient and the decay of the infinity norm. (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator. (default: 1e-8)
        weight_decay (float, optional): weight decay. (default: 0)
        {flags}
        {capturable}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.Adamax`` (which has no fused kernel).
        ``semantics="keras"`` is Keras 3's ``keras/src/optimizers/adamax.py``
        (``update_step``, lines 105-129): ``u = max(beta_2 * u, |g|)`` without eps
        (lines 120-122) and eps added to ``u`` in the denominator together with the bias
        correction, ``w -= lr * m / ((1 - beta_1^t) (u + eps))`` (lines 123-129).  The
        two differ by ~1e-9 relative in practice, and ``state["exp_inf"]`` holds ``u``
        with (torch) or without (keras) eps folded in -- so with ``eps != 0`` a state_dict does
        not load into this class under the other semantics (``ValueError``).
        {keras_common}

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
    """)

    _kernel = "adamax"
    Scalars, Flags = AdamaxScalars, AdamaxFlags

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        fused: bool | None = None,
        semantics: str = "torch",
    ) -> None:
        check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        capturable=capturable, fused=fused, semantics=semantics)
        super().__init__(params, defaults)

    def _check_semantics_move(self, group, states, global_step, src, dst) -> None:
        if group["eps"] != 0 and any("exp_inf" in st for st in states):
            raise ValueError(
                f"Adamax: this state_dict was saved with semantics={src!r}; its exp_inf holds "
                "max(beta2*u, |g| + eps) under torch and max(beta2*u, |g|) under keras, and one cannot "
                f"be turned into the other -- load it into Adamax(semantics={src!r})")

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group):
        return ("exp_avg", "exp_inf")

    def _init_state(self, group, p, state) -> None:
        state["step"] = zero_scalar_state(p, group["capturable"])
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_inf"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ---------------------------------------------------------------- fused path

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        beta1, beta2 = (float(x) for x in group["betas"])
        step = self._advance_step(b)
        keras = group["semantics"] == "keras"
        t = self._keras_step() if keras else step
        eps = float(group["eps"])
        ein, eout = (0.0, eps) if keras else (eps, 0.0)  # keras: eps outside the max
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=keras, keras=keras)
        H = AdamaxScalars(**prologue, one_minus_beta1=1.0 - beta1, beta2=beta2, clr=lr / (1.0 - beta1 ** t),
                          eps_in=ein, eps_out=eout)
        return H, AdamaxFlags(lerp_high=int(1.0 - beta1 >= 0.5))

    def _flat_device(self, p, g, S, s, c, F) -> None:
        m, u = S["exp_avg"], S["exp_inf"]
        lerp_(m, g, s.one_minus_beta1)
        a = g.abs() + s.eps_in if c.eps_in != 0.0 else g.abs()  # torch: eps inside the max
        u.copy_(torch.maximum(u * s.beta2, a))
        denom = u + s.eps_out if c.eps_out != 0.0 else u  # keras: eps outside
        p.sub_(m / denom * s.clr)

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        step = ref_step(state, group["capturable"])
        keras = group["semantics"] == "keras"
        adamax_reference(
            p, grad, state["exp_avg"], state["exp_inf"],
            step=self._keras_step() if keras else step,
            lr=as_float(group["lr"], group["capturable"] or group["differentiable"]),
            beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
            weight_decay=group["weight_decay"], maximize=group["maximize"], keras=keras,
        )


def adamax_reference(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_inf: Tensor, *,
                     step: Any, lr: Any, beta1: float, beta2: float, eps: float,
                     weight_decay: float, maximize: bool, keras: bool) -> None:
    """One Adamax step of one tensor in plain torch ops: the readable ground truth."""
    grad = grad if not maximize else -grad
    if weight_decay != 0:
        if keras:
            param.sub_(param * weight_decay * lr)  # Keras: variable - variable * wd * lr
        else:
            grad = grad.add(param, alpha=weight_decay)
    param, grad, exp_avg, exp_inf = real_views(param, grad, exp_avg, exp_inf)

    exp_avg.lerp_(grad, 1 - beta1)
    bias_correction = 1 - beta1 ** step
    if keras:
        exp_inf.copy_(torch.maximum(exp_inf * beta2, grad.abs()))  # adamax.py:120-122
        param.sub_(lr * exp_avg / (bias_correction * (exp_inf + eps)))  # adamax.py:123-129
    else:
        exp_inf.copy_(torch.maximum(exp_inf * beta2, grad.abs() + eps))
        param.sub_(exp_avg / exp_inf * (lr / bias_correction))
