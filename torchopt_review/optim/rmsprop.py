"""RMSprop: torch.optim.RMSprop's math or Keras 3's (eps inside the sqrt, lr inside the momentum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import as_float, check_lr, real_views, ref_step, scalar_value, zero_scalar_state
from ._docs import fill_doc
from .scalars import flag_fields, lerp_, prologue_values, scalar_fields

__all__ = ["RMSprop"]

# The kernels' per-step inputs (csrc/kernels.c: RMSPROP_SCALARS, RMSPROP_FLAGS), after the
# prologue: inc = c_in * g / (sqrt(D + eps_in) + eps_out); buf = momentum * buf + inc;
# w -= c_out * (buf or inc). torch: c_in = 1, c_out = lr, eps outside. keras: eps inside; without
# momentum c_in = lr, c_out = 1; with momentum Keras's buffer (lr inside) is kept in torch's units
# (divided by s, the lr of the last step): c_in = lr/s, c_out = s, momentum * s_old/s.
# one_minus_alpha: 1 - alpha in double (as torch);  lerp_high: 1 - alpha >= 0.5 (centered average)
RMSpropScalars = scalar_fields("RMSpropScalars", "alpha", "one_minus_alpha", "c_in", "c_out", "momentum",
                               "eps_in", "eps_out")
RMSpropFlags = flag_fields("RMSpropFlags", "centered", "use_momentum", "lerp_high")


class RMSprop(FlatOptimizer):
    __doc__ = fill_doc(r"""RMSprop: steps scaled by the root of a moving average of squared gradients.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \alpha \text{ (alpha / rho)}, \: \gamma \text{ (lr)},
                \: \theta_0 \text{ (params)}, \: f(\theta) \text{ (objective)},
                \lambda \text{ (weight decay)}, \: \mu \text{ (momentum)}, \: \epsilon      \\
            &\textbf{initialize} : v_0 \leftarrow 0 \text{ (square\_avg)}, \:
                \textbf{b}_0 \leftarrow 0 \text{ (momentum\_buffer)}, \:
                g^{ave}_0 \leftarrow 0 \text{ (grad\_avg)}                                 \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm}\textbf{if} \: \lambda \neq 0: g_t \leftarrow g_t + \lambda\theta_{t-1}
                \text{ (torch) or } \theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\theta_{t-1}
                \text{ (keras)}                                                             \\
            &\hspace{5mm}v_t \leftarrow \alpha v_{t-1} + (1 - \alpha) g^2_t                 \\
            &\hspace{5mm}D_t \leftarrow v_t - (g^{ave}_t)^2 \text{ with }
                g^{ave}_t \leftarrow \alpha g^{ave}_{t-1} + (1-\alpha) g_t
                \text{ if centered, else } v_t                                              \\
            &\hspace{5mm}\textbf{torch:}\: \textbf{b}_t \leftarrow \mu \textbf{b}_{t-1} +
                g_t / (\sqrt{D_t} + \epsilon), \;
                \theta_t \leftarrow \theta_{t-1} - \gamma \textbf{b}_t
                \quad (\mu = 0: \theta_t \leftarrow \theta_{t-1} - \gamma g_t/(\sqrt{D_t}+\epsilon))
                                                                                            \\
            &\hspace{5mm}\textbf{keras:}\: \textbf{b}_t \leftarrow \mu \textbf{b}_{t-1} +
                \gamma g_t / \sqrt{D_t + \epsilon}, \;
                \theta_t \leftarrow \theta_{t-1} - \textbf{b}_t
                \quad (\mu = 0: \theta_t \leftarrow \theta_{t-1} - \gamma g_t/\sqrt{D_t+\epsilon})
                                                                                            \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 1e-2)
        alpha (float, optional): smoothing constant, Keras's ``rho`` (Keras default 0.9).
            (default: 0.99)
        eps (float, optional): term added to the denominator (Keras default 1e-7).
            (default: 1e-8)
        weight_decay (float, optional): weight decay. (default: 0)
        momentum (float, optional): momentum factor. (default: 0)
        centered (bool, optional): normalize by an estimate of the gradient's variance.
            (default: False)
        {capturable}
        {flags}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.RMSprop`` (which has no fused kernel; the
        ``fused`` argument is this library's).  ``semantics="keras"`` is Keras 3's
        ``keras/src/optimizers/rmsprop.py`` (``update_step``, lines 109-154): ``eps``
        inside the square root (lines 141-143, for the centered form too:
        ``D = v - gbar^2 + eps``), and with momentum the buffer holds
        ``lr * g / sqrt(D)`` -- the lr is inside the buffer (lines 144-152), so after an lr
        change the two semantics differ even at equal eps.  ``state["momentum_buffer"]`` is kept
        in torch's units in both semantics (Keras's buffer divided by the lr of the last step,
        ``state_dict()["global_state"]["momentum_lr"]``), so it loads into ``torch.optim.RMSprop``;
        its past increments carry their semantics' eps placement, so with ``eps != 0`` it does
        not load into this class under the other semantics (``ValueError``).
        {keras_common}

    References:
        Hinton, "Neural Networks for Machine Learning", lecture 6e (2012).
        Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (centered).
    """)

    _kernel = "rmsprop"
    Scalars, Flags = RMSpropScalars, RMSpropFlags

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        fused: bool | None = None,
        semantics: str = "torch",
    ) -> None:
        check_lr(lr)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused,
                        semantics=semantics)
        super().__init__(params, defaults)

    def _check_semantics_move(self, group, states, global_step, src, dst) -> None:
        # square_avg and grad_avg do not depend on the semantics; the momentum buffer holds the
        # past increments g/(sqrt(D)+eps) (torch) or g/sqrt(D+eps) (keras): equal only at eps 0
        if group["momentum"] > 0 and group["eps"] != 0 and any("momentum_buffer" in st for st in states):
            raise ValueError(
                f"RMSprop: this state_dict was saved with semantics={src!r}; its momentum buffers "
                f"hold increments with the other placement of eps and cannot continue exactly under "
                f"semantics={dst!r} -- load it into RMSprop(semantics={src!r})")

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group):
        keys = ["square_avg"]
        if group["centered"]:
            keys.append("grad_avg")
        if group["momentum"] > 0:
            keys.append("momentum_buffer")
        return tuple(keys)

    def _c_slots(self, group):
        return ("square_avg", "grad_avg" if group["centered"] else None,
                "momentum_buffer" if group["momentum"] > 0 else None)

    def _init_state(self, group, p, state) -> None:
        state["step"] = zero_scalar_state(p, group["capturable"])
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ---------------------------------------------------------------- fused path

    def _begin_step(self) -> None:
        self._advance_velocity_scales()

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        self._advance_step(b)
        keras = group["semantics"] == "keras"
        eps = float(group["eps"])
        momentum = float(group["momentum"])
        if keras and momentum > 0:  # eps inside the sqrt; Keras's buffer (lr inside) in torch's units
            carry, scale = self._velocity[id(group)]
            c_in, c_out, ein, eout, momentum = lr / scale, scale, eps, 0.0, momentum * carry
        elif keras:  # eps inside the sqrt
            c_in, c_out, ein, eout = lr, 1.0, eps, 0.0
        else:
            c_in, c_out, ein, eout = 1.0, lr, 0.0, eps
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=keras, keras=keras)
        alpha = float(group["alpha"])
        H = RMSpropScalars(**prologue, alpha=alpha, one_minus_alpha=1.0 - alpha, c_in=c_in, c_out=c_out,
                           momentum=momentum, eps_in=ein, eps_out=eout)
        return H, RMSpropFlags(centered=int(bool(group["centered"])), use_momentum=int(group["momentum"] > 0),
                               lerp_high=int(1.0 - alpha >= 0.5))

    def _flat_device(self, p, g, S, s, c, F) -> None:
        v = S["square_avg"]
        v.mul_(s.alpha).add_(g * g * s.one_minus_alpha)
        denom = v
        if F.centered:
            ga = S["grad_avg"]
            lerp_(ga, g, s.one_minus_alpha)
            denom = v - ga * ga
        if c.eps_in != 0.0:
            denom = denom + s.eps_in
        denom = denom.sqrt()
        if c.eps_out != 0.0:
            denom = denom + s.eps_out
        if F.use_momentum:
            buf = S["momentum_buffer"]
            buf.mul_(s.momentum).add_(g / denom * s.c_in)
            p.sub_(buf * s.c_out)
        else:
            p.sub_(g / denom * (s.c_in * s.c_out))

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        ref_step(state, group["capturable"])
        keras = group["semantics"] == "keras"
        rmsprop_reference(
            p, grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"),
            lr=as_float(group["lr"], group["capturable"] or group["differentiable"]),
            alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
            momentum=group["momentum"], centered=group["centered"],
            maximize=group["maximize"], keras=keras,
            velocity_scale=self._velocity.get(id(group), (1.0, 1.0)) if keras else (1.0, 1.0),
        )


def rmsprop_reference(param: Tensor, grad: Tensor, square_avg: Tensor, grad_avg: Tensor | None,
                      momentum_buffer: Tensor | None, *, lr: Any, alpha: float, eps: float,
                      weight_decay: float, momentum: float, centered: bool, maximize: bool,
                      keras: bool, velocity_scale: tuple[float, float] = (1.0, 1.0)) -> None:
    """One RMSprop step of one tensor in plain torch ops: the readable ground truth.

    Under keras semantics ``momentum_buffer`` holds Keras's momentum (lr inside) divided by ``s``,
    torch's units; ``velocity_scale = (s_old / s_new, s_new)``
    (see ``FlatOptimizer._advance_velocity_scales``).
    """
    grad = grad if not maximize else -grad
    if weight_decay != 0:
        if keras:
            param.sub_(param * weight_decay * lr)  # Keras: variable - variable * wd * lr
        else:
            grad = grad.add(param, alpha=weight_decay)
    param, grad, square_avg, grad_avg, momentum_buffer = real_views(
        param, grad, square_avg, grad_avg, momentum_buffer)

    if keras:
        rho = alpha
        square_avg.copy_(rho * square_avg + (1 - rho) * grad.square())  # rmsprop.py:126-132
        if centered:
            grad_avg.copy_(rho * grad_avg + (1 - rho) * grad)
            denominator = square_avg - grad_avg.square() + eps  # rmsprop.py:141
        else:
            denominator = square_avg + eps  # rmsprop.py:143
        increment = lr * grad / denominator.sqrt()
        if momentum > 0:
            carry, scale = velocity_scale
            keras_momentum = (carry * scale) * momentum_buffer  # rmsprop.py:144-152: lr inside
            keras_momentum = momentum * keras_momentum + increment
            param.sub_(keras_momentum)
            momentum_buffer.copy_(keras_momentum / scale)
        else:
            param.sub_(increment)
        return

    square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
    if centered:
        grad_avg.lerp_(grad, 1 - alpha)
        avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt() + eps
    else:
        avg = square_avg.sqrt() + eps
    if momentum > 0:
        momentum_buffer.mul_(momentum).addcdiv_(grad, avg)
        param.sub_(momentum_buffer * lr)
    else:
        param.sub_(grad / avg * lr)
