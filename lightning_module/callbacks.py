"""Callbacks that record a run into its folder (:mod:`torchopt_review.runs`); none of them changes
what is trained.

- :class:`RunRecorder`: once per epoch, after validation, the epoch's row to TensorBoard, then
  ``RunFolder.save_epoch`` (the checkpoint, which carries the rows, then metrics.csv and
  diagnostics.csv), then the one-line summary. A run killed at any moment resumes with exactly
  the rows it had.
- :class:`OptimizerDiagnostics`: every few hundred steps, per parameter tensor (named after its
  layer, ``fc1.weight``), the quantiles of the per-coordinate effective step size (e.g. AdaGrad's
  lr / sqrt(sum + eps)), the update-to-weight ratio and the gradient norm, to TensorBoard and
  diagnostics.csv (written by the recorder with the checkpoint).

The stacked engine (:mod:`torchopt_review.stacked`) writes the same rows, tags and files through
the same functions of :mod:`torchopt_review.runs` and :mod:`torchopt_review.diagnostics`.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import lightning as L
import torch

from torchopt_review import runs
from torchopt_review.diagnostics import effective_lr, quantiles
from torchopt_review.runs.schema import layer_names


class OptimizerDiagnostics(L.Callback):
    """Effective step size quantiles, update/weight ratio and grad norm per parameter tensor."""

    def __init__(self, every_n_steps: int = 200):
        self.every = every_n_steps
        self.rows: list[dict[str, Any]] = []
        self._snapshot: dict[torch.Tensor, torch.Tensor] | None = None
        self._steps_at_snapshot = 0
        self._last_eff: dict[str, torch.Tensor] = {}

    @property
    def state_key(self) -> str:
        return runs.DIAGNOSTICS

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
        params = list(pl_module.model.named_parameters())
        layer = layer_names((n, p.shape) for n, p in params)  # "1.weight" -> "fc1.weight", as the stacked engine
        names = {p: layer[n] for n, p in params}
        rows = []
        for group in opt.param_groups:
            for p in group["params"]:
                old = self._snapshot.get(p)
                if p.grad is None or old is None:
                    continue
                name = names.get(p, "?")
                eff = effective_lr(opt.state.get(p, {}), group)
                q = [float(group["lr"])] * 3 if eff is None else quantiles(eff).tolist()
                ratio = float((p.detach() - old).norm() / (p.detach().norm() + 1e-12)) / max(steps, 1)
                rows.append(runs.diag_row(pl_module.current_epoch + 1, pl_module.opt_steps, name, q, ratio,
                                          float(p.grad.norm())))
                if eff is not None:
                    self._last_eff[name] = eff.detach()
        self.rows += rows
        if writer is not None:
            runs.log_diag(writer, rows)
        self._snapshot = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # One histogram per layer and epoch (of the last measurement): histograms are the costly
        # part of TensorBoard logging, and one per epoch shows the distribution drifting just as well.
        writer = pl_module.logger.experiment if pl_module.logger is not None else None
        if writer is not None and pl_module.diverged is None:
            runs.log_eff_histograms(writer, self._last_eff, pl_module.opt_steps)
        self._last_eff = {}

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))


class RunRecorder(L.Callback):
    """Per-epoch TensorBoard row, then checkpoint + CSVs (``RunFolder.save_epoch``), then the summary."""

    def __init__(self, folder: runs.RunFolder, *, epochs: int, print_summary: bool = True,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 diagnostics: OptimizerDiagnostics | None = None):
        self.folder, self.epochs, self.print_summary, self.on_epoch = folder, epochs, print_summary, on_epoch
        self.diagnostics = diagnostics
        self.rows: list[dict[str, Any]] = []
        self.wall_before = 0.0  # training seconds of earlier (resumed-from) processes
        self._t0 = time.perf_counter()

    @property
    def state_key(self) -> str:
        return runs.RECORDER

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = time.perf_counter()
        writer = pl_module.logger.experiment if pl_module.logger is not None else None
        if writer is not None and not self.rows:
            writer.add_custom_scalars(runs.CUSTOM_SCALARS)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        m = pl_module.finish_train_epoch()  # callbacks run before the module's own epoch-end hook
        if pl_module.diverged is not None:
            return
        opt = trainer.optimizers[0]
        row = runs.epoch_row(pl_module.current_epoch + 1, pl_module.opt_steps,
                             self.wall_before + time.perf_counter() - self._t0,
                             m.get("train_loss", math.nan), m.get("train_acc", math.nan),
                             m.get("val_loss", math.nan), m.get("val_acc", math.nan), float(opt.param_groups[0]["lr"]))
        self.rows.append(row)
        if pl_module.logger is not None:
            w = pl_module.logger.experiment
            runs.log_epoch(w, row, [float(g["lr"]) for g in opt.param_groups])
            w.flush()
        self.folder.save_epoch(trainer.save_checkpoint, self.rows, self._diag_rows())
        if self.print_summary:
            runs.say(runs.epoch_line(row, self.epochs))
        if self.on_epoch is not None:
            self.on_epoch({"label": self.folder.cfg.run_label, "seed": self.folder.cfg.seed, **row, "epochs": self.epochs})

    def _diag_rows(self) -> list[dict[str, Any]] | None:
        return None if self.diagnostics is None else self.diagnostics.rows

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "wall_s": self.rows[-1]["wall_s"] if self.rows else 0.0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state.get("rows", []))
        self.wall_before = float(state.get("wall_s", 0.0))
        # the CSVs always match the checkpoint we resume from (the diagnostics callback comes first
        # in the callback list, so its rows are loaded already)
        self.folder.write_tables(self.rows, self._diag_rows())
