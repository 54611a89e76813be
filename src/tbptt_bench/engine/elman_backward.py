"""The Elman cell's backward recursion, written once for every hand-written path.

For h_j = f(W_hx x_j + W_hh h_{j-1} + b_h), with delta_j the gradient of the objective reaching
h_j from later steps and pull_j = dl_j/dh_j the readout's gradient at an own step (a step whose
loss is in this update's objective):

    dpre_j      = (delta_j + pull_j) * f'(pre_j)          (f' = 1 for the linear cell)
    delta_{j-1} = xi_j * (dpre_j @ W_hh(j))               (xi_j = 1 without random truncation)

where W_hh(j) is the matrix of step j's own time (stored history). The parameter gradients are
then sums over the traversed steps: dW_hh = sum_j dpre_j^T h_{j-1}, dW_hx = sum_j dpre_j^T x_j,
db_h = sum_j dpre_j (``parameter_grads``). ``manual_elman`` runs this per stored block (with
random truncation and early stops); ``static_elman`` runs it over its fixed window of slots
(static shapes, ``out=`` buffers, so a CUDA graph can capture it).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["backward_steps", "parameter_grads"]


def backward_steps(
    dpre: Tensor,
    dact: Tensor | None,
    weight: Tensor,
    delta: Tensor | None,
    *,
    pull: Tensor | None = None,
    own_from: int = 0,
    stop: int = 0,
    held: bool = True,
    xi: Tensor | None = None,
    alive: list[bool] | None = None,
    xi_row: int = 0,
    pulled: bool = False,
) -> tuple[Tensor | None, int]:
    """Run the recursion over steps i = L-1 down to ``stop`` of one stretch of L steps.

    dpre: (L, B, H), written in place at every step reached; dact: (L, B, H) f'(pre), None for
    the linear cell; weight: (H, H), or (L, H, H) with step i's own W_hh; delta: the gradient
    arriving at step L-1's state from later steps (None: nothing arrives).
    pull: readout gradients of the own steps i >= own_from (pull[i - own_from]); None: none.
    ``pulled``: dpre already holds pull * f' at own steps (the caller computed them in one
    product), so a step that no carried gradient reaches is skipped, not recomputed.
    stop/held: the lowest step to compute; ``held`` means the state before it is held constant
    (the window start), so no gradient is carried out of the stretch.
    xi / alive: random truncation's multipliers, xi[i + xi_row] for the edge into step i from
    step i-1, and whether that edge is kept for any row (a host list: no device sync).

    Returns (the gradient carried into the state before step ``stop``, or None where it is
    held, cut or nothing arrives; the lowest step index written, L if none).
    """
    # (Over 60 lines only because the docstring spells out the contract both callers rely on.)
    L = dpre.shape[0]
    per_step = weight.dim() == 3
    # Pull of the next-older own step already folded into delta by one addmm (no xi only).
    folded = False
    lo = L
    for i in range(L - 1, stop - 1, -1):
        own = pull is not None and i >= own_from
        if delta is not None:
            d = delta + pull[i - own_from] if own and not folded else delta
        elif own and not pulled:
            d = pull[i - own_from]
        else:
            d = None
        if d is not None:
            if dact is not None:
                torch.mul(d, dact[i], out=dpre[i])
            else:
                dpre[i].copy_(d)
        elif not own:  # nothing arrives and no loss of its own: the stretch ends here
            return None, lo
        lo = i
        if i == stop and held:
            return None, lo
        w = weight[i] if per_step else weight
        folded = False
        if xi is not None:
            delta = (dpre[i] @ w) * xi[i + xi_row] if alive[i + xi_row] else None
        elif i - 1 >= own_from and pull is not None and i - 1 >= stop:
            delta = torch.addmm(pull[i - 1 - own_from], dpre[i], w)  # one kernel: carry + pull
            folded = True
        else:
            delta = dpre[i] @ w
    return delta, lo


def parameter_grads(dpre: Tensor, h_prev: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(dW_hh, dW_hx, db_h) from the traversed steps' dpre (n, B, H), h_{j-1} (n, B, H), x_j (n, B, D)."""
    H = dpre.shape[-1]
    flat = dpre.reshape(-1, H)
    return flat.T @ h_prev.reshape(-1, H), flat.T @ x.reshape(-1, x.shape[-1]), flat.sum(0)
