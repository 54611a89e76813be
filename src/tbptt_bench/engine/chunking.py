"""Cut a sequence into the chunks the engine runs, from a style's schedule alone.

A chunk is a run of steps (a, b] that needs no gradient decision inside it: chunk edges sit
at every update time u and every truncation point u - k2, so each update's backward window
(u - k2, u] is a whole number of chunks. The engine builds one autograd graph per chunk,
starting from a detached copy of h_a, and carries gradients between chunks by hand: that is
how an overlapping window can stop at u - k2 while the steps before it stay alive for the
next update, and how memory stays bounded by k2 (a chunk is freed after its last update).
Random truncation needs a decision on every recurrent edge, so the autograd path cuts its
windows per step (the Elman path applies xi inside its own backward recursion).

>>> from tbptt_bench.styles import TBPTT
>>> [(c.a, c.b, c.update, c.in_window, c.last_use) for c in plan_chunks(TBPTT(3, 5), 6)]
[(0, 1, 3, True, 3), (1, 3, 3, True, 6), (3, 6, 6, True, 6)]
>>> [(c.a, c.b, c.in_window) for c in plan_chunks(TBPTT(3, 1), 6)]   # one-step context
[(0, 2, False), (2, 3, True), (3, 5, False), (5, 6, True)]
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..styles import RandomTruncation, Style

__all__ = ["ChunkPlan", "needs_stored_history", "plan_chunks"]


@dataclass(frozen=True)
class ChunkPlan:
    a: int  #: the chunk runs steps a+1 .. b (1-based); h_a is its input state
    b: int
    update: int  #: the update its losses belong to (the first update time >= b)
    prev_update: int  #: the update before that (0 at the start): losses of (prev_update, update]
    in_window: bool  #: inside its own update's backward window, so its cell needs a graph
    last_use: int  #: the last update whose window still contains it (free its graph after)


def plan_chunks(style: Style, T: int, cut_random_edges: bool = True) -> list[ChunkPlan]:
    """The chunks of a length-T sequence under ``style``, in order. ``cut_random_edges=False``
    keeps random truncation's windows whole (for paths that apply xi inside a chunk)."""
    _, k2 = style.resolve(T)
    updates = style.update_times(T)
    cuts = {0, *updates, *(u - k2 for u in updates if u - k2 > 0)}
    if cut_random_edges and isinstance(style, RandomTruncation):
        for u in updates:
            cuts.update(range(max(u - k2, 0), u + 1))
    edges = sorted(cuts)
    chunks = []
    for a, b in zip(edges, edges[1:]):
        i = bisect.bisect_left(updates, b)
        u, prev = updates[i], (updates[i - 1] if i else 0)
        in_window = a >= u - k2
        last = updates[bisect.bisect_right(updates, a + k2) - 1] if in_window else u
        chunks.append(ChunkPlan(a, b, u, prev, in_window, max(last, u)))
    return chunks


def needs_stored_history(chunks: list[ChunkPlan]) -> bool:
    """True when some chunk serves more than one update (k2 > k1): steps then run with
    per-update parameter snapshots, so later windows see the Jacobians of their time."""
    return any(c.last_use > c.update for c in chunks)
