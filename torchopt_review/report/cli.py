"""``python -m torchopt_review.report runs/<experiment>``: the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ArgumentParser, cli_entry
from .write import write_report

__all__ = ["main"]


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m torchopt_review.report",
        description="Write report.md, summary.csv, claims.csv and plots for runs/<experiment> from its logged runs.")
    parser.add_argument("exp_dir", type=Path, help="runs/<experiment>, the folder holding <label>/seed<k>/")
    parser.add_argument("--no-plots", action="store_true", help="write the tables and verdicts only")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one-line errors")
    args = parser.parse_args(argv)
    path = write_report(args.exp_dir, plots=not args.no_plots)
    print(f"report written to {path}")
    return 0
