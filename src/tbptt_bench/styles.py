"""Training styles: TBPTT(k1, k2) and random truncation, exactly as docs/semantics.md decides.

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

Adding a style: write a constructor returning a ``TBPTT`` or ``RandomTruncation`` and add one
line to ``PRESETS``; the parametrized tests pick it up.
"""

from __future__ import annotations

import importlib
import math
import random as _random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from .errors import BenchError, check_int

__all__ = [
    "PRESETS",
    "TBPTT",
    "RandomTruncation",
    "Style",
    "StyleError",
    "full",
    "one_step",
    "overlapping",
    "parse_style",
    "random",
    "tf_style",
    "williams_peng",
]


class StyleError(BenchError):
    """A style was asked for with values docs/semantics.md does not allow."""


#: Bounds at the door (issue #16): a window longer than 1e9 steps, or a pi below 1e-9 (a mean
#: reach of more than 1e9 steps), is no truncation any run here can tell from full BPTT, and beyond
#: them 1/pi overflows (random(5e-324)) or a k leaves int64 in the records.
MAX_K = 10**9
MIN_PI = 1e-9


def _check_k(name: str, value: int | None) -> None:
    if value is not None:  # None: the whole sequence
        check_int(name, value, 1, MAX_K, error=StyleError)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(text)} chars)"


@dataclass(frozen=True)
class TBPTT:
    """Every ``k1`` steps, backpropagate ``k2`` steps. ``None`` means the whole sequence (T).

    Semantics (docs/semantics.md): updates at multiples of k1 and at T; an update's objective is the mean
    of the losses since the previous update; the gradient stops at h_{max(t-k2, 0)}.
    """

    k1: int | None = None
    k2: int | None = None

    def __post_init__(self) -> None:
        _check_k("k1", self.k1)
        _check_k("k2", self.k2)

    # -- schedule -----------------------------------------------------------------------
    def resolve(self, T: int) -> tuple[int, int]:
        """(k1, k2) for a sequence of length T, with None read as T."""
        if isinstance(T, bool) or not isinstance(T, int) or T < 1:
            raise StyleError(f"T={T!r} is not allowed: the sequence length must be a positive integer")
        return (T if self.k1 is None else self.k1, T if self.k2 is None else self.k2)

    def update_times(self, T: int) -> list[int]:
        """Steps t (1-based) after which an update happens: multiples of k1, and T."""
        k1, _ = self.resolve(T)
        times = list(range(k1, T + 1, k1))
        if not times or times[-1] != T:
            times.append(T)
        return times

    def window_start(self, t: int, T: int) -> int:
        """The state index held constant by the update at t: max(t - k2, 0)."""
        _, k2 = self.resolve(T)
        return max(t - k2, 0)

    def updates(self, T: int) -> list[tuple[int, int, int]]:
        """(previous update t', update t, window start) for every update, in order."""
        out, prev = [], 0
        for t in self.update_times(T):
            out.append((prev, t, self.window_start(t, T)))
            prev = t
        return out

    def depths(self, T: int) -> list[int]:
        """Backprop depth d_s of the loss at each step s = 1..T (0 means readout only)."""
        d = []
        for prev, t, start in self.updates(T):
            d.extend(max(s - start, 0) for s in range(prev + 1, t + 1))
        return d

    # -- names --------------------------------------------------------------------------
    @property
    def preset(self) -> str:
        """The docs/semantics.md row this (k1, k2) belongs to (judged without knowing T)."""
        if self.k1 is None and self.k2 is None:
            return "full"
        if self.k1 == 1 and self.k2 not in (None, 1):
            return "williams_peng"
        if self.k2 == 1 and self.k1 not in (None, 1):
            return "one_step"
        if self.k1 == self.k2:
            return "tf_style"
        if self.k1 is not None and (self.k2 is None or self.k1 < self.k2):
            return "overlapping"
        return "tbptt"

    @property
    def n(self) -> int | None:
        """The truncation length that groups this style in r2rt-style tables."""
        if self.preset == "one_step":
            return self.k1
        return self.k2

    @property
    def label(self) -> str:
        k = lambda v: "T" if v is None else str(v)  # noqa: E731
        names = {
            "full": "Full BPTT (T, T)",
            "williams_peng": f"Williams–Peng (1, {k(self.k2)})",
            "one_step": f"One-step ({k(self.k1)}, 1)",
            "tf_style": f"TF-style ({k(self.k1)}, {k(self.k2)})",
            "overlapping": f"Overlapping ({k(self.k1)}, {k(self.k2)})",
        }
        return names.get(self.preset, f"TBPTT({k(self.k1)}, {k(self.k2)})")

    @property
    def spec(self) -> str:
        """The string ``parse_style`` reads back into this style."""
        p, k1, k2 = self.preset, self.k1, self.k2
        return {
            "full": "full()",
            "williams_peng": f"williams_peng({k2})",
            "one_step": f"one_step({k1})",
            "tf_style": f"tf_style({k1})",
        }.get(p, f"tbptt({k1}, {k2})")

    def to_dict(self) -> dict:
        return {
            "kind": "tbptt",
            "preset": self.preset,
            "k1": self.k1,
            "k2": self.k2,
            "pi": None,
            "per_stream": False,
            "label": self.label,
            "n": self.n,
            "spec": self.spec,
        }


@dataclass(frozen=True)
class RandomTruncation:
    """TBPTT(k1, k2) whose recurrent edges inside each backward window are multiplied by xi_j.

    P(xi_j = 0) = 1 - pi, P(xi_j = 1/pi) = pi, drawn fresh for every update, independently per
    edge, shared by the batch unless ``per_stream``. Unbiased: E[gradient] = TBPTT(k1, k2)'s.
    """

    pi: float
    k1: int | None = None
    k2: int | None = None
    per_stream: bool = False

    def __post_init__(self) -> None:
        pi = self.pi
        if (
            isinstance(pi, bool)
            or not isinstance(pi, (int, float))
            or math.isnan(pi)
            or not (MIN_PI <= float(pi) <= 1.0)
        ):
            raise StyleError(f"pi={_short(pi)} is not allowed: pi must be a number in [{MIN_PI:g}, 1]")
        _check_k("k1", self.k1)
        _check_k("k2", self.k2)
        if not isinstance(self.per_stream, bool):
            raise StyleError(f"per_stream={self.per_stream!r} is not allowed: use True or False")

    @property
    def base(self) -> TBPTT:
        return TBPTT(self.k1, self.k2)

    def resolve(self, T: int) -> tuple[int, int]:
        return self.base.resolve(T)

    def update_times(self, T: int) -> list[int]:
        return self.base.update_times(T)

    def window_start(self, t: int, T: int) -> int:
        return self.base.window_start(t, T)

    def updates(self, T: int) -> list[tuple[int, int, int]]:
        return self.base.updates(T)

    def depths(self, T: int) -> list[int]:
        """Depths of the underlying TBPTT(k1, k2) (the expectation's support)."""
        return self.base.depths(T)

    def sample_depths(self, T: int, rng: _random.Random) -> list[int]:
        """One draw of the realised depths: each loss reaches back until the first xi_j = 0.

        Uses Python's ``random`` (for pictures and docs); the engine draws with torch.
        """
        d = []
        for prev, t, start in self.updates(T):
            keep = {j: rng.random() < self.pi for j in range(start + 2, t + 1)}  # edge h_{j-1} -> h_j
            for s in range(prev + 1, t + 1):
                depth = 0 if s <= start else 1
                j = s
                while depth and j - 1 > start and keep[j]:
                    depth += 1
                    j -= 1
                d.append(depth)
        return d

    @property
    def preset(self) -> str:
        return "random"

    @property
    def n(self) -> int | None:
        """Expected reach of a gradient path: 1/pi edges (groups the row in r2rt tables)."""
        return max(1, round(1.0 / self.pi))

    @property
    def label(self) -> str:
        base = "" if self.base.preset == "full" else f" on {self.base.label}"
        return f"Random truncation (pi={self.pi:g}){base}"

    @property
    def spec(self) -> str:
        if self.k1 is None and self.k2 is None and not self.per_stream:
            return f"random({self.pi!r})"
        return f"random_tbptt({self.pi!r}, {self.k1}, {self.k2}, {self.per_stream})"

    def to_dict(self) -> dict:
        return {
            "kind": "random",
            "preset": "random",
            "k1": self.k1,
            "k2": self.k2,
            "pi": self.pi,
            "per_stream": self.per_stream,
            "label": self.label,
            "n": self.n,
            "spec": self.spec,
        }


Style = Union[TBPTT, RandomTruncation]


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
    """Random truncation (Tallec & Ollivier; d2l) on full BPTT."""
    return RandomTruncation(pi)


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
    if not isinstance(style, (TBPTT, RandomTruncation)):
        raise StyleError(f"style {text!r} is not allowed: {name} must return a TBPTT or RandomTruncation")
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
