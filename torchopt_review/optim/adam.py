"""Adam (and AMSGrad, AdamW-style decoupled decay): torch.optim.Adam's math or Keras 3's."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import as_float, check_betas, check_lr, real_views, ref_step, scalar_value, zero_scalar_state
from ._docs import fill_doc
from .scalars import flag_fields, lerp_, prologue_values, scalar_fields

__all__ = ["Adam"]

# The kernels' per-step inputs (csrc/kernels.c: ADAM_SCALARS, ADAM_FLAGS), after the prologue:
#   one_minus_*  1 - beta, computed in double as torch does (not 1 - (float)beta in the kernel)
#   step_size    lr / (1 - beta1^t) (torch); lr * sqrt(1 - beta2^t) / (1 - beta1^t) (keras)
#   inv_bc2_sqrt 1 / sqrt(1 - beta2^t) (torch); 1 (keras: epsilon-hat, correction in step_size)
#   lerp_high    1 - beta1 >= 0.5: torch.lerp's other rounding form
AdamScalars = scalar_fields("AdamScalars", "one_minus_beta1", "beta2", "one_minus_beta2", "step_size",
                            "inv_bc2_sqrt", "eps")
AdamFlags = flag_fields("AdamFlags", "amsgrad", "lerp_high")


class Adam(FlatOptimizer):
    __doc__ = fill_doc(r"""Adam, with optional AMSGrad and decoupled weight decay.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \gamma \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)},
                \theta_0 \text{ (params)}, f(\theta) \text{ (objective)},
                \lambda \text{ (weight decay)}, \epsilon, \: \textit{amsgrad}              \\
            &\textbf{initialize} : m_0 \leftarrow 0 \text{ (exp\_avg)},
                v_0 \leftarrow 0 \text{ (exp\_avg\_sq)},
                \widehat{v_0}^{max} \leftarrow 0 \text{ (max\_exp\_avg\_sq)}              \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm}\textbf{if} \: \lambda \neq 0: \theta_{t-1} \leftarrow
                \theta_{t-1} - \gamma\lambda\theta_{t-1} \text{ (decoupled, keras) or }
                g_t \leftarrow g_t + \lambda\theta_{t-1}                                   \\
            &\hspace{5mm}m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t                 \\
            &\hspace{5mm}v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g^2_t                 \\
            &\hspace{5mm}\hat{v}_t \leftarrow \max(\hat{v}_{t-1}, v_t)
                \text{ if amsgrad else } v_t                                                \\
            &\hspace{5mm}\textbf{torch:}\: \theta_t \leftarrow \theta_{t-1} -
                \frac{\gamma}{1-\beta_1^t} \, m_t \Big/
                \Big(\sqrt{\hat{v}_t / (1-\beta_2^t)} + \epsilon\Big)                      \\
            &\hspace{5mm}\textbf{keras:}\: \alpha_t \leftarrow
                \gamma \sqrt{1-\beta_2^t} / (1-\beta_1^t), \;
                \theta_t \leftarrow \theta_{t-1} - \alpha_t m_t / (\sqrt{\hat{v}_t} + \epsilon)
                                                                                            \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 1e-3)
        betas (tuple[float, float], optional): coefficients for the running averages of the
            gradient and its square. (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator. (default: 1e-8)
        weight_decay (float, optional): weight decay. (default: 0)
        amsgrad (bool, optional): use the AMSGrad variant. (default: False)
        {flags}
        {capturable}
        {fused}
        decoupled_weight_decay (bool, optional): AdamW-style decay under torch semantics
            (always on under keras semantics). (default: False)
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.Adam``.  ``semantics="keras"`` is Keras 3's
        ``keras/src/optimizers/adam.py`` (``update_step``, lines 102-137): "epsilon-hat" --
        :math:`\epsilon` is added to the *uncorrected* :math:`\sqrt{v_t}` and the bias
        correction of :math:`v` is folded into :math:`\alpha_t` (line 117); this equals
        torch with :math:`\epsilon_t = \epsilon/\sqrt{1-\beta_2^t}`.  AMSGrad keeps
        :math:`\hat v = \max(\hat v, v)` (lines 128-131).  Keras has no ``maximize``; here
        it negates the gradient in both semantics.
        {keras_common}

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
        Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """)

    _kernel = "adam"
    Scalars, Flags = AdamScalars, AdamFlags
    _sparse_error = "does not support sparse gradients, please consider SparseAdam instead"

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        semantics: str = "torch",
    ) -> None:
        if isinstance(lr, Tensor):
            if foreach and not capturable:
                raise ValueError(
                    "lr as a Tensor is not supported for capturable=False and foreach=True"
                )
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not ((isinstance(betas[0], float) and isinstance(betas[1], float))
                or (isinstance(betas[0], Tensor) and isinstance(betas[1], Tensor))):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            if isinstance(betas[i], Tensor):
                if not capturable and foreach:
                    raise ValueError(
                        f"betas[{i}] as a Tensor is not supported for capturable=False "
                        "and foreach=True"
                    )
                if betas[i].numel() != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        betas = tuple(b.clone() if isinstance(b, Tensor) else b for b in betas)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay, semantics=semantics)
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group):
        return (("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if group["amsgrad"]
                else ("exp_avg", "exp_avg_sq"))

    def _init_state(self, group, p, state) -> None:
        state["step"] = zero_scalar_state(p, group["capturable"])
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ---------------------------------------------------------------- fused path

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        beta1, beta2 = (float(scalar_value(x)) for x in group["betas"])
        step = self._advance_step(b)
        keras = group["semantics"] == "keras"
        t = self._keras_step() if keras else step
        bc1 = 1.0 - beta1 ** t
        bc2 = 1.0 - beta2 ** t
        if keras:  # epsilon-hat: eps on the uncorrected sqrt(v), correction in alpha
            step_size, bc2_sqrt = lr * math.sqrt(bc2) / bc1, 1.0
        else:
            step_size, bc2_sqrt = lr / bc1, bc2 ** 0.5
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=group["decoupled_weight_decay"], keras=keras)
        H = AdamScalars(**prologue, one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
                        step_size=step_size, inv_bc2_sqrt=1.0 / bc2_sqrt, eps=float(group["eps"]))
        return H, AdamFlags(amsgrad=int(bool(group["amsgrad"])), lerp_high=int(1.0 - beta1 >= 0.5))

    def _flat_device(self, p, g, S, s, c, F) -> None:
        m, v = S["exp_avg"], S["exp_avg_sq"]
        lerp_(m, g, s.one_minus_beta1)
        v.mul_(s.beta2).add_(g * g * s.one_minus_beta2)
        if F.amsgrad:
            vmax = S["max_exp_avg_sq"]
            vmax.copy_(torch.maximum(vmax, v))
            v = vmax
        p.sub_(m / (v.sqrt() * s.inv_bc2_sqrt + s.eps) * s.step_size)

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        keep = group["capturable"] or group["differentiable"]
        step = ref_step(state, group["capturable"])
        keras = group["semantics"] == "keras"
        adam_reference(
            p, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
            step=self._keras_step() if keras else step,
            lr=as_float(group["lr"], keep), beta1=as_float(group["betas"][0], keep),
            beta2=as_float(group["betas"][1], keep), eps=group["eps"],
            weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
            maximize=group["maximize"],
            decoupled=keras or group["decoupled_weight_decay"], keras=keras,
        )


def adam_reference(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                   max_exp_avg_sq: Tensor | None, *, step: Any, lr: Any, beta1: Any, beta2: Any,
                   eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
                   decoupled: bool, keras: bool) -> None:
    """One Adam step of one tensor in plain torch ops: the readable ground truth.

    ``step`` is the count used for bias corrections (a tensor when capturable).
    """
    grad = grad if not maximize else -grad
    if weight_decay != 0:
        if keras:
            param.sub_(param * weight_decay * lr)  # Keras: variable - variable * wd * lr
        elif decoupled:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq = real_views(
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)

    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    v = exp_avg_sq
    if amsgrad:
        max_exp_avg_sq.copy_(torch.maximum(max_exp_avg_sq, exp_avg_sq))
        v = max_exp_avg_sq

    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    if keras:
        # Keras adam.py:117 -- alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t), and
        # adam.py:132-137 -- eps is added to the uncorrected sqrt(v) ("epsilon-hat").
        alpha = lr * bias_correction2 ** 0.5 / bias_correction1
        param.sub_(exp_avg * alpha / (v.sqrt() + eps))
    else:
        denom = v.sqrt() / bias_correction2 ** 0.5 + eps
        param.sub_(exp_avg / denom * (lr / bias_correction1))
