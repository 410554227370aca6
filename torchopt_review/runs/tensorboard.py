"""What a run writes to TensorBoard (both engines): the epoch curves, lr, diagnostics, the
effective-step-size histograms, hparams, and the grid of misclassified test images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .folder import hparams_of
from .schema import DIAG_TB_KEYS, EPOCH_TAGS, HISTOGRAM_BINS, MISTAKES_SHOWN, MISTAKES_TAG, diag_tag, lr_tag

if TYPE_CHECKING:  # imported lazily at run time: reading run folders needs no torch
    from ..config import RunConfig


def log_epoch(writer: Any, row: Mapping[str, Any], lrs: list[float]) -> None:
    """An epoch's curves: EPOCH_TAGS at x = optimizer steps, and each param group's lr."""
    for key, tag in EPOCH_TAGS.items():
        writer.add_scalar(tag, row[key], row["step"])
    for i, lr in enumerate(lrs):
        writer.add_scalar(lr_tag(i), float(lr), row["step"])


def log_diag(writer: Any, row: Mapping[str, Any]) -> None:
    for key in DIAG_TB_KEYS:
        writer.add_scalar(diag_tag(row["param"], key), row[key], row["step"])


def log_hparams(logger: Any, cfg: RunConfig, last: Mapping[str, Any], test_acc: float) -> None:
    logger.log_hyperparams(hparams_of(cfg), {"hp/val_acc": last["val_acc"], "hp/val_loss": last["val_loss"],
                                             "hp/test_acc": test_acc})


def log_eff_histograms(writer: Any, last_eff: Mapping[str, Any], step: int) -> None:
    """One histogram of log10 effective step size per parameter tensor (its last measurement; of
    :func:`~torchopt_review.diagnostics.quantile_sample`'s at most 16,384 values, which is what a
    histogram resolves anyway). Binned by ``torch.histc`` (30 equal bins between min and max) and
    written raw: ~50x cheaper than TensorBoard's numpy binning, which a review pays 480 times an epoch."""
    import torch

    from .diagnostics import quantile_sample

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
        writer.add_histogram_raw(diag_tag(name, "log10_eff_lr"), min=stats[0], max=stats[1], num=int(x.numel()),
                                 sum=stats[2], sum_squares=stats[3], bucket_limits=edges[1:].tolist(),
                                 bucket_counts=counts.tolist(), global_step=step)


def log_mistakes(writer: Any, images: Any, labels: Any, predicted: Any, step: int) -> None:
    """At the end of a run: the first :data:`MISTAKES_SHOWN` test images (of ``images``, uint8,
    the first :data:`MISTAKES_SEEN` of the test set) whose ``predicted`` class is wrong, as one
    ``torchvision.utils.make_grid`` image, with "true -> predicted" per image as its text caption."""
    from torchvision.utils import make_grid

    from .data import CLASSES

    wrong = (predicted.cpu() != labels.cpu()).nonzero().flatten()[:MISTAKES_SHOWN]
    if not len(wrong):
        return
    side = int(round(images[0].numel() ** 0.5))
    pixels = images.cpu()[wrong].reshape(len(wrong), 1, side, side).float().div_(255.0)
    writer.add_image(MISTAKES_TAG, make_grid(pixels, nrow=8, padding=2, pad_value=1.0), step)
    pairs = [f"{i + 1}. {CLASSES[int(labels[k])]} -> {CLASSES[int(predicted[k])]}" for i, k in enumerate(wrong.tolist())]
    writer.add_text(MISTAKES_TAG, "Test images the model gets wrong (row by row, true -> predicted):  \n"
                    + "  \n".join(pairs), step)
