"""``python -m torchopt_review.bench optim|epoch|review``: the parser, the checks of its arguments
(each failure one ``error: ...`` line, exit status 2, before anything is measured) and dispatch."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ..errors import ArgumentParser, UserError, cli_entry
from .contenders import BYTES_PER_PARAM, PARAM_SETS
from .epoch import bench_epoch
from .optim import bench_optim
from .review import bench_review
from .timing import say

ENGINES = ("pool", "stacked")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return values


def _str_list(text: str) -> list[str]:
    values = [t.strip() for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m torchopt_review.bench",
                description="Benchmarks: optimizer steps (optim), a training epoch (epoch), a review (review).")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="optim|epoch|review")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="cpu",
                        help="device: cpu (default), gpu, or auto (gpu when CUDA is visible)")
        sp.add_argument("--quick", action="store_true", help="a short version (small sizes, few rounds)")
        sp.add_argument("--rounds", type=int, help="interleaved rounds (medians over them)")
        sp.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
        sp.add_argument("--debug", action="store_true", help="show tracebacks")

    o = sub.add_parser("optim", help="optimizer step time vs torch.optim and the bandwidth floor")
    common(o)
    o.add_argument("--opts", type=_str_list, help="registry names (default: all eight)")
    o.add_argument("--sets", type=_str_list, help="parameter sets: blog, large (20.9 M / 200 tensors), huge (355 M / 300); "
                                                  "default: blog,large on CPU, all three on a GPU")
    o.add_argument("--repeats", type=int, help="steps per round (default: 40 blog, 3 large)")
    o.add_argument("--threads", type=_int_list, default=[1],
                   help="torch thread counts, e.g. 1,2: one table per count, torch's contenders at the same "
                        "count (default: 1)")
    o.add_argument("--reference", action="store_true", help="also time ours with fused=False")
    o.add_argument("--no-memory", action="store_true", help="skip the state-memory / allocation table")
    o.add_argument("--no-first-step", action="store_true", help="skip the fresh-process first-step latency")

    e = sub.add_parser("epoch", help="one training epoch: plain loop, our Adam, the real path, Keras 3")
    common(e)
    e.add_argument("--batch-sizes", type=_int_list, help="default: 32,128")
    e.add_argument("--threads", type=_int_list, help="thread counts (default: 1,2)")
    e.add_argument("--steps", type=int, help="steps per measured epoch (times are then per measured epoch); default: a full epoch")
    e.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    e.add_argument("--synthetic", action="store_true", help="random data of Fashion-MNIST's size")
    e.add_argument("--no-keras", action="store_true", help="skip Keras 3")
    e.add_argument("--no-real", action="store_true", help="skip the real training path")
    e.add_argument("--lightning-default", action="store_true",
                   help="also time Lightning's default loop (always on a GPU)")
    e.add_argument("--no-profile", action="store_true", help="skip the profile of the real path")

    r = sub.add_parser("review", help="a small review with 1 and 2 workers, extrapolated to the blog's")
    common(r)
    r.add_argument("--workers", type=_int_list, help="worker counts (default: 1,2)")
    r.add_argument("--opts", type=_str_list, help="optimizers (default: adam,sgd)")
    r.add_argument("--seeds", type=_int_list, help="seeds (default: 0,1)")
    r.add_argument("--steps", type=int, help="steps per epoch of the small review (the extrapolation scales them to a full epoch); default: all")
    r.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files")
    r.add_argument("--engines", type=_str_list, help="pool,stacked (default: both on CPU, stacked on a GPU)")
    r.add_argument("--full", action="store_true",
                   help="also run and time the full blog review (8 x 5 x 20 epochs, report included), "
                        "with the first of --engines (default auto)")
    r.add_argument("--keep", metavar="DIR", help="with --full: copy its run folders and report to DIR")
    return p


def _at_least(flag: str, values: Any, low: int) -> None:
    """``values`` (None: not given; an int or a list) are all >= ``low``, else a UserError."""
    if values is None:
        return
    for v in values if isinstance(values, list) else [values]:
        if v < low:
            raise UserError(f"{flag} {v}: must be at least {low}")


def _known(flag: str, values: list[str] | None, valid: Any) -> None:
    for v in values or []:
        if v not in valid:
            raise UserError(f"{flag}: unknown {v!r}; valid: {', '.join(valid)}")


def check_args(args: argparse.Namespace) -> None:
    """Every argument a user can get wrong, checked before anything runs."""
    _at_least("--rounds", args.rounds, 1)
    if args.json:
        target = Path(args.json)
        if target.is_dir():
            raise UserError(f"--json {args.json}: is a directory; give a file name, e.g. {target / 'bench.json'}")
        parent = target.parent
        if not parent.is_dir():
            raise UserError(f"--json {args.json}: the folder {parent} does not exist")
        if not os.access(parent, os.W_OK):
            raise UserError(f"--json {args.json}: the folder {parent} is not writable")
    if args.cmd == "optim":
        from ..optim.registry import optimizer_names

        _known("--opts", args.opts, [n for n in optimizer_names() if n in BYTES_PER_PARAM])
        _known("--sets", args.sets, PARAM_SETS)
        _at_least("--threads", args.threads, 1)
        _at_least("--repeats", args.repeats, 1)
    elif args.cmd == "epoch":
        _at_least("--batch-sizes", args.batch_sizes, 1)
        _at_least("--threads", args.threads, 1)
        _at_least("--steps", args.steps, 1)
    elif args.cmd == "review":
        from ..optim.registry import optimizer_names

        _known("--opts", args.opts, optimizer_names())
        _known("--engines", args.engines, ENGINES)
        _at_least("--workers", args.workers, 1)
        _at_least("--seeds", args.seeds, 0)
        _at_least("--steps", args.steps, 1)
        if args.keep and not args.full:
            raise UserError("--keep DIR only applies with --full (it copies the full review's run folders)")


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    fn = {"optim": bench_optim, "epoch": bench_epoch, "review": bench_review}[args.cmd]
    t0 = time.perf_counter()
    out = fn(args)
    say(f"\n(bench {args.cmd} took {time.perf_counter() - t0:,.0f} s)")
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        except OSError as exc:
            raise UserError(f"--json {args.json}: cannot write it ({exc.strerror})") from None
    return 0
