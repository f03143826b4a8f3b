"""Cohorts: many registrations with one configuration, resumable, on a Dask cluster or in-process.

* :func:`read_pairs`: the pairs table (``PAIRS.csv``: ``fixed``, ``moving`` and optional ``id``, labels,
  landmarks, masks), checked before anything runs (:mod:`omnireg.batch.pairs`);
* :func:`run_batch`: all pairs into ``OUT/<id>/``, skipping finished pairs, recording failures in
  ``OUT/<id>/error.json`` without stopping the others, writing ``OUT/summary.csv`` and ``OUT/summary.json``
  (:mod:`omnireg.batch.runner`, :mod:`omnireg.batch.summary`).

Each pair is one registration of the pipeline (:func:`omnireg.pipeline.run_registration`: the outputs of
``omnireg register`` and, given labels or landmarks of both images, Dice per label and TRE); this package
holds the cohort logic only. The ``omnireg batch`` command is the shell around these functions.
"""

from .pairs import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, PairSpec, derive_ids, read_pairs
from .runner import BatchResult, default_workers, load_complete_result, run_batch, run_pair, thread_limit
from .summary import SUMMARY_COLUMNS, PairStatus, format_summary, write_summary

__all__ = [
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PairSpec",
    "derive_ids",
    "read_pairs",
    "BatchResult",
    "default_workers",
    "load_complete_result",
    "run_batch",
    "run_pair",
    "thread_limit",
    "SUMMARY_COLUMNS",
    "PairStatus",
    "format_summary",
    "write_summary",
]
