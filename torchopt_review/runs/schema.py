"""What a run folder holds (file names, columns, statuses, TensorBoard tags, the checkpoint's
layout) and what counts as valid when it is read back: files are untrusted (hand-edited, torn,
from another version), so a record or checkpoint that fails these checks is refused with the
reason, never half-used."""

from __future__ import annotations

import errno
import re
from typing import Any


DONE, DIVERGED, FAILED, RUNNING = "done", "diverged", "failed", "running"


FINAL_STATUSES = (DONE, DIVERGED)  # results: a later review skips them


RUN_JSON, METRICS_CSV, DIAG_CSV, CKPT = "run.json", "metrics.csv", "diagnostics.csv", "last.ckpt"


METRIC_COLUMNS = ("epoch", "step", "wall_s", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


DIAG_COLUMNS = ("epoch", "step", "param", "eff_lr_p10", "eff_lr_p50", "eff_lr_p90", "update_ratio", "grad_norm")


RECORD_FIELDS = ("status", "label", "optimizer", "seed", "lr", "epochs", "config", "fingerprint", "versions",
                 "device", "hardware", "precision", "engine", "test", "diverged", "error", "epochs_completed",
                 "wall_s", "started", "finished")


# TensorBoard: per-epoch curves (x-axis = optimizer steps), lr per param group, diagnostics
EPOCH_TAGS = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc"}


STEP_LOSS_TAG = "train/loss_step"


MISTAKES_TAG = "test/mistakes"  # image: a grid of test images the trained model gets wrong (+ its caption as text)


MISTAKES_SEEN, MISTAKES_SHOWN = 1000, 64  # of the first 1,000 test images, the first 64 misclassified


DIAG_TB_KEYS = ("eff_lr_p50", "update_ratio", "grad_norm")


HISTOGRAM_BINS = 30


# One chart per metric, every run overlaid (TensorBoard's Custom Scalars dashboard).
CUSTOM_SCALARS = {
    "optimizers": {
        "train/loss": ["Multiline", ["^train/loss$"]],
        "train/acc": ["Multiline", ["^train/acc$"]],
        "val/loss": ["Multiline", ["^val/loss$"]],
        "val/acc": ["Multiline", ["^val/acc$"]],
        "learning rate": ["Multiline", ["^lr/"]],
        "train/loss (every N steps)": ["Multiline", ["^train/loss_step$"]],
    },
    "diagnostics": {
        "effective step size, median per layer": ["Multiline", [r"^diag/.*/eff_lr_p50$"]],
        "update / weight ratio": ["Multiline", [r"^diag/.*/update_ratio$"]],
        "gradient norm": ["Multiline", [r"^diag/.*/grad_norm$"]],
    },
}


# Checkpoint layout: Lightning's, with the two callbacks' states under these keys (their
# ``state_key``); the stacked engine writes the same layout, plus ``"engine": "stacked"``.
RECORDER, DIAGNOSTICS = "RunRecorder", "OptimizerDiagnostics"


SEED_DIR = re.compile(r"^seed(?P<seed>-?\d+)$")


def lr_tag(group: int) -> str:
    return f"lr/group{group}"


def diag_tag(param: str, key: str) -> str:
    return f"diag/{param}/{key}"


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
