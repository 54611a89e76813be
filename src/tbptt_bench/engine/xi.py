"""Random truncation's multiplier on one recurrent edge (Tallec & Ollivier; docs/semantics.md).

xi = 0 with probability 1 - pi and 1/pi with probability pi, so E[xi] = 1; one value shared
by the batch, or one per stream. Drawn on the CPU in float64 from the caller's generator so a
seed gives the same draws on every device.

An update draws the multipliers of every edge in its window at once: edge j (h_{j-1} -> h_j)
for j = start + 2 .. u (the edge out of the held-constant h_start carries nothing anyway).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> draw_window_xi(0.5, False, g, start=2, u=7, batch=3, device="cpu", dtype=torch.float64).shape
torch.Size([4, 1, 1])
>>> draw_window_xi(None, False, g, 2, 7, 3, "cpu", torch.float64) is None
True
"""

from __future__ import annotations

import torch
from torch import Tensor


def draw_window_xi(
    pi: float | None,
    per_stream: bool,
    generator: torch.Generator | None,
    start: int,
    u: int,
    batch: int,
    device,
    dtype,
) -> Tensor | None:
    """Multipliers (edges, B or 1, 1) for edges j = start+2 .. u; row j - start - 2 is edge j.
    None when there is no random truncation. Given a ``DrawnXi`` as ``generator``, the row it
    drew for update u before training."""
    if pi is None:
        return None
    if isinstance(generator, DrawnXi):
        return generator.window(start, u, device, dtype)
    edges = max(u - start - 1, 0)
    keep = torch.rand((edges, batch if per_stream else 1, 1), generator=generator, dtype=torch.float64) < pi
    return (keep.to(torch.float64) / pi).to(device=device, dtype=dtype)


class DrawnXi:
    """Every update's edge multipliers, drawn before any forward step (so the chunk planner can
    cut the graph where xi = 0, and memory and backprop steps are the draw's, not the window's).

    The draws are the same torch.rand calls, in the same (update) order, as drawing each window's
    multipliers at its update, so a seed gives today's gradients draw for draw. The paths keep
    calling ``draw_window_xi`` with their ``generator``: the engine hands them this object in
    its place and the call returns the stored row of update u.

    ``keep[u]``: (edges, B or 1) bool of the edges j = start+2 .. u kept by update u;
    ``scale``: a kept edge's multiplier (1/pi; ARTBP's 1/(1 - c)).
    """

    def __init__(self, updates: list[tuple[int, int, int]], keep: dict[int, Tensor], scale: float):
        self.updates = updates
        self.keep = keep
        self.scale = scale

    def window(self, start: int, u: int, device, dtype) -> Tensor:
        k = self.keep[u]
        if k.shape[0] != max(u - start - 1, 0):
            raise ValueError(f"update {u}: drawn for {k.shape[0]} edges, asked for the window from {start}")
        return (k.to(torch.float64) * self.scale).unsqueeze(-1).to(device=device, dtype=dtype)

    def reach(self, u: int, prev: int, start: int) -> int:
        """The oldest step whose cell update u's backward pass traverses (any stream): the loss
        at prev + 1 reaches back until the first cut edge or the window start."""
        m = max(prev + 1, start + 1)
        k = self.keep[u]
        while m - 1 > start and bool(k[m - start - 2].any()):
            m -= 1
        return m


def realise(style, T: int, batch: int, generator: torch.Generator | None) -> DrawnXi | None:
    """Draw what a random style leaves to chance for a length-T stream of ``batch`` rows, before
    training: random truncation's xi of every update (in update order, as ``draw_window_xi``
    would at each update), ARTBP's truncation points. None for deterministic styles."""
    from ..styles import ARTBP, RandomTruncation  # styles is torch-free; no cycle at import

    if isinstance(style, RandomTruncation):
        updates = style.updates(T)
        keep = {}
        for _, u, start in updates:
            edges = max(u - start - 1, 0)
            shape = (edges, batch if style.per_stream else 1)
            keep[u] = torch.rand(shape + (1,), generator=generator, dtype=torch.float64)[..., 0] < style.pi
        return DrawnXi(updates, keep, 1.0 / style.pi)
    if isinstance(style, ARTBP):
        cut = (torch.rand(max(T - 1, 0), generator=generator, dtype=torch.float64) < style.c).tolist()
        times = [j + 1 for j, c in enumerate(cut) if c] + [T]
        updates, prev = [], 0
        for t in times:
            updates.append((prev, t, prev))
            prev = t
        keep = {t: torch.ones((max(t - s - 1, 0), 1), dtype=torch.bool) for _, t, s in updates}
        return DrawnXi(updates, keep, 1.0 / (1.0 - style.c))
    return None
