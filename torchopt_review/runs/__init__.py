"""The run folder: ``<logdir>/<experiment>/<label>/seed<k>/``, its schema and its lifecycle.

Every engine (the Lightning path in :mod:`torchopt_review.train`, the stacked engine), the review,
the report and compare go through this module; nothing else writes into a run folder.

Schema (what a folder holds)::

    run.json             the run's record: RECORD_FIELDS (config, fingerprint, versions, status ...)
    metrics.csv          one row per epoch: METRIC_COLUMNS (train columns: running means over the epoch)
    diagnostics.csv      per parameter tensor every few hundred steps: DIAG_COLUMNS
    events.out.tfevents  TensorBoard: EPOCH_TAGS, lr/group<i>, weights/<quantity>/<layer>, one histogram
                         per layer and epoch, test/mistakes, CUSTOM_SCALARS, hparams
    last.ckpt            the last finished epoch, in Lightning's checkpoint layout (``state_dict``,
                         ``optimizer_states``, ``callbacks[RECORDER|DIAGNOSTICS]`` carrying the rows)

Lifecycle: :meth:`RunFolder.finished` (a result already?) -> :meth:`RunFolder.prepare` (resume
checks, checkpoint verification, writability, clearing a fresh start) -> :meth:`RunFolder.start`
(run.json ``running``) -> per epoch :meth:`RunFolder.save_epoch` (checkpoint atomically, then the
CSVs it carries the rows of) -> :meth:`RunFolder.finish` or :meth:`RunFolder.fail`.

Every write is atomic (:func:`atomic_write`: a temporary file in the same folder, then
``os.replace``), so a kill at any moment leaves either the old file or the new one.

Modules: :mod:`.schema` (names, columns, tags, validity of what is read back), :mod:`.files`
(atomic writes, reading run.json and the CSVs), :mod:`.folder` (the lifecycle, the record),
:mod:`.tensorboard` (what a run logs). Import from ``torchopt_review.runs``.
"""

from __future__ import annotations

from .schema import (DONE, DIVERGED, FAILED, RUNNING, FINAL_STATUSES, RUN_JSON, METRICS_CSV, DIAG_CSV, CKPT,
                     METRIC_COLUMNS, DIAG_COLUMNS, RECORD_FIELDS, EPOCH_TAGS, STEP_LOSS_TAG, TEST_ACC_TAG,
                     MISTAKES_TAG, MISTAKES_SEEN, MISTAKES_SHOWN, DIAG_GROUP, DIAG_TB_KEYS, HISTOGRAM_KEY,
                     ALL_LAYERS, HISTOGRAM_BINS, CUSTOM_SCALARS, RECORDER, DIAGNOSTICS, SEED_DIR, lr_tag, diag_tag,
                     layer_names, run_key, NO_SPACE, MAX_EPOCHS, record_problem, checkpoint_problem)
from .files import (atomic_write, atomic_write_bytes, atomic_write_text, atomic_write_json, read_json, read_record,
                    record_status, csv_text, epoch_row, diag_row, epoch_line, read_metrics, read_diagnostics,
                    iter_run_dirs, say)
from .folder import (now, new_record, hparams_of, comparable, same_configuration, stored_mismatch, is_finished,
                     record_failure, verify_checkpoint, checkpoint_rows, checkpoint_callbacks, RunFolder)
from .tensorboard import (log_epoch, log_diag, log_hparams, log_eff_histograms, log_mistakes)

__all__ = ["ALL_LAYERS", "CKPT", "CUSTOM_SCALARS", "DIAGNOSTICS", "DIAG_COLUMNS", "DIAG_CSV", "DIAG_GROUP",
           "DIAG_TB_KEYS", "DIVERGED", "DONE", "EPOCH_TAGS", "FAILED", "FINAL_STATUSES", "HISTOGRAM_BINS",
           "HISTOGRAM_KEY", "MAX_EPOCHS", "METRICS_CSV", "METRIC_COLUMNS", "MISTAKES_SEEN", "MISTAKES_SHOWN",
           "MISTAKES_TAG", "NO_SPACE", "RECORDER", "RECORD_FIELDS", "RUNNING", "RUN_JSON", "RunFolder", "SEED_DIR",
           "STEP_LOSS_TAG", "TEST_ACC_TAG", "atomic_write", "atomic_write_bytes", "atomic_write_json",
           "atomic_write_text", "checkpoint_callbacks", "checkpoint_problem", "checkpoint_rows", "comparable",
           "csv_text", "diag_row", "diag_tag", "epoch_line", "epoch_row", "hparams_of", "is_finished",
           "iter_run_dirs", "layer_names", "log_diag", "log_eff_histograms", "log_epoch", "log_hparams",
           "log_mistakes", "lr_tag", "new_record", "now", "read_diagnostics", "read_json", "read_metrics",
           "read_record", "record_failure", "record_problem", "record_status", "run_key", "same_configuration",
           "say", "stored_mismatch", "verify_checkpoint"]
