"""write_report: read an experiment's run folders, analyse them, write every output file atomically."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .. import runs as rf
from .analysis import analyse
from .load import load_experiment, read_plan
from .markdown import render
from .plots import PLOT_FILES, final_acc_key, make_plots
from .tables import CLAIMS_CSV, SUMMARY_CSV, claims_csv, summary_csv

__all__ = ["REPORT_MD", "write_report"]

REPORT_MD = "report.md"


def write_report(exp_dir: Path, *, config: dict | None = None, plots: bool = True) -> Path:
    """Read every run under ``exp_dir`` and write report.md, summary.csv, claims.csv and the PNGs.

    ``config`` is the review runner's plan (``review.json``; read from disk when not given). With
    ``plots=False`` no PNG is drawn (the tables and verdicts are the same).

    Returns the path of report.md. Raises :class:`ReportError` when ``exp_dir`` is missing or holds
    no ``<label>/seed<k>`` run folders.
    """
    exp_dir = Path(exp_dir)
    runs = load_experiment(exp_dir)
    if config is None:  # the review runner's record of the plan, when run from the command line
        config = read_plan(exp_dir)
    a = analyse(runs)

    # Everything new is made first (the PNGs in a staging folder beside the report), and only
    # then swapped in: a report that fails half way (a full disk, a plotting error) leaves the
    # previous report, its tables and its figures as they were.
    stage = Path(tempfile.mkdtemp(dir=exp_dir, prefix=".report-"))
    try:
        drawn = make_plots(stage, a.fixed, a.by_opt, a.grids, a.pick) if plots else {}
        test_key = final_acc_key(a.fixed, a.pick) if drawn else "test_acc"
        texts = {SUMMARY_CSV: summary_csv(a), CLAIMS_CSV: claims_csv(a),
                 REPORT_MD: render(exp_dir, a, config=config, plots=plots, drawn=drawn, test_key=test_key)}
        for name in PLOT_FILES:  # never leave a stale figure from an earlier report
            if (stage / name).exists():
                os.replace(stage / name, exp_dir / name)
            else:
                (exp_dir / name).unlink(missing_ok=True)
        for name, text in texts.items():  # report.md last: it points at the files before it
            rf.atomic_write_text(exp_dir / name, text)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return exp_dir / REPORT_MD
