"""SGD with optional (Nesterov) momentum: torch.optim.SGD's math or Keras 3's velocity form."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._base import FlatOptimizer
from ._common import check_lr, scalar_value
from ._docs import fill_doc
from .scalars import flag_fields, prologue_values, scalar_fields

__all__ = ["SGD"]

# The kernels' per-step inputs (csrc/kernels.c: SGD_SCALARS, SGD_FLAGS), after the prologue.
# Both semantics run torch's update on torch's buffer b:
#   b <- first ? grad_scale*g : momentum*b + buffer_grad_scale*g
#   w <- w - lr * (nesterov ? grad_scale*g + nesterov_momentum*b : b)
# torch: lr, momentum, 1 - dampening, momentum, 1. keras (velocity v = -s*b, s the group's lr of
# the last step, see FlatOptimizer._advance_velocity_scales): s, momentum * s_old/s, lr/s,
# momentum, lr/s -- at a constant lr exactly torch's coefficients.
# ``first``: the momentum buffer does not exist yet (torch creates it from the gradient).
SGDScalars = scalar_fields("SGDScalars", "lr", "momentum", "buffer_grad_scale", "nesterov_momentum", "grad_scale")
SGDFlags = flag_fields("SGDFlags", "use_momentum", "nesterov", "first")


class SGD(FlatOptimizer):
    __doc__ = fill_doc(r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::
       \begin{aligned}
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{input}      : \gamma \text{ (lr)}, \: \theta_0 \text{ (params)},
                \: f(\theta) \text{ (objective)}, \: \lambda \text{ (weight decay)},        \\
            &\hspace{13mm} \:\mu \text{ (momentum)}, \:\tau \text{ (dampening)},
                \:\textit{nesterov,}\:\textit{maximize}                                    \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\
            &\textbf{for} \: t=1 \: \textbf{to} \: \ldots \: \textbf{do}                    \\
            &\hspace{5mm}g_t \leftarrow \pm\nabla_{\theta} f_t (\theta_{t-1})
                \quad (- \text{ if maximize})                                               \\
            &\hspace{5mm}\textbf{torch semantics:}                                          \\
            &\hspace{10mm}g_t \leftarrow g_t + \lambda \theta_{t-1}                         \\
            &\hspace{10mm}b_t \leftarrow g_t \text{ if } t = 1
                \text{ else } \mu b_{t-1} + (1-\tau) g_t                                   \\
            &\hspace{10mm}g_t \leftarrow g_t + \mu b_t \text{ if nesterov else } b_t        \\
            &\hspace{10mm}\theta_t \leftarrow \theta_{t-1} - \gamma g_t                     \\
            &\hspace{5mm}\textbf{keras semantics (velocity form):}                          \\
            &\hspace{10mm}\theta_{t-1} \leftarrow \theta_{t-1} - \gamma\lambda\theta_{t-1}  \\
            &\hspace{10mm}v_t \leftarrow \mu v_{t-1} - \gamma g_t \quad (v_0 = 0)           \\
            &\hspace{10mm}\theta_t \leftarrow \theta_{t-1} + \mu v_t - \gamma g_t
                \text{ if nesterov else } \theta_{t-1} + v_t                               \\
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
            &\bf{return} \:  \theta_t                                                       \\[-1.ex]
            &\rule{110mm}{0.4pt}                                                            \\[-1.ex]
       \end{aligned}

    With ``momentum == 0`` both semantics are :math:`\theta_t = \theta_{t-1} - \gamma g_t`.
    The buffer (:math:`b` or :math:`v`) is ``state["momentum_buffer"]``.

    Args:
        {params}
        lr (float, Tensor, optional): learning rate. (default: 1e-3)
        momentum (float, optional): momentum factor; in [0, 1] under keras semantics, as
            Keras requires. (default: 0)
        dampening (float, optional): dampening for momentum; must be 0 under keras
            semantics. (default: 0)
        weight_decay (float, optional): weight decay (L2 penalty under torch semantics,
            decoupled under keras semantics). (default: 0)
        nesterov (bool, optional): enables Nesterov momentum; torch requires a momentum for
            it, Keras accepts it with momentum 0 (plain SGD then). (default: False)
        {flags}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.SGD``.  ``semantics="keras"`` is Keras 3's
        ``keras/src/optimizers/sgd.py`` (``update_step``, lines 95-123): the buffer is a
        velocity that already contains the learning rate (``m = m*momentum - lr*g``;
        ``w += m``, or ``w += m*momentum - lr*g`` for Nesterov).  At a constant lr this
        gives the same trajectory as torch's form; after an lr change the two differ,
        because Keras's velocity keeps the old lr.  ``state["momentum_buffer"]`` holds torch's
        buffer in both semantics: Keras's velocity is :math:`v = -s\,b`, with :math:`s` the lr
        of the last step (``state_dict()["global_state"]["momentum_lr"]``), so a
        keras-semantics state_dict continues in ``torch.optim.SGD`` exactly at a constant lr.
        {keras_common}

    References:
        Sutskever et al., "On the importance of initialization and momentum in deep
        learning", ICML 2013.
    """)

    _kernel = "sgd"
    Scalars, Flags = SGDScalars, SGDFlags
    _scalar_keys = ()
    _supports_sparse = True
    _sparse_error = "with fused=True does not support sparse gradients"

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        semantics: str = "torch",
    ) -> None:
        check_lr(lr)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if semantics == "keras":
            _check_keras(momentum, dampening)
        elif nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused,
                        semantics=semantics)
        super().__init__(params, defaults)

    def _check_semantics_move(self, group, states, global_step, src, dst) -> None:
        # the buffer is torch's in both semantics; only Keras's hyperparameter rules can refuse
        if dst == "keras":
            _check_keras(group["momentum"], group["dampening"])

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        pass  # torch creates the momentum buffer on the first step (from the gradient)

    def _phase(self, group: dict[str, Any], state: dict[str, Any]) -> Any:
        return group["momentum"] != 0 and "momentum_buffer" in state

    # ---------------------------------------------------------------- fused path

    def _begin_step(self) -> None:
        self._advance_velocity_scales()

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        keras = group["semantics"] == "keras"
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=keras, keras=keras)
        momentum = float(group["momentum"])
        use_momentum = momentum != 0
        if keras and use_momentum:
            carry, scale = self._velocity[id(group)]
            H = SGDScalars(**prologue, lr=scale, momentum=momentum * carry, buffer_grad_scale=lr / scale,
                           nesterov_momentum=momentum, grad_scale=lr / scale)
        else:
            H = SGDScalars(**prologue, lr=lr, momentum=momentum, buffer_grad_scale=1.0 - float(group["dampening"]),
                           nesterov_momentum=momentum, grad_scale=1.0)
        F = SGDFlags(use_momentum=int(use_momentum), nesterov=int(bool(group["nesterov"]) and use_momentum),
                     first=int(bool(b.pending)))
        return H, F

    def _flat_device(self, p, g, S, s, c, F) -> None:
        if not F.use_momentum:
            p.sub_(g * s.lr)
            return
        buf = S["momentum_buffer"]
        gs = g if c.grad_scale == 1.0 else g * s.grad_scale
        buf.copy_(gs if F.first else buf * s.momentum + g * s.buffer_grad_scale)
        p.sub_((gs + buf * s.nesterov_momentum if F.nesterov else buf) * s.lr)

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        keras = group["semantics"] == "keras"
        sgd_reference(
            p, grad, state,
            lr=group["lr"] if group["differentiable"] else scalar_value(group["lr"]),
            momentum=group["momentum"], dampening=group["dampening"],
            weight_decay=group["weight_decay"], nesterov=group["nesterov"],
            maximize=group["maximize"], keras=keras,
            velocity_scale=self._velocity.get(id(group), (1.0, 1.0)) if keras else (1.0, 1.0),
        )


def _check_keras(momentum: float, dampening: float) -> None:
    """Keras 3's SGD rules (keras/src/optimizers/sgd.py ``__init__``): momentum in [0, 1], no
    dampening. Unlike torch it accepts ``nesterov=True`` with momentum 0 (plain SGD then)."""
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"Invalid momentum value: {momentum}; Keras's SGD requires a momentum "
                         "between 0 and 1 (semantics='keras')")
    if dampening != 0:
        raise ValueError(
            f"Invalid dampening value: {dampening}; Keras's SGD has no dampening, "
            "so semantics='keras' requires dampening=0"
        )


def sgd_reference(param: Tensor, grad: Tensor, state: dict[str, Any], *, lr: Any,
                  momentum: float, dampening: float, weight_decay: Any, nesterov: bool,
                  maximize: bool, keras: bool, velocity_scale: tuple[float, float] = (1.0, 1.0)) -> None:
    """One SGD step of one tensor in plain torch ops: the readable ground truth.

    Under keras semantics ``state["momentum_buffer"]`` holds torch's ``b = -v / s`` for Keras's
    velocity ``v``, ``velocity_scale = (s_old / s_new, s_new)``
    (see ``FlatOptimizer._advance_velocity_scales``).
    """
    grad = grad if not maximize else -grad
    if keras:
        if grad.is_sparse:
            grad = grad.to_dense()
        if weight_decay != 0:
            param.sub_(param * weight_decay * lr)  # decoupled, before the update (Keras)
        if momentum == 0:
            param.sub_(grad * lr)
            return
        carry, scale = velocity_scale
        buf = state.get("momentum_buffer")
        # Keras (sgd.py update_step): v <- mu v - lr g (lr inside); w <- w + v, or
        # w <- w + mu v - lr g with Nesterov. The state holds b = -v / s in torch's units.
        v = -(carry * scale) * buf if buf is not None else torch.zeros_like(param)
        v = momentum * v - lr * grad
        if nesterov:
            param.add_(momentum * v - lr * grad)
        else:
            param.add_(v)
        if buf is None:
            state["momentum_buffer"] = (v / -scale).detach().clone(memory_format=torch.preserve_format)
        else:
            buf.copy_(v / -scale)
        return

    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    if momentum != 0:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = grad.detach().clone()
            state["momentum_buffer"] = buf
        else:
            buf.mul_(momentum).add_(grad, alpha=1 - dampening)
        grad = grad.add(buf, alpha=momentum) if nesterov else buf
    if isinstance(lr, Tensor):
        param.sub_(grad * lr)
    else:
        param.add_(grad, alpha=-lr)
