"""``tbptt-bench export``: the runs and curves of a results folder as parquet or CSV files. Torch-free.

Writes the runs table to ``out`` and the curves (long format, joined on ``run_id``) beside it as
``<stem>-curves<suffix>``. The committed records are only read.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> [p.name for p in export(d, d / "runs.csv", "csv")]
['runs.csv', 'runs-curves.csv']
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BenchError
from .load import load_results

__all__ = ["FORMATS", "ExportError", "export"]

FORMATS = ("parquet", "csv")


class ExportError(BenchError):
    """An export that cannot be written (an unknown format)."""


def export(results_dir: str | os.PathLike, out: str | os.PathLike, fmt: str = "parquet") -> list[Path]:
    """Write runs to ``out`` and curves to ``<stem>-curves<suffix>``; returns both paths."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r} is not allowed: use one of {', '.join(FORMATS)}")
    runs, curves = load_results(results_dir)
    out = Path(out)
    curves_out = out.with_name(f"{out.stem}-curves{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    for frame, path in ((runs, out), (curves, curves_out)):
        tmp = path.with_name(f".{path.name}.tmp")
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False, lineterminator="\n")
        tmp.replace(path)
    return [out, curves_out]
