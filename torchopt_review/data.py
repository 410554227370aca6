"""Fashion-MNIST from its four IDX files, held in memory as uint8 tensors, gathered in whole batches.

Where the files are looked for, in order:

1. ``--data-dir`` (``data.data_dir`` in a config),
2. the environment variable ``TORCHOPT_DATA_DIR``,
3. ``/usr/share/datasets/fashion-mnist`` (Debian's package ``dataset-fashion-mnist``),
4. a torchvision-style ``./data/FashionMNIST/raw``.

Each file may be gzipped (``.gz``) or raw. Nothing is ever downloaded. Batches are gathered with
one index operation on the whole uint8 tensor and scaled to [0, 1] floats (``pixels / 255``, as
the blog does); there is no per-sample PIL / ToTensor path, which is 2-3x slower.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_DIR = Path("data/FashionMNIST/raw")
DEBIAN_PACKAGE = "dataset-fashion-mnist"

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
NUM_CLASSES = len(CLASSES)

_IDX_UBYTE = 0x08


@dataclass(frozen=True)
class FashionMNIST:
    """The whole dataset in memory: images (N, 784) uint8, labels (N,) int64."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: Path

    def to(self, device: torch.device | str) -> "FashionMNIST":
        return FashionMNIST(*(t.to(device) for t in (self.train_images, self.train_labels, self.test_images, self.test_labels)), self.source)


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (directory / name).is_file():
            return directory / name
    return None


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    dirs: list[Path] = []
    if data_dir:
        dirs.append(Path(data_dir))
    env = os.environ.get("TORCHOPT_DATA_DIR")
    if env:
        dirs.append(Path(env))
    dirs += [DEBIAN_DIR, TORCHVISION_DIR]
    return dirs


def find_data_dir(data_dir: str | Path | None = None) -> Path:
    """The first directory holding all four IDX files; a :class:`DataError` saying where it looked."""
    if data_dir:  # an explicit directory must hold the files: never fall back silently
        tried = [Path(data_dir)]
    else:
        tried = candidate_dirs()
    for d in tried:
        if all(_file_in(d, stem) for stem in FILES.values()):
            return d
    if data_dir:
        d = Path(data_dir)
        missing = [s for s in FILES.values() if not _file_in(d, s)]
        where = f"{d} does not exist" if not d.exists() else f"{d} lacks {', '.join(missing)}(.gz)"
        raise DataError(f"Fashion-MNIST not found: {where}; point --data-dir at the folder with the four IDX files")
    raise DataError(
        "Fashion-MNIST not found (looked in " + ", ".join(str(d) for d in tried) + "); "
        f"install it with 'sudo apt-get install {DEBIAN_PACKAGE}' or pass --data-dir DIR with the four IDX files"
    )


def read_idx(path: str | Path, *, expect_ndim: int | None = None) -> torch.Tensor:
    """Read one IDX file (raw or gzipped) of unsigned bytes into a uint8 tensor of its shape.

    Checks the magic number, the declared sizes against the bytes present, and names the file
    in every error.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc} (corrupt or truncated file? reinstall {DEBIAN_PACKAGE} or replace it)") from None
    if len(raw) < 4:
        raise DataError(f"{path} is not an IDX file: only {len(raw)} bytes")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != _IDX_UBYTE or ndim == 0 or (expect_ndim is not None and ndim != expect_ndim):
        want = f"0x000008{expect_ndim:02x}" if expect_ndim else "0x000008NN"
        raise DataError(f"{path} has the wrong magic number 0x{raw[:4].hex()} (expected {want}): not an IDX file of this kind")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = 1
    for s in shape:
        count *= s
    if len(raw) - header != count:
        raise DataError(
            f"{path} is truncated or padded: its header declares shape {tuple(shape)} ({count:,} bytes) "
            f"but {len(raw) - header:,} bytes follow"
        )
    if count == 0:
        raise DataError(f"{path} declares shape {tuple(shape)}: it holds no data (reinstall {DEBIAN_PACKAGE} or replace it)")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


_CACHE: dict[tuple, FashionMNIST] = {}


def load_fashion_mnist(data_dir: str | Path | None = None) -> FashionMNIST:
    """Load (once per process) the four files into memory and check they are consistent."""
    d = find_data_dir(data_dir)
    paths = {k: _file_in(d, stem) for k, stem in FILES.items()}
    key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths.values())
    if key in _CACHE:
        return _CACHE[key]
    tensors = {}
    for k, p in paths.items():
        t = read_idx(p, expect_ndim=3 if k.endswith("images") else 1)
        if k.endswith("images"):
            if t.shape[1:] != (28, 28):
                raise DataError(f"{p} holds images of shape {tuple(t.shape[1:])}, expected 28x28")
            t = t.reshape(t.shape[0], 28 * 28)
        else:
            if t.numel() and int(t.max()) >= NUM_CLASSES:
                raise DataError(f"{p} has label {int(t.max())} out of range 0-{NUM_CLASSES - 1}")
            t = t.long()
        tensors[k] = t
    for split in ("train", "test"):
        n_img, n_lab = len(tensors[f"{split}_images"]), len(tensors[f"{split}_labels"])
        if n_img != n_lab:
            raise DataError(
                f"{paths[f'{split}_images']} holds {n_img:,} images but {paths[f'{split}_labels']} holds {n_lab:,} labels"
            )
    ds = FashionMNIST(tensors["train_images"], tensors["train_labels"], tensors["test_images"], tensors["test_labels"], d)
    _CACHE[key] = ds
    return ds


def split_indices(n: int, kind: str, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation parts of the ``n`` training images.

    ``keras``: the last ``val_size`` images validate, like Keras's ``validation_split`` (taken
    before any shuffling). ``random``: a permutation seeded by ``seed``.
    """
    if not 0 < val_size < n:
        raise DataError(f"validation size {val_size} must be between 1 and {n - 1} for {n} training images")
    if kind == "keras":
        idx = torch.arange(n)
    elif kind == "random":
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(10_007 * seed + 1))
    else:
        raise ValueError(f"unknown split {kind!r}; use 'keras' or 'random'")
    return idx[: n - val_size].sort().values, idx[n - val_size:].sort().values


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The shuffled order of epoch ``epoch`` (0-based): a function of (seed, epoch) only, so a run
    resumed at any epoch sees exactly the order an uninterrupted run saw."""
    g = torch.Generator().manual_seed(1_000_003 * seed + 7919 * epoch + 17)
    return torch.randperm(n, generator=g).to(device)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (the blog's ``/ 255``)."""
    return images.float().div_(255.0)


class ChunkedBatches:
    """An epoch as an iterable of chunks of ``steps`` mini-batches.

    Each item is ``(images_uint8, labels)`` holding up to ``steps * batch_size`` examples in the
    epoch's order; the training step splits it into mini-batches of ``batch_size`` (the last one of
    the epoch may be smaller, as in Keras: it is trained, not dropped). Chunking lets one Lightning
    batch run several optimizer steps, so Lightning's per-batch cost is paid rarely.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int, steps: int,
                 seed: int, shuffle: bool = True, limit_batches: int | None = None):
        self.images, self.labels = images, labels
        self.batch_size, self.steps, self.seed, self.shuffle = batch_size, steps, seed, shuffle
        self.limit_batches = limit_batches
        self.epoch = 0  # set by the DataModule before each epoch

    @property
    def num_batches(self) -> int:
        n = -(-len(self.labels) // self.batch_size)
        return min(n, self.limit_batches) if self.limit_batches else n

    def __len__(self) -> int:
        return -(-self.num_batches // self.steps)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = epoch_permutation(n, self.seed, self.epoch, self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        order = order[: self.num_batches * self.batch_size]
        chunk = self.steps * self.batch_size
        for start in range(0, len(order), chunk):
            idx = order[start:start + chunk]
            yield self.images[idx], self.labels[idx]
