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
import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

from . import runs
from .config import RunConfig, check_acyclic, load_config, yaml_problem
from .errors import ArgumentParser, DataError, Terminated, UserError, cli_entry
from .runs import DIVERGED, DONE, RunFolder


# -- the CLI -------------------------------------------------------------------------------
# --help and argument errors import no torch (seconds on a loaded machine): the optimizer table
# is read from the registry's source, the data folder checked before the config is validated.

def _optimizer_entries() -> list[tuple[str, str]]:
    """(name, description) of every optimizer, in the registry's order, without importing torch.

    ``optim/registry.py`` is the one list of optimizers, but importing it runs
    ``torchopt_review.optim``, which imports torch. Its entries are literal
    ``OptimizerSpec(name, class, description, ...)`` calls: they are read from its source, and the
    registry is imported only if that source does not read so."""
    import ast

    def literal(call: ast.Call, position: int, keyword: str) -> Any:
        node = call.args[position] if len(call.args) > position else next(
            (k.value for k in call.keywords if k.arg == keyword), None)
        return ast.literal_eval(node) if node is not None else None

    try:
        tree = ast.parse((Path(__file__).parent / "optim" / "registry.py").read_text(encoding="utf-8"))
        calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
                        and n.func.id == "OptimizerSpec"), key=lambda n: (n.lineno, n.col_offset))
        entries = [(literal(c, 0, "name"), literal(c, 2, "description")) for c in calls]
    except (OSError, SyntaxError, ValueError):
        entries = []
    if entries and all(isinstance(n, str) and isinstance(d, str) for n, d in entries):
        return entries
    from .optim.registry import REGISTRY

    return [(name, spec.description) for name, spec in REGISTRY.items()]


def _optimizer_table(entries: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in entries)
    return "\n".join(f"  {name:<{width}}  {description}" for name, description in entries)


def build_parser() -> argparse.ArgumentParser:
    entries = _optimizer_entries()
    p = ArgumentParser(  # usage errors are one line, exit 2, like every other error
        prog="python -m torchopt_review.train",
        description="Train the Fashion-MNIST classifier with one optimizer (the blog's settings unless overridden); "
                    "curves go to TensorBoard under runs/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="optimizers:\n" + _optimizer_table(entries)
               + "\n\nexample: python -m torchopt_review.train --opt adam --epochs 5 --seed 1"
               + "\nthen:    tensorboard --logdir runs  (and open http://localhost:6006/?smoothing=0#timeseries)",
    )
    # no argparse default: an optim.name from a --config file must not be overridden by it
    p.add_argument("--opt", metavar="NAME", help=f"optimizer: {', '.join(name for name, _ in entries)} (default: a "
                                                 "--config file's optim.name, else nadam)")
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
    p.add_argument("--accelerator", choices=("cpu", "gpu", "auto"),
                   help="cpu (the default), gpu, or auto: the GPU when CUDA sees one, else the CPU")
    p.add_argument("--precision", choices=("32", "tf32", "bf16-mixed"), help="default 32 (fp32, TF32 off)")
    p.add_argument("--threads", type=str, help="torch threads (default: torch's)")
    p.add_argument("--restart", action="store_true", help="discard this run's checkpoint and results and start over")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress line (on a terminal, one line redrawn during each epoch); the summary line "
                        "of each epoch is printed either way, and is all that is printed when stderr is not a terminal")
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
        check_acyclic(parsed, f"--set {key.strip()}")
        _set_nested(o, key.strip(), parsed)
    return o


# -- one run -------------------------------------------------------------------------------

def _quiet_disk_full_in_threads() -> None:
    """TensorBoard writes events from a background thread; when the disk fills up that thread dies
    with a traceback printed by ``threading.excepthook``, and the main thread re-raises the same
    error at its next write, which :func:`run` reports in one line. Silence the thread's copy only."""
    previous = threading.excepthook
    if getattr(previous, "_torchopt_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, OSError) and args.exc_value.errno in runs.NO_SPACE:
            return
        previous(args)

    hook._torchopt_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


def _quiet_lightning() -> None:
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Your `IterableDataset` has `__len__` defined.*")
    # On any machine with SLURM's srun (a login node, a compute node): a run is one process on one
    # device, not a multi-process job srun must launch (Lightning asks on every fresh fit).
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used")


def resolve_device(accelerator: str) -> str:
    import torch

    if accelerator == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise UserError("--accelerator gpu was asked for but no CUDA device is visible; use --accelerator cpu or auto")
        return "cuda"
    return "cpu"


def set_tf32(device: str, precision: str) -> None:
    """TF32 only exists on GPUs; fp32 stays fp32 unless asked (the CPU's numbers)."""
    import torch

    if device == "cuda":
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        if torch.backends.cudnn.allow_tf32 != tf32:
            torch.backends.cudnn.allow_tf32 = tf32


def run(cfg: RunConfig, *, restart: bool = False, progress: bool = True, summary: bool | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None, dataset: Any = None) -> dict[str, Any]:
    """Train one run into ``cfg.run_dir`` (resuming from its checkpoint) and return its run.json.

    ``progress``: the progress line on stderr, when it is a terminal (:mod:`lightning_module.progress`);
    ``summary``: one line per epoch on stderr (default: as ``progress``); ``on_epoch``: called with
    each epoch's row (the review's progress display).
    """
    try:
        return _run(cfg, restart=restart, progress=progress, summary=progress if summary is None else summary,
                    on_epoch=on_epoch, dataset=dataset)
    except OSError as exc:
        if exc.errno not in runs.NO_SPACE:
            raise
        # Lightning stages a checkpoint in /tmp first: name the run folder, where the user looks
        inside = exc.filename and str(exc.filename).startswith(str(cfg.run_dir))
        where = exc.filename if inside else cfg.run_dir
        raise UserError(
            f"cannot write {where}: {exc.strerror} (disk full, quota or file-size limit); free some space and "
            "run the same command to resume from the last finished epoch"
        ) from None


def _run(cfg: RunConfig, *, restart: bool, progress: bool, summary: bool,
         on_epoch: Callable[[dict[str, Any]], None] | None, dataset: Any) -> dict[str, Any]:
    folder = RunFolder(cfg)
    done = folder.finished(restart)
    if done is not None:
        if summary:
            runs.say(f"{folder.path}: already {done['status']} ({done.get('epochs_completed')} epochs); "
                     "--restart to train it again")
        return done

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

    from lightning_module import Classifier, FashionMNISTDataModule, OptimizerDiagnostics, RunRecorder
    from lightning_module.progress import StepProgress

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

    state = folder.prepare(restart=restart)
    resume = state is not None
    purge = int(state["opt_steps"]) + 1 if resume else None

    _quiet_disk_full_in_threads()
    if t.threads:
        torch.set_num_threads(t.threads)
    set_tf32(device, t.precision)
    folder.start(device)

    torch.manual_seed(cfg.seed)  # the model's init
    module = Classifier(model=cfg.model.name, optimizer=cfg.optim.name, semantics=cfg.optim.semantics, lr=cfg.optim.lr,
                        optimizer_kwargs=cfg.optim.kwargs, batch_size=t.batch_size,
                        log_every_n_steps=t.log_every_n_steps, gradient_clip_val=t.gradient_clip_val,
                        graph_step=t.graph_step)
    diagnostics = OptimizerDiagnostics(every_n_steps=t.diagnostics_every_n_steps) if t.diagnostics else None
    recorder = RunRecorder(folder, epochs=t.epochs, print_summary=summary, on_epoch=on_epoch, diagnostics=diagnostics)
    # our progress line, not Lightning's bar (which counts batches of steps_per_batch steps from
    # epoch 0 and, redirected, writes every refresh as a new line)
    bar = StepProgress(t.epochs, dm.steps_per_epoch) if progress else None
    # diagnostics first: on resume its rows load before the recorder rewrites the CSVs; the
    # progress line before the recorder: it is erased before the epoch's summary line is printed
    callbacks: list[L.Callback] = [c for c in (diagnostics, bar, recorder) if c is not None]
    logger = folder.tb_logger(purge)
    from lightning.pytorch.plugins.environments import LightningEnvironment

    trainer = L.Trainer(
        # One process on one device, whatever the machine: not Lightning's SLURM environment, which
        # would check srun's task counts and add its own requeue on SIGUSR1 beside the run folder's
        # resume (the review's SLURM executor requeues through submitit and resumes from last.ckpt)
        plugins=[LightningEnvironment()],
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=t.epochs,
        precision="bf16-mixed" if t.precision == "bf16-mixed" else "32-true",
        logger=logger, callbacks=callbacks, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=False, num_sanity_val_steps=0, log_every_n_steps=1, deterministic=False,
    )
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        # weights_only=True: Lightning would otherwise follow torch.load's default, which the
        # environment (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1) can turn into full unpickling.
        trainer.fit(module, datamodule=dm, ckpt_path=str(folder.ckpt_path) if resume else None, weights_only=True)
        if module.diverged is not None:
            record = folder.finish(recorder.rows, diverged=module.diverged)
            runs.say(f"diverged: non-finite loss at epoch {module.diverged['epoch']}, step {module.diverged['step']}; "
                     f"metrics up to epoch {len(recorder.rows)} are kept in {folder.path}")
        else:
            trainer.test(module, datamodule=dm, verbose=False)
            test = {"loss": module.epoch_metrics["test_loss"], "acc": module.epoch_metrics["test_acc"]}
            runs.log_hparams(logger, cfg, recorder.rows[-1], test["acc"])
            x, y = dm.test_x[:runs.MISTAKES_SEEN], dm.test_y[:runs.MISTAKES_SEEN]
            with torch.no_grad():
                runs.log_mistakes(logger.experiment, x, y, module(x).argmax(-1), module.opt_steps)
            record = folder.finish(recorder.rows, test=test)
            if summary:
                runs.say(f"test accuracy {100 * test['acc']:.2f}%  (loss {test['loss']:.4f})  -> {folder.path}")
    except UserError:
        raise
    except BaseException as exc:
        # Lightning answers Ctrl-C with sys.exit(1) (a SystemExit raised while handling the
        # KeyboardInterrupt) and ignores SIGINT from then on.
        interrupted = isinstance(exc, KeyboardInterrupt) or (
            isinstance(exc, SystemExit) and isinstance(exc.__context__, KeyboardInterrupt))
        # Lightning answers SIGTERM by raising SIGTERMException (a SystemExit, status 0) at the
        # next batch: the run stops, resumable from its last finished epoch, and says so
        terminated = isinstance(exc, Terminated) or (  # a review's handler, or Lightning's
            getattr(trainer, "received_sigterm", False) and isinstance(exc, SystemExit))
        folder.fail("interrupted (SIGINT / Ctrl-C)" if interrupted else "terminated (SIGTERM)" if terminated
                    else f"{type(exc).__name__}: {exc}", len(recorder.rows))
        if terminated:
            raise Terminated(signal.SIGTERM) from None
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
        except OSError as exc:  # a full disk is reported once: by the error in flight, or the run.json write
            if exc.errno not in runs.NO_SPACE:
                raise
    return record


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = overrides_from_args(args)
    data = overrides.get("data")
    data_dir = data.get("data_dir") if isinstance(data, dict) else None
    if data_dir is not None and not Path(str(data_dir)).exists():  # a typo reported before torch is imported
        raise DataError(f"Fashion-MNIST not found: {data_dir} does not exist; point --data-dir at the folder with "
                        "the four IDX files")
    cfg = load_config(args.opt, args.config, overrides)
    record = run(cfg, restart=args.restart, progress=not args.no_progress, summary=True)
    return 0 if record["status"] in (DONE, DIVERGED) else 1


if __name__ == "__main__":
    sys.exit(main())
