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

# The kernels' per-step inputs (csrc/kernels.c: SGD_SCALARS, SGD_FLAGS), after the prologue;
# ``first``: the momentum buffer does not exist yet (torch creates it from the gradient).
SGDScalars = scalar_fields("SGDScalars", "lr", "momentum", "one_minus_dampening")
SGDFlags = flag_fields("SGDFlags", "use_momentum", "nesterov", "keras", "first")


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
        momentum (float, optional): momentum factor. (default: 0)
        dampening (float, optional): dampening for momentum; must be 0 under keras
            semantics. (default: 0)
        weight_decay (float, optional): weight decay (L2 penalty under torch semantics,
            decoupled under keras semantics). (default: 0)
        nesterov (bool, optional): enables Nesterov momentum. (default: False)
        {flags}
        {fused}
        {semantics}

    Differences from Keras / torch:
        ``semantics="torch"`` is ``torch.optim.SGD``.  ``semantics="keras"`` is Keras 3's
        ``keras/src/optimizers/sgd.py`` (``update_step``, lines 95-123): the buffer is a
        velocity that already contains the learning rate (``m = m*momentum - lr*g``;
        ``w += m``, or ``w += m*momentum - lr*g`` for Nesterov).  At a constant lr this
        gives the same trajectory as torch's form; after an lr change the two differ,
        because Keras's velocity keeps the old lr.  A keras-semantics ``momentum_buffer``
        therefore holds :math:`v = -\gamma b` and is not interchangeable with torch's.
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
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if semantics == "keras" and dampening != 0:
            raise ValueError(
                f"Invalid dampening value: {dampening}; Keras's SGD has no dampening, "
                "so semantics='keras' requires dampening=0"
            )
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused,
                        semantics=semantics)
        super().__init__(params, defaults)

    # ---------------------------------------------------------------- state

    def _flat_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        pass  # torch creates the momentum buffer on the first step (from the gradient)

    def _phase(self, group: dict[str, Any], state: dict[str, Any]) -> Any:
        return group["momentum"] != 0 and "momentum_buffer" in state

    # ---------------------------------------------------------------- fused path

    def _coefficients(self, group, b):
        lr = float(scalar_value(group["lr"]))
        keras = group["semantics"] == "keras"
        prologue = prologue_values(lr, float(scalar_value(group["weight_decay"])), group["maximize"],
                                   decoupled=keras, keras=keras)
        momentum = float(group["momentum"])
        H = SGDScalars(**prologue, lr=lr, momentum=momentum,
                       one_minus_dampening=1.0 - float(group["dampening"]))
        F = SGDFlags(use_momentum=int(momentum != 0), nesterov=int(bool(group["nesterov"])),
                     keras=int(keras), first=int(bool(b.pending)))
        return H, F

    def _flat_device(self, p, g, S, s, c, F) -> None:
        if not F.use_momentum:
            p.sub_(g * s.lr)
            return
        buf = S["momentum_buffer"]
        lr, mu = s.lr, s.momentum
        if not F.keras:  # buf = mu*buf + (1-dampening)*g;  p -= lr*(g + mu*buf) or lr*buf
            buf.copy_(g if F.first else buf * mu + g * s.one_minus_dampening)
            p.sub_((g + buf * mu if F.nesterov else buf) * lr)
        else:  # Keras velocity form: v = mu*v - lr*g;  p += mu*v - lr*g or v
            buf.copy_(g * -lr if F.first else buf * mu - g * lr)
            p.add_(buf * mu - g * lr if F.nesterov else buf)

    # ---------------------------------------------------------------- reference kernel

    def _reference(self, group, p, grad, state) -> None:
        sgd_reference(
            p, grad, state,
            lr=group["lr"] if group["differentiable"] else scalar_value(group["lr"]),
            momentum=group["momentum"], dampening=group["dampening"],
            weight_decay=group["weight_decay"], nesterov=group["nesterov"],
            maximize=group["maximize"], keras=group["semantics"] == "keras",
        )


def sgd_reference(param: Tensor, grad: Tensor, state: dict[str, Any], *, lr: Any,
                  momentum: float, dampening: float, weight_decay: Any, nesterov: bool,
                  maximize: bool, keras: bool) -> None:
    """One SGD step of one tensor in plain torch ops: the readable ground truth."""
    grad = grad if not maximize else -grad
    if keras:
        if grad.is_sparse:
            grad = grad.to_dense()
        if weight_decay != 0:
            param.sub_(param * weight_decay * lr)  # decoupled, before the update (Keras)
        if momentum == 0:
            param.sub_(grad * lr)
            return
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["momentum_buffer"] = buf
        buf.mul_(momentum).sub_(grad * lr)  # v <- mu v - lr g: lr inside the buffer
        if nesterov:
            param.add_(buf * momentum - grad * lr)
        else:
            param.add_(buf)
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
