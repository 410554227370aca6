"""LightningDataModule over the in-memory uint8 tensors of :mod:`torchopt_review.data`.

No worker processes, no per-sample transforms: the whole dataset is two tensors (on the training
device), and an epoch is a handful of whole-batch gathers. The seed fixes the data order of every
epoch (and the split when it is ``random``), as a function of (seed, epoch) only, so a resumed run
sees exactly the order an uninterrupted one saw.
"""

from __future__ import annotations

import lightning as L
import torch

from torchopt_review import data as fm


class FashionMNISTDataModule(L.LightningDataModule):
    def __init__(self, *, data_dir: str | None = None, split: str = "keras", val_size: int = 6000, seed: int = 0,
                 batch_size: int = 32, steps_per_batch: int = 32, val_batch_size: int = 1000,
                 limit_batches: int | None = None, device: torch.device | str = "cpu",
                 dataset: fm.FashionMNIST | None = None, shuffle: str = "every_epoch"):
        super().__init__()
        self.data_dir, self.split, self.val_size, self.seed = data_dir, split, val_size, seed
        self.batch_size, self.steps_per_batch, self.val_batch_size = batch_size, steps_per_batch, val_batch_size
        self.limit_batches, self.device = limit_batches, torch.device(device)
        self.shuffle = shuffle  # every_epoch | once (epoch 0's order every epoch, as seeded Keras 3 does)
        self._dataset = dataset
        self._train: fm.ChunkedBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:
            return
        ds = self._dataset or fm.load_fashion_mnist(self.data_dir)
        train_idx, val_idx = fm.split_indices(len(ds.train_labels), self.split, self.val_size, self.seed)
        dev = self.device
        self.train_x, self.train_y = ds.train_images[train_idx].to(dev), ds.train_labels[train_idx].to(dev)
        self.val_x, self.val_y = ds.train_images[val_idx].to(dev), ds.train_labels[val_idx].to(dev)
        self.test_x, self.test_y = ds.test_images.to(dev), ds.test_labels.to(dev)
        self._train = fm.ChunkedBatches(self.train_x, self.train_y, batch_size=self.batch_size,
                                        steps=self.steps_per_batch, seed=self.seed, limit_batches=self.limit_batches)

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffled order of epoch ``epoch`` (0-based); called by the module each epoch."""
        self._train.epoch = epoch if self.shuffle == "every_epoch" else 0

    @property
    def steps_per_epoch(self) -> int:
        return self._train.num_batches

    def train_dataloader(self) -> fm.ChunkedBatches:
        return self._train

    def _eval(self, x: torch.Tensor, y: torch.Tensor) -> fm.ChunkedBatches:
        return fm.ChunkedBatches(x, y, batch_size=self.val_batch_size, steps=1, seed=self.seed, shuffle=False)

    def val_dataloader(self) -> fm.ChunkedBatches:
        return self._eval(self.val_x, self.val_y)

    def test_dataloader(self) -> fm.ChunkedBatches:
        return self._eval(self.test_x, self.test_y)
