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
    rows, curves, skipped = [], [], []
    keep = None if splits is None else frozenset(splits)
    for run_dir in sorted(Path(d) for d in run_dirs):
        try:
            row, curve = store.load_run(run_dir)
            store._check_types(row, store.RUN_COLUMNS)  # the store's rule for "one bad run"
        except (store.StoreError, ValueError, TypeError) as e:
            skipped.append((run_dir, str(e)))
            continue
        rows.append(row)
        base = {k: row[k] for k in store.CURVES_COLUMNS if k not in store.CURVE_COLUMNS}
        curves.extend({**base, **r} for r in curve if keep is None or r["split"] in keep)
    keys = ["device_tag", "sweep", "task", "run_id"]
    runs = store._frame(rows, store.RUN_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    curves_df = (
        store._frame(curves, store.CURVES_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    )
    return store.LoadedRuns(runs=runs, curves=curves_df, skipped=skipped)


def load_results(path: str | os.PathLike = "results") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, curves) of every complete run under ``path``; see the module docstring."""
    root = Path(path)
    if not root.is_dir():
        raise LoadError(f"path={str(root)!r} is not a folder: give a results folder, e.g. 'results'")
    loaded = store.load_runs(root)
    for p, reason in loaded.skipped:
        log.warning("skipped run folder %s: %s", p, reason)
    return loaded.runs, loaded.curves
