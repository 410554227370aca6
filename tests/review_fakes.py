"""Stand-ins for ``train.run`` used by tests/test_review.py: fast, picklable (module level), and
steered by a plan file so one review can mix finished, diverging, crashing and dying runs.

The plan lives at ``<logdir>/fake_plan.json``: ``{"<label>/seed<k>": behaviour}`` with behaviour
``done`` (default), ``diverge``, ``raise``, ``die`` (SIGKILL itself), ``flaky`` (raises half-way
the first time, resumes from its "checkpoint" and finishes the second time), ``user_error``.
Every call appends ``<label>/seed<k> start=<epoch>`` to ``<logdir>/calls.log``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any, Callable

from torchopt_review.errors import UserError
from torchopt_review.runs import DIVERGED, DONE, RUN_JSON, RUNNING, atomic_write_json, run_key


def calls(logdir: str | Path) -> list[str]:
    p = Path(logdir) / "calls.log"
    return p.read_text().splitlines() if p.exists() else []


def write_plan(logdir: str | Path, plan: dict[str, str]) -> None:
    Path(logdir).mkdir(parents=True, exist_ok=True)
    (Path(logdir) / "fake_plan.json").write_text(json.dumps(plan))


def fake_run(cfg, *, restart: bool = False, progress: bool = True,
             on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    key = run_key(cfg.run_label, cfg.seed)
    logdir = Path(cfg.logdir)
    plan_file = logdir / "fake_plan.json"
    behaviour = json.loads(plan_file.read_text()).get(key, "done") if plan_file.exists() else "done"
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "fake.ckpt"
    if restart and ckpt.exists():
        ckpt.unlink()
    start = int(ckpt.read_text()) if ckpt.exists() else 0
    with open(logdir / "calls.log", "a") as fh:
        fh.write(f"{key} start={start}\n")
    epochs = cfg.trainer.epochs
    record: dict[str, Any] = {
        "status": RUNNING, "label": cfg.run_label, "optimizer": cfg.optim.name, "seed": cfg.seed,
        "lr": cfg.optim.lr, "epochs": epochs, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(),
        "test": None, "diverged": None, "error": None, "epochs_completed": start, "wall_s": 0.0,
    }
    atomic_write_json(run_dir / RUN_JSON, record)
    if behaviour == "user_error":
        raise UserError("Fashion-MNIST not found (fake); pass --data-dir DIR")
    for epoch in range(start + 1, epochs + 1):
        if behaviour == "raise":
            raise RuntimeError(f"boom in {key}")
        if behaviour == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if behaviour == "flaky" and epoch > epochs // 2 and not (run_dir / "flaked").exists():
            (run_dir / "flaked").write_text("1")
            raise RuntimeError("flaky failure half-way")
        if behaviour == "diverge" and epoch == 2:
            record.update(status=DIVERGED, diverged={"epoch": epoch, "step": 17})
            atomic_write_json(run_dir / RUN_JSON, record)
            return record
        ckpt.write_text(str(epoch))
        record["epochs_completed"] = epoch
        if on_epoch is not None:
            on_epoch({"label": cfg.run_label, "seed": cfg.seed, "epoch": epoch, "epochs": epochs,
                      "val_acc": 0.5 + 0.01 * epoch, "train_loss": 1.0 / epoch})
    record.update(status=DONE, test={"loss": 0.4, "acc": 0.88}, wall_s=0.01)
    atomic_write_json(run_dir / RUN_JSON, record)
    return record
