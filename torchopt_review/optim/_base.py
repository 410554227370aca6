"""The base class of the optimizer library: state handling, ``step()`` and kernel dispatch.

Every optimizer in :mod:`torchopt_review.optim` is a :class:`FlatOptimizer`. A step goes:

1. For each param group, the params that have a gradient are bucketed by
   ``(device, dtype, phase)``; each bucket owns one flat buffer per state key and
   ``optimizer.state[p][key]`` is a view of its slice (:mod:`._buckets`).
2. The per-step scalars of a bucket (lr, bias corrections ...) are computed on the host as
   doubles by the module's ``_coefficients``, as its named ``Scalars`` and ``Flags``
   (:mod:`.scalars`), so an lr scheduler never triggers a rebuild.
3. A bucket is updated by *one* call of one of the module's two fused kernels: the C kernel in
   ``csrc/kernels.c`` (CPU, float32 and float64, :mod:`._cext`; a large bucket is split between
   torch's intra-op threads), or ``_flat_device``, the same update in torch ops over flat tensors
   (other devices and dtypes, or no C compiler; compiled by ``torch.compile`` on CUDA,
   :mod:`._device`). Inside a function compiled by ``torch.compile``, ``step()`` runs its host
   work in one eager call and traces the torch-op updates into the graph (``_traced_step``).
4. Anything the fused kernels cannot take (``fused=False``, ``differentiable``, ``capturable``,
   sparse or complex tensors, non-dense layouts) runs the module's readable single-tensor
   reference kernel ``_reference`` -- the ground truth the fused kernels are tested against.
"""

from __future__ import annotations

import copy
import operator
from typing import Any, Callable

import torch
from torch import Tensor

from ._buckets import Bucket, BucketLayout, GroupPlan, is_dense
from ._cext import load_kernels  # noqa: F401  (re-exported: torchopt_review.bench imports it from here)
from ._cext import run_kernel
from ._common import scalar_value
from ._device import DeviceSteps
from .scalars import device_scalars  # noqa: F401  (re-exported for older imports)

__all__ = ["FlatOptimizer", "SEMANTICS"]

SEMANTICS = ("torch", "keras")
CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "privateuseone", "xla")


def fused_devices() -> list[str]:
    """The device types torch.optim accepts ``fused=True`` on (its error message lists them)."""
    return ["mps", "cuda", "xpu", "hpu", "cpu", "mtia", torch._C._get_privateuse1_backend_name()]


class FlatOptimizer(BucketLayout, DeviceSteps, torch.optim.Optimizer):
    """Base class: bucketing, flat state, kernel dispatch and the keras/torch plumbing.

    Subclasses define:

    * ``_kernel`` -- the C kernel's name in ``csrc/kernels.c``;
    * ``Scalars`` / ``Flags`` -- the kernels' named per-step scalars and flags
      (:func:`~torchopt_review.optim.scalars.scalar_fields`, ``flag_fields``);
    * ``_flat_keys(group)`` -- full-size state keys, in the C kernel's ``S`` order;
    * ``_scalar_keys`` -- 0-d per-param state (``step``, ``mu_product``), kept in one small
      float32 buffer per bucket;
    * ``_init_state(group, p, state)`` -- torch's lazy state initialisation;
    * ``_phase(group, state)`` -- what must be equal for params to share one update;
    * ``_coefficients(group, bucket)`` -> ``(Scalars, Flags)`` for the kernels (it also advances
      the bucket's scalar state);
    * ``_flat_device(p, g, S, s, c, F)`` -- the fused update in torch ops over flat tensors;
    * ``_reference(group, p, grad, state)`` -- the single-tensor reference kernel.
    """

    _kernel: str = ""
    Scalars: Any = None
    Flags: Any = None
    _scalar_keys: tuple[str, ...] = ("step",)
    _supports_sparse: bool = False
    _sparse_error: str = "does not support sparse gradients"

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        semantics = defaults.get("semantics", "torch")
        if semantics not in SEMANTICS:
            raise ValueError(f"Invalid semantics: {semantics!r} (expected 'torch' or 'keras')")
        fused, foreach = defaults.get("fused"), defaults.get("foreach")
        if fused not in (None, True, False):
            raise ValueError(f"Invalid fused value: {fused!r} (expected None, True or False)")
        super().__init__(params, defaults)
        if fused:
            if defaults.get("differentiable"):
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
            if defaults.get("capturable"):
                raise RuntimeError(
                    "`fused=True` does not support `capturable=True` in torchopt_review; "
                    "use fused=None or fused=False with capturable=True"
                )
        self._init_runtime()

    # ---------------------------------------------------------------- runtime bookkeeping

    def _init_runtime(self) -> None:
        self._plans: dict[int, GroupPlan] = {}
        self._version = 0
        if not hasattr(self, "_global_state"):
            self._global_state = {"step": 0}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_global_state"] = copy.deepcopy(self._global_state)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # A group loaded from torch.optim lacks our keys: fill them from our defaults.
        for group in self.param_groups:
            for key in ("semantics", "fused"):
                group.setdefault(key, self.defaults.get(key))
            self._setdefault_group(group)
        if "_global_state" not in self.__dict__:
            self._global_state = {"step": 0}
        self._tensorize_scalar_state()
        self._init_runtime_after_load()

    def _tensorize_scalar_state(self) -> None:
        """Checkpoints saved by torch < 1.12 hold ``step`` (and NAdam's ``mu_product``) as Python
        numbers: make them 0-d tensors, as torch.optim's ``__setstate__`` does (on the param's
        device when capturable, else on the CPU; torch's scalar dtype)."""
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                for key in self._scalar_keys:
                    value = state.get(key)
                    if value is not None and not torch.is_tensor(value):
                        state[key] = torch.tensor(float(value), dtype=dtype,
                                                  device=p.device if group.get("capturable") else None)

    def _setdefault_group(self, group: dict[str, Any]) -> None:
        """Hook: subclasses fill group keys an older/torch state may lack."""
        for key, value in self.defaults.items():
            group.setdefault(key, value)

    def _init_runtime_after_load(self) -> None:
        self._plans = {}
        self._version = getattr(self, "_version", 0) + 1

    def state_dict(self) -> dict[str, Any]:
        """torch's layout plus ``"global_state"`` (the Keras-style step counter and products).

        ``torch.optim`` ignores the extra key, so the dict loads there too.
        """
        sd = super().state_dict()
        sd["global_state"] = copy.deepcopy(self._global_state)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict`` (the saved hyperparameters replace the groups'), except
        ``semantics``: each group keeps this optimizer's. A state saved under the other semantics
        (a torch.optim state counts as ``"torch"``) is taken where it means the same thing there
        (see ``_check_semantics_move``); where it cannot continue exactly, one ``ValueError``,
        before anything is loaded."""
        glob = state_dict.get("global_state")
        ours = [g["semantics"] for g in self.param_groups]
        saved_groups = state_dict.get("param_groups", [])
        saved = [g.get("semantics", "torch") for g in saved_groups]
        moves = [(i, src, dst) for i, (src, dst) in enumerate(zip(saved, ours)) if src != dst]
        if moves:  # checked on the saved dict: a refused load leaves this optimizer as it was
            saved_state = state_dict.get("state", {})
            steps = [float(st["step"]) for st in saved_state.values() if "step" in st]
            global_step = int(glob["step"]) if glob is not None else int(max(steps, default=0))
            for i, src, dst in moves:
                group = saved_groups[i]
                states = [saved_state[k] for k in group["params"] if k in saved_state]
                self._check_semantics_move(group, states, global_step, src, dst)
        super().load_state_dict(state_dict)
        for group, semantics in zip(self.param_groups, ours):
            group["semantics"] = semantics
        if glob is not None:
            self._global_state = copy.deepcopy(glob)
        else:
            self._global_state = self._derive_global_state()
        for i, src, dst in moves:
            self._after_semantics_move(i, src, dst)
        self._plans = {}
        self._version += 1

    def _check_semantics_move(self, group: dict[str, Any], states: list[dict[str, Any]], global_step: int,
                              src: str, dst: str) -> None:
        """Hook: raise ``ValueError`` if a saved group (its hyperparameters ``group``, its params'
        ``states``, the optimizer's step ``global_step``), saved under ``src``, cannot continue
        exactly under ``dst``. The default accepts: the state means the same in both."""

    def _after_semantics_move(self, index: int, src: str, dst: str) -> None:
        """Hook: adjust ``global_state`` for group ``index``, loaded from ``src`` into ``dst``."""
        for key in ("momentum_lr", "u_product"):  # per-group entries of the other semantics
            entries = self._global_state.get(key)
            if isinstance(entries, list) and index < len(entries):
                entries[index] = None  # set afresh at the next step


    def _derive_global_state(self) -> dict[str, Any]:
        """Global state for a state dict saved by torch.optim: the largest per-param step."""
        steps = [float(s["step"]) for s in self.state.values() if "step" in s]
        return {"step": int(max(steps, default=0))}

    # ---------------------------------------------------------------- step

    def _begin_step(self) -> None:
        """Hook run once per step() that has gradients, after the global step is advanced."""

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform a single optimization step.

        Args:
            closure (Callable, optional): a closure that reevaluates the model and returns
                the loss; it runs once, under ``torch.enable_grad()``.
        """
        if torch.compiler.is_compiling():
            # traced by torch.compile: host work in one eager call, the update traced into the graph
            return self._traced_step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._host_step()
        return loss

    def _host_step(self, traced: list | None = None) -> None:
        """Everything of a step but the closure. ``traced``: collect the buckets the torch-op
        kernel can take inside a torch.compile graph there (with their scalars) instead of
        updating them (see ``_traced_step``)."""
        grad_mode = torch.is_grad_enabled()
        wanted = bool(self.defaults.get("differentiable", False))
        if grad_mode != wanted:
            torch.set_grad_enabled(wanted)
        try:
            all_grads = [[p.grad for p in group["params"]] for group in self.param_groups]
            # (``is`` tests only: ``list.count(None)`` would call Tensor.__eq__)
            if any(g is not None for grads in all_grads for g in grads):
                self._global_state["step"] = int(self._global_state.get("step", 0)) + 1
                self._begin_step()
            for group, grads in zip(self.param_groups, all_grads):
                self._step_group(group, grads, traced)
        finally:
            if grad_mode != wanted:
                torch.set_grad_enabled(grad_mode)

    def _use_reference(self, group: dict[str, Any]) -> bool:
        return (group.get("fused") is False or bool(group.get("differentiable"))
                or bool(group.get("capturable")))

    def _step_group(self, group: dict[str, Any], grads: list[Tensor | None], traced: list | None = None) -> None:
        params = group["params"]
        if self._use_reference(group):
            self._reference_step(group, [p for p in params if p.grad is not None])
            return
        plan = self._plans.get(id(group))
        if (plan is None or plan.group is not group or plan.version != self._version
                or len(plan.params) != len(params)
                or not all(map(operator.is_, params, plan.params))
                or [p.data_ptr() for p in params] != plan.pptrs
                or [g is not None for g in grads] != plan.mask):
            plan = self._build_plan(group, params, grads)
        for bucket in plan.buckets:
            bgrads = grads if bucket.whole else [grads[i] for i in bucket.idx]
            if traced is not None and self._defer_to_trace(group, bucket, bgrads, traced):
                continue
            if not self._run_bucket(group, bucket, bgrads):
                # A grad this bucket's kernel cannot read (sparse, other layout): take the
                # reference path for these params and rebuild the layout next step.
                self._reference_step(group, bucket.params)
                self._plans.pop(id(group), None)
        if plan.reference:
            self._reference_step(group, plan.reference)

    def _run_bucket(self, group: dict[str, Any], b: Bucket, grads: list[Tensor]) -> bool:
        """One fused update of bucket ``b``; False if a grad's layout does not fit."""
        try:
            if b.contiguous:
                gptrs = [g.data_ptr() for g in grads if g.is_contiguous()]
                if len(gptrs) != len(grads):
                    return False
            elif [g.stride() for g in grads] != b.strides:
                return False
            else:
                gptrs = [g.data_ptr() for g in grads]
        except RuntimeError:  # sparse or storage-less grads
            return False
        H, F = self._coefficients(group, b)
        if b.c_fn is not None:
            b.c_G[:] = gptrs
            b.c_H[:] = H
            b.c_F[:len(F)] = F
            run_kernel(b.c_fn, (b.c_n, b.c_P, b.c_G, b.c_N, b.c_S, b.c_H, b.c_F), b.total)
            # the kernel wrote the params behind autograd's back: bump their versions
            torch.autograd.graph.increment_version(b.params)
        else:
            self._run_device_bucket(b, grads, H, F)
        if b.pending:
            self._bind_pending(group, b)
        return True

    # ---------------------------------------------------------------- reference path

    def _ensure_state(self, group: dict[str, Any], p: Tensor) -> dict[str, Any]:
        """``self.state[p]``, lazily initialised; not inserted while it stays empty (as torch)."""
        state = self.state.get(p)
        if not state:
            state = {}
            self._init_state(group, p, state)
            if state:
                self.state[p] = state
        return state

    def _reference_step(self, group: dict[str, Any], params: list[Tensor]) -> None:
        capturable = bool(group.get("capturable"))
        for p in params:
            if capturable:
                step_t = self.state.get(p, {}).get("step")
                if p.device.type not in CAPTURABLE_DEVICES or (
                        step_t is not None and step_t.device.type != p.device.type):
                    # as torch.optim: capturable steps only make sense on a graph-capturing device
                    raise AssertionError(
                        "If capturable=True, params and state_steps must be on supported "
                        f"devices: {list(CAPTURABLE_DEVICES)}."
                    )
            grad = p.grad
            if grad.is_sparse:
                if not self._supports_sparse or group.get("fused"):
                    raise RuntimeError(f"{type(self).__name__} {self._sparse_error}")
            state = self._ensure_state(group, p)
            self._reference(group, p, grad, state)
            if state and p not in self.state:
                self.state[p] = state

    def _fast_eligible(self, group: dict[str, Any], p: Tensor, g: Tensor) -> bool:
        if group.get("fused") and not (p.device.type in fused_devices() and torch.is_floating_point(p)):
            # torch.optim's check and message, at the same moment (the first step with a grad)
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of "
                f"supported devices: {fused_devices()} but {p.dtype} and {p.device.type}"
            )
        if g.is_sparse:
            if not self._supports_sparse or group.get("fused"):
                raise RuntimeError(f"{type(self).__name__} {self._sparse_error}")
            return False
        ok = (p.is_floating_point() and is_dense(p) and g.layout == torch.strided
              and g.stride() == p.stride())
        if not ok and group.get("fused"):
            raise RuntimeError(
                f"{type(self).__name__}(fused=True) cannot take this parameter "
                f"(dtype={p.dtype}, shape={tuple(p.shape)}, complex or non-dense layout or "
                "a gradient whose strides differ from the parameter's); use fused=None"
            )
        return ok

    # ---------------------------------------------------------------- hooks (subclasses)

    def _flat_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _phase(self, group: dict[str, Any], state: dict[str, Any]) -> Any:
        return float(state["step"])

    def _coefficients(self, group: dict[str, Any], b: Bucket) -> tuple[Any, Any]:
        raise NotImplementedError

    def _reference(self, group: dict[str, Any], p: Tensor, grad: Tensor,
                   state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for subclasses

    def _advance_step(self, b: Bucket) -> float:
        """Add one to the bucket's per-param ``step`` and return the new value."""
        if b.step_np is not None:
            b.step_np += 1
            return float(b.step_np[0])
        buf = b.scalars["step"]
        buf.add_(1)
        return float(buf[0])

    def _keras_step(self) -> int:
        return int(self._global_state["step"])

    def _advance_velocity_scales(self) -> None:
        """Keras's momentum buffers with the lr inside (SGD's velocity ``v``, RMSprop's
        ``momentum``) are kept in torch's units: ``momentum_buffer = v / -s`` (SGD) or ``v / s``
        (RMSprop), where ``s`` is the group's lr of the last step (kept while the lr is 0: no
        finite buffer in torch's units can hold a velocity at lr 0). So a keras-semantics
        state_dict is torch's, and continues in torch.optim exactly at a constant lr.

        Once per step, for each keras group with momentum: the new ``s`` (saved per group in
        ``global_state["momentum_lr"]``) and ``carry = s_old / s_new``, the factor the kernels
        apply to the buffer before this step's update (1 at a constant lr; Keras's velocity keeps
        the old lr). Buffers of params without a gradient this step are rescaled here, as Keras
        leaves their velocity untouched. ``self._velocity[id(group)] = (carry, s_new)``."""
        scales = self._global_state.setdefault("momentum_lr", [])
        scales.extend([None] * (len(self.param_groups) - len(scales)))
        self._velocity: dict[int, tuple[float, float]] = {}
        for i, group in enumerate(self.param_groups):
            if group["semantics"] != "keras" or not group["momentum"] > 0:
                continue
            lr = float(scalar_value(group["lr"]))
            old = scales[i]
            new = lr if lr != 0 else (old if old is not None else 1.0)
            carry = 1.0 if old is None else old / new
            scales[i] = new
            self._velocity[id(group)] = (carry, new)
            if carry != 1.0:
                with torch.no_grad():
                    for p in group["params"]:
                        buf = self.state.get(p, {}).get("momentum_buffer") if p.grad is None else None
                        if buf is not None:
                            buf.mul_(carry)
