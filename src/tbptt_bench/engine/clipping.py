"""Global-norm gradient clipping as docs/semantics.md decides it, with no host read (no device sync).

g <- min(1, clip / ||g||) g, no epsilon; the norm is taken before clipping. Below the threshold
the factor is exactly 1, so the gradient is unchanged bit for bit; the decision stays on the
device, which is what lets a CUDA graph capture it.

>>> import torch
>>> gs = [torch.tensor([3.0]), torch.tensor([4.0])]
>>> norm, clipped = clip_by_global_norm_(gs, 1.0)
>>> float(norm), float(clipped), [round(float(g), 6) for g in gs]
(5.0, 1.0, [0.6, 0.8])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["clip_by_global_norm_"]


def clip_by_global_norm_(gs: list[Tensor], clip: float | None) -> tuple[Tensor, Tensor]:
    """Clip ``gs`` in place; return (norm before clipping, clipped as 0.0/1.0), both 0-d device tensors."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs)))
    if clip is None:
        return norm, torch.zeros_like(norm)
    torch._foreach_mul_(gs, torch.clamp(clip / norm, max=1.0))
    return norm, (norm > clip).to(norm.dtype)
