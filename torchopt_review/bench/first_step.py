"""``bench optim``'s first-step table: construct + first ``step()`` of our Adam in a fresh
interpreter, with the kernel cache warm and empty, beside torch's fused Adam."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .timing import REPO, fmt_time, interleave, median, progress, say, table

TARGET_FIRST_STEP_S = 2.0

# Run by a fresh interpreter: argv = optimizer name, semantics (or "torch.optim"), device.
_FIRST_STEP_CODE = r"""
import json, sys, time
t_start = time.perf_counter()
import torch
torch.set_num_threads(1)
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer
t_import = time.perf_counter() - t_start
device = sys.argv[3]
model = build_model("blog_mlp").to(device)
for p in model.parameters():
    p.grad = torch.randn_like(p) * 1e-2
if device.startswith("cuda"):
    torch.cuda.synchronize()
t0 = time.perf_counter()
if sys.argv[2] == "torch.optim":  # the baseline: torch's fastest Adam
    opt = torch.optim.Adam(model.parameters(), eps=1e-7, fused=True)
else:
    opt = create_optimizer(sys.argv[1], model.parameters(), semantics=sys.argv[2])
opt.step()
if device.startswith("cuda"):
    torch.cuda.synchronize()
t1 = time.perf_counter()
opt.step()
if device.startswith("cuda"):
    torch.cuda.synchronize()
t2 = time.perf_counter()
print(json.dumps({"import_s": t_import, "first_s": t1 - t0, "second_s": t2 - t1}))
"""


def first_step(name: str, semantics: str, device: str, cache: str | None) -> dict[str, float]:
    """Construct + first ``step()`` of ours in a fresh interpreter (imports timed separately).

    ``cache``: a directory for ``TORCHOPT_REVIEW_CACHE`` (an empty one forces a kernel build),
    or None for the default, warm cache.
    """
    env = dict(os.environ)
    if cache is not None:
        env["TORCHOPT_REVIEW_CACHE"] = cache
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _FIRST_STEP_CODE, name, semantics, device],
                         capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"first-step subprocess failed: {res.stderr.strip().splitlines()[-1:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    return out


def first_step_table(device: str, quick: bool) -> dict[str, Any]:
    """Warm cache, empty cache and torch's fused Adam, interleaved; prints the table."""
    progress("first step in fresh processes (warm and empty kernel cache)")
    reps = 1 if quick else 3
    first_step("adam", "keras", device, None)  # make sure the default cache is warm
    tmp_root = Path(tempfile.mkdtemp(prefix="torchopt-bench-cache-"))
    try:
        def warm() -> dict[str, float]:
            return first_step("adam", "keras", device, None)

        def cold() -> dict[str, float]:
            d = tempfile.mkdtemp(dir=tmp_root)  # a new, empty cache: the kernels are compiled
            return first_step("adam", "keras", device, d)

        def torch_fused() -> dict[str, float]:
            return first_step("adam", "torch.optim", device, None)

        samples = interleave({"warm": warm, "cold": cold, "torch": torch_fused}, reps)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    rows = []
    for kind, label in (("warm", "ours, warm cache (default)"), ("cold", "ours, empty cache (TORCHOPT_REVIEW_CACHE=new dir)"),
                        ("torch", "torch.optim.Adam(fused=True), for reference")):
        s = samples[kind]
        first = median(x["first_s"] for x in s)
        rows.append([label, fmt_time(first), fmt_time(median(x["second_s"] for x in s)),
                     fmt_time(median(x["import_s"] for x in s)), fmt_time(median(x["process_s"] for x in s)),
                     ("met" if first <= TARGET_FIRST_STEP_S else "MISSED") if kind == "warm" else ""])
    say()
    say(f"[first step] Adam (ours: keras semantics), blog MLP, fresh process, median of {reps}; "
        "construct + first step() (kernel build/load included; imports of torch and the library timed apart)")
    say(table(["cache", "first step", "second step", "imports (torch, ours)", "whole process",
               f"target <= {TARGET_FIRST_STEP_S:g} s warm"], rows, "lrrrrl"))
    say("  torch.optim.Optimizer.__init__ imports torch._dynamo on first use (its @_disable_dynamo), so every "
        "optimizer's first construction in a process pays that import; compare with the torch row.")
    return dict(samples)
