"""Callbacks that record a run; none of them changes what is trained.

- :class:`RunRecorder`: once per epoch, after validation, writes the epoch's row to
  ``metrics.csv`` and TensorBoard, saves the checkpoint, prints a one-line summary. Checkpoint and
  CSV are written atomically (temporary file + rename), the CSV rows also travel inside the
  checkpoint, so a run killed at any moment resumes with exactly the rows it had.
- :class:`OptimizerDiagnostics`: every few hundred steps, per parameter tensor, the quantiles of
  the per-coordinate effective step size (e.g. AdaGrad's lr / sqrt(sum + eps)), the update-to-
  weight ratio and the gradient norm, to TensorBoard and ``diagnostics.csv``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch

from torchopt_review.io import atomic_write_text

METRIC_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
DIAG_COLUMNS = ("epoch", "step", "param", "eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm")

# One chart per metric, every run overlaid (TensorBoard's Custom Scalars dashboard).
CUSTOM_SCALARS = {
    "optimizers": {
        "train/loss": ["Multiline", ["^train/loss$"]],
        "train/acc": ["Multiline", ["^train/acc$"]],
        "val/loss": ["Multiline", ["^val/loss$"]],
        "val/acc": ["Multiline", ["^val/acc$"]],
        "learning rate": ["Multiline", ["^lr/"]],
        "train/loss (every N steps)": ["Multiline", ["^train/loss_step$"]],
    },
    "diagnostics": {
        "effective step size, median per layer": ["Multiline", [r"^diag/.*/eff_lr_p50$"]],
        "update / weight ratio": ["Multiline", [r"^diag/.*/update_ratio$"]],
        "gradient norm": ["Multiline", [r"^diag/.*/grad_norm$"]],
    },
}


def _test_pause(point: str, epoch: int, run: str = "") -> None:
    """Test hook for the kill tests (tests/test_faults.py): with ``TORCHOPT_TEST_PAUSE=<point>@<epoch>``
    or ``<label>/seed<k>:<point>@<epoch>`` (one run of a review; comma-separated for several),
    announce ``test-pause: <point>@<epoch>`` on stderr and sleep
    ``TORCHOPT_TEST_PAUSE_S`` seconds (default 60) at that point, so a test can SIGKILL the process
    exactly there. Points: ``val`` (inside validation), ``before_ckpt`` (epoch logged to TensorBoard,
    nothing saved yet), ``ckpt_tmp`` (checkpoint written to its temporary file, not yet renamed),
    ``before_csv`` (checkpoint renamed, metrics.csv not yet rewritten), ``test`` (after the last
    epoch, inside the test pass), ``train_batch`` (mid-epoch: after the epoch's second Lightning
    batch). Unset (always, outside tests) it costs one dict lookup."""
    spec = os.environ.get("TORCHOPT_TEST_PAUSE")
    if spec and ({f"{point}@{epoch}", f"{run}:{point}@{epoch}"} & set(spec.split(","))):
        print(f"test-pause: {point}@{epoch} {run}", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("TORCHOPT_TEST_PAUSE_S", "60")))


def _csv_text(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


class RunRecorder(L.Callback):
    """Per-epoch metrics.csv + TensorBoard + checkpoint + summary line, in that order of safety."""

    def __init__(self, run_dir: Path, *, epochs: int, print_summary: bool = True,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None, info: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        self.epochs, self.print_summary, self.on_epoch, self.info = epochs, print_summary, on_epoch, info or {}
        self.rows: list[dict[str, Any]] = []
        self.wall_before = 0.0  # training seconds of earlier (resumed-from) processes
        self._t0 = time.perf_counter()

    @property
    def _run_key(self) -> str:
        return f"{self.info.get('label', '')}/seed{self.info.get('seed', '')}"

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        writer = pl_module.logger.experiment if pl_module.logger is not None else None
        if writer is not None and not self.rows:
            writer.add_custom_scalars(CUSTOM_SCALARS)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = pl_module.finish_train_epoch()  # callbacks run before the module's own epoch-end hook
        if pl_module.diverged is not None:
            return
        opt = trainer.optimizers[0]
        row = {
            "epoch": pl_module.current_epoch + 1,
            "step": pl_module.opt_steps,
            "wall_s": round(self.wall_before + time.perf_counter() - self._t0, 3),
            "train_loss": m.get("train_loss", math.nan), "train_acc": m.get("train_acc", math.nan),
            "val_loss": m.get("val_loss", math.nan), "val_acc": m.get("val_acc", math.nan),
            "lr": float(opt.param_groups[0]["lr"]),
        }
        self.rows.append(row)
        if pl_module.logger is not None:
            w = pl_module.logger.experiment
            for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
                w.add_scalar(key.replace("_", "/", 1), row[key], row["step"])
            for i, group in enumerate(opt.param_groups):
                w.add_scalar(f"lr/group{i}", float(group["lr"]), row["step"])
            w.flush()
        _test_pause("before_ckpt", row["epoch"], self._run_key)
        # checkpoint first (it carries the rows), then the CSV: a kill between the two is repaired on resume
        tmp = self.ckpt_path.with_name(".last.ckpt.tmp")
        try:
            trainer.save_checkpoint(tmp)
            _test_pause("ckpt_tmp", row["epoch"], self._run_key)
            os.replace(tmp, self.ckpt_path)  # atomic: a kill leaves the previous checkpoint or this one
        except BaseException:
            tmp.unlink(missing_ok=True)  # e.g. a full disk: leave no torn file behind
            raise
        _test_pause("before_csv", row["epoch"], self._run_key)
        self.write_csv()
        if self.print_summary:
            print(
                f"epoch {row['epoch']:>3}/{self.epochs}  train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:.2f}%"
                f"  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%  ({row['wall_s']:.1f} s)",
                file=sys.stderr, flush=True,
            )
        if self.on_epoch is not None:
            self.on_epoch({**self.info, **row, "epochs": self.epochs})

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx == 1:
            _test_pause("train_batch", pl_module.current_epoch + 1, self._run_key)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            _test_pause("val", pl_module.current_epoch + 1, self._run_key)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _test_pause("test", len(self.rows), self._run_key)

    def write_csv(self) -> None:
        atomic_write_text(self.run_dir / "metrics.csv", _csv_text(METRIC_COLUMNS, self.rows))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "wall_s": self.rows[-1]["wall_s"] if self.rows else 0.0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self.wall_before = float(state.get("wall_s", 0.0))
        self.write_csv()  # the CSV always matches the checkpoint we resume from


def effective_lr(optimizer: torch.optim.Optimizer, group: dict[str, Any], p: torch.Tensor) -> torch.Tensor | None:
    """Per-coordinate step size multiplying the (momentum of the) gradient, from the optimizer's
    state: lr / denominator. None for SGD-like optimizers (the step size is lr everywhere)."""
    state = optimizer.state.get(p, {})
    lr = float(group["lr"])
    keras = group.get("semantics", "torch") == "keras"
    eps = float(group.get("eps", 0.0))
    if "sum" in state:  # Adagrad
        s = state["sum"]
        return lr / (s + eps).sqrt() if keras else lr / (s.sqrt() + eps)
    if "square_avg" in state:  # RMSprop
        v = state["square_avg"]
        return lr / (v + eps).sqrt() if keras else lr / (v.sqrt() + eps)
    if "exp_avg_sq" in state:  # Adam, NAdam
        step = float(state["step"])
        b1, b2 = group["betas"]
        bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
        return lr / bc1 / (state["exp_avg_sq"].sqrt() / math.sqrt(bc2) + eps)
    if "exp_inf" in state:  # Adamax
        step = float(state["step"])
        b1 = group["betas"][0]
        return lr / (1 - b1 ** step) / (state["exp_inf"] + eps)
    return None


_QUANTILES = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
_QUANTILE_SAMPLE = 16_384


def quantile_sample(values: torch.Tensor) -> torch.Tensor:
    """Along the last dimension of ``values`` (a flat tensor, or [runs, n] in the stacked engine):
    above 16,384 coordinates, an evenly strided sample of them (exact enough for a diagnostic, and
    ~20x cheaper than sorting a 235k-weight layer)."""
    values = values.detach()
    n = values.shape[-1]
    return values[..., :: -(-n // _QUANTILE_SAMPLE)] if n > _QUANTILE_SAMPLE else values


def _quantiles(values: torch.Tensor) -> list[float]:
    """10th/50th/90th percentiles (of :func:`quantile_sample`)."""
    flat = quantile_sample(values.flatten())
    return torch.quantile(flat.double(), _QUANTILES.to(flat.device)).tolist()


HISTOGRAM_BINS = 30


def log_eff_histograms(writer: Any, last_eff: dict[str, torch.Tensor], step: int) -> None:
    """One histogram of log10 effective step size per parameter tensor (its last measurement; of
    :func:`quantile_sample`'s at most 16,384 values, which is what a histogram resolves anyway).
    Binned by ``torch.histc`` where the values are (30 equal bins between min and max) and written
    raw: ~50x cheaper than TensorBoard's numpy binning, which a review pays 480 times an epoch."""
    for name, eff in last_eff.items():
        values = quantile_sample(eff.flatten())
        # a run blowing up has inf/NaN step sizes before its NaN loss is noticed:
        # TensorBoard refuses a histogram with no finite value ("empty")
        values = values[torch.isfinite(values)]
        if not values.numel():
            continue
        x = values.double().clamp_min(1e-30).log10()
        lo, hi = x.min(), x.max()
        counts = torch.histc(x, bins=HISTOGRAM_BINS, min=float(lo), max=float(hi) if hi > lo else float(lo) + 1e-12)
        stats = torch.stack([lo, hi, x.sum(), (x * x).sum()]).tolist()
        edges = torch.linspace(stats[0], stats[1] if stats[1] > stats[0] else stats[0] + 1e-12, HISTOGRAM_BINS + 1)
        writer.add_histogram_raw(f"diag/{name}/log10_eff_lr", min=stats[0], max=stats[1], num=int(x.numel()),
                                 sum=stats[2], sum_squares=stats[3], bucket_limits=edges[1:].tolist(),
                                 bucket_counts=counts.tolist(), global_step=step)


class OptimizerDiagnostics(L.Callback):
    """Effective step size quantiles, update/weight ratio and grad norm per parameter tensor."""

    def __init__(self, run_dir: Path, every_n_steps: int = 200):
        self.run_dir, self.every = Path(run_dir), every_n_steps
        self.rows: list[dict[str, Any]] = []
        self._snapshot: dict[torch.Tensor, torch.Tensor] | None = None
        self._steps_at_snapshot = 0
        self._last_eff: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        next_mark = (pl_module.opt_steps // self.every + 1) * self.every
        chunk_steps = -(-len(batch[1]) // pl_module.hparams.batch_size)
        if pl_module.opt_steps + chunk_steps >= next_mark or pl_module.opt_steps == 0:
            self._snapshot = {p: p.detach().clone() for p in pl_module.model.parameters()}
            self._steps_at_snapshot = pl_module.opt_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._snapshot is None or pl_module.diverged is not None:
            return
        steps = pl_module.opt_steps - self._steps_at_snapshot
        opt = trainer.optimizers[0]
        writer = pl_module.logger.experiment if pl_module.logger is not None else None
        names = {p: n for n, p in pl_module.model.named_parameters()}
        for group in opt.param_groups:
            for p in group["params"]:
                old = self._snapshot.get(p)
                if p.grad is None or old is None:
                    continue
                name = names.get(p, "?")
                eff = effective_lr(opt, group, p)
                q = [float(group["lr"])] * 3 if eff is None else _quantiles(eff)
                ratio = float((p.detach() - old).norm() / (p.detach().norm() + 1e-12)) / max(steps, 1)
                row = {"epoch": pl_module.current_epoch + 1, "step": pl_module.opt_steps, "param": name,
                       "eff_lr_p10": q[0], "eff_lr_p50": q[1], "eff_lr_p90": q[2],
                       "update_ratio": ratio, "grad_norm": float(p.grad.norm())}
                self.rows.append(row)
                if writer is not None:
                    for key in ("eff_lr_p50", "update_ratio", "grad_norm"):
                        writer.add_scalar(f"diag/{name}/{key}", row[key], row["step"])
                if eff is not None:
                    self._last_eff[name] = eff.detach()
        self._snapshot = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # One histogram per layer and epoch (of the last measurement): histograms are the costly
        # part of TensorBoard logging, and one per epoch shows the distribution drifting just as well.
        writer = pl_module.logger.experiment if pl_module.logger is not None else None
        if writer is not None and pl_module.diverged is None:
            log_eff_histograms(writer, self._last_eff, pl_module.opt_steps)
        self._last_eff = {}
        atomic_write_text(self.run_dir / "diagnostics.csv", _csv_text(DIAG_COLUMNS, self.rows))

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
