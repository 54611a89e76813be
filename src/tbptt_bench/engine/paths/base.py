"""The contract every engine path implements: ``Path`` built from one frozen ``PathInputs``.

A path trains one stream under one style and returns a ``TrainResult``: it runs every update in
order, sets the gradients, clips them (``clipping.clip_by_global_norm_``), steps the caller's
optimizer, and writes one ``UpdateRecord`` per update with its forward and backprop step counts
(``counting``). ``train_stream`` checks the inputs (``checks``), picks the path
(``selection.PATH_TABLE``), builds ``PathInputs`` once and calls ``Path(inputs).run(callback)``.
How a path gets there is its own business: the chunked paths (autograd, manual-elman) share the
chunk loop in ``chunked.py``; the static path runs each update as one static-shape function so a
CUDA graph can replay it, clipping and stepping inside that function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ...models import RecurrentModel, State
from ...styles import ARTBP, RandomTruncation, Style
from ..losses import per_step_elements
from ..records import TrainResult, UpdateRecord

__all__ = ["GRAPH_FORWARDS", "Path", "PathInputs"]

#: What runs the forward inside a CUDA graph: cuDNN's fused kernel, or per-step products.
GRAPH_FORWARDS = ("fused", "loop")


@dataclass(frozen=True)
class PathInputs:
    """Everything a path needs, checked (``checks.check_train_inputs``) and resolved against T."""

    model: RecurrentModel
    x: Tensor  #: (T, B, D) inputs
    y: Tensor  #: (T, B, Q) float targets (mse) or (T, B) int64 classes (ce)
    style: Style
    optimizer: torch.optim.Optimizer  #: covers exactly the model's parameters
    loss: str  #: a key of ``losses.LOSSES``
    clip: float | None  #: global-norm threshold, or None
    #: drives random truncation's draws; the realised ``xi.DrawnXi`` once the engine drew them
    generator: Any
    h0: State  #: the initial state, detached
    k1: int  #: the style's k1 and k2 resolved against T (None -> T)
    k2: int
    updates: tuple[tuple[int, int], ...]  #: (previous update, update time) per update, in order
    stored_history: bool  #: some window reaches into an earlier segment (k2 > k1 somewhere)
    #: update time -> the step its window starts after (max(u - k2, 0); ARTBP: its segment start)
    starts: Mapping[int, int] = field(default_factory=dict)
    draws: Any = None  #: ``xi.DrawnXi`` of a random style, drawn before training; None otherwise
    measure_memory: bool = False  #: count the peak bytes held for backward
    capture: bool = False  #: replay updates as a CUDA graph (path cuda-graph-elman)
    graph_forward: str = "fused"  #: forward inside the graph, one of GRAPH_FORWARDS
    denoms: dict[int, int] = field(init=False, repr=False)  #: update time -> loss terms it averages

    def __post_init__(self) -> None:
        per_step = per_step_elements(self.loss, self.batch, self.model.output_size)
        # loss terms each update averages: the steps since the last update (ARTBP: a fixed n,
        # so every loss keeps the same weight whatever its segment's length; docs/artbp.md)
        steps = self.style.objective_steps
        object.__setattr__(self, "denoms", {u: per_step * steps(prev, u) for prev, u in self.updates})
        if not self.starts:
            object.__setattr__(self, "starts", {u: max(u - self.k2, 0) for _, u in self.updates})

    @property
    def batch(self) -> int:
        return self.x.shape[1]

    @property
    def pi(self) -> float | None:
        """Random truncation's keep probability; None for deterministic TBPTT."""
        return self.style.pi if isinstance(self.style, (RandomTruncation, ARTBP)) else None

    @property
    def per_stream(self) -> bool:
        return bool(getattr(self.style, "per_stream", False))

    @property
    def per_step(self) -> int:
        """Loss terms one step adds to an update's mean (B Q for mse, B for ce)."""
        return per_step_elements(self.loss, self.batch, self.model.output_size)


@runtime_checkable
class Path(Protocol):
    """One implementation of the engine: ``Path(inputs).run(callback)``.

    ``run`` performs every update of ``inputs.updates`` in order and returns the records (one per
    update, counts included), the final detached state, the ``engine_path`` name it ran as, the
    peak bytes held for backward when ``inputs.measure_memory``, and a fallback reason where a
    faster variant could not run. ``callback(record)`` is called after each update (raising from
    it stops training; the parameters keep the updates done so far).
    """

    def __init__(self, inputs: PathInputs) -> None: ...

    def run(self, callback: Callable[[UpdateRecord], None] | None = None) -> TrainResult: ...
