"""The C kernels (``csrc/kernels.c``): compiled once per (source, compiler, CPU) into a cache
directory, loaded with ctypes, and checked against the Python field lists.

``load_kernels()`` returns the loaded library or ``None`` (with one warning per process) where no
C compiler works; the optimizers then run their torch-op flat kernel on the CPU too. The cache
directory is ``$TORCHOPT_REVIEW_CACHE`` (default ``~/.cache/torchopt_review``) and the compiler
``$CC`` (default ``cc``).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_kernels", "Kernels", "ABI_VERSION", "run_kernel"]

ABI_VERSION = 3  # torchopt_kernels_abi_version() of a library this module can drive
# absolute: the file includes itself through __FILE__
KERNEL_SOURCE = (Path(__file__).resolve().parent / "csrc" / "kernels.c")
# -O2 -ftree-vectorize: as fast as -O3 on these loops (measured) and ~25 % quicker to compile.
CFLAGS = ["-O2", "-ftree-vectorize", "-fno-math-errno", "-ffp-contract=off", "-fopenmp-simd", "-std=gnu99",
          "-shared", "-fPIC"]

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "lib": None, "warned": False}

# Buckets of at least 2 * MIN_CHUNK elements are split between torch's intra-op threads
# (torch.get_num_threads()), each thread updating >= MIN_CHUNK consecutive elements; below that a
# thread's start-up and hand-off cost more than it saves. ctypes releases the GIL during the call,
# so plain Python threads run the chunks in parallel -- no second OpenMP runtime beside torch's.
MIN_CHUNK = 1 << 18
_ALIGN = 16  # chunk boundaries on 64-byte lines: no two threads write one cache line
_pool: dict[str, Any] = {"executor": None, "workers": 0}


def _executor(workers: int) -> concurrent.futures.ThreadPoolExecutor:
    if _pool["workers"] < workers:
        old = _pool["executor"]
        _pool["executor"] = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="torchopt_review")
        _pool["workers"] = workers
        if old is not None:
            old.shutdown(wait=False)
    return _pool["executor"]


def run_kernel(fn: Any, args: tuple, total: int) -> None:
    """``fn(*args, lo, hi)`` over the elements ``[0, total)`` of a bucket: in one call, or split
    into one contiguous chunk per torch intra-op thread (the caller runs the last chunk). The
    kernels are elementwise, so the result is the same bit for bit."""
    k = min(torch.get_num_threads(), total // MIN_CHUNK)
    if k <= 1:
        fn(*args, ctypes.c_int64(0), ctypes.c_int64(total))
        return
    bounds = [0] + [total * i // k // _ALIGN * _ALIGN for i in range(1, k)] + [total]
    pool = _executor(k - 1)
    futures = [pool.submit(fn, *args, ctypes.c_int64(bounds[i]), ctypes.c_int64(bounds[i + 1]))
               for i in range(k - 1)]
    fn(*args, ctypes.c_int64(bounds[k - 1]), ctypes.c_int64(total))
    for f in futures:
        f.result()


def fields_string(scalars: tuple[str, ...], flags: tuple[str, ...]) -> str:
    """What ``<kernel>_fields()`` in ``kernels.c`` returns for these field lists."""
    return "".join(f"{s}," for s in scalars) + ";" + "".join(f"{f}," for f in flags)


class Kernels:
    """The loaded shared library: ``fn(name, dtype, scalars, flags)`` -> ctypes function."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib = lib
        self.path = path
        self._fns: dict[tuple[str, torch.dtype], Any] = {}
        self._checked: set[str] = set()

    def declared_fields(self, name: str) -> str:
        """``<name>_fields()`` of the library: its scalar and flag field lists, as one string."""
        declared = getattr(self.lib, f"{name}_fields")
        declared.restype = ctypes.c_char_p
        return declared().decode()

    def fn(self, name: str, dtype: torch.dtype, scalars: tuple[str, ...], flags: tuple[str, ...]):
        """The kernel ``name`` for ``dtype`` (None for other dtypes), after checking that its C
        structs have exactly the Python field lists ``scalars`` and ``flags``, in order."""
        if name not in self._checked:
            if self.declared_fields(name) != fields_string(scalars, flags):
                raise RuntimeError(f"csrc/kernels.c declares the fields {self.declared_fields(name)!r} "
                                   f"for {name!r}, its Python module {fields_string(scalars, flags)!r}")
            self._checked.add(name)
        key = (name, dtype)
        if key not in self._fns:
            suffix = {torch.float32: "f32", torch.float64: "f64"}.get(dtype)
            fn = getattr(self.lib, f"{name}_{suffix}") if suffix else None
            if fn is not None:
                # No argtypes: every argument is passed as a ctypes object of the exact C
                # type (c_int64 and arrays), which skips ctypes' conversion (~2 us a call).
                fn.restype = None
            self._fns[key] = fn
        return self._fns[key]


def cache_dir() -> Path:
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


def compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise OSError(f"{cc} --version failed")
    return out.stdout


def _warn_fallback(reason: str) -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            "torchopt_review: the C optimizer kernels are not available "
            f"({reason}); CPU steps use flat torch ops instead (correct, slower). "
            "Install a C compiler (cc) to get the fast path.",
            RuntimeWarning,
            stacklevel=4,
        )


def build(cc: str, out: Path, native: bool) -> None:
    flags = CFLAGS + (["-march=native"] if native else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a private temp name, then rename: concurrent processes never see a half file.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        res = subprocess.run([cc, *flags, "-o", tmp, str(KERNEL_SOURCE)],
                             capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise OSError(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "cc failed")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_kernels() -> Kernels | None:
    """Compile (once per cache key) and load the C kernels; ``None`` if that is impossible.

    The cache key hashes the kernel source, the compiler's ``--version``, the machine and the
    CPU's model and flags. ``TORCHOPT_REVIEW_CACHE`` moves the cache (default
    ``~/.cache/torchopt_review``), ``CC`` picks the compiler. Failure emits one warning per
    process.
    """
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        lib = None
        try:
            if sys.byteorder != "little" or ctypes.sizeof(ctypes.c_void_p) != 8:
                raise OSError("unsupported platform")
            cc = os.environ.get("CC", "cc")
            source = KERNEL_SOURCE.read_bytes()
            cid = compiler_id(cc)
            last_err: Exception | None = None
            for native in (True, False):
                key = hashlib.sha256(b"\0".join([
                    source, cid.encode(), platform.machine().encode(),
                    _cpu_signature().encode() if native else b"generic",
                    " ".join(CFLAGS).encode(), b"native" if native else b"",
                ])).hexdigest()[:20]
                path = cache_dir() / f"kernels-{key}.so"
                try:
                    if not path.exists():
                        build(cc, path, native)
                    handle = ctypes.CDLL(str(path))
                    if handle.torchopt_kernels_abi_version() != ABI_VERSION:
                        raise OSError("ABI mismatch")
                    lib = Kernels(handle, path)
                    break
                except (OSError, subprocess.SubprocessError) as err:
                    last_err = err
            if lib is None:
                raise OSError(str(last_err))
        except (OSError, subprocess.SubprocessError, FileNotFoundError) as err:
            _warn_fallback(str(err))
            lib = None
        _state["lib"] = lib
        _state["tried"] = True
        return lib
