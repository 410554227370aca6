"""The LightningModule: a Fashion-MNIST classifier trained by an optimizer from the registry.

One Lightning batch is a chunk of ``steps_per_batch`` mini-batches (see
:class:`torchopt_review.data.ChunkedBatches`) and :meth:`training_step` runs one optimizer step
per mini-batch, like Keras's ``steps_per_execution``: Lightning's per-batch bookkeeping is then
paid once per chunk instead of once per step. Nothing in the step syncs with the host: the loss
and the correct count of each step are written into a small device buffer that is read once per
``log_every_n_steps`` (and at the end of the epoch), which is also where a non-finite loss is
noticed and the run stopped as diverged, at the exact step it happened.

On a GPU (``graph_step``: ``auto``) every full-size mini-batch after the first runs as one CUDA
graph replay (:class:`torchopt_review.graphs.GraphedStep`): the step below -- forward, loss,
backward, clipping, the optimizer's device half-step -- is captured once and replayed, the
mini-batch being copied into the graph's static input buffers. ``graph_step="on"`` runs the same
machinery eagerly on CPU (how the tests check it), ``"off"`` never uses it.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from torchopt_review.data import to_float
from torchopt_review.models import build_model
from torchopt_review.optim import create_optimizer
from torchopt_review.runs import STEP_LOSS_TAG


class Classifier(L.LightningModule):
    def __init__(self, model: str = "blog_mlp", optimizer: str = "adam", semantics: str = "keras", lr: float = 1e-3,
                 optimizer_kwargs: dict[str, Any] | None = None, batch_size: int = 32, log_every_n_steps: int = 50,
                 gradient_clip_val: float | None = None, graph_step: str = "auto"):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model)
        self.automatic_optimization = False  # several optimizer steps per Lightning batch
        self.opt_steps = 0  # optimizer steps taken (Lightning's global_step counts Lightning batches here)
        self.diverged: dict[str, int] | None = None
        self.epoch_metrics: dict[str, float] = {}
        # per step since the last flush: mean loss and correct count (device tensors), batch size
        self._losses: list[torch.Tensor] = []
        self._corrects: list[torch.Tensor] = []
        self._window_n: list[int] = []
        self._totals = [0.0, 0.0, 0]  # loss * n, correct, n over the epoch so far
        self._eval_sums: torch.Tensor | None = None
        self._graph = None  # GraphedStep, made on the first full-size step after an eager one
        self._graph_inputs: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eager_steps = 0

    # -- the model -----------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(to_float(images) if images.dtype == torch.uint8 else images)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        h = self.hparams
        return create_optimizer(h.optimizer, self.model.parameters(), semantics=h.semantics, lr=h.lr,
                                **(h.optimizer_kwargs or {}))

    def _common_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the number of correct predictions of one mini-batch (no host sync)."""
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)  # softmax + log-loss on logits: Keras's, minus its 1e-7 clipping
        correct = (logits.argmax(1) == labels).sum()
        return loss, correct

    # -- training --------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.trainer.datamodule.set_epoch(self.current_epoch)
        self._totals = [0.0, 0.0, 0]

    def training_step(self, chunk: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        if self.diverged is not None:
            return
        opt = self.optimizers().optimizer  # the raw optimizer: no per-step wrapper cost
        bs, clip = self.hparams.batch_size, self.hparams.gradient_clip_val
        params = None if clip is None else [p for p in self.model.parameters() if p.requires_grad]
        use_graph = self._use_graph()
        for images, labels in zip(chunk[0].split(bs), chunk[1].split(bs)):
            if use_graph and len(labels) == bs and self._eager_steps:
                loss, correct = self._graphed_step(opt, images, labels)
            else:
                loss, correct = self._common_step((images, labels), "train")
                opt.zero_grad(set_to_none=self._graph is None)  # a captured graph keeps the grads' memory
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                self._eager_steps += 1
            self.opt_steps += 1
            self._losses.append(loss.detach())  # device tensors: no host sync until _flush
            self._corrects.append(correct)
            self._window_n.append(len(labels))
            if len(self._losses) == self.hparams.log_every_n_steps and not self._flush():
                return

    def _use_graph(self) -> bool:
        mode = self.hparams.graph_step
        return mode == "on" or (mode == "auto" and self.device.type == "cuda")

    def _graphed_step(self, opt: torch.optim.Optimizer, images: torch.Tensor,
                      labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step of :meth:`training_step`, captured once and replayed (see the module docs)."""
        if self._graph is None:
            from torchopt_review.graphs import GraphedStep

            params = [p for p in self.model.parameters() if p.requires_grad]
            # the graph's grads: kept alive here and re-attached before every replay (something
            # outside the step may set .grad to None); the graph zeroes and refills them in place
            # (one flat buffer, so the optimizer reads them as one tensor with no gather)
            flat = torch.zeros(sum(p.numel() for p in params), device=self.device, dtype=params[0].dtype)
            views, off = [], 0
            for p in params:
                views.append(flat[off:off + p.numel()].view(p.shape))
                off += p.numel()
            self._graph_grads = (params, views)
            self._graph_inputs = (images.clone(), labels.clone())
            clip = self.hparams.gradient_clip_val

            dev = self.device.type
            # autocast (bf16-mixed) must not cache casted weights across a graph's capture
            amp = dev == "cuda" and torch.is_autocast_enabled(dev)
            amp_dtype = torch.get_autocast_dtype(dev) if amp else None

            def body() -> tuple[torch.Tensor, torch.Tensor]:
                with torch.autocast(dev, dtype=amp_dtype, enabled=amp, cache_enabled=False):
                    loss, correct = self._common_step(self._graph_inputs, "train")
                torch._foreach_zero_([p.grad for p in params])
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.graph_apply()
                return loss.detach(), correct

            self._graph = GraphedStep(body, [opt], params, capture=self.device.type == "cuda")
        for p, g in zip(*self._graph_grads):
            if p.grad is not g:
                p.grad = g
        x, y = self._graph_inputs
        x.copy_(images)
        y.copy_(labels)
        loss, correct = self._graph()
        return loss, correct

    def _flush(self) -> bool:
        """Read the step buffer once: add it to the epoch totals, log the step curve, and catch a
        non-finite loss at the step it happened. Returns False when the run diverged."""
        k = len(self._losses)
        if k == 0:
            return True
        losses = torch.stack(self._losses).double().cpu()
        corrects = torch.stack(self._corrects).double().cpu()
        ns = torch.tensor(self._window_n, dtype=torch.float64)
        self._losses, self._corrects, self._window_n = [], [], []
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            self.diverged = {"epoch": self.current_epoch + 1, "step": self.opt_steps - k + first + 1}
            self.trainer.should_stop = True
            return False
        loss_sum, correct, n = float((losses * ns).sum()), float(corrects.sum()), int(ns.sum())
        self._totals[0] += loss_sum
        self._totals[1] += correct
        self._totals[2] += n
        if self.logger is not None:
            self.logger.experiment.add_scalar(STEP_LOSS_TAG, loss_sum / n, self.opt_steps)
        return True

    @property
    def running_metrics(self) -> tuple[float, float] | None:
        """The epoch's training loss and accuracy so far (running means, as :meth:`finish_train_epoch`
        reports them at its end), as of the last read of the step buffer (at most
        ``log_every_n_steps`` steps behind: reading it is what syncs with the device); None before
        the epoch's first read. What the progress line shows."""
        loss_sum, correct, n = self._totals
        return (loss_sum / n, correct / n) if n else None

    def finish_train_epoch(self) -> dict[str, float]:
        """The epoch's training loss and accuracy: running means over its batches, as Keras reports
        them (weights changing during the epoch), not a re-evaluation at its end."""
        self._flush()
        loss_sum, correct, n = self._totals
        self.epoch_metrics.update(train_loss=loss_sum / n if n else math.nan, train_acc=correct / n if n else math.nan)
        return self.epoch_metrics

    # -- evaluation --------------------------------------------------------------------------
    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        loss, correct = self._common_step(batch, "eval")
        n = len(batch[1])
        row = torch.stack([loss.detach().double() * n, correct.double(), torch.tensor(n, dtype=torch.float64, device=loss.device)])
        self._eval_sums = row if self._eval_sums is None else self._eval_sums + row

    def _eval_end(self, stage: str) -> None:
        loss_sum, correct, n = self._eval_sums.tolist()
        self._eval_sums = None
        self.epoch_metrics.update({f"{stage}_loss": loss_sum / n, f"{stage}_acc": correct / n})

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["opt_steps"] = self.opt_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.opt_steps = int(checkpoint.get("opt_steps", 0))
