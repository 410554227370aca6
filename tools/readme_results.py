"""Regenerate README.md's results section from a finished review: ``make readme-results``.

Reads ``runs/<experiment>/summary.csv`` and ``claims.csv`` (written by ``python -m
torchopt_review.report``), copies the report's training-loss figure to ``docs/``, and rewrites
the text between the ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers. Nothing
in the section is typed by hand. Run records are read through :mod:`torchopt_review.runs` (the run
folder's one reader) and both files are written through its atomic writer.

    python tools/readme_results.py runs/blog
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from torchopt_review import runs as rf

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def pct(row: dict[str, str], key: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if not mean:
        return "–"
    return f"{100 * float(mean):.2f} ± {100 * float(std or 0):.2f}"


def num(row: dict[str, str], key: str, fmt: str = "{:.3f}") -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    return "–" if not mean else f"{fmt.format(float(mean))} ± {fmt.format(float(std or 0))}"


def blog(row: dict[str, str], key: str, scale: float = 100.0, fmt: str = "{:.2f}") -> str:
    v = row.get(f"blog_{key}")
    return fmt.format(scale * float(v)) if v else "–"


def number_or_0(x: object) -> float:
    """A run.json number, 0 when absent or not a number."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else 0.0


def section(exp_dir: Path) -> str:
    rows = list(csv.DictReader(open(exp_dir / "summary.csv")))
    claims = list(csv.DictReader(open(exp_dir / "claims.csv")))
    runs = [(seed, rec) for _, seed, folder in rf.iter_run_dirs(exp_dir) if (rec := rf.read_record(folder)) is not None]
    wall = sum(number_or_0(rec.get("wall_s")) for _, rec in runs)
    versions = runs[0][1].get("versions") or {} if runs else {}
    hardware = runs[0][1].get("hardware", "") if runs else ""
    seeds = sorted({seed for seed, _ in runs})
    lines = [
        BEGIN,
        f"From `{exp_dir}` ({len(runs)} runs: {len(rows)} optimizers × seeds {', '.join(map(str, seeds))}; "
        f"{hardware}; torch {versions.get('torch', '?')}). Mean ± std over seeds; the blog's single Keras run beside it. "
        "Train columns are running means over the last epoch (as Keras reports them). "
        f"Regenerate with `make review && make readme-results`.",
        "",
        "![Training loss of every optimizer, mean and seed band](docs/review_train_loss.png)",
        "",
        "| optimizer | train loss | blog | train acc % | blog | val loss | blog | val acc % | blog | test acc % | s / epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("regime", "fixed") not in ("fixed", "fixed+lr-grid"):
            continue
        lines.append(
            f"| {r['label']} | {num(r, 'final_train_loss')} | {blog(r, 'train_loss', 1, '{:.3f}')} "
            f"| {pct(r, 'final_train_acc')} | {blog(r, 'train_acc')} "
            f"| {num(r, 'final_val_loss')} | {blog(r, 'val_loss', 1, '{:.3f}')} "
            f"| {pct(r, 'final_val_acc')} | {blog(r, 'val_acc')} | {pct(r, 'test_acc')} "
            f"| {num(r, 'time_per_epoch', '{:.2f}')} |"
        )
    lines += ["", "| the blog's claim | verdict (paired across seeds, Holm-corrected) |", "|---|---|"]
    seen = set()
    for c in claims:
        key = (c["regime"], c["claim"])
        if key in seen or c["regime"] not in ("fixed", claims[0]["regime"]):
            continue
        seen.add(key)
        lines.append(f"| {c['claim']}. {c['claim_text']} | **{c['claim_verdict']}** |")
    lines += ["", f"Full report with every test, interval and plot: `{exp_dir}/report.md` "
              f"(summed training time of all runs: {wall / 60:.1f} min of CPU-worker time).", END]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    exp_dir = Path(argv[0] if argv else "runs/blog")
    if not (exp_dir / "summary.csv").exists():
        print(f"error: {exp_dir}/summary.csv not found: run the review (make review) first", file=sys.stderr)
        return 2
    rf.atomic_write_bytes(ROOT / "docs" / "review_train_loss.png", (exp_dir / "train_loss.png").read_bytes())
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    rf.atomic_write_text(readme, text[:start] + section(exp_dir) + text[end:])
    print(f"README.md results section regenerated from {exp_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
