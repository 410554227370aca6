"""``bench review``: a small review (a few optimizers x seeds, one epoch) timed with the pool
engine at each worker count and with the stacked engine, extrapolated to the blog's full review
(8 optimizers x 5 seeds x 20 epochs); ``--full`` also runs and times the full review itself."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .timing import check_accelerator, fmt_time, header, interleave, machine_line, median, progress, say, table


def timed_train_run(cfg: Any, **kwargs: Any) -> dict[str, Any]:
    """``train.run`` that also leaves ``bench_timing.json`` (wall-clock start and end) in the run
    folder: the review bench's ``run_fn`` (module level, so worker processes can unpickle it)."""
    # Imports before the clock starts: a worker's first-run imports count as start-up, not per run.
    import lightning  # noqa: F401
    import lightning_module  # noqa: F401

    from ..train import run

    t0 = time.time()
    rec = run(cfg, **kwargs)
    (Path(cfg.run_dir) / "bench_timing.json").write_text(json.dumps({"start": t0, "end": time.time()}))
    return rec


def bench_review(args: argparse.Namespace) -> dict[str, Any]:
    from .. import data as fm
    from ..config import CONFIG_DIR
    from ..review import load_review, review

    device = check_accelerator(args.accelerator)
    quick = args.quick
    opts = args.opts or ["adam", "sgd"]
    seeds = args.seeds or ([0] if quick else [0, 1])
    epochs = 1
    worker_counts = args.workers or ([1] if quick else [1, 2])
    rounds = args.rounds or 1
    steps = args.steps or (20 if quick else None)
    data_dir = str(fm.find_data_dir(args.data_dir))  # the review's workers load the files themselves
    n_train = len(fm.load_fashion_mnist(data_dir).train_labels)
    val = min(6000, max(1, n_train // 10))
    full = {"opts": 8, "seeds": 5, "epochs": 20}
    header("bench review")
    say(f"a small review: {len(opts)} optimizer(s) ({', '.join(opts)}) x {len(seeds)} seed(s) x {epochs} epoch"
        + (f" of {steps} steps" if steps else "") + f", configs/review/blog.yaml settings, data {data_dir}; "
        f"workers {worker_counts}, {rounds} interleaved round(s)")
    tmp = Path(tempfile.mkdtemp(prefix="torchopt-bench-review-"))
    results: dict[str, Any] = {"machine": machine_line(), "runs": []}
    try:
        counter = [0]

        def make(workers: int | None) -> Callable[[], dict[str, Any]]:
            """A contender: the pool with ``workers`` processes, or (None) the stacked engine."""
            def go() -> dict[str, Any]:
                counter[0] += 1
                trainer = {"epochs": epochs, "accelerator": "gpu" if device == "cuda" else "cpu"}
                if steps:
                    trainer["limit_batches"] = steps
                exp = f"bench{counter[0]}"
                cfg = load_review(CONFIG_DIR / "review" / "blog.yaml", opts=list(opts), seeds=list(seeds),
                                  experiment=exp, logdir=str(tmp),
                                  cli_overrides={"trainer": trainer, "data": {"data_dir": data_dir, "val_size": val}})
                t0 = time.time()
                if workers is None:
                    res = review(cfg, report=False, stream=None, engine="stacked")
                else:
                    res = review(cfg, workers=workers, report=False, stream=None, run_fn=timed_train_run, engine="pool")
                t_end = time.time()
                bad = [o for o in res.outcomes if o.status != "done"]
                if bad:
                    raise RuntimeError(f"review run {bad[0].key} ended {bad[0].status}: {bad[0].error}")
                epoch_s = [float(o.result["wall_s"]) for o in res.outcomes]
                if workers is None:  # one process: its start-up is the time before the first epoch ends
                    return {"wall_s": t_end - t0, "epoch_s": median(epoch_s), "run_s": t_end - t0,
                            "startup_s": max(t_end - t0 - max(epoch_s), 0.0), "runs": len(res.outcomes)}
                per_run, starts = [], []
                for o in res.outcomes:
                    timing = json.loads((Path(o.run_dir) / "bench_timing.json").read_text())
                    per_run.append(timing["end"] - timing["start"])
                    starts.append(timing["start"])
                return {"wall_s": t_end - t0, "epoch_s": median(epoch_s), "run_s": median(per_run),
                        "startup_s": min(starts) - t0, "runs": len(res.outcomes)}
            return go

        engines = args.engines or (["stacked"] if device == "cuda" else ["pool", "stacked"])
        contenders: dict[Any, Callable[[], dict[str, Any]]] = {}
        if "pool" in engines:
            contenders.update({w: make(w) for w in worker_counts})
        if "stacked" in engines:
            contenders["stacked"] = make(None)
        progress(f"timing {rounds} round(s) of the small review: {', '.join(map(str, contenders))}")
        samples = interleave(contenders, rounds, on_round=lambda r: progress(f"  round {r + 1}/{rounds}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    n_small = len(opts) * len(seeds)
    n_full = full["opts"] * full["seeds"]
    full_steps = -(-(n_train - val) // 32)
    for w, s in samples.items():
        wall = median(x["wall_s"] for x in s)
        ep = median(x["epoch_s"] for x in s)
        startup = median(x["startup_s"] for x in s)
        fixed = max(median(x["run_s"] for x in s) - ep - (startup if w == "stacked" else 0.0), 0.0)
        ep_full = ep * full_steps / steps if steps else ep
        if w == "stacked":  # all runs in one epoch; on CPU its cost grows with the number of runs
            scale = n_full / n_small if device == "cpu" else float("nan")
            est = startup + fixed + full["epochs"] * ep_full * scale
            name = "stacked (1 process)"
        else:
            est = startup + math.ceil(n_full / w) * (fixed + full["epochs"] * ep_full)
            name = f"pool, {w} worker(s)"
        rows.append([name, fmt_time(wall), fmt_time(startup), fmt_time(ep) + (f" ({steps} steps)" if steps else ""),
                     fmt_time(fixed), f"{est / 60:,.1f} min ({est / 3600:.2f} h)" if math.isfinite(est)
                     else "not linear on a GPU: run --full"])
        results["runs"].append(dict(engine="stacked" if w == "stacked" else "pool", workers=None if w == "stacked" else w,
                                    wall_s=wall, startup_s=startup, epoch_s=ep, fixed_s=fixed,
                                    full_estimate_s=est if math.isfinite(est) else None))
    ests = {r["workers"] if r["engine"] == "pool" else "stacked": r["full_estimate_s"] for r in results["runs"]}
    if "stacked" in ests and len(ests) > 1 and ests["stacked"]:
        best_pool = min((k for k in ests if k != "stacked"), key=lambda k: ests[k])
        ratio = ests[best_pool] / ests["stacked"]
        results["stacked_speedup_vs_pool"] = ratio
        say_after = (f"  full review, stacked vs the best pool ({best_pool} worker(s)), extrapolated: {ratio:.2f}x "
                     f"({'faster' if ratio >= 1 else 'slower'}); review --engine auto uses "
                     f"{'stacked' if device == 'cuda' else 'the pool'} on {device}. (The small review's wall "
                     "favours stacked by one process start-up less; the full review is dominated by epochs.)")
    else:
        say_after = ""
    say()
    say(f"[review] {n_small} runs of {epochs} epoch each; EXTRAPOLATION to the full blog review "
        f"({full['opts']} optimizers x {full['seeds']} seeds x {full['epochs']} epochs = {n_full} runs) on this machine")
    say(table(["engine", "small review wall", "start-up", "epoch (run.json wall_s)", "fixed cost",
               "full review (extrapolated)"], rows))
    if say_after:
        say(say_after)
    say("  worker start-up: review start -> first run's train.run() call (spawn, imports of torch and Lightning).")
    say(f"  extrapolation: start-up + ceil({n_full} / workers) x (per-run fixed cost + {full['epochs']} x epoch)"
        + (f", epoch scaled from {steps} to {full_steps} steps" if steps else "")
        + ". Fixed cost = a run's train.run() time minus its epoch's wall_s. Stacked: start-up + fixed + 20 x epoch x "
        f"({n_full} / {n_small} runs), linear on CPU. Assumes the machine's load stays as "
        "it was during this measurement, and the first epoch's speed for all 20.")
    if args.full:
        results["full"] = _full_review(args, device, data_dir)
    return results


def _full_review(args: argparse.Namespace, device: str, data_dir: str) -> dict[str, Any]:
    """The whole blog review (configs/review/blog.yaml: 8 optimizers x 5 seeds x 20 epochs, validation
    every epoch, test at the end, the report written), timed wall-clock from the call to the report."""
    from .. import stats
    from ..config import CONFIG_DIR
    from ..review import load_review, review

    engine = (args.engines or ["auto"])[0]
    tmp = Path(tempfile.mkdtemp(prefix="torchopt-bench-full-"))
    try:
        cfg = load_review(CONFIG_DIR / "review" / "blog.yaml", experiment="blog", logdir=str(tmp),
                          cli_overrides={"trainer": {"accelerator": "gpu" if device == "cuda" else "cpu"},
                                         "data": {"data_dir": data_dir}})
        progress(f"the full blog review on {device}, engine {engine} (this is the measurement: 40 runs x 20 epochs)")
        t0 = time.time()
        res = review(cfg, report=True, stream=None, engine=engine)
        wall = time.time() - t0
        say()
        say(f"[full review] configs/review/blog.yaml on {device}, engine {engine}: {len(res.outcomes)} runs "
            f"({res.count('done')} done, {res.count('diverged')} diverged, {res.count('failed')} failed), "
            f"report written: {res.report is not None}; WALL-CLOCK {fmt_time(wall)}"
            + (f"  (target <= 30 s on one H100: {'met' if wall <= 30 else 'MISSED'})" if device == "cuda" else ""))
        rows, out = [], {"wall_s": wall, "optimizers": {}}
        by_label: dict[str, list[float]] = {}
        for o in res.outcomes:
            if o.status == "done":
                metrics = list(csv.DictReader(open(Path(o.run_dir) / "metrics.csv")))
                by_label.setdefault(o.label, []).append(100 * float(metrics[-1]["val_acc"]))
        for label, accs in by_label.items():
            d = stats.describe(accs)
            rows.append([label, d.n, f"{d.mean:.2f} ± {d.std:.2f}"])
            out["optimizers"][label] = {"val_acc_mean": d.mean, "val_acc_std": d.std, "n": d.n}
        say(table(["optimizer", "seeds", "val acc % (epoch 20, mean ± sd)"], rows))
        if args.keep:
            kept = Path(args.keep)
            shutil.copytree(tmp / "blog", kept, dirs_exist_ok=True)
            say(f"  run folders and report copied to {kept}")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
