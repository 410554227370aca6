"""torchopt_review.runs: the run folder's schema checks on read, atomic writes, fingerprints.

Files read back are untrusted (hand-edited, torn, from another version): each case below is a
file this tool did not write, and each must be refused with its reason, never half-used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from torchopt_review import runs
from torchopt_review.config import load_config
from torchopt_review.errors import UserError

GOOD_ROW = "1,6,0.5,2.1,0.2,2.0,0.25,0.001\n"
HEADER = ",".join(runs.METRIC_COLUMNS) + "\n"


def good_record(**changes) -> dict:
    rec = {"status": "done", "label": "adam", "optimizer": "adam", "seed": 0, "lr": 0.001, "epochs": 2,
           "config": {"optim": {"name": "adam"}}, "fingerprint": {"seed": 0}, "epochs_completed": 2,
           "test": {"acc": 0.5, "loss": 1.0}}
    rec.update(changes)
    return rec


@pytest.mark.parametrize("data, why", [
    ({}, "status"), ([], "list"), ("done", "str"), (good_record(epochs="3"), "epochs"),
    (good_record(epochs=None), "epochs"), (good_record(config=[1]), "config"), (good_record(seed=None), "seed"), (good_record(seed=True), "seed"),
    (good_record(test={"acc": "high"}), "test"), (good_record(status="finished"), "status"),
])
def test_a_record_this_tool_did_not_write_is_refused_with_its_reason(data, why, tmp_path):
    assert why in runs.record_problem(data)
    (tmp_path / "run.json").write_text(json.dumps(data))
    assert runs.read_record(tmp_path) is None
    record, problem = runs.record_status(tmp_path)
    assert record is None and why in problem


def test_a_valid_record_is_read(tmp_path):
    runs.atomic_write_json(tmp_path / "run.json", good_record())
    assert runs.read_record(tmp_path) == good_record() and runs.record_status(tmp_path) == (good_record(), "")


@pytest.mark.parametrize("tail, why", [
    ("2,12,1.468,2.\n", "incomplete"),               # a torn last row: not an epoch with train loss 2.0
    ("2,12,1.0,2.0,0.3,1.9,0.3,0.001,9\n", "incomplete"),  # a row with an extra field
    ("1e300,12,1.0,2.0,0.3,1.9,0.3,0.001\n", "epoch"),
    ("2.5,12,1.0,2.0,0.3,1.9,0.3,0.001\n", "epoch"),
])
def test_metrics_csv_with_a_bad_row_yields_no_rows_and_a_reason(tail, why, tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + GOOD_ROW + tail)
    rows, problem = runs.read_metrics(path)
    assert rows == [] and why in problem


def test_binary_metrics_csv_is_refused(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 20)
    rows, problem = runs.read_metrics(path)
    assert rows == [] and "not a CSV file" in problem


def test_metrics_csv_keeps_the_last_of_a_repeated_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(HEADER + GOOD_ROW + "1,6,0.6,2.2,0.2,2.0,0.25,0.001\n" + "2,12,1.0,2.0,0.3,1.9,0.3,0.001\n")
    rows, problem = runs.read_metrics(path)
    assert problem == "" and [r[0] for r in rows] == [1.0, 2.0] and rows[0][3] == 2.2


@pytest.mark.parametrize("state, why", [
    ({"weights": torch.zeros(2)}, "lacks"),
    ({"state_dict": {"w": torch.zeros(2)}, "optimizer_states": [{"state": {}, "param_groups": []}], "opt_steps": 4,
      "epoch": 1, "loops": {}, "global_step": 1, "callbacks": {"RunRecorder": {"rows": "oops"}}}, "RunRecorder"),
    ({"state_dict": {"w": 1}, "optimizer_states": [], "opt_steps": 4, "epoch": 1, "loops": {}, "global_step": 1,
      "callbacks": {}}, "state_dict"),
    ([1, 2], "list"),
])
def test_a_weights_only_dict_that_is_not_our_checkpoint_is_refused(state, why, tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save(state, path)
    with pytest.raises(UserError, match=why):
        runs.verify_checkpoint(path)


def test_atomic_write_leaves_the_old_file_or_the_new_one(tmp_path):
    path = tmp_path / "a.txt"
    runs.atomic_write_text(path, "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        runs.atomic_write(path, fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_the_experiment_name_is_not_part_of_what_must_match():
    a = load_config("adam", overrides={"experiment": "one"})
    b = load_config("adam", overrides={"experiment": "renamed"})
    stored = {"fingerprint": a.fingerprint()}
    assert runs.same_configuration(b, stored) and runs.stored_mismatch(b, stored) is None
    c = load_config("adam", overrides={"experiment": "renamed", "optim": {"lr": 0.01}})
    assert not runs.same_configuration(c, stored) and "lr" in runs.stored_mismatch(c, stored)
