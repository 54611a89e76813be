"""Random truncation's multiplier on one recurrent edge (Tallec & Ollivier; SPEC.md).

xi = 0 with probability 1 - pi and 1/pi with probability pi, so E[xi] = 1; one value shared
by the batch, or one per stream. Drawn on the CPU in float64 from the caller's generator so a
seed gives the same draws on every device.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> draw_xi(0.5, False, g, 3, "cpu", torch.float64).shape
torch.Size([1, 1])
>>> draw_xi(None, False, g, 3, "cpu", torch.float64) is None
True
"""

from __future__ import annotations

import torch
from torch import Tensor


def draw_xi(pi: float | None, per_stream: bool, generator: torch.Generator | None, batch: int,
            device, dtype) -> Tensor | None:
    """(1, 1) or (B, 1) multipliers for one edge; None when there is no random truncation."""
    if pi is None:
        return None
    keep = torch.rand((batch, 1) if per_stream else (1, 1), generator=generator, dtype=torch.float64) < pi
    return (keep.to(torch.float64) / pi).to(device=device, dtype=dtype)
