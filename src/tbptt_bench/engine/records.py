"""What the engine returns and raises: per-update records, the run's result, the one error class.

Kept apart from ``train.py`` so every path module can build records without importing the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BenchError
from ..models import State

__all__ = ["EngineError", "TrainResult", "UpdateRecord"]


class EngineError(BenchError):
    """Bad input to the engine, caught before any training (a one-line message)."""


@dataclass(frozen=True)
class UpdateRecord:
    t: int  #: the update time (1-based step index)
    loss: float  #: the update's objective: mean loss over its steps and the batch
    grad_norm: float  #: global gradient norm before clipping
    clipped: bool  #: whether clipping scaled the gradient
    #: steps run forward in this update's segment (prev, t], summed over the B rows
    forward_steps: int
    #: steps whose recurrent cell this update's backward pass traversed, summed over the B rows
    #: (docs/semantics.md, "Counting"); 0 for a readout-only update
    backprop_steps: int


@dataclass
class TrainResult:
    records: list[UpdateRecord]
    state: State  #: the final hidden state, detached
    path: str  #: which implementation ran (the recorded ``engine_path``)
    saved_bytes_peak: int | None = None  #: peak bytes held for backward (when measured)
    fallback_reason: str | None = None  #: why a faster path chosen for this run could not run

    @property
    def forward_steps(self) -> int:
        """Total steps run forward over the run, summed over the B rows."""
        return sum(r.forward_steps for r in self.records)

    @property
    def backprop_steps(self) -> int:
        """Total steps traversed by backward passes over the run, summed over the B rows."""
        return sum(r.backprop_steps for r in self.records)
