"""What a spec file may hold: optimizer names, presets, budget modes, bounds, and a checker per key.

Each checker returns the cleaned value or raises ``_Bad`` with what is allowed; ``_SCHEMA`` maps
every section of a spec to its keys, their checkers and whether they are required (``spec.py``
turns a ``_Bad`` into a ``SpecError`` naming the file and the key). Pure Python (no torch).

>>> _SCHEMA["model"]["hidden_sizes"][0]([4, 8])
(4, 8)
>>> _int_in(1, 3)(5)
Traceback (most recent call last):
    ...
tbptt_bench.runs.spec_fields._Bad: an integer from 1 to 3
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from ..styles import StyleError, parse_style

__all__ = [
    "BUDGET_MODES",
    "MAX_CLIP",
    "MAX_COUNT",
    "MAX_HIDDEN",
    "MAX_LR",
    "MAX_ROWS",
    "MAX_SEED",
    "MAX_STEPS",
    "MIN_EVAL_POINTS",
    "OPTIMIZERS",
    "SWEEP_PRESETS",
]

#: Optimizer names a spec may use -> the ``torch.optim`` class the harness builds.
OPTIMIZERS: dict[str, str] = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop"}

#: Sweep presets, smallest first; the two ``full-*`` presets are the full sizes on the other budget
#: axes (equal updates, episodic sequences), so a table can compare styles on each axis.
SWEEP_PRESETS: tuple[str, ...] = ("smoke", "quick", "full", "full-updates", "full-episodic")

#: ``budget.mode`` values (module doc).
BUDGET_MODES: tuple[str, ...] = ("data", "updates", "episodic")

#: The fewest validation evaluations a run may schedule (a final loss averages the last 3).
MIN_EVAL_POINTS = 10


# -- value checkers: each returns the cleaned value or raises _Bad(what is allowed) -------------
class _Bad(Exception):
    pass


# Upper bounds at the door (issue #16): far above any run this benchmark makes, far below values
# that overflow int64 in the records or only fail after minutes of planning or by memory.
# The sweep also estimates each run's memory from these (``sweep.estimate_run_bytes``).
MAX_STEPS = 10**8  # row_len, val_len: steps per row
MAX_ROWS = 10**6  # batch, val_batch
MAX_COUNT = 10**9  # epochs, eval_points, warmup_updates, updates, episode_len
MAX_HIDDEN = 65536
MAX_SEED = 2**31 - 1
MAX_LR = 1e3
MAX_CLIP = 1e12


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(f"an integer from {lo} to {hi}")
        return v

    return check


def _mode(v: Any) -> str:
    if v not in BUDGET_MODES:
        raise _Bad(f"one of {', '.join(BUDGET_MODES)}")
    return v


def _float_in(hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= hi:
            raise _Bad(f"a positive number up to {hi:g}")
        return float(v)

    return check


_pos_int = _int_in(1, MAX_COUNT)
_nonneg_int = _int_in(0, MAX_COUNT)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Bad("a non-empty string")
    return v


def _optimizer(v: Any) -> str:
    if v not in OPTIMIZERS:
        raise _Bad(f"one of {', '.join(OPTIMIZERS)}")
    return v


def _style(v: Any) -> str:
    try:
        return parse_style(v).spec
    except StyleError as e:
        raise _Bad(f"a style call like 'tf_style(5)' ({e})") from None


def _list_of(item: Callable[[Any], Any], what: str) -> Callable[[Any], tuple]:
    def check(v: Any) -> tuple:
        if not isinstance(v, list) or not v:
            raise _Bad(f"a non-empty list of {what}")
        try:
            return tuple(item(x) for x in v)
        except _Bad:
            raise _Bad(f"a non-empty list of {what}") from None

    return check


def _table(v: Any) -> dict:
    if not isinstance(v, dict):
        raise _Bad("a table")
    for x in _numbers(v):  # task parameters: each task checks its own; these bounds hold for all
        if isinstance(x, float) and not math.isfinite(x):
            raise _Bad("a table of finite numbers")
        if isinstance(x, int) and not -MAX_COUNT <= x <= MAX_COUNT:
            raise _Bad(f"a table of numbers within +-{MAX_COUNT}")
    return {k: _freeze(x) for k, x in v.items()}


def _numbers(v: Any) -> Iterable[Any]:
    if isinstance(v, dict):
        for x in v.values():
            yield from _numbers(x)
    elif isinstance(v, list):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield v


def _freeze(v: Any) -> Any:
    """TOML arrays become tuples so configs stay immutable (JSON writes them back as lists)."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


_BUDGET_KEYS: dict[str, Callable[[Any], Any]] = {
    "epochs": _pos_int,
    "batch": _int_in(1, MAX_ROWS),
    "row_len": _int_in(1, MAX_STEPS),
    "val_batch": _int_in(1, MAX_ROWS),
    "val_len": _int_in(1, MAX_STEPS),
    "eval_points": _int_in(MIN_EVAL_POINTS, MAX_COUNT),
    "warmup_updates": _nonneg_int,
    "mode": _mode,
    "updates": _pos_int,
    "episode_len": _pos_int,
}
#: Budget keys a spec may leave out (the mode-specific ones; ``Budget`` says what each defaults to).
_BUDGET_OPTIONAL = ("mode", "updates", "episode_len")
_HIDDEN = _list_of(_int_in(1, MAX_HIDDEN), f"integers from 1 to {MAX_HIDDEN}")
_LRS = _list_of(_float_in(MAX_LR), f"positive numbers up to {MAX_LR:g}")
_SEEDS = _list_of(_int_in(0, MAX_SEED), f"integers from 0 to {MAX_SEED}")
_STYLES = _list_of(_style, "style strings like 'tf_style(5)'")
_OVERRIDE_KEYS: dict[str, Callable[[Any], Any]] = {
    **_BUDGET_KEYS,
    "hidden_sizes": _HIDDEN,
    "lrs": _LRS,
    "seeds": _SEEDS,
    "styles": _STYLES,
}
#: section -> key -> (checker, required)
_SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "task": {"name": (_str, True), "params": (_table, False)},
    "model": {"cell": (_str, True), "hidden_sizes": (_HIDDEN, True)},
    "optimizer": {"name": (_optimizer, True), "lrs": (_LRS, True), "clip": (_float_in(MAX_CLIP), False)},
    "budget": {k: (c, k not in _BUDGET_OPTIONAL) for k, c in _BUDGET_KEYS.items()},
    "sweep": {"styles": (_STYLES, True), "seeds": (_SEEDS, True)},
}
