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
    None when there is no random truncation."""
    if pi is None:
        return None
    edges = max(u - start - 1, 0)
    keep = torch.rand((edges, batch if per_stream else 1, 1), generator=generator, dtype=torch.float64) < pi
    return (keep.to(torch.float64) / pi).to(device=device, dtype=dtype)
