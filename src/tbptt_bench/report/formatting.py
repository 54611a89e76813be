"""How every number in a table is written: fixed formats (learning rates, counts, 3 significant
figures, blow-ups), missing values, and the Markdown/CSV writers. Torch-free; ``cells`` re-exports
all of it, so ``from tbptt_bench.report.cells import sig3`` keeps working.

>>> sig3(0.125), compact(12500), fmt_lr(0.0003), sig3(None)
('0.125', '12.5k', '0.0003', '—')
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

__all__ = ["DASH", "NA", "compact", "csv_text", "fmt_lr", "md_table", "plain", "sig3"]

DASH = "—"
NA = "n/a"


def plain(x: Any) -> Any:
    """pandas/numpy scalar -> plain Python, missing -> None."""
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _none_last(key: tuple) -> tuple:
    """Sort key for tuples that may hold None: None sorts after every value of the same slot."""
    return tuple((v is None, 0 if v is None else v) for v in key)


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(vs) if vs else None


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def fmt_lr(lr: float) -> str:
    """Learning rate as written in headers: ``fmt_lr(0.0003) == '0.0003'``."""
    return f"{lr:g}" if lr >= 1e-4 else f"{lr:.1e}"


def compact(x: float | None) -> str:
    """Counts with 3 significant digits: ``compact(250) == '250'``, ``compact(12500) == '12.5k'``."""
    if x is None:
        return NA
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}"


def _f(x: float | None, spec: str) -> str:
    if x is not None and spec.endswith("f") and abs(x) >= 1e6:  # a blow-up: 3 significant digits, not 30
        return format(x, ".3g")
    return DASH if x is None else format(x, spec)


def sig3(x: float | None) -> str:
    """Three significant figures without exponents: ``sig3(0.125) == '0.125'``, ``sig3(110.4) == '110'``."""
    if x is None:
        return DASH
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{round(x, decimals):,.{decimals}f}"


def _csv_num(x: float | None, digits: int = 6) -> str:
    if x is not None and abs(x) >= 1e6:
        return f"{x:.{digits}g}"
    return "" if x is None else f"{x:.{digits}f}"


# -- Markdown / CSV helpers ---------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A pipe table; ``align`` has one of l/r per column."""
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b
