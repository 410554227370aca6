"""Shared fixtures. The suite never needs the real dataset or the network: it writes small
synthetic IDX files (learnable: each class has its own pixel pattern plus noise)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


def write_idx(path: Path, array: torch.Tensor, *, gz: bool = True) -> Path:
    """Write a uint8 tensor as an IDX file (magic 0x0000 08 ndim, big-endian sizes)."""
    arr = array.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, 0x08, arr.dim()) + struct.pack(f">{arr.dim()}I", *arr.shape)
    data = header + arr.numpy().tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_synthetic(n_train: int = 1200, n_test: int = 300, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(10, 28, 28, generator=g) > 0.6).float() * 200

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (n,), generator=g)
        noise = torch.rand(n, 28, 28, generator=g) * 220
        images = (prototypes[labels] * 0.5 + noise).clamp(0, 255).to(torch.uint8)
        return images, labels.to(torch.uint8)

    tri, trl = draw(n_train)
    tei, tel = draw(n_test)
    return {"train-images-idx3-ubyte": tri, "train-labels-idx1-ubyte": trl,
            "t10k-images-idx3-ubyte": tei, "t10k-labels-idx1-ubyte": tel}


def write_synthetic_dir(directory: Path, *, gz: bool = True, **kwargs) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for stem, tensor in make_synthetic(**kwargs).items():
        write_idx(directory / (stem + (".gz" if gz else "")), tensor, gz=gz)
    return directory


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory) -> Path:
    """A folder with four small gzipped IDX files (1,200 train / 300 test images)."""
    return write_synthetic_dir(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(autouse=True)
def _no_real_dataset_by_accident(monkeypatch, request):
    """Outside `dataset`-marked tests, never fall back to the real dataset's folder."""
    if "dataset" not in request.keywords:
        monkeypatch.delenv("TORCHOPT_DATA_DIR", raising=False)
