"""The torch-op flat kernel path: each module's ``_flat_device`` over a bucket, eager or compiled,
and the CUDA-graph half-steps built on it.

``_flat_device`` is the update written in torch ops over flat tensors, reading its per-step
scalars by name from a tensor (see :mod:`torchopt_review.optim.scalars`). It runs

- eagerly, for buckets the C kernel cannot take (other devices and dtypes, no C compiler);
- compiled by ``torch.compile`` into one kernel per bucket on the devices in
  :data:`COMPILE_DEVICES` (CUDA);
- as the device half of a CUDA-graph step: :meth:`DeviceSteps.graph_coefficients` runs on the
  host (step counters, bias corrections: the same ``_coefficients`` the C kernel gets) and
  returns the per-step scalars; the caller copies them into a device tensor bound with
  :meth:`DeviceSteps.bind_graph_coefficients`; :meth:`DeviceSteps.graph_apply` then runs only
  device work, so it can be captured once in a CUDA graph and replayed every step.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor

from ._buckets import Bucket, consecutive_alias
from .scalars import GRAPH_WIDTH, branches, device_prologue, device_scalars, tensor_fields

__all__ = ["DeviceSteps", "COMPILE_DEVICES"]

# Device types where ``_flat_device`` runs compiled by torch.compile (a module attribute: the
# tests add "cpu" to compile with Inductor's CPU backend). A compile that fails falls back to the
# eager kernel with one warning.
COMPILE_DEVICES = ("cuda",)


def _scalar_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a bucket's coefficient tensor: float64 for float64 params, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class DeviceSteps:
    """Mixin of :class:`~torchopt_review.optim._base.FlatOptimizer`: the torch-op flat kernel
    and the CUDA-graph half-steps."""

    Scalars: Any
    _plans: dict
    _global_state: dict[str, Any]
    param_groups: list[dict[str, Any]]

    # ---------------------------------------------------------------- one bucket

    def _device_kernel_step(self, p: Tensor, g: Tensor, S: dict[str, Tensor], h: Tensor, c: Any,
                            F: Any) -> None:
        """The prologue and ``_flat_device`` with the scalars cut from ``h`` (what is compiled)."""
        s = tensor_fields(self.Scalars, h)
        g = device_prologue(p, g, s, c)
        self._flat_device(p, g, S, s, c, F)

    def _device_kernel(self, b: Bucket) -> Callable[..., None]:
        """The bucket's kernel: :meth:`_device_kernel_step`, compiled once per bucket on the
        devices in :data:`COMPILE_DEVICES`."""
        if b.device.type not in COMPILE_DEVICES or b.extra.get("compile_failed"):
            return self._device_kernel_step
        fn = b.extra.get("compiled")
        if fn is None:
            fn = b.extra["compiled"] = torch.compile(self._device_kernel_step, fullgraph=True, dynamic=False)
        return fn

    def _apply_device(self, b: Bucket, grads: list[Tensor], h: Tensor, c: Any, F: Any) -> None:
        """One bucket through the torch-op kernel: params gathered (unless already one flat
        block), the kernel, params scattered back (or their versions bumped)."""
        g = self._flat_grads(b, grads)  # type: ignore[attr-defined]  # the kernel only reads it
        if b.pviews is not None:
            torch.cat(b.pviews, out=b.pflat)
        kernel = self._device_kernel(b)
        if kernel is self._device_kernel_step or b.extra.get("compiled_ran"):
            kernel(b.pflat, g, b.flat, h, c, F)
        else:
            try:  # the first call compiles; nothing has been written when compiling fails
                kernel(b.pflat, g, b.flat, h, c, F)
            except Exception as err:  # noqa: BLE001 - any backend failure: run eagerly instead
                b.extra["compile_failed"] = True
                warnings.warn(f"torchopt_review: torch.compile of {type(self).__name__}'s kernel failed "
                              f"({type(err).__name__}: {err}); running it eagerly", RuntimeWarning, stacklevel=4)
                self._device_kernel_step(b.pflat, g, b.flat, h, c, F)
            b.extra["compiled_ran"] = True
        if b.pviews is not None:
            torch._foreach_copy_(b.pviews, list(b.pflat.split(b.numels)))
        else:
            torch.autograd.graph.increment_version(b.params)

    def _run_device_bucket(self, b: Bucket, grads: list[Tensor], H: Any, F: Any) -> None:
        """An ordinary step of a bucket without a C kernel: its scalars copied in, the kernel."""
        self._apply_device(b, grads, device_scalars(list(H), b.device, _scalar_dtype(b.dtype)), branches(H), F)

    def _flat_device(self, p: Tensor, g: Tensor, S: dict[str, Tensor], s: Any, c: Any, F: Any) -> None:
        """The update over flat tensors, after the prologue (``g`` is the gradient with maximize
        and the L2 penalty applied; ``p`` already decayed): ``s`` holds the scalars as 0-d tensors,
        ``c`` their :func:`~torchopt_review.optim.scalars.branches` (branch on these only),
        ``F`` the flags, ``S`` state key -> flat buffer."""
        raise NotImplementedError

    # ---------------------------------------------------------------- under torch.compile

    def _traced_step(self, closure: Callable[[], Any] | None) -> Any:
        """``step()`` while torch.compile traces it. Tracing the eager step would break the graph
        at the ctypes call and bake every lr and bias correction into the graph as a constant (a
        recompile per new lr). Instead the host work -- step counters, bias corrections, plans,
        reference-path params and the C kernels -- runs in one eager call (:meth:`_host_half`,
        the one graph break), which returns the scalars of the torch-op buckets (CUDA, or no C
        kernel) as tensors; their updates are traced here through ``_flat_device`` into the
        caller's graph. Either way an lr change is new data, not a recompile."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._host_half()
        with torch.no_grad():
            for b, grads, h, c, F in work:
                g = torch.cat([x.reshape(-1) for x in grads])
                alias = b.extra["alias"]
                if alias is not None:  # the params are one flat block (on CUDA: relocated there)
                    self._device_kernel_step(alias, g, b.flat, h, c, F)
                else:  # gathered and scattered back (Inductor materialises the gather)
                    p = torch.cat([x.reshape(-1) for x in b.params])
                    self._device_kernel_step(p, g, b.flat, h, c, F)
                    for x, new in zip(b.params, p.split(b.numels)):
                        x.copy_(new.view(x.shape))
        return loss

    @torch.compiler.disable
    def _host_half(self) -> list[tuple[Bucket, list[Tensor], Tensor, Any, Any]]:
        """The eager part of a traced step: ``(bucket, grads, scalars, branches, flags)`` of the
        buckets whose update is traced; every other param is updated here already."""
        work: list[tuple[Bucket, list[Tensor], Tensor, Any, Any]] = []
        self._host_step(traced=work)  # type: ignore[attr-defined]
        return work

    def _defer_to_trace(self, group: dict[str, Any], b: Bucket, grads: list[Tensor], work: list) -> bool:
        """Queue bucket ``b`` for the traced update (True), or leave it to the eager step (False).

        Buckets with a C kernel stay eager: the traced torch-op update of params that are not one
        flat block costs Inductor a gather and a scatter around the kernel (measured 2-3x the C
        kernel's time on the blog MLP), while the C kernel inside this one eager call costs what it
        costs outside torch.compile and computes the same numbers. So do a bucket's first step
        (its state initialised by the kernel) and buckets with non-contiguous params or grads."""
        if b.c_fn is not None or b.pending or not b.contiguous or not all(
                x is not None and x.layout == torch.strided and x.is_contiguous() for x in grads):
            return False
        where = b.params[0].data_ptr()
        if b.extra.get("alias_at") != where:  # (params moved: look again)
            b.extra["alias_at"] = where
            b.extra["alias"] = (b.pflat if b.pflat is not None and b.pviews is None
                                else consecutive_alias([p.detach() for p in b.params], b.numels))
        H, F = self._coefficients(group, b)  # type: ignore[attr-defined]
        work.append((b, grads, device_scalars(list(H), b.device, _scalar_dtype(b.dtype)), branches(H), F))
        return True

    # ---------------------------------------------------------------- CUDA-graph path

    def graph_buckets(self) -> list[tuple[dict[str, Any], Bucket]]:
        """The fast-path buckets, in a fixed order (after at least one ordinary :meth:`step`)."""
        out = []
        for group in self.param_groups:
            plan = self._plans.get(id(group))
            if plan is None or self._use_reference(group) or plan.reference:  # type: ignore[attr-defined]
                raise RuntimeError("graph steps need every param on the fused flat path and one ordinary "
                                   "step() first (it lays out the buckets and initialises the state)")
            for b in plan.buckets:
                if b.pending:
                    raise RuntimeError("graph steps need the optimizer state initialised: take one step() first")
                if b.pflat is None:
                    self._prepare_torch_ops(b)  # type: ignore[attr-defined]
                out.append((group, b))
        return out

    def graph_coefficients(self) -> list[float]:
        """Host half of a step: advance the step counters and return every bucket's per-step
        scalars, concatenated in :meth:`graph_buckets` order (``graph_width()`` floats)."""
        self._global_state["step"] = int(self._global_state.get("step", 0)) + 1
        self._begin_step()  # type: ignore[attr-defined]
        out: list[float] = []
        for group, b in self.graph_buckets():
            H, F = self._coefficients(group, b)  # type: ignore[attr-defined]
            if b.extra.get("graph_F") not in (None, F):
                raise RuntimeError(f"{type(self).__name__}: a captured step's flags changed ({F}); re-capture")
            b.extra["graph_F"] = F
            # the kernels use the host values only to pick branches (== 0, == 1): pass just that,
            # so a compiled kernel's guards do not change with the step's bias corrections
            b.graph_c, b.graph_F = branches(H), F
            out.extend(float(x) for x in H)
            out.extend([0.0] * (GRAPH_WIDTH - len(H)))
        return out

    def graph_width(self) -> int:
        return GRAPH_WIDTH * len(self.graph_buckets())

    def bind_graph_coefficients(self, h: Tensor) -> None:
        """Read the per-step scalars of :meth:`graph_apply` from ``h`` (a device tensor of
        ``graph_width()`` float32s that the caller fills before each replay)."""
        buckets = self.graph_buckets()
        if h.numel() != GRAPH_WIDTH * len(buckets):
            raise ValueError(f"expected {GRAPH_WIDTH * len(buckets)} coefficients, got {h.numel()}")
        for i, (_, b) in enumerate(buckets):
            b.graph_h = h[i * GRAPH_WIDTH:(i + 1) * GRAPH_WIDTH]

    def graph_scalars(self, bucket: int = 0) -> Any:
        """The scalars bound for bucket ``bucket`` (in :meth:`graph_buckets` order), by name."""
        return tensor_fields(self.Scalars, self.graph_buckets()[bucket][1].graph_h)

    def graph_apply(self) -> None:
        """Device half of a step: no host sync, no host-computed scalar, so it can be captured."""
        for _, b in self.graph_buckets():
            self._apply_device(b, [p.grad for p in b.params], b.graph_h, b.graph_c, b.graph_F)

    def graph_step(self) -> None:
        """Both halves, for testing and for eager use of the device kernels (any device)."""
        if not self._plans:
            raise RuntimeError("take one ordinary step() first")
        H = self.graph_coefficients()
        self.bind_graph_coefficients(device_scalars(H, self.graph_buckets()[0][1].device))
        self.graph_apply()
