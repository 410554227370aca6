"""What every benchmark shares: interleaved rounds, medians, device sync, the printed tables and
the line that says which machine (and how busy) the numbers come from."""

from __future__ import annotations

import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import UserError

# The repository root: worker processes run there (the first-step probe, the Keras worker).
REPO = Path(__file__).resolve().parents[2]


# ---- measuring ---------------------------------------------------------------------------

def median(xs: Iterable[float]) -> float:
    """The median of the numbers that are not None or NaN; NaN when none are."""
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def interleave(contenders: dict[str, Callable[[], Any]], rounds: int, *,
               on_round: Callable[[int], None] | None = None) -> dict[str, list[Any]]:
    """Call every contender once per round, A B C, B C A, C A B ...; their results per name.

    Rotating the order means a contender is not always the one that runs right after (or
    before) another, so load that drifts between rounds hits all of them alike.
    """
    names = list(contenders)
    out: dict[str, list[Any]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            out[name].append(contenders[name]())
        if on_round is not None:
            on_round(r)
    return out


class Sync:
    """Device synchronisation around timings (a no-op on CPU)."""

    def __init__(self, device: Any):
        import torch

        self.cuda = str(device).startswith("cuda")
        self._sync = torch.cuda.synchronize if self.cuda else (lambda: None)

    def __call__(self) -> None:
        self._sync()


def check_accelerator(accelerator: str) -> str:
    """The torch device for ``--accelerator``; a UserError when a GPU is asked for but absent."""
    import torch

    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator == "gpu":
        if not torch.cuda.is_available():
            raise UserError("--accelerator gpu: no CUDA device is visible (torch.cuda.is_available() is False); "
                            "run this on a machine with an NVIDIA GPU, or use --accelerator cpu")
        return "cuda"
    return "cpu"


# ---- printing ----------------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    if seconds is None or math.isnan(seconds):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:,.2f} ms"
    return f"{seconds:,.2f} s"


def fmt_ratio(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def fmt_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "—"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if abs(n) >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def table(headers: list[str], rows: list[list[Any]], aligns: str | None = None) -> str:
    """A plain-text table; ``aligns`` one char per column, ``l`` or ``r`` (default: first l)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    aligns = aligns or ("l" + "r" * (len(headers) - 1))
    lines = []
    for j, r in enumerate(cells):
        parts = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, aligns)]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(text: str = "", *, err: bool = False) -> None:
    print(text, file=sys.stderr if err else sys.stdout, flush=True)


def progress(text: str) -> None:
    """A progress note on stderr (the tables go to stdout)."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


# ---- the machine -------------------------------------------------------------------------

def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_line() -> str:
    """CPU model, usable cores, torch version and load average: printed above every bench."""
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        load = ""
    return f"{cpu}, {_usable_cores()} usable cores, torch {torch.__version__}, {load}"


def load_warning() -> str | None:
    """A warning when the machine is busier than its cores: multi-threaded timings then mislead."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = _usable_cores()
    if load > cores:
        return (f"WARNING: load average {load:.1f} on {cores} usable cores (other processes are running): "
                "timings with more than one torch thread are unreliable here -- an OpenMP thread that is "
                "descheduled stalls the others at every barrier -- and single-thread ones are slower than on a "
                "quiet machine; only the side-by-side ratios of one run mean much")
    return None


def header(title: str) -> None:
    """The first lines of every bench: what ran where, and a warning if the machine is busy."""
    say(f"{title}: {machine_line()}")
    warning = load_warning()
    if warning:
        say(warning)
