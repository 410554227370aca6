"""Shared machinery of the optimizer library: flat buckets, kernel dispatch, doc fragments.

Every optimizer in :mod:`torchopt_review.optim` is a :class:`FlatOptimizer`.  A step goes:

1. For each param group, the params that have a gradient are bucketed by
   ``(device, dtype, phase)`` -- ``phase`` is what the update depends on besides the
   tensors (the ``step`` count, whether a momentum buffer exists yet), so every param
   of a bucket takes the same update.
2. Each bucket owns one flat, contiguous buffer per state key; ``optimizer.state[p][key]``
   is a view of its slice, so ``state_dict()`` keeps torch's layout.
3. A bucket is updated by *one* call: the C kernel in ``csrc/kernels.c`` (CPU, float32 and
   float64) which receives arrays of param / grad pointers, or the same update written in
   torch ops over flat tensors (other devices and dtypes, or when no C compiler works).
4. Anything the fast path cannot take (``fused=False``, ``differentiable``, ``capturable``,
   sparse or complex tensors, non-dense layouts) runs the module's readable single-tensor
   reference kernel -- the ground truth the fast path is tested against.

Bucket layouts are cached per group and rebuilt when a param's identity, storage, device
or dtype changes (``model.to()``), when the set of params with gradients changes, after
``load_state_dict`` and after unpickling.  Per-step scalars (lr, bias corrections) are
computed in Python as doubles, so an lr scheduler never triggers a rebuild.

CUDA graphs: :meth:`FlatOptimizer.graph_coefficients` and :meth:`FlatOptimizer.graph_apply` split
a step in two. The first runs on the host (step counters, bias corrections: the same
``_coefficients`` the C kernel gets) and returns the per-step scalars; the caller copies them into
a device tensor bound with :meth:`FlatOptimizer.bind_graph_coefficients`. The second runs only
device work -- each module's ``_flat_device``, the update written over flat tensors with the
scalars read from that tensor -- so it can be captured once in a CUDA graph and replayed every
step. On CUDA ``_flat_device`` is compiled by ``torch.compile`` into one kernel per bucket.
"""

from __future__ import annotations

import copy
import ctypes
import hashlib
import operator
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["FlatOptimizer", "load_kernels", "SEMANTICS"]

SEMANTICS = ("torch", "keras")
_GRAPH_WIDTH = 16  # per-step scalars of one bucket in the graph path (every H fits)
CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "privateuseone", "xla")

# --------------------------------------------------------------------------------------
# Doc fragments shared by the six classes (spliced into their docstrings with .format).
# --------------------------------------------------------------------------------------

DOC_PARAMS = r"""params (iterable): iterable of parameters or named parameters to optimize,
            or dicts defining parameter groups."""

DOC_FLAGS = r"""foreach (bool, optional): accepted for compatibility with ``torch.optim``; every
            path here already updates a whole (device, dtype) bucket at once, so it only
            matters for validation (``foreach=True`` with ``fused=True`` is an error, as in
            torch). (default: None)
        maximize (bool, optional): maximize the objective with respect to the params,
            instead of minimizing. (default: False)
        differentiable (bool, optional): whether autograd should occur through the
            optimizer step; runs the single-tensor reference kernel under autograd.
            (default: False)"""

DOC_CAPTURABLE = r"""capturable (bool, optional): keep ``step`` on the param's device and avoid host
            synchronization, so the step can be captured in a CUDA graph; runs the
            single-tensor reference kernel. (default: False)"""

DOC_FUSED = r"""fused (bool, optional): ``None`` uses the fused flat-bucket path where it can
            (a compiled C kernel on CPU for float32/float64, flat torch ops elsewhere) and the
            reference kernel for the rest; ``False`` always runs the readable single-tensor
            reference kernel; ``True`` requires the fused path and raises where it cannot
            be taken. (default: None)"""

DOC_SEMANTICS = r"""semantics (str, optional): ``"torch"`` computes what ``torch.optim`` computes;
            ``"keras"`` computes Keras 3's update (see "Differences from Keras / torch").
            Hyperparameter defaults stay torch's in both. (default: "torch")"""

DOC_KERAS_COMMON = r"""Under ``semantics="keras"`` weight decay is decoupled (``w <- w - lr*wd*w``
        before the update, Keras 3 ``base_optimizer.py`` ``_apply_weight_decay``, lines
        952-959, called before ``update_step`` at lines 587-594), bias corrections use one
        step counter per optimizer (Keras's ``iterations``, advanced once per ``apply``),
        saved in ``state_dict()["global_state"]``."""


_FRAGMENTS = {"{params}": DOC_PARAMS, "{flags}": DOC_FLAGS, "{capturable}": DOC_CAPTURABLE,
              "{fused}": DOC_FUSED, "{semantics}": DOC_SEMANTICS,
              "{keras_common}": DOC_KERAS_COMMON}


def fill_doc(text: str) -> str:
    """Splice the shared fragments (``{params}``, ``{fused}``, ...) into a docstring."""
    for key, value in _FRAGMENTS.items():
        text = text.replace(key, value)
    return text


# --------------------------------------------------------------------------------------
# The C kernels: compiled once per (source, compiler, CPU) into a cache dir, loaded by ctypes.
# --------------------------------------------------------------------------------------

# absolute: the file includes itself through __FILE__
_KERNEL_SOURCE = (Path(__file__).resolve().parent / "csrc" / "kernels.c")
_KERNEL_NAMES = ("sgd", "adagrad", "rmsprop", "adam", "nadam", "adamax")
# -O2 -ftree-vectorize: as fast as -O3 on these loops (measured) and ~25 % quicker to compile.
_CFLAGS = ["-O2", "-ftree-vectorize", "-fno-math-errno", "-ffp-contract=off", "-fopenmp-simd", "-std=gnu99",
           "-shared", "-fPIC"]

_ext_lock = threading.Lock()
_ext_state: dict[str, Any] = {"tried": False, "lib": None, "warned": False}


class _Kernels:
    """The loaded shared library: ``fn(name, dtype)`` -> ctypes function."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib = lib
        self.path = path
        self._fns: dict[tuple[str, torch.dtype], Any] = {}
        for name in _KERNEL_NAMES:
            for dtype, suffix in ((torch.float32, "f32"), (torch.float64, "f64")):
                fn = getattr(lib, f"{name}_{suffix}")
                # No argtypes: every argument is passed as a ctypes object of the exact C
                # type (c_int64 and arrays), which skips ctypes' conversion (~2 us a call).
                fn.restype = None
                self._fns[(name, dtype)] = fn

    def fn(self, name: str, dtype: torch.dtype):
        return self._fns.get((name, dtype))


def _cache_dir() -> Path:
    env = os.environ.get("TORCHOPT_REVIEW_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "torchopt_review"


def _cpu_signature() -> str:
    """The CPU model and feature flags: ``-march=native`` output is only valid on the same CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return platform.processor()
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features",
                                                                "CPU part")]
    return "\n".join(sorted(set(keep)))


def _compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise OSError(f"{cc} --version failed")
    return out.stdout


def _warn_fallback(reason: str) -> None:
    if not _ext_state["warned"]:
        _ext_state["warned"] = True
        warnings.warn(
            "torchopt_review: the C optimizer kernels are not available "
            f"({reason}); CPU steps use flat torch ops instead (correct, slower). "
            "Install a C compiler (cc) to get the fast path.",
            RuntimeWarning,
            stacklevel=3,
        )


def _build(cc: str, out: Path, native: bool) -> None:
    flags = _CFLAGS + (["-march=native"] if native else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private temp name, then rename: concurrent processes never see a half file.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run([cc, *flags, "-o", tmp, str(_KERNEL_SOURCE)],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise OSError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "cc failed")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_kernels() -> _Kernels | None:
    """Compile (once per cache key) and load the C kernels; ``None`` if that is impossible.

    The cache key hashes the kernel source, the compiler's ``--version``, the machine and the
    CPU's model and flags.  ``TORCHOPT_REVIEW_NO_EXT=1`` disables the kernels,
    ``TORCHOPT_REVIEW_CACHE`` moves the cache (default ``~/.cache/torchopt_review``),
    ``CC`` picks the compiler.  Failure emits one warning per process.
    """
    if _ext_state["tried"]:
        return _ext_state["lib"]
    with _ext_lock:
        if _ext_state["tried"]:
            return _ext_state["lib"]
        lib = None
        try:
            if os.environ.get("TORCHOPT_REVIEW_NO_EXT", "") not in ("", "0"):
                raise OSError("disabled by TORCHOPT_REVIEW_NO_EXT")
            if sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8:
                raise OSError("unsupported platform")
            cc = os.environ.get("CC", "cc")
            source = _KERNEL_SOURCE.read_bytes()
            cid = _compiler_id(cc)
            last_err: Exception | None = None
            for native in (True, False):
                key = hashlib.sha256(b"\0".join([
                    source, cid.encode(), platform.machine().encode(),
                    _cpu_signature().encode() if native else b"generic",
                    " ".join(_CFLAGS).encode(), b"native" if native else b"",
                ])).hexdigest()[:20]
                path = _cache_dir() / f"kernels-{key}.so"
                try:
                    if not path.exists():
                        _build(cc, path, native)
                    handle = ctypes.CDLL(str(path))
                    if handle.torchopt_kernels_abi_version() != 1:
                        raise OSError("ABI mismatch")
                    lib = _Kernels(handle, path)
                    break
                except (OSError, subprocess.SubprocessError) as err:
                    last_err = err
            if lib is None:
                raise OSError(str(last_err))
        except (OSError, subprocess.SubprocessError, FileNotFoundError) as err:
            _warn_fallback(str(err))
            lib = None
        _ext_state["lib"] = lib
        _ext_state["tried"] = True
        return lib


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _is_dense(t: Tensor) -> bool:
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


def _flat_view(t: Tensor) -> Tensor:
    """A 1-D view over the memory of a dense tensor (in memory order)."""
    if t.is_contiguous():
        return t.view(-1)
    return t.as_strided((t.numel(),), (1,))


def _scalar(x: Any) -> Any:
    """A hyperparameter that may be a 1-element tensor, as a Python number."""
    return x.item() if isinstance(x, Tensor) else x


def check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_betas(betas: Any) -> None:
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")


def check_nonneg(name: str, value: Any) -> None:
    if not 0.0 <= value:
        raise ValueError(f"Invalid {name} value: {value}")


class _Bucket:
    """Params of one group sharing (device, dtype, phase), with their flat state buffers."""

    __slots__ = ("params", "idx", "whole", "step_np", "numels", "total", "device", "dtype", "phase", "flat",
                 "scalars", "pending", "contiguous", "strides", "c_fn", "c_n", "c_H", "c_F", "c_P", "c_G", "c_N",
                 "c_S", "pflat", "pviews", "gscratch", "work", "extra", "graph_H", "graph_F", "graph_h")

    def __init__(self) -> None:
        self.extra: dict[str, Any] = {}


class _GroupPlan:
    __slots__ = ("group", "version", "params", "pptrs", "mask", "buckets", "reference")


# --------------------------------------------------------------------------------------
# The base class
# --------------------------------------------------------------------------------------


class FlatOptimizer(torch.optim.Optimizer):
    """Base class: bucketing, flat state, kernel dispatch and the keras/torch plumbing.

    Subclasses define:

    * ``_kernel`` -- the C kernel's name in ``csrc/kernels.c``;
    * ``_flat_keys(group)`` -- full-size state keys, in the kernel's ``S`` order;
    * ``_scalar_keys`` -- 0-d per-param state (``step``, ``mu_product``), kept in one small
      float32 buffer per bucket;
    * ``_init_state(group, p, state)`` -- torch's lazy state initialisation;
    * ``_phase(group, state)`` -- what must be equal for params to share one update;
    * ``_coefficients(group, bucket)`` -> ``(H, F)``: per-step doubles and flags for the
      kernels (it also advances the bucket's scalar state);
    * ``_flat_torch(group, p, g, S, H, F, work)`` -- the fused update in torch ops over flat
      tensors (``S`` maps state key -> flat buffer; ``g`` is a scratch copy of the grads
      that may be overwritten; ``work`` a second scratch buffer if ``_workspace``);
    * ``_reference(group, p, grad, state)`` -- the single-tensor reference kernel.
    """

    _kernel: str = ""
    _scalar_keys: tuple[str, ...] = ("step",)
    _supports_sparse: bool = False
    _sparse_error: str = "does not support sparse gradients"
    _workspace: bool = False  # whether _flat_torch needs a second full-size scratch buffer

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
        self._plans: dict[int, _GroupPlan] = {}
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
        self._init_runtime_after_load()

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
        glob = state_dict.get("global_state")
        super().load_state_dict(state_dict)
        if glob is not None:
            self._global_state = copy.deepcopy(glob)
        else:
            self._global_state = self._derive_global_state()
        self._plans = {}
        self._version += 1

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
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
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
                self._step_group(group, grads)
        finally:
            if grad_mode != wanted:
                torch.set_grad_enabled(grad_mode)
        return loss

    def _use_reference(self, group: dict[str, Any]) -> bool:
        return (group.get("fused") is False or bool(group.get("differentiable"))
                or bool(group.get("capturable")))

    def _step_group(self, group: dict[str, Any], grads: list[Tensor | None]) -> None:
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
            if not self._run_bucket(group, bucket, bgrads):
                # A grad this bucket's kernel cannot read (sparse, other layout): take the
                # reference path for these params and rebuild the layout next step.
                self._reference_step(group, bucket.params)
                self._plans.pop(id(group), None)
        if plan.reference:
            self._reference_step(group, plan.reference)

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

    # ---------------------------------------------------------------- plan (bucket layout)

    def _fast_eligible(self, group: dict[str, Any], p: Tensor, g: Tensor) -> bool:
        if g.is_sparse:
            if not self._supports_sparse or group.get("fused"):
                raise RuntimeError(f"{type(self).__name__} {self._sparse_error}")
            return False
        ok = (p.is_floating_point() and _is_dense(p) and g.layout == torch.strided
              and g.stride() == p.stride())
        if not ok and group.get("fused"):
            raise RuntimeError(
                f"{type(self).__name__}(fused=True) cannot take this parameter "
                f"(dtype={p.dtype}, shape={tuple(p.shape)}, complex or non-dense layout or "
                "a gradient whose strides differ from the parameter's); use fused=None"
            )
        return ok

    def _build_plan(self, group: dict[str, Any], params: list[Tensor],
                    grads: list[Tensor | None]) -> _GroupPlan:
        old = self._plans.get(id(group))
        old_buckets = {}
        if old is not None and old.group is group and old.version == self._version:
            old_buckets = {tuple(map(id, b.params)): b for b in old.buckets}

        keyed: dict[Any, list[int]] = {}
        reference: list[Tensor] = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                continue
            state = self._ensure_state(group, p)
            if self._fast_eligible(group, p, g):
                key = (p.device, p.dtype, self._phase(group, state))
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

        plan = _GroupPlan()
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
    def _bucket_storages(b: _Bucket) -> list[Tensor]:
        return [*b.flat.values(), *b.scalars.values()]

    def _bucket_owns_state(self, b: _Bucket) -> bool:
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
                     device: torch.device, dtype: torch.dtype, phase: Any) -> _Bucket:
        b = _Bucket()
        b.params, b.idx, b.device, b.dtype, b.phase = members, idx, device, dtype, phase
        b.numels = [p.numel() for p in members]
        b.total = sum(b.numels)
        b.contiguous = all(p.is_contiguous() for p in members)
        b.strides = [p.stride() for p in members]
        states = [self.state.get(p, {}) for p in members]

        # Full-size state: one flat buffer per key; each param's state is a view with the
        # param's own strides (torch's preserve_format).
        b.flat, b.pending = {}, set()
        for key in self._flat_keys(group):
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
        for key in self._scalar_keys:
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
        b.work = None
        kernels = load_kernels() if device.type == "cpu" and self._kernel else None
        if kernels is not None and os.environ.get("TORCHOPT_REVIEW_FORCE_TORCH_OPS", "") in ("", "0"):
            b.c_fn = kernels.fn(self._kernel, dtype)
        if b.c_fn is not None:
            n = len(members)
            b.c_n = ctypes.c_int64(n)
            b.c_P = (ctypes.c_void_p * n)(*[p.data_ptr() for p in members])
            b.c_G = (ctypes.c_void_p * n)()
            b.c_N = (ctypes.c_int64 * n)(*b.numels)
            b.c_H = (ctypes.c_double * 16)()
            b.c_F = (ctypes.c_int64 * 8)()
            self._refresh_state_ptrs(group, b)
        else:
            self._prepare_torch_ops(b)
        return b

    def _refresh_state_ptrs(self, group: dict[str, Any], b: _Bucket) -> None:
        slots = self._c_slots(group)
        ptrs = [b.flat[k].data_ptr() if k is not None else 0 for k in slots] + [0]
        b.c_S = (ctypes.c_void_p * len(ptrs))(*ptrs)

    def _c_slots(self, group: dict[str, Any]) -> tuple[str | None, ...]:
        """The C kernel's ``S`` array: state keys by slot (``None`` for an unused slot)."""
        return self._flat_keys(group)

    def _prepare_torch_ops(self, b: _Bucket) -> None:
        members = b.params
        # If the params already are consecutive slices of one storage, update them through one
        # flat alias. On CUDA, params that are not are moved into one flat buffer (each param's
        # ``.data`` becomes a view of it; the Parameter objects stay), so the update is one kernel
        # over contiguous memory instead of a gather and a scatter around it. Elsewhere they are
        # gathered into a scratch buffer and scattered back.
        alias = _consecutive_alias([p.detach() for p in members], b.numels)
        relocate = (b.device.type == "cuda" and os.environ.get("TORCHOPT_REVIEW_NO_RELOCATE", "") in ("", "0")
                    or os.environ.get("TORCHOPT_REVIEW_FORCE_RELOCATE", "") not in ("", "0"))  # (tests, on CPU)
        if alias is None and b.contiguous and relocate:
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
            b.pviews = [_flat_view(p.detach()) for p in members]
        b.gscratch = torch.empty(b.total, device=b.device, dtype=b.dtype)
        b.work = torch.empty(b.total, device=b.device, dtype=b.dtype) if self._workspace else None

    def _flat_grads(self, b: _Bucket, grads: list[Tensor]) -> Tensor:
        """The bucket's grads as one flat tensor: an alias when they already are consecutive
        slices of one storage (the stacked engine's, a captured step's), else gathered into a
        scratch copy. Either way the caller may not write into it (see ``_flat_torch``)."""
        alias = _consecutive_alias(grads, b.numels)
        if alias is not None:
            return alias
        torch.cat([_flat_view(x) for x in grads], out=b.gscratch)
        return b.gscratch

    # ---------------------------------------------------------------- fast path

    def _run_bucket(self, group: dict[str, Any], b: _Bucket, grads: list[Tensor]) -> bool:
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
            b.c_H[:len(H)] = H
            b.c_F[:len(F)] = F
            b.c_fn(b.c_n, b.c_P, b.c_G, b.c_N, b.c_S, b.c_H, b.c_F)
            # the kernel wrote the params behind autograd's back: bump their versions
            torch.autograd.graph.increment_version(b.params)
        elif self._device_kernels_on(b):
            # one kernel per bucket: _flat_device (compiled on CUDA), its scalars copied in
            h = device_scalars(H, b.device, torch.float64 if b.dtype == torch.float64 else torch.float32)
            self._apply_device(b, grads, h, _branches(H), list(F))
        else:
            g = b.gscratch
            torch.cat([_flat_view(x) for x in grads], out=g)
            if b.pviews is not None:
                torch.cat(b.pviews, out=b.pflat)
            S = b.flat
            self._flat_torch(group, b.pflat, g, S, H, F, b.work)
            if b.pviews is not None:
                torch._foreach_copy_(b.pviews, list(b.pflat.split(b.numels)))
            else:
                torch.autograd.graph.increment_version(b.params)
        if b.pending:
            self._bind_pending(group, b)
        return True

    def _bind_pending(self, group: dict[str, Any], b: _Bucket) -> None:
        off = 0
        for p, n in zip(b.params, b.numels):
            st = self.state[p]
            for key in b.pending:
                st[key] = b.flat[key][off:off + n].as_strided(p.shape, p.stride(), off)
            off += n
        b.pending = set()
        b.phase = self._phase(group, self.state[b.params[0]])

    # ---------------------------------------------------------------- CUDA-graph path

    def graph_buckets(self) -> list[tuple[dict[str, Any], _Bucket]]:
        """The fast-path buckets, in a fixed order (after at least one ordinary :meth:`step`)."""
        out = []
        for group in self.param_groups:
            plan = self._plans.get(id(group))
            if plan is None or self._use_reference(group) or plan.reference:
                raise RuntimeError("graph steps need every param on the fused flat path and one ordinary "
                                   "step() first (it lays out the buckets and initialises the state)")
            for b in plan.buckets:
                if b.pending:
                    raise RuntimeError("graph steps need the optimizer state initialised: take one step() first")
                if b.pflat is None:
                    self._prepare_torch_ops(b)
                out.append((group, b))
        return out

    def graph_coefficients(self) -> list[float]:
        """Host half of a step: advance the step counters and return every bucket's per-step
        scalars, concatenated in :meth:`graph_buckets` order (``graph_width()`` floats)."""
        self._global_state["step"] = int(self._global_state.get("step", 0)) + 1
        self._begin_step()
        out: list[float] = []
        for group, b in self.graph_buckets():
            H, F = self._coefficients(group, b)
            if b.extra.get("graph_F") not in (None, list(F)):
                raise RuntimeError(f"{type(self).__name__}: a captured step's flags changed ({F}); re-capture")
            b.extra["graph_F"] = list(F)
            # the kernels use the host values only to pick branches (== 0, == 1): pass just that,
            # so a compiled kernel's guards do not change with the step's bias corrections
            b.graph_H, b.graph_F = _branches(H), list(F)
            out.extend(float(x) for x in H)
            out.extend([0.0] * (_GRAPH_WIDTH - len(H)))
        return out

    def graph_width(self) -> int:
        return _GRAPH_WIDTH * len(self.graph_buckets())

    def bind_graph_coefficients(self, h: Tensor) -> None:
        """Read the per-step scalars of :meth:`graph_apply` from ``h`` (a device tensor of
        ``graph_width()`` float32s that the caller fills before each replay)."""
        buckets = self.graph_buckets()
        if h.numel() != _GRAPH_WIDTH * len(buckets):
            raise ValueError(f"expected {_GRAPH_WIDTH * len(buckets)} coefficients, got {h.numel()}")
        for i, (_, b) in enumerate(buckets):
            b.graph_h = h[i * _GRAPH_WIDTH:(i + 1) * _GRAPH_WIDTH]

    def graph_apply(self) -> None:
        """Device half of a step: no host sync, no host-computed scalar, so it can be captured."""
        for _, b in self.graph_buckets():
            self._apply_device(b, [p.grad for p in b.params], b.graph_h, b.graph_H, b.graph_F)

    def graph_step(self) -> None:
        """Both halves, for testing and for eager use of the device kernels (any device)."""
        if not self._plans:
            raise RuntimeError("take one ordinary step() first")
        H = self.graph_coefficients()
        self.bind_graph_coefficients(device_scalars(H, self.graph_buckets()[0][1].device))
        self.graph_apply()

    def _apply_device(self, b: _Bucket, grads: list[Tensor], h: Tensor, Hs: list[float], F: list[int]) -> None:
        """One bucket through ``_flat_device``: params gathered (unless already one flat
        block), the kernel, params scattered back (or their versions bumped)."""
        g = self._flat_grads(b, grads)  # _flat_device only reads it
        if b.pviews is not None:
            torch.cat(b.pviews, out=b.pflat)
        self._device_kernel(b)(b.pflat, g, b.flat, h, Hs, F)
        if b.pviews is not None:
            torch._foreach_copy_(b.pviews, list(b.pflat.split(b.numels)))
        else:
            torch.autograd.graph.increment_version(b.params)

    @staticmethod
    def _device_kernels_on(b: _Bucket) -> bool:
        """Whether an ordinary step of this (non-C) bucket runs ``_flat_device``: on CUDA unless
        ``TORCHOPT_REVIEW_NO_DEVICE_KERNELS=1``; elsewhere only when forced (tests)."""
        env = os.environ.get
        if b.device.type == "cuda":
            return env("TORCHOPT_REVIEW_NO_DEVICE_KERNELS", "") in ("", "0")
        return env("TORCHOPT_REVIEW_FORCE_DEVICE_KERNELS", "") not in ("", "0")

    def _device_kernel(self, b: _Bucket) -> Callable[..., None]:
        """``_flat_device``; on CUDA compiled once per (class, flags) into one fused kernel."""
        forced = os.environ.get("TORCHOPT_REVIEW_COMPILE", "") not in ("", "0")  # (tests: compile on CPU too)
        if (b.device.type != "cuda" and not forced) or os.environ.get("TORCHOPT_REVIEW_NO_COMPILE", "") not in ("", "0"):
            return self._flat_device
        fn = b.extra.get("compiled")
        if fn is None:
            fn = b.extra["compiled"] = torch.compile(self._flat_device, fullgraph=True, dynamic=False)
        return fn

    def _flat_device(self, p: Tensor, g: Tensor, S: dict[str, Tensor], h: Tensor,
                     H: list[float], F: list[int]) -> None:
        """The update over flat tensors with the per-step scalars read from the tensor ``h``
        (same layout as ``_coefficients``' H); ``H`` only picks static branches: each entry is
        0.0, 1.0, or 2.0 for any other value, so it may only be compared with 0.0 and 1.0."""
        raise NotImplementedError

    @staticmethod
    def _device_prologue(p: Tensor, g: Tensor, h: Tensor, H: list[float],
                         l2: int, dm: int, gs: int, kwd: int, klr: int) -> Tensor:
        """Weight decay (torch's L2 / decoupled, Keras's ``w - w*wd*lr``) and ``maximize`` with
        scalars from ``h`` at the given indices; returns the (possibly new) gradient."""
        if H[dm] != 1.0:
            p.mul_(h[dm])
        if H[kwd] != 0.0:
            p.sub_(p * h[kwd] * h[klr])
        if H[gs] != 1.0:
            g = -g
        if H[l2] != 0.0:
            g = g + p * h[l2]
        return g

    # ---------------------------------------------------------------- hooks (subclasses)

    def _flat_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        raise NotImplementedError

    def _init_state(self, group: dict[str, Any], p: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _phase(self, group: dict[str, Any], state: dict[str, Any]) -> Any:
        return float(state["step"])

    def _coefficients(self, group: dict[str, Any], b: _Bucket) -> tuple[list[float], list[int]]:
        raise NotImplementedError

    def _flat_torch(self, group, p, g, S, H, F, work) -> None:
        raise NotImplementedError

    def _reference(self, group: dict[str, Any], p: Tensor, grad: Tensor,
                   state: dict[str, Any]) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- helpers for subclasses

    def _advance_step(self, b: _Bucket) -> float:
        """Add one to the bucket's per-param ``step`` and return the new value."""
        if b.step_np is not None:
            b.step_np += 1
            return float(b.step_np[0])
        buf = b.scalars["step"]
        buf.add_(1)
        return float(buf[0])

    def _keras_step(self) -> int:
        return int(self._global_state["step"])

    @staticmethod
    def _decay_terms(group: dict[str, Any], lr: float, decoupled: bool,
                     keras: bool) -> tuple[float, float, float, float]:
        """Weight decay as kernel scalars ``(l2, dm, kwd, klr)``.

        ``l2`` is added to the gradient times the param (torch's L2 penalty); the param is first
        replaced by ``w*dm - (w*kwd)*klr``: ``dm = 1 - lr*wd`` is torch's decoupled decay,
        ``kwd, klr = wd, lr`` is Keras's ``variable - variable * wd * lr`` (same rounding).
        """
        wd = float(_scalar(group["weight_decay"]))
        if wd == 0:
            return 0.0, 1.0, 0.0, 0.0
        if keras:
            return 0.0, 1.0, wd, lr
        if decoupled:
            return 0.0, 1.0 - lr * wd, 0.0, 0.0
        return wd, 1.0, 0.0, 0.0

    @staticmethod
    def _apply_decay_torch_ops(p: Tensor, dm: float, kwd: float, klr: float) -> None:
        if dm != 1.0:
            p.mul_(dm)
        if kwd != 0.0:
            p.sub_(p * kwd * klr)


def device_scalars(values: list[float], device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """Host scalars as a tensor on ``device``; to CUDA from a fresh pinned block, without a host
    sync (the caching host allocator keeps the block alive until the copy has run)."""
    h = torch.tensor(values, dtype=dtype)
    return h.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else h.to(device)


def _branches(H: list[float]) -> list[float]:
    """What ``_flat_device`` may read of the host scalars: 0.0, 1.0, or 2.0 for any other value
    (it only picks branches with them), so a compiled kernel's guards do not change per step."""
    return [x if x in (0.0, 1.0) else 2.0 for x in map(float, H)]


def _consecutive_alias(tensors: list[Tensor], numels: list[int]) -> Tensor | None:
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


def zero_scalar_state(p: Tensor, capturable: bool, value: float = 0.0) -> Tensor:
    """A 0-d float32 tensor like torch's ``state['step']``: on CPU, or the param's device."""
    if capturable:
        return torch.full((), value, dtype=torch.float32, device=p.device)
    return torch.tensor(value, dtype=torch.float32)


def real_views(*tensors: Tensor) -> list[Tensor]:
    """``torch.view_as_real`` for complex tensors, identity otherwise (reference kernels)."""
    return [torch.view_as_real(t) if t is not None and torch.is_complex(t) else t
            for t in tensors]


def ref_step(state: dict[str, Any], capturable: bool) -> Any:
    """Advance ``state['step']`` in place; its value as a float (tensor when capturable)."""
    step_t = state["step"]
    step_t += 1
    return step_t if capturable else float(step_t)


def as_float(x: Any, keep_tensor: bool) -> Any:
    if isinstance(x, Tensor) and not keep_tensor:
        return x.item()
    return x
