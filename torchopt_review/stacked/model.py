"""The stacked model (R copies of an MLP as one batched model over ``theta[R, P]``), one optimizer
per contiguous block of runs, and which runs can share a stack."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..models import build_model
from ..optim import create_optimizer

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
            opt = self.optimizers[j]
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
