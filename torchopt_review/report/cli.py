"""``python -m torchopt_review.report runs/<experiment>``: the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .load import ReportError
from .write import write_report

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torchopt_review.report",
        description="Write report.md, summary.csv, claims.csv and plots for runs/<experiment> from its logged runs.")
    parser.add_argument("exp_dir", type=Path, help="runs/<experiment>, the folder holding <label>/seed<k>/")
    parser.add_argument("--no-plots", action="store_true", help="write the tables and verdicts only")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.exp_dir, plots=not args.no_plots)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0
