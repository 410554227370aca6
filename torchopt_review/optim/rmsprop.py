"""RMSprop: torch.optim.RMSprop's math or Keras 3's (eps inside the sqrt, lr inside the momentum)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import (fill_doc, FlatOptimizer, _scalar, as_float, check_lr, real_views, ref_step,
                    zero_scalar_state)

__all__ = ["RMSprop"]


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
        change the two semantics differ even at equal eps.
        {keras_common}

    References:
        Hinton, "Neural Networks for Machine Learning", lecture 6e (2012).
        Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (centered).
    """)

    _kernel = "rmsprop"
    _workspace = True

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

    def _coefficients(self, group, b):
        lr = float(_scalar(group["lr"]))
        self._advance_step(b)
        keras = group["semantics"] == "keras"
        l2, dm, kwd, klr = self._decay_terms(group, lr, decoupled=keras, keras=keras)
        eps = float(group["eps"])
        if keras:  # eps inside the sqrt, lr inside the momentum buffer
            c_in, c_out, ein, eout = lr, 1.0, eps, 0.0
        else:
            c_in, c_out, ein, eout = 1.0, lr, 0.0, eps
        gs = -1.0 if group["maximize"] else 1.0
        H = [float(group["alpha"]), c_in, c_out, float(group["momentum"]), l2, dm, gs, ein, eout,
             kwd, klr]
        return H, [int(bool(group["centered"])), int(group["momentum"] > 0)]

    def _flat_torch(self, group, p, g, S, H, F, work) -> None:
        alpha, c_in, c_out, mu, l2, dm, gs, ein, eout, kwd, klr = H
        centered, use_mom = F
        self._apply_decay_torch_ops(p, dm, kwd, klr)
        if gs != 1.0:
            g.neg_()
        if l2 != 0.0:
            g.add_(p, alpha=l2)
        v = S["square_avg"]
        v.mul_(alpha).addcmul_(g, g, value=1.0 - alpha)
        if centered:
            ga = S["grad_avg"]
            ga.lerp_(g, 1.0 - alpha)
            denom = torch.addcmul(v, ga, ga, value=-1, out=work)
        else:
            denom = work.copy_(v)
        if ein != 0.0:
            denom.add_(ein)
        denom.sqrt_()
        if eout != 0.0:
            denom.add_(eout)
        if use_mom:
            buf = S["momentum_buffer"]
            buf.mul_(mu).addcdiv_(g, denom, value=c_in)
            p.add_(buf, alpha=-c_out)
        else:
            p.addcdiv_(g, denom, value=-c_in * c_out)

    def _flat_device(self, p, g, S, h, H, F) -> None:
        centered, use_mom = F
        g = self._device_prologue(p, g, h, H, l2=4, dm=5, gs=6, kwd=9, klr=10)
        alpha, c_in, c_out, mu = h[0], h[1], h[2], h[3]
        v = S["square_avg"]
        v.mul_(alpha).add_(g * g * (1 - alpha))
        denom = v
        if centered:
            ga = S["grad_avg"]
            ga.lerp_(g, 1 - alpha)
            denom = v - ga * ga
        if H[7] != 0.0:
            denom = denom + h[7]
        denom = denom.sqrt()
        if H[8] != 0.0:
            denom = denom + h[8]
        if use_mom:
            buf = S["momentum_buffer"]
            buf.mul_(mu).add_(g / denom * c_in)
            p.sub_(buf * c_out)
        else:
            p.sub_(g / denom * (c_in * c_out))

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        ref_step(state, group["capturable"])
        rmsprop_reference(
            p, grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"),
            lr=as_float(group["lr"], group["capturable"] or group["differentiable"]),
            alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
            momentum=group["momentum"], centered=group["centered"],
            maximize=group["maximize"], keras=group["semantics"] == "keras",
        )


def rmsprop_reference(param: Tensor, grad: Tensor, square_avg: Tensor, grad_avg: Tensor | None,
                      momentum_buffer: Tensor | None, *, lr: Any, alpha: float, eps: float,
                      weight_decay: float, momentum: float, centered: bool, maximize: bool,
                      keras: bool) -> None:
    """One RMSprop step of one tensor in plain torch ops: the readable ground truth."""
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
            momentum_buffer.copy_(momentum * momentum_buffer + increment)  # lr inside
            param.sub_(momentum_buffer)
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
