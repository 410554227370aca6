"""Stacked runs: many (optimizer, seed) runs of one MLP trained together as one batched model.

A review's runs differ only in their seed (init, data order) and optimizer, so all of them can
be one model whose every weight has a leading *run* dimension::

    theta  [R, P]   every run's parameters, run-major (row r is run r's model, flattened
                    in ``named_parameters`` order); each layer's weight is a strided view
                    W_l = theta[:, off_l : off_l + out*in].view(R, out, in)
    G      [R, P]   their gradients, laid out the same way (preset as each view's .grad)

Forward is one ``baddbmm`` chain over all runs; the loss is the sum of the runs' mean losses,
so one backward gives every run exactly the gradient of its own loss. Runs are ordered by
optimizer, so the runs of one optimizer are one contiguous block ``theta[a:b]`` and are updated by
*one* fused kernel call of that optimizer over the flat block (all six optimizers are elementwise,
so this equals updating each run separately). Each run keeps its own init (built exactly as a
separate run builds it), its own data order (``epoch_permutation(seed, epoch)``), its own
optimizer state, its own divergence detection and its own gradient clipping.

On a GPU the whole step (gather of the batch, forward, backward, every optimizer's update) is
captured once in a CUDA graph and replayed; the host only computes the optimizers' per-step
scalars (see ``FlatOptimizer.graph_coefficients``) and copies them in with the batch indices.

:func:`train_stacked` writes every run's folder exactly as ``train.run`` does (run.json,
metrics.csv, diagnostics.csv, TensorBoard events with the same tags, a checkpoint), so the report
and TensorBoard cannot tell stacked runs from separate ones. On 2 CPU cores stacking is not
faster than one process per core (``python -m torchopt_review.bench review`` measures both),
so the review uses it by default only on a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import queue
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import RunConfig
from .data import FashionMNIST, epoch_permutation, split_indices
from .errors import UserError
from .models import build_model
from .optim import create_optimizer

__all__ = ["StackedMLP", "SliceOptimizers", "stack_key", "is_stackable", "train_stacked"]


# -- the model -----------------------------------------------------------------------------

class NotStackable(ValueError):
    pass


def _mlp_ops(model: nn.Module) -> list[tuple[str, str | None]]:
    """The layer sequence of a Flatten/Linear/ReLU ``nn.Sequential``: ("linear", prefix) | ("relu", None)."""
    if not isinstance(model, nn.Sequential):
        raise NotStackable(f"{type(model).__name__} is not an nn.Sequential")
    ops: list[tuple[str, str | None]] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Flatten):
            continue
        if isinstance(m, nn.Linear) and m.bias is not None:
            ops.append(("linear", name))
        elif isinstance(m, nn.ReLU):
            ops.append(("relu", None))
        else:
            raise NotStackable(f"layer {name} ({type(m).__name__}) cannot be stacked")
    return ops


@functools.lru_cache(maxsize=None)
def is_stackable(model_name: str) -> bool:
    try:
        _mlp_ops(build_model(model_name))
        return True
    except NotStackable:
        return False


class StackedMLP(nn.Module):
    """R copies of an MLP of :mod:`torchopt_review.models`, run r initialised with ``seeds[r]``
    exactly as ``train.run`` initialises a separate run (``torch.manual_seed(seed)``, then build)."""

    def __init__(self, model_name: str, seeds: list[int], device: torch.device | str = "cpu"):
        super().__init__()
        template = build_model(model_name)
        self.ops = _mlp_ops(template)
        self.model_name, self.seeds, self.R = model_name, list(seeds), len(seeds)
        self.names = [n for n, _ in template.named_parameters()]
        self.shapes = [tuple(p.shape) for _, p in template.named_parameters()]
        self.numels = [p.numel() for _, p in template.named_parameters()]
        self.offsets = [sum(self.numels[:i]) for i in range(len(self.numels))]
        self.P = sum(self.numels)
        rows = []
        for seed in seeds:
            torch.manual_seed(seed)
            rows.append(torch.cat([p.detach().flatten() for p in build_model(model_name).parameters()]))
        self.theta = torch.stack(rows).to(device)
        self.grad = torch.zeros_like(self.theta)
        self.layers = nn.ParameterList()
        for shape, off, n in zip(self.shapes, self.offsets, self.numels):
            p = nn.Parameter(self.theta[:, off:off + n].view(self.R, *shape))
            p.grad = self.grad[:, off:off + n].view(self.R, *shape)
            self.layers.append(p)
        self._by_prefix = {n.rsplit(".", 1)[0]: i for i, n in enumerate(self.names) if n.endswith(".weight")}

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [R, batch, features] float -> logits [R, batch, classes]."""
        h = x
        for kind, prefix in self.ops:
            if kind == "relu":
                h = torch.relu(h)
            else:
                i = self._by_prefix[prefix]
                w, b = self.layers[i], self.layers[i + 1]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        return h

    def zero_grad_(self) -> None:
        self.grad.zero_()  # keeps the views: backward accumulates into them in place

    def run_view(self, r: int) -> dict[str, Tensor]:
        """Run ``r``'s parameters as views shaped like the separate model's (``name -> tensor``)."""
        return {n: self.theta[r, o:o + k].view(s) for n, o, k, s in zip(self.names, self.offsets, self.numels, self.shapes)}

    def run_state_dict(self, r: int, host_theta: Tensor | None = None) -> dict[str, Tensor]:
        """What ``Classifier.state_dict()`` holds for run ``r`` (``model.<name>``), as copies (of
        ``host_theta``, a host copy of ``theta`` taken once for many runs, if given)."""
        theta = self.theta if host_theta is None else host_theta
        return {f"model.{n}": theta[r, o:o + k].view(s).clone().cpu()
                for n, o, k, s in zip(self.names, self.offsets, self.numels, self.shapes)}

    def load_run_state_dict(self, r: int, sd: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for n, v in self.run_view(r).items():
                v.copy_(sd[f"model.{n}"])


# -- one optimizer per block of runs ---------------------------------------------------------

@dataclass
class OptimSpec:
    name: str
    semantics: str
    lr: float
    kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, cfg: RunConfig) -> "OptimSpec":
        return cls(cfg.optim.name, cfg.optim.semantics, float(cfg.optim.lr), dict(cfg.optim.kwargs))

    def key(self) -> tuple:
        return (self.name, self.semantics, self.lr, repr(sorted(self.kwargs.items())))


class SliceOptimizers:
    """One optimizer from the registry per contiguous block of runs, over that block as one flat
    parameter (``theta[a:b].view(-1)``, its grad ``G[a:b].view(-1)``): one fused kernel call each."""

    def __init__(self, model: StackedMLP, specs: list[OptimSpec]):
        if len(specs) != model.R:
            raise ValueError(f"{len(specs)} optimizer specs for {model.R} runs")
        self.model = model
        self.blocks: list[tuple[int, int]] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        self.flat: list[nn.Parameter] = []
        a = 0
        while a < len(specs):
            b = a
            while b < len(specs) and specs[b].key() == specs[a].key():
                b += 1
            if any(s.key() == specs[a].key() for s in specs[b:]):
                raise ValueError("runs of one optimizer must be contiguous (sort them by optimizer first)")
            q = nn.Parameter(model.theta[a:b].view(-1))
            q.grad = model.grad[a:b].view(-1)
            s = specs[a]
            self.optimizers.append(create_optimizer(s.name, [q], semantics=s.semantics, lr=s.lr, **s.kwargs))
            self.blocks.append((a, b))
            self.flat.append(q)
            a = b

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def block_of(self, r: int) -> tuple[int, int]:
        for j, (a, b) in enumerate(self.blocks):
            if a <= r < b:
                return j, r - a
        raise IndexError(r)

    def host_states(self) -> list[dict[str, Any]]:
        """Every block's optimizer state copied to the host at once (one transfer per state
        buffer, not one per run and tensor): pass it to :meth:`run_state_dict` for many runs."""
        return [{k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in opt.state.get(q, {}).items()}
                for opt, q in zip(self.optimizers, self.flat)]

    def run_state(self, r: int, host: list[dict[str, Any]] | None = None
                  ) -> tuple[torch.optim.Optimizer, dict[str, Any], dict[str, dict[str, Tensor]]]:
        """(optimizer, its group, ``param name -> state`` views shaped like run ``r``'s params),
        of the live state or of ``host`` (:meth:`host_states`)."""
        j, i = self.block_of(r)
        opt, q = self.optimizers[j], self.flat[j]
        P, m = self.model.P, self.model
        st = host[j] if host is not None else opt.state.get(q, {})
        out: dict[str, dict[str, Tensor]] = {}
        for n, o, k, s in zip(m.names, m.offsets, m.numels, m.shapes):
            out[n] = {key: (v[i * P + o:i * P + o + k].view(s) if torch.is_tensor(v) and v.dim() == 1 and v.numel() == q.numel()
                            else v) for key, v in st.items()}
        return opt, opt.param_groups[0], out

    def run_state_dict(self, r: int, host: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run ``r``'s optimizer state in the layout a separate run's optimizer (over the model's
        ``parameters()``) saves: ``state[i]`` per parameter, one param group, ``global_state``."""
        opt, group, per_param = self.run_state(r, host)
        sd = opt.state_dict()
        state = {i: {k: (v.detach().clone().cpu() if torch.is_tensor(v) else v) for k, v in per_param[n].items()}
                 for i, n in enumerate(self.model.names) if per_param[n]}
        groups = [{**{k: v for k, v in sd["param_groups"][0].items() if k != "params"},
                   "params": list(range(len(self.model.names)))}]
        return {"state": state, "param_groups": groups, **{k: v for k, v in sd.items() if k not in ("state", "param_groups")}}

    def load_run_state_dicts(self, sds: list[dict[str, Any]]) -> None:
        """Load every run's saved optimizer state (one per run, in run order)."""
        names = self.model.names
        for j, (a, b) in enumerate(self.blocks):
            opt, q = self.optimizers[j], self.flat[j]
            block = sds[a:b]
            first = block[0]
            state: dict[int, dict[str, Any]] = {}
            if first["state"]:
                keys = first["state"][0].keys()
                merged: dict[str, Any] = {}
                for key in keys:
                    v0 = first["state"][0][key]
                    if torch.is_tensor(v0) and v0.dim() > 0:
                        merged[key] = torch.cat([sd["state"][i][key].reshape(-1) for sd in block for i in range(len(names))])
                    else:
                        merged[key] = v0
                state = {0: merged}
            group = {**{k: v for k, v in first["param_groups"][0].items() if k != "params"}, "params": [0]}
            opt.load_state_dict({"state": state, "param_groups": [group],
                                 **{k: v for k, v in first.items() if k not in ("state", "param_groups")}})


# -- which runs can share a stack ----------------------------------------------------------------

def stack_key(cfg: RunConfig) -> tuple | None:
    """Runs with equal keys can train in one stack (None: this run cannot be stacked)."""
    if not is_stackable(cfg.model.name):
        return None
    t = cfg.trainer
    return (cfg.model.name, cfg.data.data_dir, cfg.data.split, cfg.data.val_size, t.epochs, t.batch_size,
            t.limit_batches, t.accelerator, t.precision, t.log_every_n_steps, t.steps_per_batch, t.val_batch_size,
            t.diagnostics, t.diagnostics_every_n_steps, t.graph_step, cfg.logdir, cfg.experiment)


# -- training ------------------------------------------------------------------------------------

class _Run:
    """Bookkeeping of one run of a stack: its folder, logger, rows, totals, status."""

    def __init__(self, cfg: RunConfig, r: int):
        self.cfg, self.r = cfg, r
        self.key = f"{cfg.run_label}/seed{cfg.seed}"
        self.rows: list[dict[str, Any]] = []
        self.diag_rows: list[dict[str, Any]] = []
        self.last_eff: dict[str, Tensor] = {}
        self.totals = [0.0, 0.0, 0]
        self.diverged: dict[str, int] | None = None
        self.record: dict[str, Any] = {}
        self.logger: Any = None
        self.wall_before = 0.0
        self.resume_state: dict[str, Any] | None = None


def _load_resume(run: _Run, restart: bool) -> None:
    """Read run ``run``'s checkpoint when it resumes (the checks ``train.run`` makes)."""
    from .io import read_json
    from .train import _verify_checkpoint, check_resumable

    cfg = run.cfg
    previous = read_json(cfg.run_dir / "run.json")
    ckpt = cfg.run_dir / "last.ckpt"
    resume = ckpt.exists() and not restart
    check_resumable(cfg, previous, resume=resume, restart=restart)
    if resume:
        state = _verify_checkpoint(ckpt)
        run.resume_state = state
        rec = _recorder_state(state)
        run.rows = list(rec.get("rows", []))
        run.wall_before = float(rec.get("wall_s", 0.0))
        run.diag_rows = list(_diag_state(state).get("rows", []))


def _recorder_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    """RunRecorder's saved state, from a stacked or a Lightning checkpoint."""
    for k, v in (ckpt.get("callbacks") or {}).items():
        if str(k).startswith("RunRecorder"):
            return v
    return {}


def _diag_state(ckpt: dict[str, Any]) -> dict[str, Any]:
    for k, v in (ckpt.get("callbacks") or {}).items():
        if str(k).startswith("OptimizerDiagnostics"):
            return v
    return {}


class StackedTrainer:
    """Trains a list of stackable runs (equal :func:`stack_key`) that start at the same epoch."""

    def __init__(self, runs: list[_Run], dataset: FashionMNIST, device: str, *,
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
    def _live(self) -> list[_Run]:
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
                run.logger.experiment.add_scalar("train/loss_step", loss_sum / n, self.opt_steps)

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

    def train_epoch(self, epoch: int, diag: "_Diagnostics | None") -> None:
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
        from .graphs import GraphedStep

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


class _Diagnostics:
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

    def chunk_end(self, epoch: int, opt_steps: int, live: list[_Run]) -> None:
        """Every run's rows at once: per optimizer block and parameter tensor, the statistics of
        all its runs as [runs] tensors, then one read to the host for the whole measurement."""
        from lightning_module.callbacks import _QUANTILES, effective_lr, quantile_sample

        if self.snapshot is None:
            return
        m, tr, steps = self.tr.model, self.tr, max(opt_steps - self.steps_at, 1)
        delta = m.theta - self.snapshot
        self.snapshot = None
        live_ids = {run.r for run in live}
        pieces: list[Tensor] = []  # per (block, param): [5, runs] = p10, p50, p90, update ratio, grad norm
        keys: list[tuple[int, int, str, bool]] = []  # (first run, runs, param name, has eff)
        for j, (a, b) in enumerate(tr.opts.blocks):
            opt, q = tr.opts.optimizers[j], tr.opts.flat[j]
            group, st = opt.param_groups[0], opt.state.get(q, {})
            for n, o, k, shape in zip(m.names, m.offsets, m.numels, m.shapes):
                p = m.theta[a:b, o:o + k]
                state = {key: (v.view(b - a, m.P)[:, o:o + k] if torch.is_tensor(v) and v.numel() == q.numel() else v)
                         for key, v in st.items()}
                eff = effective_lr(_StateOf({p: state}), group, p)  # type: ignore[arg-type]
                if eff is None:
                    qs = torch.full((3, b - a), float(group["lr"]), dtype=torch.float64, device=p.device)
                else:
                    qs = torch.quantile(quantile_sample(eff).double(), _QUANTILES.to(p.device), dim=1)
                    for r in range(a, b):
                        if r in live_ids:
                            self.tr.runs[r].last_eff[n] = eff[r - a].detach().view(shape).clone()
                ratio = delta[a:b, o:o + k].norm(dim=1) / (p.norm(dim=1) + 1e-12) / steps
                gnorm = m.grad[a:b, o:o + k].norm(dim=1)
                pieces.append(torch.cat([qs, ratio.double()[None], gnorm.double()[None]]))
                keys.append((a, b - a, n, eff is not None))
        host = torch.cat(pieces, dim=1).cpu() if pieces else None  # the one host sync
        col = 0
        for a, count, n, _ in keys:
            for i in range(count):
                run = self.tr.runs[a + i]
                v = host[:, col + i].tolist()
                if run.r not in live_ids:
                    continue
                row = {"epoch": epoch + 1, "step": opt_steps, "param": n, "eff_lr_p10": v[0], "eff_lr_p50": v[1],
                       "eff_lr_p90": v[2], "update_ratio": v[3], "grad_norm": v[4]}
                run.diag_rows.append(row)
                if run.logger is not None:
                    for key in ("eff_lr_p50", "update_ratio", "grad_norm"):
                        run.logger.experiment.add_scalar(f"diag/{n}/{key}", row[key], row["step"])
            col += count


class _StateOf:
    """The ``optimizer.state`` that :func:`effective_lr` reads, for one run's slice."""

    def __init__(self, state: dict[Tensor, dict[str, Any]]):
        self.state = state


# -- writing the run folders -----------------------------------------------------------------------

class _Writer:
    """Writes the runs' checkpoints and CSVs on a background thread, in submission order, while
    the next epoch trains (40 checkpoints of 3.3 MB take ~1 s: on a GPU, longer than an epoch).
    Each file still goes to a temporary name and is renamed into place, checkpoint before CSV, so
    a kill at any moment leaves a resumable folder. At most one epoch's writes are pending."""

    def __init__(self) -> None:
        self._q: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="stacked-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._q.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread
                self._error = exc
            finally:
                self._q.task_done()

    def wait(self) -> None:
        """Block until every submitted write is on disk; re-raise a write's error here."""
        self._q.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, job: Callable[[], None]) -> None:
        self._q.put(job)

    def close(self, raise_errors: bool = True) -> None:
        """Finish the pending writes and stop; a write's error is raised unless ``raise_errors``
        is False (an error already on its way out must not be replaced by it)."""
        try:
            self.wait()
        except BaseException:
            if raise_errors:
                raise
        finally:
            self._q.put(None)
            self._thread.join(timeout=60)


def _checkpoint(tr: StackedTrainer, run: _Run, epoch: int, host: tuple[Tensor, list[dict[str, Any]]]) -> dict[str, Any]:
    """Run ``run``'s checkpoint (a separate run's layout: model state, optimizer state, rows)."""
    return {
        "engine": "stacked", "epoch": epoch, "opt_steps": tr.opt_steps,
        "state_dict": tr.model.run_state_dict(run.r, host[0]),
        "optimizer_states": [tr.opts.run_state_dict(run.r, host[1])],
        "callbacks": {"RunRecorder": {"rows": list(run.rows), "wall_s": run.rows[-1]["wall_s"] if run.rows else 0.0},
                      "OptimizerDiagnostics": {"rows": list(run.diag_rows)}},
    }


def _write_run_files(run: _Run, state: dict[str, Any], epoch: int) -> None:
    """The checkpoint (atomically), then the CSVs it carries the rows of."""
    from lightning_module.callbacks import DIAG_COLUMNS, METRIC_COLUMNS, _csv_text, _test_pause

    from .io import atomic_write_text

    _test_pause("before_ckpt", epoch, run.key)
    ckpt = run.cfg.run_dir / "last.ckpt"
    tmp = ckpt.with_name(".last.ckpt.tmp")
    try:
        torch.save(state, tmp)
        _test_pause("ckpt_tmp", epoch, run.key)
        os.replace(tmp, ckpt)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    callbacks = state["callbacks"]
    atomic_write_text(run.cfg.run_dir / "metrics.csv", _csv_text(METRIC_COLUMNS, callbacks["RunRecorder"]["rows"]))
    if run.cfg.trainer.diagnostics:
        atomic_write_text(run.cfg.run_dir / "diagnostics.csv",
                          _csv_text(DIAG_COLUMNS, callbacks["OptimizerDiagnostics"]["rows"]))


def _end_epoch(tr: StackedTrainer, epoch: int, t0: float, val: tuple[Tensor, Tensor], summary: bool,
               writer: _Writer) -> None:
    from lightning_module.callbacks import log_eff_histograms

    writer.wait()  # the previous epoch's files are on disk (and its host copies can go)
    host = (tr.model.theta.detach().cpu(), tr.opts.host_states())  # one transfer each, for every run's checkpoint
    for run in tr._live():
        loss_sum, correct, n = run.totals
        row = {"epoch": epoch + 1, "step": tr.opt_steps, "wall_s": round(run.wall_before + time.perf_counter() - t0, 3),
               "train_loss": loss_sum / n if n else math.nan, "train_acc": correct / n if n else math.nan,
               "val_loss": float(val[0][run.r]), "val_acc": float(val[1][run.r]),
               "lr": float(tr.opts.run_state(run.r, host[1])[1]["lr"])}
        run.rows.append(row)
        w = run.logger.experiment
        for key in ("train_loss", "train_acc", "val_loss", "val_acc"):
            w.add_scalar(key.replace("_", "/", 1), row[key], row["step"])
        w.add_scalar("lr/group0", row["lr"], row["step"])
        log_eff_histograms(w, run.last_eff, tr.opt_steps)
        run.last_eff = {}
        w.flush()
        state = _checkpoint(tr, run, epoch + 1, host)
        writer.submit(lambda run=run, state=state, e=epoch + 1: _write_run_files(run, state, e))
        if summary:
            print(f"{run.key}: epoch {row['epoch']:>3}/{run.cfg.trainer.epochs}  train loss {row['train_loss']:.4f}"
                  f" acc {100 * row['train_acc']:.2f}%  val loss {row['val_loss']:.4f} acc {100 * row['val_acc']:.2f}%"
                  f"  ({row['wall_s']:.1f} s)", file=sys.stderr, flush=True)
        if tr.on_epoch is not None:
            tr.on_epoch(run.key, {"label": run.cfg.run_label, "seed": run.cfg.seed, **row, "epochs": run.cfg.trainer.epochs})


def train_stacked(cfgs: list[RunConfig], *, restart: bool = False, dataset: FashionMNIST | None = None,
                  summary: bool = False, on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
                  on_start: Callable[[str], None] | None = None,
                  use_graph: bool | None = None) -> dict[str, tuple[str, Any]]:
    """Train runs with equal :func:`stack_key` as stacks; write each run's folder as ``train.run``.

    Returns ``run key -> ("ok", run.json) | ("user", message) | ("error", traceback)``: like the
    review's per-run outcomes. Runs resuming from different epochs train as separate stacks.
    """
    from .data import load_fashion_mnist
    from .train import _check_writable, _clear_run, new_record, resolve_device

    keys = {stack_key(c) for c in cfgs}
    if None in keys or len(keys) != 1:
        raise ValueError("train_stacked needs runs of one stackable configuration (equal stack_key)")
    if not cfgs:
        return {}
    results: dict[str, tuple[str, Any]] = {}
    t = cfgs[0].trainer
    device = resolve_device(t.accelerator)
    ds = dataset if dataset is not None else load_fashion_mnist(cfgs[0].data.data_dir)
    runs: list[_Run] = []
    for cfg in sorted(cfgs, key=lambda c: (OptimSpec.of(c).key(), c.seed)):
        run = _Run(cfg, 0)
        try:
            split_indices(len(ds.train_labels), cfg.data.split, cfg.data.val_size, cfg.seed)  # before any write
            _load_resume(run, restart)
            _check_writable(cfg.run_dir)
        except UserError as exc:
            results[run.key] = ("user", str(exc))
            continue
        runs.append(run)
    by_start: dict[int, list[_Run]] = {}
    for run in runs:
        by_start.setdefault(len(run.rows), []).append(run)
    for start, group in sorted(by_start.items()):
        for r, run in enumerate(group):
            run.r = r
        try:
            results.update(_train_group(group, ds, device, restart=restart, summary=summary, on_epoch=on_epoch,
                                        on_start=on_start, use_graph=use_graph, new_record=new_record,
                                        clear=_clear_run))
        except KeyboardInterrupt:
            raise
        except UserError as exc:
            for run in group:
                results.setdefault(run.key, ("user", str(exc)))
        except Exception:  # noqa: BLE001 - one stack's crash fails its runs, not the review
            tb = traceback.format_exc()
            for run in group:
                _write_failed(run, tb.strip().splitlines()[-1])
                results.setdefault(run.key, ("error", tb))
    return results


def _write_failed(run: _Run, error: str) -> None:
    from .io import atomic_write_json

    if run.record:
        with contextlib.suppress(OSError):
            atomic_write_json(run.cfg.run_dir / "run.json", {**run.record, "status": "failed", "error": error,
                                                             "epochs_completed": len(run.rows),
                                                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _train_group(runs: list[_Run], ds: FashionMNIST, device: str, *, restart: bool, summary: bool,
                 on_epoch: Callable[[str, dict[str, Any]], None] | None, on_start: Callable[[str], None] | None,
                 use_graph: bool | None, new_record: Callable[..., dict[str, Any]],
                 clear: Callable[[Path], None]) -> dict[str, tuple[str, Any]]:
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning_module.callbacks import CUSTOM_SCALARS

    from .io import atomic_write_json
    from .train import DIVERGED, DONE, hparams_of, set_tf32

    t = runs[0].cfg.trainer
    set_tf32(device, t.precision)
    if t.threads:
        torch.set_num_threads(t.threads)
    for run in runs:
        cfg = run.cfg
        if run.resume_state is None:
            clear(cfg.run_dir)
        else:
            for leftover in cfg.run_dir.glob(".*.tmp"):
                leftover.unlink()
        run.record = new_record(cfg, device, engine="stacked")
        atomic_write_json(cfg.run_dir / "run.json", run.record)
        purge = int(run.resume_state["opt_steps"]) + 1 if run.resume_state is not None else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run.logger = TensorBoardLogger(str(Path(cfg.logdir)), name=cfg.experiment,
                                           version=f"{cfg.run_label}/seed{cfg.seed}", default_hp_metric=False,
                                           purge_step=purge)
        if not run.rows:
            run.logger.experiment.add_custom_scalars(CUSTOM_SCALARS)
        if on_start is not None:
            on_start(run.key)

    if use_graph is None and t.graph_step != "auto":
        use_graph = t.graph_step == "on"
    tr = StackedTrainer(runs, ds, device, on_epoch=on_epoch, use_graph=use_graph)
    diag = _Diagnostics(tr, t.diagnostics_every_n_steps) if t.diagnostics else None
    t0 = time.perf_counter()
    writer = _Writer()
    try:
        for epoch in range(tr.start_epoch, t.epochs):
            tr.train_epoch(epoch, diag)
            if not tr._live():
                break
            _end_epoch(tr, epoch, t0, tr.evaluate("val"), summary, writer)
        test = tr.evaluate("test")
        writer.wait()  # every checkpoint and CSV on disk before any run is recorded as finished
    finally:
        writer.close(raise_errors=sys.exc_info()[0] is None)
        for run in runs:
            with contextlib.suppress(OSError):
                run.logger.finalize("success")
    out: dict[str, tuple[str, Any]] = {}
    for run in runs:
        cfg, rec = run.cfg, run.record
        rec["epochs_completed"] = len(run.rows)
        rec["wall_s"] = run.rows[-1]["wall_s"] if run.rows else 0.0
        if run.diverged is not None:
            rec.update(status=DIVERGED, diverged=run.diverged)
        else:
            rec["test"] = {"loss": float(test[0][run.r]), "acc": float(test[1][run.r])}
            rec["status"] = DONE
            last = run.rows[-1]
            run.logger.log_hyperparams(hparams_of(cfg), {"hp/val_acc": last["val_acc"], "hp/val_loss": last["val_loss"],
                                                         "hp/test_acc": rec["test"]["acc"]})
            run.logger.finalize("success")
        rec["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(cfg.run_dir / "run.json", rec)
        out[run.key] = ("ok", rec)
    return out
