"""Training a stack: every run's step at once (eager, or captured as one CUDA graph), evaluation,
per-run divergence, and the optimizer diagnostics of every run at once."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import RunConfig
from ..data import FashionMNIST, epoch_permutation, split_indices
from ..diagnostics import effective_lr, quantiles
from ..runs import STEP_LOSS_TAG, RunFolder, checkpoint_rows, diag_row, log_diag
from ..runs.schema import layer_names
from .model import OptimSpec, SliceOptimizers, StackedMLP

# -- training ------------------------------------------------------------------------------------

class StackedRun:
    """Bookkeeping of one run of a stack: its folder, logger, rows, totals, status."""

    def __init__(self, cfg: RunConfig, r: int):
        self.cfg, self.r = cfg, r
        self.folder = RunFolder(cfg)
        self.key = self.folder.key
        self.rows: list[dict[str, Any]] = []
        self.diag_rows: list[dict[str, Any]] = []
        self.last_eff: dict[str, Tensor] = {}
        self.totals = [0.0, 0.0, 0]
        self.diverged: dict[str, int] | None = None
        self.logger: Any = None
        self.wall_before = 0.0
        self.resume_state: dict[str, Any] | None = None

    def prepare(self, restart: bool) -> None:
        """The checks ``train.run`` makes (:meth:`RunFolder.prepare`), and the rows to resume with."""
        self.resume_state = self.folder.prepare(restart=restart, engine="stacked")
        if self.resume_state is not None:
            self.rows, self.wall_before, self.diag_rows = checkpoint_rows(self.resume_state)


class StackedTrainer:
    """Trains a list of stackable runs (equal :func:`stack_key`) that start at the same epoch."""

    def __init__(self, runs: list[StackedRun], dataset: FashionMNIST, device: str, *,
                 on_epoch: Callable[[str, dict[str, Any]], None] | None = None, use_graph: bool | None = None):
        self.runs = runs
        self.cfg0 = runs[0].cfg
        t = self.cfg0.trainer
        self.t, self.device = t, torch.device(device)
        self.on_epoch = on_epoch
        self.R = len(runs)
        self.model = StackedMLP(self.cfg0.model.name, [r.cfg.seed for r in runs], self.device)
        self.opts = SliceOptimizers(self.model, [OptimSpec.of(r.cfg) for r in runs])
        self.clip = torch.tensor([r.cfg.trainer.gradient_clip_val or math.inf for r in runs], device=self.device)
        self.any_clip = bool(torch.isfinite(self.clip).any())
        self.opt_steps = 0
        self.start_epoch = len(runs[0].rows)
        if runs[0].resume_state is not None:
            for r in runs:
                self.model.load_run_state_dict(r.r, r.resume_state["state_dict"])
            self.opts.load_run_state_dicts([r.resume_state["optimizer_states"][0] for r in runs])
            self.opt_steps = int(runs[0].resume_state["opt_steps"])
        # data: the whole dataset on the device as uint8, each run's split and order as indices
        self.images = dataset.train_images.reshape(len(dataset.train_labels), -1).to(self.device)
        self.labels = dataset.train_labels.to(self.device)
        self.test_images = dataset.test_images.reshape(len(dataset.test_labels), -1).to(self.device)
        self.test_labels = dataset.test_labels.to(self.device)
        n = len(dataset.train_labels)
        splits = [split_indices(n, r.cfg.data.split, r.cfg.data.val_size, r.cfg.seed) for r in runs]
        self.train_idx = torch.stack([s[0] for s in splits]).to(self.device)  # [R, N]
        self.val_idx = torch.stack([s[1] for s in splits]).to(self.device)
        self.N = self.train_idx.shape[1]
        nb = -(-self.N // t.batch_size)
        self.num_batches = min(nb, t.limit_batches) if t.limit_batches else nb
        self.autocast = t.precision == "bf16-mixed"
        self.use_graph = (self.device.type == "cuda") if use_graph is None else use_graph
        self._graph: Any = None
        self._eager_steps = 0  # the first step of this process is eager: it lays out the optimizers' buckets
        self._losses: list[Tensor] = []
        self._corrects: list[Tensor] = []
        self._ns: list[int] = []

    # -- one step ------------------------------------------------------------------------
    def _forward_loss(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Per-run mean loss [R] and correct count [R] of the mini-batch ``idx`` [R, b]."""
        x = self.images[idx].float().div_(255.0)
        y = self.labels[idx]
        # (cache_enabled=False: autocast may not cache casted weights across a CUDA graph's capture)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
            logits = self.model(x)
        R, b = idx.shape
        loss = F.cross_entropy(logits.float().reshape(R * b, -1), y.reshape(-1), reduction="none").view(R, b).mean(1)
        correct = (logits.argmax(-1) == y).sum(1)
        return loss, correct

    def _backward(self, loss: Tensor) -> None:
        self.model.zero_grad_()
        with warnings.catch_warnings():  # the grads are strided views of G on purpose (no copy)
            warnings.filterwarnings("ignore", message=".*gradient layout contract.*")
            loss.sum().backward()
        if self.any_clip:  # per-run global-norm clipping (clip_grad_norm_ of each run's params)
            norms = self.model.grad.norm(dim=1)
            coef = (self.clip / (norms + 1e-6)).clamp(max=1.0)
            self.model.grad.mul_(coef[:, None])

    def _eager_step(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        loss, correct = self._forward_loss(idx)
        self._backward(loss)
        self.opts.step()
        return loss.detach(), correct

    def _graph_step(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """The same step replayed from a CUDA graph (full-size batches; captured on first use)."""
        g = self._graph
        if g is None:
            g = self._graph = _CapturedStep(self, capture=self.device.type == "cuda")
        return g.replay(idx)

    def train_step(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        if self.use_graph and idx.shape[1] == self.t.batch_size and self._eager_steps >= 1:
            return self._graph_step(idx)
        self._eager_steps += 1
        return self._eager_step(idx)

    # -- epochs --------------------------------------------------------------------------
    def _live(self) -> list[StackedRun]:
        return [r for r in self.runs if r.diverged is None]

    def _flush(self, epoch: int) -> None:
        if not self._losses:
            return
        losses = torch.stack(self._losses).double().cpu()  # [k, R]
        corrects = torch.stack(self._corrects).double().cpu()
        ns = torch.tensor(self._ns, dtype=torch.float64)
        k = len(self._ns)
        self._losses, self._corrects, self._ns = [], [], []
        for run in self._live():
            col = losses[:, run.r]
            finite = torch.isfinite(col)
            if not bool(finite.all()):
                first = int((~finite).nonzero()[0])
                run.diverged = {"epoch": epoch + 1, "step": self.opt_steps - k + first + 1}
                continue
            loss_sum, correct, n = float((col * ns).sum()), float(corrects[:, run.r].sum()), int(ns.sum())
            run.totals[0] += loss_sum
            run.totals[1] += correct
            run.totals[2] += n
            if run.logger is not None:
                run.logger.experiment.add_scalar(STEP_LOSS_TAG, loss_sum / n, self.opt_steps)

    @torch.no_grad()
    def evaluate(self, which: str) -> tuple[Tensor, Tensor]:
        """Per-run (mean loss, accuracy) on the validation or test set, in batches of val_batch_size."""
        vb = self.t.val_batch_size
        if which == "val":
            idx_all, images, labels = self.val_idx, self.images, self.labels
        else:
            n = len(self.test_labels)
            idx_all = torch.arange(n, device=self.device).expand(self.R, n)
            images, labels = self.test_images, self.test_labels
        loss_sum = torch.zeros(self.R, dtype=torch.float64, device=self.device)
        correct = torch.zeros(self.R, dtype=torch.float64, device=self.device)
        for s in range(0, idx_all.shape[1], vb):
            idx = idx_all[:, s:s + vb]
            x = images[idx].float().div_(255.0)
            y = labels[idx]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(x)
            R, b = idx.shape
            loss = F.cross_entropy(logits.float().reshape(R * b, -1), y.reshape(-1), reduction="none").view(R, b).mean(1)
            loss_sum += loss.double() * b
            correct += (logits.argmax(-1) == y).sum(1).double()
        n = idx_all.shape[1]
        return (loss_sum / n).cpu(), (correct / n).cpu()

    def test_predictions(self, n: int) -> Tensor:
        """Every run's predicted class of the first ``n`` test images: [R, n]."""
        x = self.test_images[:n].float().div_(255.0).expand(self.R, -1, -1)
        with torch.no_grad():
            return self.model(x).argmax(-1)

    def train_epoch(self, epoch: int, diag: "StackedDiagnostics | None") -> None:
        B, spb = self.t.batch_size, self.t.steps_per_batch
        perms = torch.stack([epoch_permutation(self.N, r.cfg.seed, epoch if r.cfg.data.shuffle == "every_epoch" else 0)
                             for r in self.runs]).to(self.device)
        order = torch.gather(self.train_idx, 1, perms)[:, : self.num_batches * B]
        for run in self.runs:
            run.totals = [0.0, 0.0, 0]
        steps_total = -(-order.shape[1] // B)
        for c0 in range(0, steps_total, spb):  # chunks as the Lightning path's batches (diagnostics marks)
            chunk = range(c0, min(c0 + spb, steps_total))
            if diag is not None:
                diag.chunk_start(self.opt_steps, len(chunk))
            for k in chunk:
                idx = order[:, k * B:(k + 1) * B]
                loss, correct = self.train_step(idx)
                self.opt_steps += 1
                self._losses.append(loss)
                self._corrects.append(correct)
                self._ns.append(idx.shape[1])
                if len(self._ns) == self.t.log_every_n_steps:
                    self._flush(epoch)
            if diag is not None:
                diag.chunk_end(epoch, self.opt_steps, self._live())
            if not self._live():
                return
        self._flush(epoch)


class _CapturedStep:
    """The stacked step as a :class:`~torchopt_review.graphs.GraphedStep`: the batch indices are its
    static input, per-run loss and correct counts its outputs."""

    def __init__(self, tr: StackedTrainer, capture: bool | None = None):
        from ..graphs import GraphedStep

        self.tr = tr
        self.idx = torch.zeros(tr.R, tr.t.batch_size, dtype=torch.long, device=tr.device)
        self.step = GraphedStep(self._body, tr.opts.optimizers, [tr.model.theta], capture=capture)

    def _body(self) -> tuple[Tensor, Tensor]:
        tr = self.tr
        loss, correct = tr._forward_loss(self.idx)
        tr._backward(loss)
        for opt in tr.opts.optimizers:
            opt.graph_apply()
        return loss.detach(), correct

    def replay(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        self.idx.copy_(idx)
        loss, correct = self.step()
        return loss, correct


class StackedDiagnostics:
    """``OptimizerDiagnostics`` for every run of a stack at once: the same rows and TensorBoard tags
    (effective step size quantiles, update/weight ratio, grad norm per parameter tensor), taken at
    the same steps (the end of the chunk that crosses every ``every``-th step)."""

    def __init__(self, tr: StackedTrainer, every: int):
        self.tr, self.every = tr, every
        self.snapshot: Tensor | None = None
        self.steps_at = 0

    def chunk_start(self, opt_steps: int, chunk_steps: int) -> None:
        next_mark = (opt_steps // self.every + 1) * self.every
        if opt_steps + chunk_steps >= next_mark or opt_steps == 0:
            self.snapshot = self.tr.model.theta.detach().clone()
            self.steps_at = opt_steps

    def chunk_end(self, epoch: int, opt_steps: int, live: list[StackedRun]) -> None:
        """Every run's rows at once: per optimizer block and parameter tensor, the statistics of
        all its runs as [runs] tensors, then one read to the host for the whole measurement."""
        if self.snapshot is None:
            return
        m, tr, steps = self.tr.model, self.tr, max(opt_steps - self.steps_at, 1)
        delta = m.theta - self.snapshot
        self.snapshot = None
        live_ids = {run.r for run in live}
        layer = layer_names(zip(m.names, m.shapes))  # "1.weight" -> "fc1.weight", as OptimizerDiagnostics
        pieces: list[Tensor] = []  # per (block, param): [5, runs] = p10, p50, p90, update ratio, grad norm
        keys: list[tuple[int, int, str, bool]] = []  # (first run, runs, layer name, has eff)
        for j, (a, b) in enumerate(tr.opts.blocks):
            opt, q = tr.opts.optimizers[j], tr.opts.flat[j]
            group, st = opt.param_groups[0], opt.state.get(q, {})
            for n, o, k, shape in zip(m.names, m.offsets, m.numels, m.shapes):
                p = m.theta[a:b, o:o + k]
                state = {key: (v.view(b - a, m.P)[:, o:o + k] if torch.is_tensor(v) and v.numel() == q.numel() else v)
                         for key, v in st.items()}
                eff = effective_lr(state, group)
                if eff is None:
                    qs = torch.full((3, b - a), float(group["lr"]), dtype=torch.float64, device=p.device)
                else:
                    qs = quantiles(eff, dim=1)
                    for r in range(a, b):
                        if r in live_ids:
                            self.tr.runs[r].last_eff[layer[n]] = eff[r - a].detach().view(shape).clone()
                ratio = delta[a:b, o:o + k].norm(dim=1) / (p.norm(dim=1) + 1e-12) / steps
                gnorm = m.grad[a:b, o:o + k].norm(dim=1)
                pieces.append(torch.cat([qs, ratio.double()[None], gnorm.double()[None]]))
                keys.append((a, b - a, layer[n], eff is not None))
        host = torch.cat(pieces, dim=1).cpu() if pieces else None  # the one host sync
        col = 0
        measured: dict[StackedRun, list[dict[str, Any]]] = {}  # this measurement's rows, per run
        for a, count, n, _ in keys:
            for i in range(count):
                run = self.tr.runs[a + i]
                v = host[:, col + i].tolist()
                if run.r not in live_ids:
                    continue
                row = diag_row(epoch + 1, opt_steps, n, v[:3], v[3], v[4])
                run.diag_rows.append(row)
                measured.setdefault(run, []).append(row)
            col += count
        for run, rows in measured.items():
            if run.logger is not None:
                log_diag(run.logger.experiment, rows)
