"""``python -m torchopt_review.train --opt nadam``: one (optimizer, seed) run.

Reads the config (``configs/base.yaml`` + ``configs/optim/<opt>.yaml`` + ``--config`` files + flags),
trains with Lightning, and writes ``runs/<experiment>/<opt>/seed<k>/``:

- ``events.out.tfevents.*``  TensorBoard curves (train/val loss and accuracy, lr, diagnostics), hparams
- ``metrics.csv``            one row per epoch: epoch, step, wall_s, train/val loss and accuracy, lr
- ``diagnostics.csv``        per-layer effective step size, update ratio, grad norm
- ``run.json``               resolved config, versions, device, status (done/diverged/failed), test metrics
- ``last.ckpt``              the last finished epoch; the same command resumes from it (``--restart``: start over)
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import platform
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig, load_config, yaml_problem
from .errors import UserError, cli_entry
from .io import atomic_write_json, read_json

DONE, DIVERGED, FAILED, RUNNING = "done", "diverged", "failed", "running"


# -- the CLI -------------------------------------------------------------------------------

def _optimizer_table() -> str:
    from .optim.registry import REGISTRY

    width = max(map(len, REGISTRY))
    return "\n".join(f"  {name:<{width}}  {spec.description}" for name, spec in REGISTRY.items())


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``error: ...``, exit status 2) like every other
    error of this CLI, instead of the usage block followed by the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .optim.registry import optimizer_names

    p = _Parser(
        prog="python -m torchopt_review.train",
        description="Train the Fashion-MNIST classifier with one optimizer (the blog's settings unless overridden); "
                    "curves go to TensorBoard under runs/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="optimizers:\n" + _optimizer_table() + "\n\nexample: python -m torchopt_review.train --opt adam --epochs 5 --seed 1",
    )
    # no argparse default: an optim.name from a --config file must not be overridden by it
    p.add_argument("--opt", metavar="NAME", help=f"optimizer: {', '.join(optimizer_names())} (default: a --config "
                                                 "file's optim.name, else nadam)")
    p.add_argument("--lr", type=str, help="learning rate (blog: 1e-3)")
    p.add_argument("--semantics", choices=("keras", "torch"), help="update rules: keras (the blog's, default) or torch")
    p.add_argument("--epochs", type=str, help="epochs (blog: 20)")
    p.add_argument("--batch-size", type=str, help="mini-batch size (blog: 32)")
    p.add_argument("--seed", type=str, help="seed: init, data order, split (default 0)")
    p.add_argument("--model", help="blog_mlp (default), geron_mlp or cnn")
    p.add_argument("--data-dir", help="folder with the four Fashion-MNIST IDX files (.gz or raw)")
    p.add_argument("--logdir", help="root of the run folders (default: runs)")
    p.add_argument("--experiment", help="experiment name: runs/<experiment>/<opt>/seed<k>/ (default: default)")
    p.add_argument("--label", help="run folder name instead of the optimizer name (variants, lr grids)")
    p.add_argument("--config", action="append", default=[], metavar="FILE", help="extra YAML config layered on top (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set optim.kwargs.momentum=0.99 (repeatable)")
    p.add_argument("--limit-batches", type=str, help="optimizer steps per epoch (smoke runs)")
    p.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), help="device (default: cpu)")
    p.add_argument("--precision", choices=("32", "tf32", "bf16-mixed"), help="default 32 (fp32, TF32 off)")
    p.add_argument("--threads", type=str, help="torch threads (default: torch's)")
    p.add_argument("--restart", action="store_true", help="discard this run's checkpoint and results and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (summary lines only)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _set_nested(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise UserError(f"--set {dotted}: {k} is not a section")
    d[keys[-1]] = value


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    o: dict[str, Any] = {}
    flat = {
        "optim.lr": args.lr, "optim.semantics": args.semantics, "trainer.epochs": args.epochs,
        "trainer.batch_size": args.batch_size, "seed": args.seed, "model.name": args.model,
        "data.data_dir": args.data_dir, "logdir": args.logdir, "experiment": args.experiment, "label": args.label,
        "trainer.limit_batches": args.limit_batches, "trainer.accelerator": args.accelerator,
        "trainer.precision": args.precision, "trainer.threads": args.threads,
    }
    for key, value in flat.items():
        if value is not None:
            _set_nested(o, key, value)
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set needs KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {key.strip()}: {value!r} is not a valid YAML value ({yaml_problem(exc)})") from None
        _set_nested(o, key.strip(), parsed)
    return o


# -- one run -------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    import lightning
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__}


def _hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` and write a probe file; on failure remove what this made and raise."""
    made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    probe = run_dir / ".write-test"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        for p in made:  # deepest first: leave nothing behind
            with contextlib.suppress(OSError):
                p.rmdir()
        raise UserError(f"cannot write to {run_dir}: {exc.strerror or exc}; choose another --logdir") from None


# errno values of a full disk / quota / file-size limit: reported as a user error, not a crash
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _quiet_disk_full_in_threads() -> None:
    """TensorBoard writes events from a background thread; when the disk fills up that thread dies
    with a traceback printed by ``threading.excepthook``, and the main thread re-raises the same
    error at its next write, which :func:`run` reports in one line. Silence the thread's copy only."""
    previous = threading.excepthook
    if getattr(previous, "_torchopt_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in _NO_SPACE:
            return
        previous(args)

    hook._torchopt_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _verify_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Load ``ckpt`` with ``torch.load(weights_only=True)``: plain tensors and containers only, so a
    tampered file (a pickle that would run code) is refused instead of executed."""
    import torch

    try:
        with warnings.catch_warnings():  # the refusal is reported below, in one line
            warnings.simplefilter("ignore")
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, OSError...
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's refusal: a generic paragraph around the one line that says what was refused
        specific = [line for line in lines[1:] if not line.startswith(("Please file an issue", "Check the documentation"))]
        why = (specific or lines or [type(exc).__name__])[0].removeprefix("WeightsUnpickler error:").strip() or lines[0]
        why = why.split(". ")[0].rstrip(".")[:200]  # its first sentence
        raise UserError(
            f"{ckpt} is not a checkpoint this tool can load safely (torch.load weights_only=True: {why}); "
            "it is corrupt or was not written by this tool: pass --restart to discard it"
        ) from None
    if not isinstance(state, dict) or "state_dict" not in state or "opt_steps" not in state:
        raise UserError(f"{ckpt} is not a checkpoint written by this tool; pass --restart to discard it")
    return state


def _clear_run(run_dir: Path) -> None:
    for child in run_dir.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")


def resolve_device(accelerator: str) -> str:
    import torch

    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError("--accelerator gpu was asked for but no CUDA device is visible; use --accelerator cpu or auto")
        return "cuda"
    return "cpu"


def check_resumable(cfg: RunConfig, previous: dict[str, Any] | None, *, resume: bool, restart: bool) -> None:
    """Refuse (UserError) to resume or skip a run folder that holds another configuration's
    checkpoint or result, or a checkpoint whose run.json is gone."""
    run_dir = cfg.run_dir
    if previous and not restart and previous.get("fingerprint") != cfg.fingerprint() and (
            resume or previous.get("status") in (DONE, DIVERGED)):
        raise UserError(
            f"{run_dir} holds a {'checkpoint' if resume else 'finished run'} from a different configuration; "
            "pass --restart to discard it, or choose another --experiment/--label"
        )
    if resume and previous is None:  # run.json is written before the first checkpoint: someone removed it
        raise UserError(f"{run_dir} holds a checkpoint but no readable run.json, so its configuration is unknown; "
                        "pass --restart to discard it")


def set_tf32(device: str, precision: str) -> None:
    """TF32 only exists on GPUs; fp32 stays fp32 unless asked (the CPU's numbers)."""
    import torch

    if device == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if torch.backends.cudnn.allow_tf32 != tf32:
            torch.backends.cudnn.allow_tf32 = tf32


def hparams_of(cfg: RunConfig) -> dict[str, Any]:
    """What TensorBoard's HParams tab lists for a run (separate and stacked alike)."""
    t = cfg.trainer
    return {"optimizer": cfg.optim.name, "label": cfg.run_label, "semantics": cfg.optim.semantics, "lr": cfg.optim.lr,
            "seed": cfg.seed, "batch_size": t.batch_size, "model": cfg.model.name, "epochs": t.epochs,
            **{f"optim.{k}": str(v) for k, v in cfg.optim.kwargs.items()}}


def new_record(cfg: RunConfig, device: str, engine: str = "single") -> dict[str, Any]:
    """A run's run.json as it starts (``status: running``); the same for separate and stacked runs."""
    t = cfg.trainer
    return {
        "status": RUNNING, "label": cfg.run_label, "optimizer": cfg.optim.name, "seed": cfg.seed, "lr": cfg.optim.lr,
        "epochs": t.epochs, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(), "versions": _versions(),
        "device": device, "hardware": _hardware(device), "precision": t.precision, "engine": engine,
        "test": None, "diverged": None, "error": None, "epochs_completed": 0, "wall_s": 0.0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def run(cfg: RunConfig, *, restart: bool = False, progress: bool = True, summary: bool | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, dataset: Any = None) -> dict[str, Any]:
    """Train one run into ``cfg.run_dir`` (resuming from its checkpoint) and return its run.json.

    ``progress``: Lightning's progress bar; ``summary``: one line per epoch on stderr (default:
    as ``progress``); ``on_epoch``: called with each epoch's row (the review's progress display).
    """
    try:
        return _run(cfg, restart=restart, progress=progress, summary=progress if summary is None else summary,
                    on_epoch=on_epoch, dataset=dataset)
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        where = exc.filename or cfg.run_dir
        raise UserError(
            f"cannot write {where}: {exc.strerror} (disk full, quota or file-size limit); free some space and "
            "run the same command to resume from the last finished epoch"
        ) from None


def _run(cfg: RunConfig, *, restart: bool, progress: bool, summary: bool,
         on_epoch: Callable[[dict[str, Any]], None] | None, dataset: Any) -> dict[str, Any]:
    run_dir = cfg.run_dir
    record_path = run_dir / "run.json"
    ckpt = run_dir / "last.ckpt"
    previous = read_json(record_path)
    fingerprint = cfg.fingerprint()
    if previous and not restart:
        same = previous.get("fingerprint") == fingerprint
        if previous.get("status") in (DONE, DIVERGED) and same and previous.get("epochs", 0) >= cfg.trainer.epochs:
            if summary:
                print(f"{run_dir}: already {previous['status']} ({previous.get('epochs_completed')} epochs); "
                      "--restart to train it again", file=sys.stderr)
            return previous

    # Everything a user can get wrong is checked before the first byte is written: device, data,
    # what the run folder already holds, whether the log dir is writable.
    import torch

    # lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 at import, which makes every
    # torch.cuda.is_available() query NVML (~27 us) on a CUDA build without a GPU; undo it.
    _nvml = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning vs torch 2.14 pytree deprecation
    import lightning as L
    if _nvml is None:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_module import Classifier, FashionMNISTDataModule, OptimizerDiagnostics, RunRecorder

    from .data import load_fashion_mnist

    _quiet_lightning()
    t = cfg.trainer
    device = resolve_device(t.accelerator)
    dm = FashionMNISTDataModule(
        data_dir=cfg.data.data_dir, split=cfg.data.split, val_size=cfg.data.val_size, seed=cfg.seed,
        batch_size=t.batch_size, steps_per_batch=t.steps_per_batch, val_batch_size=t.val_batch_size,
        limit_batches=t.limit_batches, device=device,
        dataset=dataset if dataset is not None else load_fashion_mnist(cfg.data.data_dir), shuffle=cfg.data.shuffle,
    )
    dm.setup("fit")  # data errors (missing, corrupt, split too large) surface here

    resume = ckpt.exists() and not restart
    check_resumable(cfg, previous, resume=resume, restart=restart)
    state = _verify_checkpoint(ckpt) if resume else None
    if state is not None and state.get("engine") == "stacked":
        raise UserError(f"{ckpt} was written by the stacked review engine; resume it with "
                        "`python -m torchopt_review.review --engine stacked`, or pass --restart to discard it")
    purge = int(state["opt_steps"]) + 1 if state is not None else None
    _check_writable(run_dir)
    if not resume:
        _clear_run(run_dir)  # a fresh start: nothing from an earlier attempt (events, CSVs) may leak into it
    else:
        for leftover in run_dir.glob(".*.tmp"):  # a writer killed before its rename
            leftover.unlink()

    _quiet_disk_full_in_threads()
    if t.threads:
        torch.set_num_threads(t.threads)
    set_tf32(device, t.precision)

    record = new_record(cfg, device)
    atomic_write_json(record_path, record)

    torch.manual_seed(cfg.seed)  # the model's init
    module = Classifier(model=cfg.model.name, optimizer=cfg.optim.name, semantics=cfg.optim.semantics, lr=cfg.optim.lr,
                        optimizer_kwargs=cfg.optim.kwargs, batch_size=t.batch_size,
                        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val,
                        graph_step=t.graph_step)
    recorder = RunRecorder(run_dir, epochs=t.epochs, print_summary=summary, on_epoch=on_epoch,
                           info={"label": cfg.run_label, "seed": cfg.seed})
    callbacks: list[L.Callback] = [recorder]
    if t.diagnostics:
        callbacks.append(OptimizerDiagnostics(run_dir, every_n_steps=t.diagnostics_every_n_steps))
    # On resume, TensorBoard drops the killed process's events past the checkpoint (steps >= purge).
    logger = TensorBoardLogger(str(Path(cfg.logdir)), name=cfg.experiment, version=f"{cfg.run_label}/seed{cfg.seed}",
                               default_hp_metric=False, purge_step=purge)
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=t.epochs,
        precision="bf16-mixed" if t.precision == "bf16-mixed" else "32-true",
        logger=logger, callbacks=callbacks, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, num_sanity_val_steps=0, log_every_n_steps=1, deterministic=False,
    )
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        # weights_only=True: Lightning would otherwise follow torch.load's default, which the
        # environment (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) can turn into full unpickling.
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if resume else None, weights_only=True)
        record["epochs_completed"] = len(recorder.rows)
        record["wall_s"] = recorder.rows[-1]["wall_s"] if recorder.rows else 0.0
        if module.diverged is not None:
            record.update(status=DIVERGED, diverged=module.diverged)
            print(f"diverged: non-finite loss at epoch {module.diverged['epoch']}, step {module.diverged['step']}; "
                  f"metrics up to epoch {len(recorder.rows)} are kept in {run_dir}", file=sys.stderr)
        else:
            trainer.test(module, datamodule=dm, verbose=False)
            record["test"] = {"loss": module.epoch_metrics["test_loss"], "acc": module.epoch_metrics["test_acc"]}
            record["status"] = DONE
            last = recorder.rows[-1]
            logger.log_hyperparams(hparams_of(cfg), {"hp/val_acc": last["val_acc"], "hp/val_loss": last["val_loss"],
                                                     "hp/test_acc": record["test"]["acc"]})
            if summary:
                print(f"test accuracy {100 * record['test']['acc']:.2f}%  (loss {record['test']['loss']:.4f})  -> {run_dir}",
                      file=sys.stderr)
    except UserError:
        raise
    except BaseException as exc:
        # Lightning answers Ctrl-C with sys.exit(1) (a SystemExit raised while handling the
        # KeyboardInterrupt) and ignores SIGINT from then on.
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt))
        error = "interrupted (SIGINT / Ctrl-C)" if interrupted else f"{type(exc).__name__}: {exc}"
        record.update(status=FAILED, error=error, epochs_completed=len(recorder.rows))
        with contextlib.suppress(OSError):  # best effort (the disk may be full): the original error matters
            atomic_write_json(record_path, {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        if interrupted:
            # Give callers the interrupt back (the CLI: exit 130 and its resume hint; a review run in
            # process: stop, instead of recording a failed run and going on), and Ctrl-C its handler.
            with contextlib.suppress(ValueError, TypeError):  # not the main thread / no Python handler
                signal.signal(signal.SIGINT, sigint_handler)
            raise KeyboardInterrupt from None
        raise
    finally:
        try:
            logger.finalize("success")
        except OSError as exc:  # a full disk is reported once: by the error in flight, or the run.json write below
            if exc.errno not in _NO_SPACE:
                raise
    record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(record_path, record)
    return record


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = load_config(args.opt, args.config, overrides_from_args(args))
    record = run(cfg, restart=args.restart, progress=not args.no_progress, summary=True)
    return 0 if record["status"] in (DONE, DIVERGED) else 1


if __name__ == "__main__":
    sys.exit(main())
