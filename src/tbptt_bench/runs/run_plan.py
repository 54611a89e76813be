"""A run's plan: which stretches of stream it trains on, and when it is evaluated. Pure Python (no torch).

``plan_run`` turns a budget mode and a style into ``Segment``s (each trained from a fresh state)
and an evaluation schedule (``eval_schedule``) on the run's budget axis; the harness follows it
update by update (module doc of ``harness.py``, "What trains" and "When it is measured").

>>> from tbptt_bench.runs.spec import Budget
>>> from tbptt_bench.styles import parse_style
>>> b = Budget(epochs=2, batch=4, row_len=40, val_batch=4, val_len=40, eval_points=10, warmup_updates=1)
>>> p = plan_run(b, parse_style("tf_style(10)"))
>>> len(p.segments), p.axis, p.update_positions[:3], p.schedule[-1]
(2, 'timesteps', (10, 20, 30), 80)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..styles import Style
from .spec import Budget

__all__ = ["RunPlan", "Segment", "eval_schedule", "plan_run"]


# -- the plan: what trains, and when it is evaluated ------------------------------------------
@dataclass(frozen=True)
class Segment:
    """A stretch of training stream trained from a fresh (zero) state.

    Steps ``[start, start + length)`` of the training stream of ``epoch``
    (``task.make_train(seed, epoch, batch, stream_len)``); ``offset`` = run timesteps before it.
    """

    epoch: int
    start: int
    length: int
    stream_len: int
    offset: int


@dataclass(frozen=True)
class RunPlan:
    """Segments, the budget-axis position of every update, and the evaluation schedule."""

    mode: str
    axis: str  #: "timesteps" or "updates": the axis the schedule's points live on
    segments: tuple[Segment, ...]
    update_positions: tuple[int, ...]  #: position of update i+1 on ``axis``
    schedule: tuple[int, ...]  #: evaluation points on ``axis``, increasing, starting at 0

    @property
    def timesteps(self) -> int:
        return sum(s.length for s in self.segments)

    def describe(self) -> dict[str, Any]:
        """What ``config.json`` records, so a table can say how each style was trained."""
        # Where the hidden state starts from zero: at each epoch's stream (data; updates with a
        # fixed k1, whose one stream is U * k1 long), at each of U rows (updates with k1 = the
        # whole row: full BPTT), at each episode (episodic).
        if self.mode == "episodic":
            resets = "per episode"
        elif self.mode == "updates" and len(self.segments) > 1:
            resets = "per row"
        else:
            resets = "per stream"
        return {
            "mode": self.mode,
            "eval_axis": self.axis,
            "eval_schedule": list(self.schedule),
            "segments": len(self.segments),
            "segment_len": sorted({s.length for s in self.segments}),
            "state_reset": resets,
            "planned_updates": len(self.update_positions),
            "planned_timesteps": self.timesteps,
        }


def eval_schedule(total: int, points: int) -> tuple[int, ...]:
    """round(linspace(0, total, points)) as distinct integers (timesteps or updates).

    >>> eval_schedule(60, 10)
    (0, 7, 13, 20, 27, 33, 40, 47, 53, 60)
    """
    return tuple(sorted({round(total * i / (points - 1)) for i in range(points)}))


def plan_run(budget: Budget, style: Style) -> RunPlan:
    """The segments and evaluation schedule of a run (module doc, "What trains")."""
    b = budget
    if b.mode == "data":
        segs = [Segment(e, 0, b.row_len, b.row_len, e * b.row_len) for e in range(b.epochs)]
    elif b.mode == "episodic":
        n, per = b.episode_len, b.row_len // b.episode_len
        segs = [
            Segment(e, j * n, n, b.row_len, e * b.row_len + j * n)
            for e in range(b.epochs)
            for j in range(per)
        ]
    elif style.k1 is not None or style.n is not None:
        # updates: one stream exactly long enough for U updates of k1 steps; ARTBP's segments have
        # mean length n, so U updates in expectation (the run records how many it made)
        k = style.k1 if style.k1 is not None else style.n
        segs = [Segment(0, 0, b.updates * k, b.updates * k, 0)]
    else:  # updates, k1 = the whole row (full BPTT, r2rt's random(pi), adaptive): U fresh rows
        segs = [Segment(i, 0, b.row_len, b.row_len, i * b.row_len) for i in range(b.updates)]
    times = [s.offset + t for s in segs for t in style.update_times(s.length)]
    axis = "updates" if b.mode == "updates" else "timesteps"
    positions = tuple(range(1, len(times) + 1)) if axis == "updates" else tuple(times)
    total = len(times) if axis == "updates" else sum(s.length for s in segs)
    return RunPlan(b.mode, axis, tuple(segs), positions, eval_schedule(total, b.eval_points))
