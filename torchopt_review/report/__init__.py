"""``python -m torchopt_review.report runs/<experiment>``: the review's report, from the logs only.

Reads what the training path wrote for every run, ``runs/<experiment>/<label>/seed<k>/``:
``metrics.csv`` (one row per epoch), ``run.json`` (status, config, versions, test metrics) and,
when present, ``diagnostics.csv`` (per-parameter effective step sizes). Writes beside them:

* ``report.md`` -- in the order a reader wants it: what ran; the results (the headline training-
  loss figure, a verdict on each of the blog's six claims in plain words beside its Holm p and
  d_z, our final numbers beside the blog's single-seed ones); then each claim's paired tests, the
  blog's two observations in numbers, failed and diverged runs, a tuned-lr section when the
  experiment has an lr grid, per-label tables; the set-up last, folded;
* ``summary.csv`` (one row per label) and ``claims.csv`` (one row per test);
* PNG plots, embedded in ``report.md`` with relative links.

Nothing is typed in by hand except the blog's own numbers (:mod:`torchopt_review.blog`). The run
folders are read through :mod:`torchopt_review.runs` (their one schema and reader) and every file is
written through its atomic writer. The package imports only numpy/scipy at import time (matplotlib
when plotting, never torch), so it runs anywhere the run folders can be copied to.

One job per module, in the order the data flows::

    load.py      run folders -> Run (through torchopt_review.runs)
    scalars.py   Run -> per-run scalars (METRICS)
    labels.py    runs -> labels (seeds of one setting) and regimes (fixed lr, lr grid)
    claims.py    labels -> the blog's claims, paired tests, Holm, verdicts
    analysis.py  all of the above for one experiment
    fmt.py       how numbers are printed
    plots.py     the PNGs (matplotlib)
    markdown.py  report.md: what ran, the results, the set-up
    sections.py  report.md: the claims in detail, observations, left-out runs, tuned lr, per label
    tables.py    summary.csv, claims.csv
    write.py     write_report: read, analyse, write every file atomically
    cli.py       the command line (``__main__.py`` runs it)

How the statistics work (also written into the report):

* runs are paired by seed -- the seed fixes init, data order and split, so two optimizers with
  the same seed saw the same data; only seeds present (status ``done``) in both are paired;
* each claim is a two-sided paired t-test on an explicitly defined metric; the Wilcoxon
  signed-rank test is shown beside it as a check that does not assume normality;
* Holm's correction runs over the family of claim tests of one regime; a claim is *supported*
  when its Holm-adjusted p < 0.05 and the difference has the claimed sign, *contradicted* when
  it is significant with the opposite sign, *not resolved* otherwise;
* claim 5 ("Adam and Nadam end best") is an intersection-union test: Adam and Nadam each against
  every other optimizer the blog compared; it is supported only if all those pairwise differences
  are positive and significant, so its p-value is the largest of theirs (no correction needed
  inside an intersection-union test). It is tested only when all eight optimizers ran;
* a claim one of whose optimizers has no finished run is "not tested", with the reason.
"""

from __future__ import annotations

from .claims import Claim, ClaimTest, judge_claims
from .cli import main
from .labels import Label, build_labels
from .load import ReportError, Run, load_runs
from .scalars import METRICS, Metric, run_scalars
from .write import write_report

__all__ = ["write_report", "load_runs", "run_scalars", "Run", "ReportError", "main", "Label", "build_labels",
           "Claim", "ClaimTest", "judge_claims", "Metric", "METRICS"]
