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

    def objective_steps(self, prev: int, t: int) -> int:
        """Steps the update at t divides its loss sum by (with the batch and outputs): t - prev,
        the mean of its own losses (SPEC rule 2)."""
        return t - prev

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

    pi is the probability of *keeping* an edge, so a loss's realised depth D (1 + the run of
    kept edges behind it) is geometric, P(D >= d) = pi^(d-1), with mean 1/(1 - pi) before the
    window's cap: pi = 0.8 means an expected depth of 5, not 1/pi = 1.25.
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

    def objective_steps(self, prev: int, t: int) -> int:
        """Steps the update at t divides its loss sum by (with the batch and outputs): t - prev,
        the mean of its own losses (SPEC rule 2)."""
        return t - prev

    @property
    def expected_depth(self) -> float:
        """Mean realised depth 1/(1 - pi) of a loss before the window cap (inf for pi = 1)."""
        return math.inf if self.pi == 1.0 else 1.0 / (1.0 - self.pi)

    @property
    def preset(self) -> str:
        """ "random_depth" for the n-block peer of TF-style(n) (k1 = n, pi = 1 - 1/n, k2 a
        multiple of n); "random" for the notes' full-BPTT form and any other (pi, k1, k2)."""
        k1, k2 = self.k1, self.k2
        if (
            k1 is not None
            and k1 >= 2
            and k2 is not None
            and k2 % k1 == 0
            and not self.per_stream
            and math.isclose(self.pi, 1.0 - 1.0 / k1, rel_tol=0.0, abs_tol=1e-12)
        ):
            return "random_depth"
        return "random"

    @property
    def n(self) -> int | None:
        """The r2rt block: n for random_depth(n) (updates every n steps, expected depth n, like
        TF-style(n)); None for every other form, which is not an n-block peer (filed apart)."""
        return self.k1 if self.preset == "random_depth" else None

    @property
    def label(self) -> str:
        if self.preset == "random_depth":
            return f"Random depth (E[depth]={self.k1}, pi={self.pi:g}, K={self.k2})"
        depth = "∞" if self.pi == 1.0 else f"{self.expected_depth:.3g}"
        if self.k1 is None and self.k2 is None:
            return f"Random truncation (full-BPTT form; pi={self.pi:g}, E[depth]={depth})"
        return f"Random truncation (pi={self.pi:g}, E[depth]={depth}) on {self.base.label}"

    @property
    def spec(self) -> str:
        if self.preset == "random_depth":
            cap = self.k2 // self.k1
            return f"random_depth({self.k1})" if cap == DEFAULT_CAP else f"random_depth({self.k1}, {cap})"
        if self.k1 is None and self.k2 is None and not self.per_stream:
            return f"random({self.pi!r})"
        return f"random_tbptt({self.pi!r}, {self.k1}, {self.k2}, {self.per_stream})"

    def to_dict(self) -> dict:
        return {
            "kind": "random",
            "preset": self.preset,
            "k1": self.k1,
            "k2": self.k2,
            "pi": self.pi,
            "per_stream": self.per_stream,
            "label": self.label,
            "n": self.n,
            "spec": self.spec,
        }


@dataclass(frozen=True)
class ARTBP:
    """Anticipated Reweighted Truncated Backpropagation (Tallec & Ollivier 2017), as decided in
    docs/artbp.md: unbiased for the untruncated (full-BPTT) gradient of the stream.

    After every step j < T a truncation point is drawn with probability c = 1/n, independently.
    At a truncation point (and at T) the parameters are updated with the gradient of the mean
    loss of the segment since the previous point, backpropagated through the whole segment and
    no further; every recurrent edge the backward pass crosses inside the segment is multiplied
    by the compensation factor 1/(1 - c). A contribution of loss s to the Jacobian path back to
    step s - d + 1 crosses d - 1 edges, survives with probability (1 - c)^(d-1) and is scaled by
    (1 - c)^-(d-1): its expectation is the full-BPTT term (with parameters held fixed). Segment
    lengths are geometric with mean n, so updates come every n steps on average, like TF-style(n).

    The realised truncation points are drawn by the engine from the run's generator;
    ``update_times`` gives the n-grid of TF-style(n) (the same expected number of updates) for
    budgets and pictures, ``sample_update_times`` one draw.
    """

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
            raise StyleError(
                f"n={self.n!r} is not allowed: ARTBP's expected truncation length n must be an integer >= 2"
            )

    k1 = None  # no fixed block: truncation points are random
    k2 = None
    per_stream = False

    @property
    def c(self) -> float:
        """Probability that a step is a truncation point."""
        return 1.0 / self.n

    @property
    def pi(self) -> float:
        """Probability that an edge survives (1 - c); a crossed edge is scaled by 1/pi."""
        return 1.0 - 1.0 / self.n

    def resolve(self, T: int) -> tuple[int, int]:
        return TBPTT().resolve(T)

    def update_times(self, T: int) -> list[int]:
        return TBPTT(self.n, self.n).update_times(T)

    def window_start(self, t: int, T: int) -> int:
        return TBPTT(self.n, self.n).window_start(t, T)

    def updates(self, T: int) -> list[tuple[int, int, int]]:
        return TBPTT(self.n, self.n).updates(T)

    def depths(self, T: int) -> list[int]:
        return TBPTT(self.n, self.n).depths(T)

    def sample_update_times(self, T: int, rng: _random.Random) -> list[int]:
        """One draw of the truncation points (update times), T included."""
        self.resolve(T)
        return [j for j in range(1, T) if rng.random() < self.c] + [T]

    def sample_depths(self, T: int, rng: _random.Random) -> list[int]:
        """One draw of the realised depths: a loss reaches back to its segment's start."""
        d, prev = [], 0
        for t in self.sample_update_times(T, rng):
            d.extend(s - prev for s in range(prev + 1, t + 1))
            prev = t
        return d

    def objective_steps(self, prev: int, t: int) -> int:
        """n, not the realised segment length t - prev: every loss then carries the same weight
        1/(n B Q) whatever segment it falls in, so the sum of a stream's updates is unbiased for
        T/n times the full-BPTT gradient of the mean loss (a realised-length mean would weight
        the losses of short segments more, a bias of its own)."""
        return self.n

    @property
    def preset(self) -> str:
        return "artbp"

    @property
    def label(self) -> str:
        return f"ARTBP n={self.n} (c={self.c:.3g})"

    @property
    def spec(self) -> str:
        return f"artbp({self.n})"

    def to_dict(self) -> dict:
        return {
            "kind": "artbp",
            "preset": "artbp",
            "k1": None,
            "k2": None,
            "pi": self.pi,
            "per_stream": False,
            "label": self.label,
            "n": self.n,
            "spec": self.spec,
        }


@dataclass(frozen=True)
class AdaptiveTBPTT:
    """Adaptive truncation (Aicher, Foti & Fox 2019), as decided in docs/adaptive.md.

    Every ``period`` steps the engine measures, at the current parameters and on the next
    ``k_max`` steps of the stream from the carried state, the decay of ||dl_s/dh_{s-k}|| with k,
    fits a geometric tail beta^k beyond lag ``tau``, and picks the smallest K whose estimated
    relative gradient bias is below ``delta`` (K = k_max when none is). The period then trains
    as TBPTT(K, 2K - 1): updates every K steps, every loss reaching back at least K steps.
    """

    delta: float
    k_max: int = 64
    period: int = 1024
    tau: int = 4

    def __post_init__(self) -> None:
        d = self.delta
        if isinstance(d, bool) or not isinstance(d, (int, float)) or math.isnan(d) or not 0.0 < d < 1.0:
            raise StyleError(
                f"delta={d!r} is not allowed: the target relative bias must be a number in (0, 1)"
            )
        for name, lo in (("k_max", 2), ("period", 1), ("tau", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise StyleError(f"{name}={v!r} is not allowed: {name} must be an integer >= {lo}")
        if self.tau >= self.k_max:
            raise StyleError(f"tau={self.tau} is not allowed: the decay fit needs tau < k_max={self.k_max}")

    k1 = None  # K changes during training
    k2 = None
    per_stream = False
    pi = None

    def for_k(self, K: int) -> TBPTT:
        """The deterministic style one period trains with."""
        return TBPTT(K, 2 * K - 1)

    def resolve(self, T: int) -> tuple[int, int]:
        return TBPTT().resolve(T)

    def update_times(self, T: int) -> list[int]:
        """The schedule at K = k_max (the fewest updates); the realised K is chosen in training."""
        return self.for_k(self.k_max).update_times(T)

    def window_start(self, t: int, T: int) -> int:
        return self.for_k(self.k_max).window_start(t, T)

    def updates(self, T: int) -> list[tuple[int, int, int]]:
        return self.for_k(self.k_max).updates(T)

    def depths(self, T: int) -> list[int]:
        return self.for_k(self.k_max).depths(T)

    def objective_steps(self, prev: int, t: int) -> int:
        """Steps the update at t divides its loss sum by (with the batch and outputs): t - prev,
        the mean of its own losses (SPEC rule 2)."""
        return t - prev

    @property
    def preset(self) -> str:
        return "adaptive"

    @property
    def n(self) -> None:
        return None  # K is chosen by the run: not an n-block peer

    @property
    def label(self) -> str:
        return f"Adaptive TBPTT (delta={self.delta:g}, K<={self.k_max})"

    @property
    def spec(self) -> str:
        if (self.k_max, self.period, self.tau) == (64, 1024, 4):
            return f"adaptive({self.delta!r})"
        return f"adaptive({self.delta!r}, {self.k_max}, {self.period}, {self.tau})"

    def to_dict(self) -> dict:
        return {
            "kind": "adaptive",
            "preset": "adaptive",
            "k1": None,
            "k2": None,
            "pi": None,
            "per_stream": False,
            "label": self.label,
            "n": None,
            "spec": self.spec,
        }


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


#: random_depth's window cap in units of n. With keep probability pi = 1 - 1/n, the chance that
#: a loss's realised depth reaches the cap K = cap*n is pi^(K-1) ~ e^-cap: for cap = 4 about 2%
#: (n = 5: 0.8^19 = 1.4%), so the cap is the row's only bias and a small one, while the memory
#: a window may pin stays bounded by K steps (4x TF-style(n)'s) even on an unlucky draw.
DEFAULT_CAP = 4


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
