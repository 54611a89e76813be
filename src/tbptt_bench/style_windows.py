"""The styles with fixed windows: TBPTT(k1, k2), and random truncation on it (docs/semantics.md).

Also what every style value checks at the door: ``StyleError`` and the bounds on k and pi.
Pure Python (no torch). The public names are re-exported by ``tbptt_bench.styles``; import
them from there.
"""

from __future__ import annotations

import math
import random as _random
from dataclasses import dataclass

from .errors import BenchError, check_int


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


#: random_depth's window cap in units of n. With keep probability pi = 1 - 1/n, the chance that
#: a loss's realised depth reaches the cap K = cap*n is pi^(K-1) ~ e^-cap: for cap = 4 about 2%
#: (n = 5: 0.8^19 = 1.4%), so the cap is the row's only bias and a small one, while the memory
#: a window may pin stays bounded by K steps (4x TF-style(n)'s) even on an unlucky draw.
DEFAULT_CAP = 4
