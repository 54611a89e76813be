"""Cut a sequence into the chunks the engine runs, from a style's schedule alone.

A chunk is a run of steps (a, b] that needs no gradient decision inside it: chunk edges sit
at every update time u and every truncation point u - k2, so each update's backward window
(u - k2, u] is a whole number of chunks. The engine builds one autograd graph per chunk,
starting from a detached copy of h_a, and carries gradients between chunks by hand: that is
how an overlapping window can stop at u - k2 while the steps before it stay alive for the
next update, and how memory stays bounded by k2 (a chunk is freed after its last update).
Random truncation needs a decision on every recurrent edge, so the autograd path cuts its
windows per step (the Elman path applies xi inside its own backward recursion). With the draws
made before the forward pass (``xi.realise``), the planner also cuts where xi = 0: a chunk lives
only until the last update whose backward pass really reaches it.

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


def plan_chunks(style: Style, T: int, cut_random_edges: bool = True, draws=None) -> list[ChunkPlan]:
    """The chunks of a length-T sequence under ``style``, in order.

    ``cut_random_edges=False`` keeps random truncation's windows whole (for paths that apply xi
    inside a chunk); True cuts them per step (xi is applied between chunks). ``draws`` (an
    ``xi.DrawnXi`` drawn before the first forward step) gives the realised schedule (ARTBP's
    update times) and cuts the graph where xi = 0: each update's backward reaches only back to
    its first cut edge, so a chunk's ``last_use`` is the last update that really reaches it and
    its graph or stored states are freed then, not when the window cap passes. Gradients are
    unchanged (a chunk freed early is one no later update would have reached).
    """
    updates = draws.updates if draws is not None else style.updates(T)
    times = [t for _, t, _ in updates]
    starts = {t: s for _, t, s in updates}
    k2 = max(t - s for _, t, s in updates)
    cuts = {0, *times, *(s for s in starts.values() if s > 0)}
    random = draws is not None or isinstance(style, RandomTruncation)
    if cut_random_edges and random:
        for _, u, start in updates:
            cuts.update(range(start, u + 1))
    reach = None
    if draws is not None:
        reach = {u: draws.reach(u, prev, start) for prev, u, start in updates}
        cuts.update(m - 1 for m in reach.values())
    edges = sorted(cuts)
    chunks = []
    for a, b in zip(edges, edges[1:]):
        i = bisect.bisect_left(times, b)
        u, prev = times[i], (times[i - 1] if i else 0)
        in_window = a >= starts[u]
        last = u
        if in_window:
            # Later updates whose windows still contain step a + 1 (and, drawn, that reach it).
            for v in times[i + 1 : bisect.bisect_right(times, a + k2)]:
                if a >= starts[v] and (reach is None or reach[v] <= a + 1):
                    last = v
        chunks.append(ChunkPlan(a, b, u, prev, in_window, last))
    return chunks


def needs_stored_history(chunks: list[ChunkPlan]) -> bool:
    """True when some chunk serves more than one update (k2 > k1): steps then run with
    per-update parameter snapshots, so later windows see the Jacobians of their time."""
    return any(c.last_use > c.update for c in chunks)
