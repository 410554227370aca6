"""What a reader sees in TensorBoard, read back from a run's event file: tags named after the
layers and sorted so the curves come first, one series per run in the Custom Scalars charts,
hyperparameters declared with their types, and diagnostics.csv agreeing with the tags."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from torchopt_review import runs
from torchopt_review.runs.schema import ALL_LAYERS, DIAG_GROUP, DIAG_TB_KEYS, HISTOGRAM_KEY, layer_names


@pytest.fixture(scope="module")
def run_dir(synthetic_data_dir, tmp_path_factory) -> Path:
    """One small finished run (2 epochs of 6 steps, diagnostics every 4 steps), trained in-process."""
    from torchopt_review import train
    from torchopt_review.config import load_config

    logdir = tmp_path_factory.mktemp("tb")
    cfg = load_config("adam", [], {
        "logdir": str(logdir), "experiment": "e", "data": {"data_dir": str(synthetic_data_dir), "val_size": 200},
        "trainer": {"epochs": 2, "limit_batches": 6, "steps_per_batch": 4, "diagnostics_every_n_steps": 4}})
    record = train.run(cfg, progress=False, summary=False)
    assert record["status"] == "done"
    return cfg.run_dir


def _events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def _hparams_data(acc, tag: str):
    from tensorboard.plugins.hparams import plugin_data_pb2

    return plugin_data_pb2.HParamsPluginData.FromString(acc.SummaryMetadata(tag).plugin_data.content)


BLOG_LAYERS = [f"fc{i}.{kind}" for i in range(1, 7) for kind in ("weight", "bias")]


def test_layer_names_number_each_kind_in_order():
    from torchopt_review.models import build_model

    def names(model: str) -> dict[str, str]:
        return layer_names((n, p.shape) for n, p in build_model(model).named_parameters())

    assert list(names("blog_mlp").values()) == BLOG_LAYERS
    assert names("blog_mlp")["3.bias"] == "fc2.bias" and names("blog_mlp")["11.weight"] == "fc6.weight"
    assert list(names("cnn").values()) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                           "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    # a layer of another kind (a 1-D weight: a norm layer) keeps its own name
    assert layer_names([("0.weight", (4, 3)), ("1.weight", (4,)), ("1.bias", (4,))]) == \
        {"0.weight": "fc1.weight", "1.weight": "1.weight", "1.bias": "1.bias"}


def test_tags_name_layers_and_put_the_curves_first(run_dir):
    acc = _events(run_dir)
    scalars, histograms = set(acc.Tags()["scalars"]), set(acc.Tags()["histograms"])
    every = scalars | histograms
    assert not [t for t in every if re.search(r"(^|/)\d+\.(weight|bias)", t)], "a Sequential index in a tag"
    layers = BLOG_LAYERS + [ALL_LAYERS]
    assert {t for t in scalars if t.startswith(DIAG_GROUP + "/")} == \
        {f"{DIAG_GROUP}/{key}/{layer}" for key in DIAG_TB_KEYS for layer in layers}
    assert histograms == {f"{DIAG_GROUP}/{HISTOGRAM_KEY}/{layer}" for layer in BLOG_LAYERS}
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr/group0", "train/loss_step", "test/acc"} <= scalars
    # TensorBoard groups cards by the part before the first '/' and sorts the groups by name
    groups = sorted({t.split("/", 1)[0] for t in every})
    assert groups == ["lr", "test", "train", "val", DIAG_GROUP], groups
    # diagnostics.csv names the tensors as the tags do
    with open(run_dir / "diagnostics.csv") as f:
        params = [r["param"] for r in csv.DictReader(f)]
    assert params[:12] == BLOG_LAYERS and set(params) == set(BLOG_LAYERS)


def test_median_over_layers_is_the_median_of_the_rows(run_dir):
    import statistics

    acc = _events(run_dir)
    with open(run_dir / "diagnostics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in DIAG_TB_KEYS:
        events = acc.Scalars(f"{DIAG_GROUP}/{key}/{ALL_LAYERS}")
        steps = sorted({int(r["step"]) for r in rows})
        assert [e.step for e in events] == steps
        for e in events:
            want = statistics.median(float(r[key]) for r in rows if int(r["step"]) == e.step)
            assert e.value == pytest.approx(want, rel=1e-6)


def test_custom_scalars_draw_one_series_per_run(run_dir):
    acc = _events(run_dir)
    scalars = acc.Tags()["scalars"]
    for category, charts in runs.CUSTOM_SCALARS.items():
        for title, (_, patterns) in charts.items():
            matched = [t for t in scalars if any(re.search(p, t) for p in patterns)]
            assert len(matched) == 1, (category, title, matched)  # lr: this run's one param group


def test_hparams_are_declared_with_their_types(run_dir):
    from tensorboard.plugins.hparams import api_pb2

    from torchopt_review.optim.registry import optimizer_names

    acc = _events(run_dir)
    experiment = _hparams_data(acc, "_hparams_/experiment").experiment
    infos = {i.name: i for i in experiment.hparam_infos}
    discrete = lambda name: [v.string_value for v in infos[name].domain_discrete.values]  # noqa: E731
    assert infos["optimizer"].type == api_pb2.DATA_TYPE_STRING and discrete("optimizer") == optimizer_names()
    assert infos["semantics"].type == api_pb2.DATA_TYPE_STRING and discrete("semantics") == ["keras", "torch"]
    # integers as their text: TensorBoard has no integer type and prints any number as 32.000
    for name in ("seed", "batch_size", "epochs"):
        assert infos[name].type == api_pb2.DATA_TYPE_STRING
    assert infos["lr"].type == api_pb2.DATA_TYPE_FLOAT64
    # TensorBoard shows five columns by default, those marked `differs` first
    assert {n for n, i in infos.items() if i.differs} == {"optimizer", "seed", "semantics", "lr", "batch_size"}
    start = _hparams_data(acc, "_hparams_/session_start_info").session_start_info
    values = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert values["optimizer"] == "adam" and values["semantics"] == "keras" and values["lr"] == 1e-3
    assert values["seed"] == "0" and values["batch_size"] == "32" and int(values["batch_size"]) == 32
    assert set(values) == set(infos)
    assert start.group_name == "e/adam/seed0"  # the run's name in TensorBoard
    # every metric is a scalar the run logged; its last value is the run's
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert metrics == ["val/acc", "val/loss", "test/acc"]
    record = json.loads((run_dir / "run.json").read_text())
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(record["test"]["acc"], rel=1e-6)
    assert not [t for t in acc.Tags()["scalars"] if t.startswith("hp/")]


def test_old_diagnostics_csv_still_reads(tmp_path):
    """diagnostics.csv written before the layer names (``param`` = Sequential names) still feeds
    the report's per-step median over tensors."""
    from torchopt_review.report.load import load_runs
    from torchopt_review.report.scalars import diag_series

    run = tmp_path / "exp" / "adam" / "seed0"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "done", "label": "adam", "optimizer": "adam", "seed": 0,
                                              "test": {"acc": 0.5, "loss": 1.0}}))
    (run / "metrics.csv").write_text("epoch,step,wall_s,train_loss,train_acc,val_loss,val_acc,lr\n"
                                     "1,10,1.0,1.0,0.5,1.0,0.5,0.001\n")
    (run / "diagnostics.csv").write_text(
        "epoch,step,param,eff_lr_p10,eff_lr_p50,eff_lr_p90,update_ratio,grad_norm\n"
        "1,10,1.weight,0.1,0.2,0.3,0.01,1.0\n1,10,1.bias,0.1,0.4,0.5,0.03,2.0\n1,10,3.weight,0.1,0.3,0.4,0.02,3.0\n")
    (loaded,) = load_runs(tmp_path / "exp")
    series = diag_series(loaded.diagnostics)
    assert list(series["step"]) == [10] and series["eff_lr_p50"][0] == pytest.approx(0.3)
