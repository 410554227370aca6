"""NAdam (Adam with Nesterov momentum): torch.optim.NAdam's math or Keras 3's."""

from __future__ import annotations

import math
import struct
from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import as_float, check_betas, check_lr, real_views, ref_step, scalar_value, zero_scalar_state
from ._docs import fill_doc
from .scalars import flag_fields, lerp_, prologue_values, scalar_fields

__all__ = ["NAdam"]

# The kernels' per-step inputs (csrc/kernels.c: NADAM_SCALARS, NADAM_FLAGS), after the prologue:
#   inv_bc2  1 / (1 - beta2^t);  w += (c_g * g + c_m * m) / (sqrt(v * inv_bc2) + eps) with
#   c_g = -lr (1 - mu_t) / (1 - U_t),  c_m = -lr mu_{t+1} / (1 - U_t mu_{t+1})
#   one_minus_*: 1 - beta in double (as torch);  lerp_high: 1 - beta1 >= 0.5
NAdamScalars = scalar_fields("NAdamScalars", "one_minus_beta1", "beta2", "one_minus_beta2", "inv_bc2", "eps",
                             "c_g", "c_m")
NAdamFlags = flag_fields("NAdamFlags", "lerp_high")


def _mu(beta1: float, momentum_decay: float, t: Any) -> Any:
    """The momentum schedule mu_t = beta1 (1 - 0.5 * 0.96^(psi t))."""
    return beta1 * (1.0 - 0.5 * (0.96 ** (t * momentum_decay)))


def _f32(x: float) -> float:
    """``x`` rounded to float32 (what the float32 per-param ``mu_product`` mirror holds)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def _key(beta1: float, momentum_decay: float) -> str:
    return f"{float(beta1)!r},{float(momentum_decay)!r}"


class NAdam(FlatOptimizer):
    __doc__ = fill_doc(r"""NAdam: Adam with Nesterov momentum and a warming momentum schedule.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \gamma \text{ (lr)}, \: \beta_1,\beta_2 \text{ (betas)},
                \: \theta_0 \text{ (params)}, \: f(\theta) \text{ (objective)},
                \: \lambda \text{ (weight decay)}, \:\psi \text{ (momentum decay)}, \epsilon \\
            &\textbf{initialize} :  m_0 \leftarrow 0 \text{ (exp\_avg)},
                v_0 \leftarrow 0 \text{ (exp\_avg\_sq)},
                U_0 \leftarrow 1 \text{ (mu\_product)}                                     \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm}\textbf{if} \: \lambda \neq 0: g_t \leftarrow g_t + \lambda\theta_{t-1}
                \text{ or (decoupled, keras) } \theta_{t-1} \leftarrow
                \theta_{t-1} - \gamma\lambda\theta_{t-1}                                   \\
            &\hspace{5mm} \mu_t \leftarrow \beta_1 \big(1 - \frac{1}{2} 0.96^{t \psi} \big), \;
                \mu_{t+1} \leftarrow \beta_1 \big(1 - \frac{1}{2} 0.96^{(t+1)\psi}\big),
                \; U_t \leftarrow U_{t-1} \mu_t                                             \\
            &\hspace{5mm}m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1) g_t                 \\
            &\hspace{5mm}v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g^2_t                 \\
            &\hspace{5mm}\theta_t \leftarrow \theta_{t-1} - \gamma
                \Big(\frac{\mu_{t+1} m_t}{1 - U_t \mu_{t+1}} + \frac{(1-\mu_t) g_t}{1 - U_t}\Big)
                \Big/ \Big(\sqrt{v_t / (1 - \beta_2^t)} + \epsilon\Big)                     \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 2e-3)
        betas (tuple[float, float], optional): coefficients for the running averages of the
            gradient and its square. (default: (0.9, 0.999))
        eps (float, optional): term added to the denominator. (default: 1e-8)
        weight_decay (float, optional): weight decay. (default: 0)
        momentum_decay (float, optional): :math:`\psi`; ``None`` means torch's 0.004 under
            torch semantics and 1 (Keras 3's :math:`0.96^t`) under keras semantics.
            (default: None)
        decoupled_weight_decay (bool, optional): NAdamW-style decay under torch semantics
            (always on under keras semantics). (default: False)
        {flags}
        {capturable}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.NAdam`` (no fused kernel there; per-param
        ``mu_product``).  ``semantics="keras"`` is Keras 3's ``keras/src/optimizers/nadam.py``:
        the schedule is :math:`0.96^t` (lines 119-120; :math:`\psi = 1`, while torch's
        default :math:`\psi = 0.004` is tf.keras <= 2.10's), and :math:`U_t` is *one global*
        product updated once per step (lines 93 and 95-105), not per parameter: one running
        product per param group, multiplied each step by :math:`\mu_t` of the group's current
        :math:`\beta_1` (a scheduler may change it), kept in
        ``state_dict()["global_state"]["u_product"]`` (per-param ``mu_product`` mirrors it).
        The update itself (lines 123-146) is the formula above, with the global step.
        {keras_common}

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    """)

    _kernel = "nadam"
    Scalars, Flags = NAdamScalars, NAdamFlags
    _scalar_keys = ("step", "mu_product")

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float | None = None,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        semantics: str = "torch",
    ) -> None:
        if momentum_decay is None:
            momentum_decay = 1.0 if semantics == "keras" else 0.004
        check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check_betas(betas)
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= momentum_decay:
            raise ValueError(f"Invalid momentum_decay value: {momentum_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable,
                        fused=fused, semantics=semantics)
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- global (Keras) product

    def _u_products(self) -> list[float | None]:
        """Keras's product U_t: one running product per param group (``None`` for torch-semantics
        groups and before a group's first step), in ``global_state["u_product"]``."""
        products = self._global_state.get("u_product")
        if not isinstance(products, list):  # none yet, or this library's older {"beta1,psi": U} form
            old = products or {}
            products = [old.get(_key(float(g["betas"][0]), float(g["momentum_decay"])))
                        for g in self.param_groups]
            self._global_state["u_product"] = products
        products.extend([None] * (len(self.param_groups) - len(products)))
        return products

    def _begin_step(self) -> None:
        """Advance each keras group's U_t once per step by the current factor
        u_t = beta1 (1 - 0.5 * 0.96^(psi t)), with the group's beta1 *now* (Keras's
        ``u_product_t = self._u_product * u_t``; a scheduler may change beta1)."""
        t = self._keras_step()
        products = self._u_products()
        for i, group in enumerate(self.param_groups):
            if group["semantics"] != "keras":
                continue
            beta1, psi = float(group["betas"][0]), float(group["momentum_decay"])
            if products[i] is None:  # first step (or a state from torch.optim): the schedule's product
                products[i] = math.prod(_mu(beta1, psi, k) for k in range(1, t + 1))
            else:
                products[i] = products[i] * _mu(beta1, psi, t)

    def _global_u(self, group: dict[str, Any]) -> float:
        products = self._u_products()
        for i, g in enumerate(self.param_groups):
            if g is group:
                return products[i]
        raise KeyError("not a param group of this optimizer")

    def _derive_global_state(self) -> dict[str, Any]:
        glob = super()._derive_global_state()
        glob["u_product"] = []  # recomputed from the schedule on the next step
        return glob

    def _check_semantics_move(self, group, states, global_step, src, dst) -> None:
        # exp_avg and exp_avg_sq mean the same in both; the momentum product does not: torch keeps
        # one per param (over that param's steps), Keras one per optimizer (over its steps). They
        # agree when every param took every step; the product is then recomputed from the schedule.
        steps = sorted({float(st["step"]) for st in states if "step" in st})
        if steps and steps != [float(global_step)]:
            raise ValueError(
                f"NAdam: this state_dict was saved with semantics={src!r} and its params took different "
                f"numbers of steps ({', '.join(f'{s:g}' for s in steps)} of {global_step}); Keras's one "
                "momentum product and torch's per-parameter products cannot both describe it -- load it "
                f"into NAdam(semantics={src!r})")

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group):
        return ("exp_avg", "exp_avg_sq")

    def _init_state(self, group, p, state) -> None:
        state["step"] = zero_scalar_state(p, group["capturable"])
        state["mu_product"] = zero_scalar_state(p, group["capturable"], 1.0)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _phase(self, group, state):
        if group["semantics"] == "keras":
            return float(state["step"])
        return float(state["step"]), float(state["mu_product"])

    # ---------------------------------------------------------------- fused path

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        beta1, beta2 = (float(x) for x in group["betas"])
        psi = float(group["momentum_decay"])
        step = self._advance_step(b)
        keras = group["semantics"] == "keras"
        mu_buf = b.scalars["mu_product"]
        if keras:
            t = self._keras_step()
            u_product = self._global_u(group)
            mu_buf.fill_(_f32(u_product))  # the per-param mirror of the global product
        else:
            t = step
            mu_buf.mul_(_mu(beta1, psi, t))  # float32, exactly as torch's per-param product
            u_product = float(mu_buf[0])
        mu, mu_next = _mu(beta1, psi, t), _mu(beta1, psi, t + 1)
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=group["decoupled_weight_decay"], keras=keras)
        H = NAdamScalars(**prologue, one_minus_beta1=1.0 - beta1, beta2=beta2, one_minus_beta2=1.0 - beta2,
                         inv_bc2=1.0 / (1.0 - beta2 ** t), eps=float(group["eps"]),
                         c_g=-lr * (1.0 - mu) / (1.0 - u_product),
                         c_m=(-lr * mu_next) / (1.0 - u_product * mu_next))
        return H, NAdamFlags(lerp_high=int(1.0 - beta1 >= 0.5))

    def _flat_device(self, p, g, S, s, c, F) -> None:
        m, v = S["exp_avg"], S["exp_avg_sq"]
        lerp_(m, g, s.one_minus_beta1)
        v.mul_(s.beta2).add_(g * g * s.one_minus_beta2)
        p.add_((g * s.c_g + m * s.c_m) / ((v * s.inv_bc2).sqrt() + s.eps))

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        capturable = group["capturable"]
        step = ref_step(state, capturable)
        keras = group["semantics"] == "keras"
        global_u = None
        if keras:
            global_u = self._global_u(group)
            state["mu_product"].fill_(_f32(global_u))  # the per-param mirror
        nadam_reference(
            p, grad, state["exp_avg"], state["exp_avg_sq"], state["mu_product"],
            step=self._keras_step() if keras else step,
            lr=as_float(group["lr"], capturable or group["differentiable"]),
            beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
            weight_decay=group["weight_decay"], momentum_decay=group["momentum_decay"],
            maximize=group["maximize"], decoupled=keras or group["decoupled_weight_decay"],
            keras=keras, global_u_product=global_u,
        )


def nadam_reference(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
                    mu_product: Tensor, *, step: Any, lr: Any, beta1: float, beta2: float,
                    eps: float, weight_decay: float, momentum_decay: float, maximize: bool,
                    decoupled: bool, keras: bool, global_u_product: float | None = None) -> None:
    """One NAdam step of one tensor in plain torch ops: the readable ground truth.

    Under torch semantics ``mu_product`` is this param's product, advanced here; under keras
    semantics ``global_u_product`` is the global product :math:`U_t` (a double) and ``step``
    the global step.
    """
    grad = grad if not maximize else -grad
    if weight_decay != 0:
        if keras:
            param.sub_(param * weight_decay * lr)  # Keras: variable - variable * wd * lr
        elif decoupled:
            param.mul_(1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    param, grad, exp_avg, exp_avg_sq = real_views(param, grad, exp_avg, exp_avg_sq)

    mu = beta1 * (1.0 - 0.5 * (0.96 ** (step * momentum_decay)))
    mu_next = beta1 * (1.0 - 0.5 * (0.96 ** ((step + 1) * momentum_decay)))
    if keras:
        u_product = global_u_product
    else:
        mu_product *= mu
        u_product = mu_product if isinstance(step, Tensor) else float(mu_product)

    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction2 = 1 - beta2 ** step
    if keras:
        # nadam.py:135-146: m_hat from u_{t+1} and the global product, v_hat = v / (1 - b2^t)
        m_hat = (mu_next * exp_avg / (1 - u_product * mu_next)
                 + (1 - mu) * grad / (1 - u_product))
        v_hat = exp_avg_sq / bias_correction2
        param.sub_(m_hat * lr / (v_hat.sqrt() + eps))
        return
    denom = (exp_avg_sq / bias_correction2).sqrt() + eps
    param.add_(grad / denom * (-lr * (1.0 - mu) / (1.0 - u_product)))
    param.add_(exp_avg / denom * ((-lr * mu_next) / (1.0 - u_product * mu_next)))
