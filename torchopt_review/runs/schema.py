"""What a run folder holds (file names, columns, statuses, TensorBoard tags, the checkpoint's
layout) and what counts as valid when it is read back: files are untrusted (hand-edited, torn,
from another version), so a record or checkpoint that fails these checks is refused with the
reason, never half-used."""

from __future__ import annotations

import errno
import re
from typing import Any, Iterable, Sequence


DONE, DIVERGED, FAILED, RUNNING = "done", "diverged", "failed", "running"


FINAL_STATUSES = (DONE, DIVERGED)  # results: a later review skips them


RUN_JSON, METRICS_CSV, DIAG_CSV, CKPT = "run.json", "metrics.csv", "diagnostics.csv", "last.ckpt"


METRIC_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


DIAG_COLUMNS = ("epoch", "step", "param", "eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm")


RECORD_FIELDS = ("status", "label", "optimizer", "seed", "lr", "epochs", "config", "fingerprint", "versions",
                 "device", "hardware", "precision", "engine", "test", "diverged", "error", "epochs_completed",
                 "wall_s", "started", "finished")


# TensorBoard. Its dashboards group cards by the tag's part before the first '/' and sort the
# groups by name (Time Series and Scalars alike; digits and '/' before letters, upper case before
# lower case; the Scalars page opens only its first two groups), so the group names decide what a
# reader sees first: the curves (lr, test, train, val: names other tools and tests read), then
# the optimizer diagnostics under "weights", a plain word that sorts after "val" and says what
# they describe (each weight and bias tensor).
EPOCH_TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc"}


STEP_LOSS_TAG = "train/loss_step"


TEST_ACC_TAG = "test/acc"  # one point, at the last step: the trained model on the test set


MISTAKES_TAG = "test/mistakes"  # image: a grid of test images the trained model gets wrong (+ its caption as text)


MISTAKES_SEEN, MISTAKES_SHOWN = 1000, 64  # of the first 1,000 test images, the first 64 misclassified


DIAG_GROUP = "weights"


DIAG_TB_KEYS = ("eff_lr_p50", "update_ratio", "grad_norm")


HISTOGRAM_KEY = "log10_eff_lr"  # one histogram per tensor and epoch: log10 effective step size of its coordinates


ALL_LAYERS = "all_layers_median"  # beside each tensor's series, their median (what report.md plots)


HISTOGRAM_BINS = 30


# TensorBoard's Custom Scalars dashboard: one chart per quantity, one series per run (the
# per-tensor diagnostics would be 12 series per run: the charts show their median, the Time
# Series dashboard each tensor). TensorBoard smooths every series (0.6 by default, a moving
# average over points, short series included): an epoch curve's points would be pulled toward
# the epochs before them, so the category says how to read them exactly.
_EPOCH_CURVES = "per epoch: loss and accuracy (one point per epoch: set Smoothing to 0 to read them exactly)"
CUSTOM_SCALARS = {
    _EPOCH_CURVES: {
        "train/loss": ["Multiline", ["^train/loss$"]],
        "val/loss": ["Multiline", ["^val/loss$"]],
        "train/acc": ["Multiline", ["^train/acc$"]],
        "val/acc": ["Multiline", ["^val/acc$"]],
    },
    "per step: training loss and learning rate": {
        "train/loss (mean of the last N steps)": ["Multiline", ["^train/loss_step$"]],
        "learning rate": ["Multiline", ["^lr/"]],
    },
    "optimizer diagnostics (median over the weight and bias tensors; each tensor: Time Series, group weights)": {
        "effective step size, median coordinate": ["Multiline", [rf"^{DIAG_GROUP}/eff_lr_p50/{ALL_LAYERS}$"]],
        "update / weight ratio, per step": ["Multiline", [rf"^{DIAG_GROUP}/update_ratio/{ALL_LAYERS}$"]],
        "gradient norm": ["Multiline", [rf"^{DIAG_GROUP}/grad_norm/{ALL_LAYERS}$"]],
    },
}


# Checkpoint layout: Lightning's, with the two callbacks' states under these keys (their
# ``state_key``); the stacked engine writes the same layout, plus ``"engine": "stacked"``.
RECORDER, DIAGNOSTICS = "RunRecorder", "OptimizerDiagnostics"


SEED_DIR = re.compile(r"^seed(?P<seed>-?\d+)$")


def lr_tag(group: int) -> str:
    return f"lr/group{group}"


def diag_tag(layer: str, key: str) -> str:
    """``weights/<key>/<layer>``, e.g. ``weights/eff_lr_p50/fc1.weight``: the cards of one quantity
    sit side by side, the median over tensors (``layer`` = :data:`ALL_LAYERS`) first."""
    return f"{DIAG_GROUP}/{key}/{layer}"


_LAYER_KINDS = {2: "fc", 4: "conv"}  # a layer's kind, by its weight's dimensions (Linear, Conv2d)


def layer_names(params: Iterable[tuple[str, Sequence[int]]]) -> dict[str, str]:
    """Parameter name -> the name diagnostics are recorded under (diagnostics.csv's ``param``,
    the TensorBoard tags): the model's layers numbered by kind in order, ``conv1``, ``conv2``, ...
    and ``fc1``, ``fc2``, ..., so the blog MLP's ``Sequential`` names ``1.weight``, ``3.bias``
    become ``fc1.weight``, ``fc2.bias``. ``params``: ``(name, shape)`` in ``named_parameters()``
    order; both engines pass the same model's. A layer of another kind keeps its own name."""
    params = [(name, tuple(shape)) for name, shape in params]
    ndim = {name.rpartition(".")[0]: len(shape) for name, shape in params if name.rpartition(".")[2] == "weight"}
    layers: dict[str, str] = {}
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for name, _ in params:
        module, _, leaf = name.rpartition(".")
        if module not in layers:
            kind = _LAYER_KINDS.get(ndim.get(module, 0))
            if kind:
                counts[kind] = counts.get(kind, 0) + 1
            layers[module] = f"{kind}{counts[kind]}" if kind else module
        out[name] = f"{layers[module]}.{leaf}" if module else name
    return out


def run_key(label: str, seed: int) -> str:
    """``<label>/seed<k>``: a run's name inside its experiment (and its TensorBoard version)."""
    return f"{label}/seed{seed}"


# -- atomic writes (the one helper) ------------------------------------------------------------


# errno values of a full disk / quota / file-size limit: reported as a user error, not a crash
NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


MAX_EPOCHS = 1_000_000  # an epoch number beyond this in a CSV is corrupt, not a long run


def record_problem(data: Any) -> str | None:
    """Why ``data`` (what a run.json holds) is not a run record this tool wrote; None when it is.
    Files read back are untrusted: hand-edited, torn, or from another version."""
    if not isinstance(data, dict):
        return f"not a JSON object but a {type(data).__name__}"
    if data.get("status") not in (DONE, DIVERGED, FAILED, RUNNING):
        return f"status {data.get('status')!r} is not one of {DONE}, {DIVERGED}, {FAILED}, {RUNNING}"
    checks = (("label", lambda v: isinstance(v, str) and v != ""), ("optimizer", lambda v: isinstance(v, str)),
              ("seed", _is_int))
    for key, ok in checks:
        if not ok(data.get(key)):
            return f"{key} is {data.get(key)!r}" if key in data else f"it has no {key!r}"
    optional = (("epochs", lambda v: _is_int(v) and v >= 1), ("epochs_completed", lambda v: _is_int(v) and v >= 0),
                ("fingerprint", lambda v: isinstance(v, dict)), ("config", lambda v: isinstance(v, dict)),
                ("lr", _is_number),
                ("test", lambda v: v is None or (isinstance(v, dict) and all(_is_number(v.get(k)) for k in ("acc", "loss")))),
                ("diverged", lambda v: v is None or isinstance(v, dict)), ("wall_s", _is_number))
    for key, ok in optional:
        if key in data and not ok(data[key]):
            return f"{key} is {data[key]!r}"
    if data["status"] == DONE and not isinstance(data.get("test"), dict) and "fingerprint" in data:
        return "status done without test metrics"
    return None


def checkpoint_problem(state: Any, engine: str = "single") -> str | None:
    """Why a weights-only-loaded ``state`` is not a checkpoint this tool wrote (for ``engine``)."""
    if not isinstance(state, dict):
        return f"it holds a {type(state).__name__}, not a checkpoint"
    required = ["state_dict", "optimizer_states", "opt_steps", "epoch", "callbacks"]
    if engine != "stacked" and state.get("engine") != "stacked":
        required += ["loops", "global_step"]  # what Lightning's resume reads
    missing = [k for k in required if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not (isinstance(state["state_dict"], dict) and state["state_dict"]
            and all(hasattr(v, "shape") for v in state["state_dict"].values())):
        return "its state_dict is not a set of tensors"
    opts = state["optimizer_states"]
    if not (isinstance(opts, list) and opts and all(isinstance(o, dict) and "state" in o and "param_groups" in o
                                                   for o in opts)):
        return "its optimizer_states are not optimizer state_dicts"
    if not (_is_int(state["opt_steps"]) and state["opt_steps"] >= 0 and _is_int(state["epoch"]) and state["epoch"] >= 0):
        return "its opt_steps/epoch are not counts"
    callbacks = state["callbacks"]
    rec = callbacks.get(RECORDER) if isinstance(callbacks, dict) else None
    diag = callbacks.get(DIAGNOSTICS, {"rows": []}) if isinstance(callbacks, dict) else None
    for name, part, columns in ((RECORDER, rec, METRIC_COLUMNS), (DIAGNOSTICS, diag, DIAG_COLUMNS)):
        rows = part.get("rows") if isinstance(part, dict) else None
        if not (isinstance(rows, list) and all(isinstance(r, dict) and set(columns) <= set(r) for r in rows)):
            return f"its {name} rows are not a list of {', '.join(columns[:3])}... rows"
    return None
