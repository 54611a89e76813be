"""Aicher, Foti & Fox's copy task as one long stream of segments.

Alphabet of 6: 0 blank, 1 segment start, 2..5 symbols. A segment draws a copy length c (fixed
``m``, or uniform in [``m_min``, ``m_max``]), shows c symbols as input (the first is 1, the
rest uniform in 2..5) and then c blanks; the target is blank while the symbols are shown and
repeats them, in order, during the c blank steps (target_t = input_{t-c}). Each segment lasts
2c steps; rows start at a segment start and run segments back to back. x = one-hot (D = 6),
y = class index (6 classes, loss "ce").

Reference lines (nats per step, long-run average over the stream):

* ``optimal`` = 0. With full memory nothing is uncertain: a nonblank input says the target
  is blank; the first blank input ends the show phase, which reveals c at exactly the step
  whose target is the first shown symbol (1); every later target was shown c steps before.
* ``no_memory``: a predictor that sees only the current input. A nonblank input still means
  a blank target (zero loss); a blank input (half of all steps) is followed by target 1 once
  per segment and by one of 2..5 (uniform) c - 1 times. By renewal-reward the time-averaged
  share of 1 among blank steps is p = 1 / E[c], so no_memory = H / 2 with
  H = -p log p - (1 - p) log((1 - p) / 4); only E[c] enters. m = 10: 0.7863699.
* ``partial`` (position-only plateau): a predictor that knows its position in the segment
  (so when the show phase ends, and c) but none of the shown symbols. Show-phase targets
  are blank and the first recall target is 1, both known from the position; the other c - 1
  recall targets are uniform over the 4 symbols, log 4 each. Per segment (renewal-reward):
  (E[c] - 1) log 4 / (2 E[c]); m = 10: 9 log 4 / 20 = 0.6238325. This is the plateau that
  windows too short to span the copy distance settle on (symbol accuracy 0.25).

>>> task = CopyTask(m=3)
>>> s = task.make_train(seed=0, epoch=0, batch=1, length=10)
>>> s.x[:, 0].argmax(-1).tolist()      # shows 1 x x, then 3 blanks; next segment
[1, 4, 4, 0, 0, 0, 1, 2, 2, 0]
>>> s.y[:, 0].tolist()                 # blank, then the 3 shown symbols
[0, 0, 0, 1, 4, 4, 0, 0, 0, 1]
>>> {k: round(v, 7) for k, v in task.references(s).items()}
{'no_memory': 0.7803552, 'partial': 0.4620981, 'optimal': 0.0}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, TaskError, check_int, one_hot

__all__ = ["ALPHABET", "BLANK", "N_SYMBOLS", "START", "CopyTask"]

BLANK, START, N_SYMBOLS = 0, 1, 4  # symbols are 2 .. 2 + N_SYMBOLS - 1
ALPHABET = 2 + N_SYMBOLS

_DEFAULT_M = 10


@dataclass(frozen=True)
class CopyTask(Task):
    """Copy c shown symbols after c steps: c = m, or uniform in [m_min, m_max] (give m or the range)."""

    m: int | None = None
    m_min: int | None = None
    m_max: int | None = None

    name: ClassVar[str] = "copy"
    smoke_params: ClassVar[dict[str, Any]] = {"m": 4}  # sizes for a seconds-long test
    loss: ClassVar[str] = "ce"
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "best predictor seeing only the current input: the uncertain recall targets after a blank",
        "partial": "position-only plateau: position in the segment known, shown symbols unknown",
        "optimal": "0: with full memory every target is determined (the first blank reveals c)",
    }

    def __post_init__(self) -> None:
        ranged = self.m_min is not None or self.m_max is not None
        if ranged:
            if self.m is not None:
                raise TaskError(
                    f"m={self.m!r} with m_min={self.m_min!r}, m_max={self.m_max!r} is not allowed: "
                    "give either a fixed m or the range m_min..m_max"
                )
            if self.m_min is None or self.m_max is None:
                raise TaskError(
                    f"m_min={self.m_min!r}, m_max={self.m_max!r} is not allowed: give both ends of the range"
                )
            lo, hi = check_int("m_min", self.m_min, 1), check_int("m_max", self.m_max, 1)
            if lo > hi:
                raise TaskError(f"m_min={lo}, m_max={hi} is not allowed: m_min must be <= m_max")
            object.__setattr__(self, "m_min", lo)
            object.__setattr__(self, "m_max", hi)
        else:
            object.__setattr__(self, "m", _DEFAULT_M if self.m is None else check_int("m", self.m, 1))

    @property
    def input_size(self) -> int:
        return ALPHABET

    @property
    def output_size(self) -> int:
        return ALPHABET

    @property
    def c_range(self) -> tuple[int, int]:
        """(smallest, largest) copy length."""
        return (self.m, self.m) if self.m is not None else (self.m_min, self.m_max)  # type: ignore[return-value]

    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        lo, hi = self.c_range
        c = rng.integers(lo, hi + 1, size=(batch, length // (2 * lo) + 1))  # enough to cover a row
        needed = np.cumsum(2 * c, axis=1) - 2 * c < length  # segments that start inside the row
        n_seg = needed.sum(axis=1)
        c = c[needed]  # row-major: row 0's segments first
        # Lay the kept segments of all rows end to end; row b starts at its first segment.
        seg_len = 2 * c
        seg_start = np.cumsum(seg_len) - seg_len
        row_start = seg_start[np.cumsum(n_seg) - n_seg]
        seg = np.repeat(np.arange(c.size), seg_len)
        step = np.arange(seg.size)
        pos, cc = step - seg_start[seg], c[seg]  # step inside the segment (0-based), its c
        shown = np.where(pos == 0, START, rng.integers(2, ALPHABET, size=seg.size))
        x = np.where(pos < cc, shown, BLANK)
        y = np.where(pos < cc, BLANK, x[np.maximum(step - cc, 0)])  # the input c steps earlier
        idx = row_start[None, :] + np.arange(length)[:, None]  # (T, B) into the flat layout
        return Stream(one_hot(x[idx], ALPHABET), torch.from_numpy(y[idx]))

    def references(self, validation: Stream | None = None) -> dict[str, float]:
        """Reference lines in nats per step (closed forms from the parameters)."""
        lo, hi = self.c_range
        mean_c = (lo + hi) / 2
        p = 1.0 / mean_c  # share of target START among blank inputs
        h = -sum(q * math.log(q / k) for q, k in ((p, 1), (1.0 - p, N_SYMBOLS)) if q > 0.0)
        position_only = (mean_c - 1.0) * math.log(N_SYMBOLS) / (2.0 * mean_c)
        return {"no_memory": h / 2, "partial": position_only, "optimal": 0.0}
