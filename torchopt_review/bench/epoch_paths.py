"""The training paths ``bench epoch`` races, each timing one epoch of the blog MLP on the same
data: a plain PyTorch loop, Lightning's default loop, and the project's real path
(``torchopt_review.train.run``); and the plain loop's step split into its parts."""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .timing import Sync, median


@dataclass
class EpochData:
    train_x: Any
    train_y: Any
    val_x: Any
    val_y: Any
    dataset: Any  # a torchopt_review.data.FashionMNIST (for the real path)
    note: str
    data_dir: str | None  # for processes that load it themselves (None: synthetic)

    def to(self, device: str) -> "EpochData":
        """The four tensors on ``device`` (the dataset and note unchanged)."""
        return EpochData(self.train_x.to(device), self.train_y.to(device), self.val_x.to(device),
                         self.val_y.to(device), self.dataset, self.note, self.data_dir)


def load_epoch_data(data_dir: str | None, *, synthetic: bool = False) -> EpochData:
    """The Fashion-MNIST training split (54,000 / 6,000, Keras's validation split), or synthetic
    data of the same size when the files are absent (with a note saying so)."""
    import torch

    from .. import data as fm
    from ..errors import DataError

    ds, note, where = None, "", None
    if not synthetic:
        try:
            ds = fm.load_fashion_mnist(data_dir)
            note = f"Fashion-MNIST from {ds.source}"
            where = str(ds.source)
        except DataError as exc:
            if data_dir:
                raise
            note = f"NOTE: real Fashion-MNIST not found ({exc}); using SYNTHETIC data of the same size"
    if ds is None:
        note = note or "NOTE: --synthetic: random uint8 images of Fashion-MNIST's size"
        g = torch.Generator().manual_seed(0)
        ds = fm.FashionMNIST(torch.randint(0, 256, (60000, 784), generator=g, dtype=torch.uint8),
                             torch.randint(0, 10, (60000,), generator=g),
                             torch.randint(0, 256, (10000, 784), generator=g, dtype=torch.uint8),
                             torch.randint(0, 10, (10000,), generator=g), Path("<synthetic>"))
    n = len(ds.train_labels)
    val = min(6000, max(1, n // 10))
    tr, va = fm.split_indices(n, "keras", val, 0)
    return EpochData(ds.train_images[tr], ds.train_labels[tr], ds.train_images[va], ds.train_labels[va], ds, note, where)


def plain_epoch(model: Any, opt: Any, d: EpochData, bs: int, steps: int, epoch: int, device: str) -> float:
    """One epoch of a plain PyTorch loop: whole-batch gathers from in-memory uint8 tensors, then
    the same validation pass as the real path (6,000 images in batches of 1,000). Seconds."""
    import torch
    import torch.nn.functional as F

    sync = Sync(device)
    x, y = d.train_x, d.train_y
    n = len(y)
    g = torch.Generator().manual_seed(epoch)
    sync()
    t0 = time.perf_counter()
    perm = torch.randperm(n, generator=g).to(device)
    for i in range(steps):
        idx = perm[i * bs:(i + 1) * bs]
        xb = x[idx].float().div_(255.0)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        for j in range(0, len(d.val_y), 1000):
            F.cross_entropy(model(d.val_x[j:j + 1000].float().div_(255.0)), d.val_y[j:j + 1000])
    sync()
    return time.perf_counter() - t0


def lightning_default_epoch(d: EpochData, bs: int, steps: int, device: str) -> float:
    """One epoch the way a Lightning tutorial writes it: automatic optimization, a DataLoader over
    the in-memory tensors (shuffled, batch ``bs``), ``torch.optim.Adam`` (fused on CUDA), one
    optimizer step per Lightning batch, the validation pass; no logger, bar or checkpoint. Seconds."""
    import lightning as L
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    from ..models import build_model

    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = build_model("blog_mlp")

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return F.cross_entropy(self.model(x.float().div(255.0)), y)

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            x, y = batch
            F.cross_entropy(self.model(x.float().div(255.0)), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), fused=device == "cuda")

    torch.manual_seed(0)
    train = DataLoader(TensorDataset(d.train_x, d.train_y), batch_size=bs, shuffle=True,
                       generator=torch.Generator(device="cpu").manual_seed(0))
    val = DataLoader(TensorDataset(d.val_x, d.val_y), batch_size=1000)
    from lightning.pytorch.plugins.environments import LightningEnvironment

    trainer = L.Trainer(plugins=[LightningEnvironment()],  # as train.run: one process, not SLURM's environment
                        accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=1,
                        limit_train_batches=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    sync = Sync(device)
    sync()
    t0 = time.perf_counter()
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Plain(), train, val)
    sync()
    return time.perf_counter() - t0


def real_path_epoch(d: EpochData, bs: int, threads: int, steps: int | None, logdir: Path, device: str,
                    tag: str) -> dict[str, float]:
    """One epoch of the project's training path, as ``python -m torchopt_review.train --opt adam
    --epochs 1`` runs it (Lightning, TensorBoard, RunRecorder + OptimizerDiagnostics, progress bar
    to a null stream). Returns ``wall_s`` (metrics.csv: training epoch + validation, from
    on_train_start to the end of the epoch) and ``run_s`` (the whole ``run()`` call: set-up, the
    epoch, checkpoint, test pass, TensorBoard hparams)."""
    from ..config import load_config
    from ..train import run

    overrides = {"logdir": str(logdir), "experiment": "bench", "label": tag, "seed": 0,
                 "data": {"val_size": len(d.val_y)},
                 "trainer": {"epochs": 1, "batch_size": bs, "threads": threads, "limit_batches": steps,
                             "accelerator": "gpu" if device == "cuda" else "cpu"}}
    cfg = load_config("adam", [], overrides)
    t0 = time.perf_counter()
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), \
            contextlib.redirect_stdout(sink):  # the bar writes to stdout
        rec = run(cfg, restart=True, progress=True, summary=False, dataset=d.dataset)
    run_s = time.perf_counter() - t0
    if rec.get("status") != "done":
        raise RuntimeError(f"real path run ended {rec.get('status')}: {rec.get('error')}")
    return {"wall_s": float(rec["wall_s"]), "run_s": run_s}


def plain_components(d: EpochData, bs: int, steps: int, device: str, opt_factory: Callable[[Any], Any]) -> dict[str, float]:
    """Where a plain loop's step goes: gather, forward + loss, zero_grad, backward, optimizer step
    (medians over ``steps`` steps, timed one by one)."""
    import torch
    import torch.nn.functional as F

    from ..models import build_model

    sync = Sync(device)
    torch.manual_seed(0)
    model = build_model("blog_mlp").to(device)
    opt = opt_factory(model.parameters())
    perm = torch.randperm(len(d.train_y)).to(device)
    parts: dict[str, list[float]] = {k: [] for k in ("gather", "forward+loss", "zero_grad", "backward", "step")}
    clock = time.perf_counter
    for i in range(steps):
        idx = perm[(i * bs) % (len(perm) - bs):][:bs]
        t0 = clock()
        xb = d.train_x[idx].float().div_(255.0)
        yb = d.train_y[idx]
        sync(); t1 = clock()
        loss = F.cross_entropy(model(xb), yb)
        sync(); t2 = clock()
        opt.zero_grad()
        t3 = clock()
        loss.backward()
        sync(); t4 = clock()
        opt.step()
        sync(); t5 = clock()
        for k, a, b in (("gather", t0, t1), ("forward+loss", t1, t2), ("zero_grad", t2, t3), ("backward", t3, t4),
                        ("step", t4, t5)):
            parts[k].append(b - a)
    return {k: median(v) for k, v in parts.items()}
