"""Hochreiter & Schmidhuber's adding problem as a stream of segments of L steps.

Each step's input is (value ~ U[0, 1], marker, query). In every segment exactly two steps are
marked: one uniform in the first half (steps 0 .. L//2 - 1), one uniform in the second half
(L//2 .. L - 1); the query flag is 1 on the segment's last step. The target (loss "mse",
Q = 1) is the sum of the two marked values on the query step and 0 elsewhere. Rows start at
a segment start and run segments back to back.

Reference lines (mean squared error per step):

* ``optimal`` = 0: with memory the two marked values are known when the query comes.
* ``no_memory``: the best predictor of the current input alone predicts 0 off the query
  step; on it, E[sum] = 1 (error variance 2/12) unless the second marker falls on the query
  step itself (probability q = 1 / (L - L//2)), when it predicts value + 1/2 (variance
  1/12). Averaged over the L steps: ((1 - q)/6 + q/12) / L. L = 20: 0.0079167.
* ``partial`` ("second value only"): a predictor that remembers the second marked value
  (at most L/2 steps back) but not the first predicts v2 + 1/2 at the query: error variance
  Var(v1) = 1/12 once per segment, 1 / (12 L). L = 20: 0.0041667.
* ``predict_zero``: the constant output 0 (where an untrained network starts): error
  E[(v1 + v2)^2] = Var + mean^2 = 2/12 + 1 on the query step, (1 + 1/6) / L. L = 20: 0.0583333.

>>> task = AddingTask(segment_length=4)
>>> s = task.make_train(seed=0, epoch=0, batch=1, length=8)
>>> s.x[:, 0].double().numpy().round(2).tolist()   # (value, marker, query) per step
[[0.85, 1.0, 0.0], [0.64, 0.0, 0.0], [0.51, 0.0, 0.0], [0.27, 1.0, 1.0], [0.31, 0.0, 0.0], [0.04, 1.0, 0.0], [0.08, 0.0, 0.0], [0.02, 1.0, 1.0]]
>>> s.y[:, 0, 0].double().numpy().round(2).tolist()
[0.0, 0.0, 0.0, 1.12, 0.0, 0.0, 0.0, 0.06]
>>> {k: round(v, 7) for k, v in task.references(s).items()}
{'predict_zero': 0.2916667, 'no_memory': 0.03125, 'partial': 0.0208333, 'optimal': 0.0}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, check_int

__all__ = ["AddingTask"]


@dataclass(frozen=True)
class AddingTask(Task):
    """Add the two marked values of each L-step segment (``segment_length`` = L, at least 2)."""

    segment_length: int = 20

    name: ClassVar[str] = "adding"
    smoke_params: ClassVar[dict[str, Any]] = {"segment_length": 6}  # sizes for a seconds-long test
    loss: ClassVar[str] = "mse"
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "best predictor seeing only the current input (E[sum] on query steps, 0 elsewhere)",
        "partial": "second value only: remembers the second marked value, predicts v2 + 1/2",
        "predict_zero": "the constant prediction 0: E[(v1 + v2)^2] = 1 + 1/6 per segment",
        "optimal": "0: with memory the two marked values are known at the query",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "segment_length", check_int("segment_length", self.segment_length, 2))

    @property
    def input_size(self) -> int:
        return 3

    @property
    def output_size(self) -> int:
        return 1

    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        L = self.segment_length
        half = L // 2
        n_seg = -(-length // L)
        value = rng.random((n_seg, L, batch), dtype=np.float32)
        first = rng.integers(0, half, size=(n_seg, batch))
        second = rng.integers(half, L, size=(n_seg, batch))
        step = np.arange(L)[None, :, None]
        marker = (step == first[:, None, :]) | (step == second[:, None, :])
        query = np.broadcast_to(step == L - 1, marker.shape)
        total = np.where(marker, value, np.float32(0)).sum(axis=1, dtype=np.float32)  # (n_seg, B)
        target = np.where(query, total[:, None, :], np.float32(0))
        x = np.stack([value, marker.astype(np.float32), query.astype(np.float32)], axis=-1)
        x = x.reshape(n_seg * L, batch, 3)[:length]
        y = target.reshape(n_seg * L, batch, 1)[:length]
        return Stream(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))

    def references(self, validation: Stream | None = None) -> dict[str, float]:
        """Reference lines in MSE per step (closed forms from the parameters)."""
        L = self.segment_length
        q = 1.0 / (L - L // 2)  # chance that the second marker sits on the query step
        return {
            "predict_zero": (1.0 + 2.0 / 12.0) / L,
            "no_memory": ((1.0 - q) / 6.0 + q / 12.0) / L,
            "partial": 1.0 / (12.0 * L),
            "optimal": 0.0,
        }
