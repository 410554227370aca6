"""Flat buckets: how a param group's params and state are laid out for one-call updates.

For each param group, the params that have a gradient are bucketed by ``(device, dtype, phase)``
-- ``phase`` is what the update depends on besides the tensors (the ``step`` count, whether a
momentum buffer exists yet), so every param of a bucket takes the same update. Each bucket owns
one flat, contiguous buffer per state key; ``optimizer.state[p][key]`` is a view of its slice, so
``state_dict()`` keeps torch's layout.

Bucket layouts are cached per group (a :class:`GroupPlan`) and rebuilt when a param's identity,
storage, device or dtype changes (``model.to()``), when the set of params with gradients changes,
after ``load_state_dict`` and after unpickling.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from torch import Tensor

from ._cext import load_kernels

__all__ = ["Bucket", "GroupPlan", "BucketLayout", "is_dense", "flat_view", "consecutive_alias"]

# Which bucket runs which kernel, and where params move: module attributes, not environment
# variables (the tests monkeypatch them to run CUDA's choices on the CPU).
C_KERNELS = True  # CPU float32/float64 buckets run the C kernel when it loads
RELOCATE_DEVICES = ("cuda",)  # device types whose buckets' params move into one flat buffer


def is_dense(t: Tensor) -> bool:
    """Non-overlapping and dense: its elements fill ``numel`` consecutive slots of memory."""
    if t.is_contiguous():
        return True
    expected = 1
    for size, stride in sorted(zip(t.shape, t.stride()), key=lambda s: s[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def flat_view(t: Tensor) -> Tensor:
    """A 1-D view over the memory of a dense tensor (in memory order)."""
    if t.is_contiguous():
        return t.view(-1)
    return t.as_strided((t.numel(),), (1,))


def consecutive_alias(tensors: list[Tensor], numels: list[int]) -> Tensor | None:
    """One flat 1-d alias of ``tensors`` if they are contiguous and laid end to end in one
    storage, in this order; else None."""
    t0 = tensors[0]
    if t0 is None:
        return None
    expect = t0.data_ptr()
    item = t0.element_size()
    try:
        sptr = t0.untyped_storage().data_ptr()
    except RuntimeError:
        return None
    for t, n in zip(tensors, numels):
        if (t is None or not t.is_contiguous() or t.data_ptr() != expect or t.dtype != t0.dtype
                or t.untyped_storage().data_ptr() != sptr):
            return None
        expect += n * item
    return t0.as_strided((sum(numels),), (1,), t0.storage_offset())


class Bucket:
    """Params of one group sharing (device, dtype, phase), with their flat state buffers.

    ``flat``: state key -> flat buffer; ``scalars``: 0-d per-param state (``step``) as one small
    float32 buffer; ``pending``: state keys the kernel initialises on the bucket's first step;
    ``c_*``: the C kernel's arguments; ``pflat``/``pviews``/``gscratch``: the torch-op kernel's
    flat params (an alias, or a buffer gathered from ``pviews``) and gradient gather buffer;
    ``graph_*``: the CUDA-graph path's per-step inputs.
    """

    __slots__ = ("params", "idx", "whole", "step_np", "numels", "total", "device", "dtype", "phase", "flat",
                 "scalars", "pending", "contiguous", "strides", "c_fn", "c_n", "c_H", "c_F", "c_P", "c_G", "c_N",
                 "c_S", "pflat", "pviews", "gscratch", "extra", "graph_c", "graph_F", "graph_h")

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}


class GroupPlan:
    __slots__ = ("group", "version", "params", "pptrs", "mask", "buckets", "reference")


class BucketLayout:
    """Mixin of :class:`~torchopt_review.optim._base.FlatOptimizer`: building and caching the
    bucket layout of each param group (``self._plans``)."""

    state: Any
    _plans: dict[int, GroupPlan]
    _version: int

    def _build_plan(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor | None]) -> GroupPlan:
        old = self._plans.get(id(group))
        old_buckets = {}
        if old is not None and old.group is group and old.version == self._version:
            old_buckets = {tuple(map(id, b.params)): b for b in old.buckets}

        keyed: dict[Any, list[int]] = {}
        reference: list[Tensor] = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            state = self._ensure_state(group, p)  # type: ignore[attr-defined]
            if self._fast_eligible(group, p, g):  # type: ignore[attr-defined]
                key = (p.device, p.dtype, self._phase(group, state))  # type: ignore[attr-defined]
                keyed.setdefault(key, []).append(i)
            else:
                reference.append(p)

        buckets = []
        kept = set()
        for (device, dtype, phase), idx in keyed.items():
            members = [params[i] for i in idx]
            reuse = old_buckets.get(tuple(map(id, members)))
            if reuse is not None and reuse.phase == phase and self._bucket_owns_state(reuse):
                reuse.idx = idx
                buckets.append(reuse)
                kept.add(id(reuse))
            else:
                buckets.append(self._make_bucket(group, members, idx, device, dtype, phase))
            buckets[-1].whole = idx == list(range(len(params)))
        # Buckets that were not kept: give their remaining members independent state, so the
        # old flat buffers are freed (state memory never exceeds torch's).
        for b in old_buckets.values():
            if id(b) not in kept:
                for p in b.params:
                    st = self.state.get(p)
                    if st is None:
                        continue
                    for k, v in list(st.items()):
                        if isinstance(v, Tensor) and v._base is not None and any(
                                v._base is f for f in self._bucket_storages(b)):
                            st[k] = v.clone()

        plan = GroupPlan()
        plan.group = group
        plan.version = self._version
        plan.params = list(params)
        plan.pptrs = [p.data_ptr() for p in params]
        plan.mask = [g is not None for g in grads]
        plan.buckets = buckets
        plan.reference = reference
        self._plans[id(group)] = plan
        return plan

    @staticmethod
    def _bucket_storages(b: Bucket) -> list[Tensor]:
        return [*b.flat.values(), *b.scalars.values()]

    def _bucket_owns_state(self, b: Bucket) -> bool:
        for i, p in enumerate(b.params):
            st = self.state.get(p, {})
            for k, buf in (*b.flat.items(), *b.scalars.items()):
                if k in b.pending:
                    continue
                v = st.get(k)
                if v is None or v._base is not buf:
                    return False
        return True

    def _make_bucket(self, group: dict[str, Any], members: list[Tensor], idx: list[int],
                     device: torch.device, dtype: torch.dtype, phase: Any) -> Bucket:
        b = Bucket()
        b.params, b.idx, b.device, b.dtype, b.phase = members, idx, device, dtype, phase
        b.numels = [p.numel() for p in members]
        b.total = sum(b.numels)
        b.contiguous = all(p.is_contiguous() for p in members)
        b.strides = [p.stride() for p in members]
        states = [self.state.get(p, {}) for p in members]

        # Full-size state: one flat buffer per key; each param's state is a view with the
        # param's own strides (torch's preserve_format).
        b.flat, b.pending = {}, set()
        for key in self._flat_keys(group):  # type: ignore[attr-defined]
            have = [key in st for st in states]
            if any(have) and not all(have):  # cannot happen with a correct _phase
                raise AssertionError(f"inconsistent state key {key!r} in one bucket")
            buf = torch.empty(b.total, device=device, dtype=dtype)
            off = 0
            for p, st, n in zip(members, states, b.numels):
                view = buf[off:off + n].as_strided(p.shape, p.stride(), off)
                if have[0]:
                    view.copy_(st[key])
                    st[key] = view
                off += n
            if not have[0]:
                b.pending.add(key)  # the kernel initialises it on this bucket's first step
            b.flat[key] = buf
        # 0-d per-param state (step, mu_product): one small float32 buffer, 0-d views into it.
        b.scalars = {}
        for key in self._scalar_keys:  # type: ignore[attr-defined]
            if not all(key in st for st in states):
                continue
            src = [st[key] for st in states]
            sdev = src[0].device
            buf = torch.tensor([float(s) for s in src], dtype=torch.float32, device=sdev)
            for j, st in enumerate(states):
                st[key] = buf[j]
            b.scalars[key] = buf
        # The step count is advanced through a numpy view (a torch op costs ~7 us per call).
        step_buf = b.scalars.get("step")
        b.step_np = step_buf.numpy() if step_buf is not None and step_buf.device.type == "cpu" else None

        b.c_fn = None
        b.pflat = None
        b.gscratch = None
        cls: Any = type(self)
        kernels = load_kernels() if device.type == "cpu" and C_KERNELS else None
        if kernels is not None:
            b.c_fn = kernels.fn(cls._kernel, dtype, cls.Scalars._fields, cls.Flags._fields)
        if b.c_fn is not None:
            n = len(members)
            b.c_n = ctypes.c_int64(n)
            b.c_P = (ctypes.c_void_p * n)(*[p.data_ptr() for p in members])
            b.c_G = (ctypes.c_void_p * n)()
            b.c_N = (ctypes.c_int64 * n)(*b.numels)
            b.c_H = (ctypes.c_double * len(cls.Scalars._fields))()
            b.c_F = (ctypes.c_int64 * max(1, len(cls.Flags._fields)))()
            self._refresh_state_ptrs(group, b)
        else:
            self._prepare_torch_ops(b)
        return b

    def _refresh_state_ptrs(self, group: dict[str, Any], b: Bucket) -> None:
        slots = self._c_slots(group)
        ptrs = [b.flat[k].data_ptr() if k is not None else 0 for k in slots] + [0]
        b.c_S = (ctypes.c_void_p * len(ptrs))(*ptrs)

    def _c_slots(self, group: dict[str, Any]) -> tuple[str | None, ...]:
        """The C kernel's ``S`` array: state keys by slot (``None`` for an unused slot)."""
        return self._flat_keys(group)  # type: ignore[attr-defined]

    def _prepare_torch_ops(self, b: Bucket) -> None:
        members = b.params
        # If the params already are consecutive slices of one storage, update them through one
        # flat alias. On CUDA, params that are not are moved into one flat buffer (each param's
        # ``.data`` becomes a view of it; the Parameter objects stay), so the update is one kernel
        # over contiguous memory instead of a gather and a scatter around it. Elsewhere they are
        # gathered into a scratch buffer and scattered back.
        alias = consecutive_alias([p.detach() for p in members], b.numels)
        if alias is None and b.contiguous and b.device.type in RELOCATE_DEVICES:
            flat = torch.empty(b.total, device=b.device, dtype=b.dtype)
            off = 0
            with torch.no_grad():
                for p, n in zip(members, b.numels):
                    view = flat[off:off + n].view(p.shape)
                    view.copy_(p)
                    p.data = view
                    off += n
            alias = flat
        if alias is not None:
            b.pflat, b.pviews = alias, None
        else:
            b.pflat = torch.empty(b.total, device=b.device, dtype=b.dtype)
            b.pviews = [flat_view(p.detach()) for p in members]
        b.gscratch = torch.empty(b.total, device=b.device, dtype=b.dtype)

    def _flat_grads(self, b: Bucket, grads: list[Tensor]) -> Tensor:
        """The bucket's grads as one flat tensor: an alias when they already are consecutive
        slices of one storage (the stacked engine's, a captured step's), else gathered into a
        scratch copy. Either way the caller may not write into it."""
        alias = consecutive_alias(grads, b.numels)
        if alias is not None:
            return alias
        torch.cat([flat_view(x) for x in grads], out=b.gscratch)
        return b.gscratch

    def _bind_pending(self, group: dict[str, Any], b: Bucket) -> None:
        off = 0
        for p, n in zip(b.params, b.numels):
            st = self.state[p]
            for key in b.pending:
                st[key] = b.flat[key][off:off + n].as_strided(p.shape, p.stride(), off)
            off += n
        b.pending = set()
        b.phase = self._phase(group, self.state[b.params[0]])  # type: ignore[attr-defined]
