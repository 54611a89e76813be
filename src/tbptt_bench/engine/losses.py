"""Per-step losses, summed; the engine divides by the update's element count (a mean).

mse: mean over steps, batch and outputs of (o - y)^2; ce: mean over steps and batch of the
cross-entropy of class indices. ``LOSS_GRADS`` gives d(sum)/do for paths that backpropagate by hand.

>>> import torch
>>> o, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])
>>> float(LOSSES["mse"](o, y)), LOSS_GRADS["mse"](o, y).tolist()
(5.0, [[2.0, 4.0]])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LOSSES", "LOSS_GRADS", "per_step_elements"]


def _mse_sum(o: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(o, y, reduction="sum")


def _ce_sum(o: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(o.reshape(-1, o.shape[-1]), y.reshape(-1), reduction="sum")


def _mse_grad(o: Tensor, y: Tensor) -> Tensor:
    return 2.0 * (o - y)


def _ce_grad(o: Tensor, y: Tensor) -> Tensor:
    g = torch.softmax(o, dim=-1)
    return g.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _mse_sum, "ce": _ce_sum}
LOSS_GRADS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _mse_grad, "ce": _ce_grad}


def per_step_elements(loss: str, batch: int, outputs: int) -> int:
    """How many loss terms one step adds to the mean: B*Q for mse, B for ce."""
    return batch * (outputs if loss == "mse" else 1)
