"""Training styles: TBPTT(k1, k2), random truncation, ARTBP and adaptive TBPTT (docs/semantics.md).

A style is a small frozen value that answers schedule questions for a sequence of length T:
when the updates happen, where each update's backward window starts, and how deep each
loss's gradient reaches. The engine asks these questions; it has no per-style branches.
This module is pure Python (no torch) so the report can draw truncation patterns from it.

>>> s = tf_style(3)
>>> s.update_times(7)
[3, 6, 7]
>>> s.depths(7)            # loss at step s reaches back d_s steps
[1, 2, 3, 1, 2, 3, 3]
>>> williams_peng(2).depths(4)
[1, 2, 2, 2]
>>> parse_style("overlapping(2, 5)")
TBPTT(k1=2, k2=5)
>>> r = parse_style("random_depth(5)")      # TF-style(5)'s random peer: expected depth 5
>>> (r.k1, r.k2, r.pi, r.n, r.preset)
(5, 20, 0.8, 5, 'random_depth')
>>> r.label
'Random depth (E[depth]=5, pi=0.8, K=20)'

Adding a style: write a constructor returning one of the style classes and add one line to
``PRESETS``; the parametrized tests pick it up.

This module is the styles' public face: the presets, ``PRESETS`` and ``parse_style`` live here;
the style classes live in ``style_windows.py`` (``TBPTT``, ``RandomTruncation``, ``StyleError``)
and ``style_dynamic.py`` (``ARTBP``, ``AdaptiveTBPTT``) and are re-exported from here.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Union

from .style_dynamic import ARTBP, AdaptiveTBPTT
from .style_windows import (
    DEFAULT_CAP,
    MAX_K,  # noqa: F401 - the bounds stay importable from here
    MIN_PI,  # noqa: F401
    TBPTT,
    RandomTruncation,
    StyleError,
    _check_k,
    _short,  # noqa: F401
)

__all__ = [
    "ARTBP",
    "PRESETS",
    "TBPTT",
    "AdaptiveTBPTT",
    "RandomTruncation",
    "Style",
    "StyleError",
    "adaptive",
    "artbp",
    "full",
    "one_step",
    "overlapping",
    "parse_style",
    "random",
    "random_depth",
    "tf_style",
    "williams_peng",
]


Style = Union[TBPTT, RandomTruncation, ARTBP, AdaptiveTBPTT]


# -- presets by name (docs/semantics.md's table) ------------------------------------------------------
def full() -> TBPTT:
    """Full BPTT: TBPTT(T, T), one update per sequence."""
    return TBPTT(None, None)


def williams_peng(n: int) -> TBPTT:
    """Williams–Peng "true" truncation: TBPTT(1, n), every loss backpropagated n steps."""
    _check_k("n", n)
    return TBPTT(1, n)


def one_step(k1: int) -> TBPTT:
    """One-step context: TBPTT(k1, 1)."""
    _check_k("k1", k1)
    return TBPTT(k1, 1)


def overlapping(k1: int, k2: int) -> TBPTT:
    """Overlapping windows: TBPTT(k1, k2) with k1 < k2."""
    _check_k("k1", k1)
    _check_k("k2", k2)
    if not k1 < k2:
        raise StyleError(f"overlapping(k1={k1}, k2={k2}) is not allowed: overlapping windows need k1 < k2")
    return TBPTT(k1, k2)


def tf_style(k: int) -> TBPTT:
    """TF-style fixed windows: TBPTT(k, k)."""
    _check_k("k", k)
    return TBPTT(k, k)


def random(pi: float) -> RandomTruncation:
    """Random truncation (Tallec & Ollivier; d2l) on full BPTT: the notes' form, one update per
    sequence, expected depth 1/(1 - pi). Not a peer of the n-blocks (use ``random_depth``)."""
    return RandomTruncation(pi)


def random_depth(n: int, cap: int = DEFAULT_CAP) -> RandomTruncation:
    """TF-style(n)'s random peer: updates every n steps (k1 = n), each recurrent edge kept with
    pi = 1 - 1/n and scaled by 1/pi (realised depth geometric with mean n), window capped at
    K = cap*n (k2 = K). Unbiased for TBPTT(n, cap*n); the cap is its only bias."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise StyleError(
            f"n={n!r} is not allowed: random_depth needs an integer n >= 2 (n = 1 would cut every edge)"
        )
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise StyleError(
            f"cap={cap!r} is not allowed: the window cap (in units of n) must be an integer >= 1"
        )
    return RandomTruncation(1.0 - 1.0 / n, n, cap * n)


def artbp(n: int) -> ARTBP:
    """ARTBP with expected truncation length n (cut probability c = 1/n per step)."""
    return ARTBP(n)


def adaptive(delta: float, k_max: int = 64, period: int = 1024, tau: int = 4) -> AdaptiveTBPTT:
    """Adaptive TBPTT: K re-estimated every ``period`` steps for relative bias ``delta``."""
    return AdaptiveTBPTT(delta, k_max, period, tau)


def tbptt(k1: int | None, k2: int | None) -> TBPTT:
    """Any TBPTT(k1, k2)."""
    return TBPTT(k1, k2)


def random_tbptt(pi: float, k1: int | None, k2: int | None, per_stream: bool = False) -> RandomTruncation:
    """Random truncation on any TBPTT(k1, k2)."""
    return RandomTruncation(pi, k1, k2, per_stream)


PRESETS: dict[str, Callable[..., Style]] = {
    "full": full,
    "williams_peng": williams_peng,
    "one_step": one_step,
    "overlapping": overlapping,
    "tf_style": tf_style,
    "random_depth": random_depth,
    "artbp": artbp,
    "adaptive": adaptive,
    "random": random,
    "tbptt": tbptt,
    "random_tbptt": random_tbptt,
}

# A preset name, or "package.module:function" for a style defined outside the package.
_CALL = re.compile(r"^\s*([a-z_]+|[A-Za-z_][\w.]*:[A-Za-z_]\w*)\s*\(\s*(.*?)\s*\)\s*$")


def _literal(text: str) -> int | float | bool | None:
    t = text.strip()
    if t in ("None", "T"):
        return None
    if t in ("True", "False"):
        return t == "True"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        return float(t)
    except ValueError:
        raise StyleError(
            f"style argument {t!r} is not allowed: use integers, numbers, None/T or True/False"
        ) from None


def parse_style(text: str) -> Style:
    """Read a style written as a preset call, e.g. ``"tf_style(5)"``, ``"random(0.1)"``."""
    if not isinstance(text, str):
        raise StyleError(f"style {text!r} is not allowed: write it as a string like 'tf_style(5)'")
    m = _CALL.match(text)
    if not m:
        raise StyleError(
            f"style {text!r} is not allowed: write a preset call like 'tf_style(5)'; presets: {', '.join(PRESETS)}"
        )
    name, args = m.group(1), m.group(2)
    make = _imported_style(name) if ":" in name else PRESETS.get(name)
    if make is None:
        raise StyleError(f"style {name!r} is not allowed: known presets are {', '.join(PRESETS)}")
    values = [_literal(a) for a in args.split(",")] if args else []
    try:
        style = make(*values)
    except TypeError as e:
        raise StyleError(f"style {text!r} is not allowed: {e}") from None
    if not isinstance(style, (TBPTT, RandomTruncation, ARTBP, AdaptiveTBPTT)):
        raise StyleError(
            f"style {text!r} is not allowed: {name} must return a TBPTT, RandomTruncation, ARTBP or AdaptiveTBPTT"
        )
    return style


def _imported_style(name: str) -> Callable[..., Style]:
    """The function of ``"package.module:function"`` (a style defined outside the package)."""
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise StyleError(
            f"style {name!r} is not allowed: cannot import it ({type(e).__name__}: {e})"
        ) from None
