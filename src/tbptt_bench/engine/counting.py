"""How many steps an update ran forward and backpropagated through (docs/semantics.md, "Counting").

Both counts are summed over the B rows of the batch. ``forward_steps`` of the update at u with
previous update p is (u - p) B. ``backprop_steps`` counts the steps j of the window (start, u],
start = max(u - k2, 0), whose recurrent cell the backward pass traverses for at least one loss
of the update:

- every own step j in (max(p, start), u] is reached (its own loss starts there);
- a stored-history step j in (start, p] is reached only through the edges j+1 .. p+1 (the
  losses start at p+1 or later), so only while all of those edges are kept: the count is the
  run of kept edges going down from edge p+1, at most p - start long.

Without random truncation every edge is kept and the count is min(k2, u) B. Paths pass the
keep-mask of the multipliers they actually used, so a planner that cuts the graph where xi = 0
changes the count only through that mask.

>>> import torch
>>> backprop_steps(prev=4, u=6, start=1, batch=2, keep=None)   # window (1, 6]: 5 steps per row
10
>>> keep = torch.tensor([[True], [False], [True], [True]])   # edges 3, 4, 5, 6 (rows edge - start - 2)
>>> backprop_steps(prev=4, u=6, start=1, batch=2, keep=keep)   # own 5, 6; edge 5 kept -> 4; edge 4 cut
6
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["backprop_steps", "forward_steps", "keep_mask"]


def forward_steps(prev: int, u: int, batch: int) -> int:
    """Steps (prev, u] of one update's segment, summed over the rows."""
    return (u - prev) * batch


def keep_mask(xis: Tensor | None) -> Tensor | None:
    """(edges, B or 1) booleans on the host from ``draw_window_xi``'s multipliers (None: no xi)."""
    return None if xis is None else (xis != 0).flatten(1).cpu()


def backprop_steps(prev: int, u: int, start: int, batch: int, keep: Tensor | None) -> int:
    """Steps of (start, u] the update's backward traverses, summed over rows.

    ``keep``: (edges, B or 1) booleans, row j - start - 2 for edge j (h_{j-1} -> h_j),
    j = start + 2 .. u, as ``xi.draw_window_xi`` orders them; None when every edge is kept.
    """
    own = max(u - max(prev, start), 0)
    history = max(prev - start, 0)  # stored-history steps in the window
    if keep is None or history == 0:
        return (own + history) * batch
    # Edge p+1 is row p - start - 1; edges going down from it are rows p-start-1, ..., 0.
    rows = keep[:history].flip(0)  # (history, B|1): edge p+1 first
    run = torch.cumprod(rows.to(torch.int64), dim=0).sum(0)  # per row: kept edges before the first cut
    per_row = own + run
    if per_row.numel() == 1:
        return int(per_row) * batch
    return int(per_row.sum())
