"""The styles whose schedule is decided while training: ARTBP and adaptive TBPTT.

ARTBP draws its truncation points (docs/artbp.md); adaptive TBPTT measures its K every period
(docs/adaptive.md). Each answers the same schedule questions as ``TBPTT`` for budgets and
pictures. Pure Python (no torch). Re-exported by ``tbptt_bench.styles``; import them from there.
"""

from __future__ import annotations

import math
import random as _random
from dataclasses import dataclass

from .style_windows import TBPTT, StyleError


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
