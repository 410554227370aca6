"""``bench optim``'s memory table: the optimizer state each contender keeps, and what one step
allocates (torch's allocator) and faults in (the OS), on the large parameter set."""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import sys
from typing import Any, Iterator

from .contenders import build_contenders, make_params
from .timing import fmt_bytes, progress, say, table


def state_bytes(opt: Any) -> int:
    """Bytes of the distinct storages behind ``opt.state`` (views into one flat buffer count once),
    plus the persistent scratch buffers of our flat torch-op path, if it is the one in use."""
    import torch

    seen: dict[int, int] = {}
    for st in opt.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor) and v.device.type != "meta":
                s = v.untyped_storage()
                seen[s.data_ptr()] = s.nbytes()
    total = sum(seen.values())
    # The scratch lives in the optimizer's private bucket plans (no public accessor yet); the C
    # kernels use none, torch.optim has no such attribute.
    for plan in getattr(opt, "_plans", {}).values():
        for b in getattr(plan, "buckets", ()):
            for attr in ("gscratch", "work"):
                t = getattr(b, attr, None)
                if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                    seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
                    total += t.untyped_storage().nbytes()
    return total


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's C++ side prints start/stop lines there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def step_allocations(opt: Any, steps: int = 3) -> tuple[float, float]:
    """(bytes torch's allocator hands out per step, minor page faults per step), after warm-up.

    Bytes: the torch profiler's ``profile_memory`` (positive self memory of every op), so it sees
    every tensor a step creates but nothing malloc'ed outside torch. Page faults (getrusage) see
    everything that touches fresh memory, torch or not -- a full-size temporary freed back to the
    OS every step shows up as ~numel*4/4096 faults.
    """
    from torch.profiler import ProfilerActivity, profile

    opt.step()
    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            opt.step()
    alloc = sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages()) / steps
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        opt.step()
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps
    return alloc, faults


def memory_table(names: list[str], shapes: list[tuple[int, ...]], device: str, quick: bool) -> list[dict[str, Any]]:
    """State bytes and per-step allocations, ours (keras semantics) vs torch; prints the table."""
    progress("memory: state bytes and per-step allocations (large set)")
    params = make_params(shapes, device, seed=1)
    numel = sum(p.numel() for p in params)
    rows, out = [], []
    for name in names:
        opts = build_contenders(name, params, reference=False, semantics=["keras"])
        for label, opt in opts.items():
            opt.step()
            sb = state_bytes(opt)
            alloc, faults = step_allocations(opt, steps=2 if quick else 3)
            rows.append([name, label, fmt_bytes(sb), f"{sb / numel:.1f}", fmt_bytes(alloc), f"{alloc / (4 * numel):.2f}",
                         f"{faults:,.0f}"])
            out.append(dict(name=name, contender=label, state_bytes=sb, alloc_bytes_per_step=alloc,
                            minor_faults_per_step=faults))
        del opts
        gc.collect()
    say()
    say(f"[memory, large set: {numel:,} params = {fmt_bytes(4 * numel)} fp32] optimizer state and what one step allocates")
    say(table(["optimizer", "contender", "state", "state B/param", "allocated / step", "÷ params size",
               "page faults / step"], rows, "llrrrrr"))
    say("  allocated/step: torch profiler (profile_memory), bytes handed out by torch's allocator per step; "
        "1.00 = one full-size temporary.\n  page faults/step: minor faults (getrusage), anything touching "
        f"fresh memory; one full-size temporary returned to the OS each step ≈ {4 * numel / 4096:,.0f}.")
    del params
    gc.collect()
    return out
