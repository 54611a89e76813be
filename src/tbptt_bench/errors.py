"""The one error base of the package, and the value checks every layer shares.

Every error the project raises for bad input derives from ``BenchError`` (a ``ValueError``), so
the CLI turns exactly these into a one-line message and exit status 2, and a caller can catch
them all at once. The checks return the cleaned value or raise a one-line error naming the
value and the allowed range. Pure Python: the report layer imports it without torch.

>>> check_int("batch", 4, 1)
4
>>> check_int("batch", 0, 1)
Traceback (most recent call last):
...
tbptt_bench.errors.BenchError: batch=0 is not allowed: batch must be an integer >= 1
>>> check_float("pi", 1.5, 0.0, 1.0, lo_open=True)
Traceback (most recent call last):
...
tbptt_bench.errors.BenchError: pi=1.5 is not allowed: pi must be a finite number in (0.0, 1.0]
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["BenchError", "check_float", "check_int"]


class BenchError(ValueError):
    """Bad input anywhere in tbptt-bench: a message naming the value and what is allowed."""


def check_int(
    name: str,
    value: Any,
    lo: int | None = None,
    hi: int | None = None,
    *,
    error: type[BenchError] = BenchError,
) -> int:
    """``int(value)`` if it is an integer (not a bool) in [lo, hi], else ``error`` naming it.

    numpy integers count as integers (``numbers.Integral``); floats never do, even 3.0, so a
    typo like ``batch = 3.5`` is never silently rounded.
    """
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise error(f"{name}={value!r} is not allowed: {name} must be an integer{_range(lo, hi)}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    error: type[BenchError] = BenchError,
) -> float:
    """``float(value)`` if it is a finite real number in [lo, hi] ((lo, hi] with ``lo_open``)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if (
        not ok
        or (lo is not None and (value <= lo if lo_open else value < lo))
        or (hi is not None and value > hi)
    ):
        raise error(
            f"{name}={value!r} is not allowed: {name} must be a finite number{_range(lo, hi, lo_open)}"
        )
    return float(value)


def _range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
