"""What a run writes to TensorBoard (both engines): the epoch curves, lr, diagnostics, the
effective-step-size histograms, hparams, and the grid of misclassified test images. The tag
names, and why they are named so, are in :mod:`.schema`."""

from __future__ import annotations

import math
import statistics
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .folder import hparams_of
from .schema import (ALL_LAYERS, DIAG_TB_KEYS, EPOCH_TAGS, HISTOGRAM_BINS, HISTOGRAM_KEY, MISTAKES_SHOWN, MISTAKES_TAG,
                     TEST_ACC_TAG, diag_tag, lr_tag, run_key)

if TYPE_CHECKING:  # imported lazily at run time: reading run folders needs no torch
    from ..config import RunConfig


def log_epoch(writer: Any, row: Mapping[str, Any], lrs: list[float]) -> None:
    """An epoch's curves: EPOCH_TAGS at x = optimizer steps, and each param group's lr."""
    for key, tag in EPOCH_TAGS.items():
        writer.add_scalar(tag, row[key], row["step"])
    for i, lr in enumerate(lrs):
        writer.add_scalar(lr_tag(i), float(lr), row["step"])


def log_diag(writer: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """One measurement: the diagnostics.csv rows of every parameter tensor at one step. Each
    tensor's DIAG_TB_KEYS, and per key their median over the tensors (the report's aggregate),
    the one series per run that the Custom Scalars charts draw."""
    for row in rows:
        for key in DIAG_TB_KEYS:
            writer.add_scalar(diag_tag(row["param"], key), row[key], row["step"])
    if rows:
        for key in DIAG_TB_KEYS:
            finite = [float(r[key]) for r in rows if math.isfinite(r[key])]
            writer.add_scalar(diag_tag(ALL_LAYERS, key), statistics.median(finite) if finite else math.nan,
                              rows[0]["step"])


# TensorBoard's HParams dashboard shows five hyperparameters by default: those marked ``differs``
# first, then by name. One run cannot know what differs across its experiment, so ``differs``
# marks the five that a review compares runs by.
_COMPARED = ("optimizer", "seed", "lr", "semantics", "batch_size")


def _hparams_summaries(cfg: RunConfig, group: str) -> list[Any]:
    """The HParams plugin's three summaries for a run: the experiment (every hyperparameter
    declared with its type and, where the values are known, its values; the metrics), the run's
    values, and its end. Integers (seed, batch size, epochs) are written as their decimal text:
    TensorBoard has no integer type and prints a number with five significant digits (32.000).
    Domains list only values known to every run (optimizer names, semantics, models): TensorBoard
    takes the experiment from any one run, and a run does not know its siblings' seeds."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    from ..models import MODELS
    from ..optim.registry import optimizer_names

    given = hparams_of(cfg)
    # the optimizer's own arguments in one column: every run has the same columns
    kwargs = ", ".join(f"{k.removeprefix('optim.')}={v}" for k, v in given.items() if k.startswith("optim."))
    values = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
              for k, v in given.items() if not k.startswith("optim.")}
    values["kwargs"] = kwargs or "-"
    discrete = {"optimizer": optimizer_names(), "semantics": ["keras", "torch"], "model": list(MODELS)}

    infos, start = [], plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
    for name, value in values.items():
        info = api_pb2.HParamInfo(name=name, differs=name in _COMPARED)
        if isinstance(value, str):
            info.type = api_pb2.DATA_TYPE_STRING
            info.domain_discrete.extend(discrete.get(name, []))
            start.hparams[name].string_value = value
        else:
            info.type = api_pb2.DATA_TYPE_FLOAT64
            start.hparams[name].number_value = float(value)
        infos.append(info)
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=title)
               for tag, title in ((EPOCH_TAGS["val_acc"], "val acc (last epoch)"),
                                  (EPOCH_TAGS["val_loss"], "val loss (last epoch)"), (TEST_ACC_TAG, "test acc"))]
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())

    def summary(tag: str, data: Any) -> Any:
        out = summary_pb2.Summary()
        out.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
        return out

    return [summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
                experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics))),
            summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
            summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))]


def log_hparams(logger: Any, cfg: RunConfig, last: Mapping[str, Any], test_acc: float) -> None:
    """At the end of a run: its test accuracy (TEST_ACC_TAG, one point at the last step) and its
    row of the HParams dashboard, whose metrics are the last values of val/acc, val/loss and
    test/acc. Also hparams.yaml (the logger's; given no metrics, Lightning writes no events)."""
    logger.log_hyperparams(hparams_of(cfg))
    writer = logger.experiment
    writer.add_scalar(TEST_ACC_TAG, test_acc, last["step"])
    # the session's name is the run's name in TensorBoard (<experiment>/<label>/seed<k>): runs
    # of different experiments under one --logdir stay apart
    for pb in _hparams_summaries(cfg, f"{cfg.experiment}/{run_key(cfg.run_label, cfg.seed)}"):
        writer.file_writer.add_summary(pb, last["step"])


def log_eff_histograms(writer: Any, last_eff: Mapping[str, Any], step: int) -> None:
    """One histogram of log10 effective step size per parameter tensor (its last measurement; of
    :func:`~torchopt_review.diagnostics.quantile_sample`'s at most 16,384 values, which is what a
    histogram resolves anyway). Binned by ``torch.histc`` (30 equal bins between min and max) and
    written raw: ~50x cheaper than TensorBoard's numpy binning, which a review pays 480 times an epoch."""
    import torch

    from ..diagnostics import quantile_sample

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
        writer.add_histogram_raw(diag_tag(name, HISTOGRAM_KEY), min=stats[0], max=stats[1], num=int(x.numel()),
                                 sum=stats[2], sum_squares=stats[3], bucket_limits=edges[1:].tolist(),
                                 bucket_counts=counts.tolist(), global_step=step)


def log_mistakes(writer: Any, images: Any, labels: Any, predicted: Any, step: int) -> None:
    """At the end of a run: the first :data:`MISTAKES_SHOWN` test images (of ``images``, uint8,
    the first :data:`MISTAKES_SEEN` of the test set) whose ``predicted`` class is wrong, as one
    ``torchvision.utils.make_grid`` image, with "true -> predicted" per image as its text caption."""
    from torchvision.utils import make_grid

    from ..data import CLASSES

    wrong = (predicted.cpu() != labels.cpu()).nonzero().flatten()[:MISTAKES_SHOWN]
    if not len(wrong):
        return
    side = int(round(images[0].numel() ** 0.5))
    pixels = images.cpu()[wrong].reshape(len(wrong), 1, side, side).float().div_(255.0)
    writer.add_image(MISTAKES_TAG, make_grid(pixels, nrow=8, padding=2, pad_value=1.0), step)
    pairs = [f"{i + 1}. {CLASSES[int(labels[k])]} -> {CLASSES[int(predicted[k])]}" for i, k in enumerate(wrong.tolist())]
    writer.add_text(MISTAKES_TAG, "Test images the model gets wrong (row by row, true -> predicted):  \n"
                    + "  \n".join(pairs), step)
