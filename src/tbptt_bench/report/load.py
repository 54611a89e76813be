"""Run records as DataFrames, for notebooks and for the report's worker processes. Torch-free.

``load_results(path)`` is the public entry (re-exported as ``tbptt_bench.load_results``): every
complete run under ``path`` (a results root, a device folder or a sweep folder) as one row of
``runs`` and its loss curve as rows of ``curves`` (long format, joined on ``run_id``). Folders that
are incomplete or break the schema are left out with one warning each (logger
``tbptt_bench.report.load``). The columns are documented in ``docs/results.md``.

>>> import tempfile
>>> runs, curves = load_results(tempfile.mkdtemp())
>>> len(runs), len(curves), list(runs.columns)[:3]
(0, 0, ['run_id', 'device_tag', 'sweep'])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..errors import BenchError
from ..runs import store

__all__ = ["LoadError", "load_dirs", "load_results"]

log = logging.getLogger("tbptt_bench.report.load")


class LoadError(BenchError):
    """``load_results`` was given a path that is not a folder."""


def load_dirs(run_dirs: Iterable[str | os.PathLike], splits: Iterable[str] | None = None) -> store.LoadedRuns:
    """Like ``store.load_runs`` but for an explicit list of run folders (one report group).

    ``splits`` keeps only those curve rows (the report draws validation curves; the training rows
    are 99% of a long run's curve and most of the load time).

    Uses the store's own row reader and type checks, so a group loads exactly as the whole root
    would; only the folders listed are read (the report renders groups independently).
    """
    return store.load_folders(run_dirs, splits)


def load_results(path: str | os.PathLike = "results") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of every complete run under ``path``; see the module docstring."""
    root = Path(path)
    if not root.is_dir():
        raise LoadError(f"path={str(root)!r} is not a folder: give a results folder, e.g. 'results'")
    loaded = store.load_runs(root)
    for p, reason in loaded.skipped:
        log.warning("skipped run folder %s: %s", p, reason)
    return loaded.runs, loaded.curves
