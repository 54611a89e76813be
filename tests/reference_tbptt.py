"""A brute-force float64 reference for TBPTT(k1, k2) as docs/semantics.md decides it. Obvious, not fast.

Nothing here is shared with the engine or with ``styles.py``: update times are computed from
(k1, T) below, and every update's graph is rebuilt step by step from scratch:

1. Forward: steps t'+1..t run with the parameters now in force; their states are kept (the
   *forward* state sequence of training) together with a snapshot of those parameters.
2. Graph: from the stored constant h_{max(t-k2, 0)}, steps max(t-k2, 0)+1..t are recomputed,
   step j with a fresh leaf copy of the parameters that were in force when step j was first
   computed (docs/semantics.md rule 4). Recurrent edge h_{j-1} -> h_j may be scaled by xi(t, j) in the
   backward pass only (random truncation with draws the caller chooses).
3. Objective: mean over steps s in (t', t] and the batch (and outputs, for mse) of the loss;
   a step s <= max(t-k2, 0) sees its constant stored state, so it reaches only the readout.
4. Gradient: the leaves' gradients summed into one set; optional clipping
   g <- min(1, clip/||g||) g (global norm, no epsilon); plain SGD p <- p - lr g.

>>> import torch
>>> from tbptt_bench.models import ElmanRNN
>>> m = ElmanRNN(2, 3, 1, generator=torch.Generator().manual_seed(0)).double()
>>> x, y = torch.ones(5, 1, 2, dtype=torch.float64), torch.zeros(5, 1, 1, dtype=torch.float64)
>>> r = reference_train(m, x, y, k1=2, k2=3, lr=0.1)
>>> [u.t for u in r.updates]
[2, 4, 5]
>>> len(r.states)   # h_0 .. h_T
6
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor

State = Union[Tensor, tuple]
XiFn = Callable[[int, int], float | Tensor]


def update_times(T: int, k1: int) -> list[int]:
    """docs/semantics.md rule 1, computed independently: every multiple of k1 up to T, and T itself.

    >>> update_times(7, 3), update_times(6, 3), update_times(4, 9)
    ([3, 6, 7], [3, 6], [4])
    """
    times = []
    t = k1
    while t <= T:
        times.append(t)
        t += k1
    if not times or times[-1] != T:
        times.append(T)
    return times


@dataclass
class RefUpdate:
    """One update: time t (1-based step), objective value, pre-clip norm and gradients."""

    t: int
    window_start: int
    loss: float
    grad_norm: float
    clipped: bool
    grad: dict  # pre-clip gradient by parameter name
    applied: dict  # the gradient SGD applied (after clipping)


@dataclass
class RefResult:
    params: dict  # final parameters by name (float64, detached)
    updates: list = field(default_factory=list)  # RefUpdate per update, in order
    states: list = field(default_factory=list)  # forward states h_0 .. h_T (detached)


def _tensors(h: State) -> list:
    return list(h) if isinstance(h, tuple) else [h]


def _like(h: State, parts: list) -> State:
    return tuple(parts) if isinstance(h, tuple) else parts[0]


def _scale_backward(h: State, xi) -> State:
    """Forward: h exactly. Backward: the gradient into h is multiplied by xi (float or (B,))."""
    out = []
    for v in _tensors(h):
        s = xi if not isinstance(xi, Tensor) else xi.to(v.dtype).reshape(-1, *([1] * (v.dim() - 1)))
        out.append(v.detach() + s * (v - v.detach()))
    return _like(h, out)


def _step_loss_sum(o: Tensor, y: Tensor, loss: str) -> Tensor:
    """Sum over the batch (and outputs) of one step's loss; o (B, Q), y (B, Q) or (B,)."""
    if loss == "mse":
        return ((o - y) ** 2).sum()
    if loss == "ce":
        return -torch.log_softmax(o, dim=-1).gather(-1, y.long().unsqueeze(-1)).sum()
    raise ValueError(f"loss={loss!r} is not allowed: use 'mse' or 'ce'")


def reference_train(
    model,
    x: Tensor,
    y: Tensor,
    k1: int | None,
    k2: int | None,
    *,
    lr: float,
    loss: str = "mse",
    clip: float | None = None,
    h0: State | None = None,
    xi: XiFn | None = None,
    history_params: str = "of_their_time",
) -> RefResult:
    """Train a copy of ``model``'s parameters on one stream batch with TBPTT(k1, k2) and plain SGD.

    ``model`` is only used for its ``cell``/``features``/``readout``/``init_state`` and initial
    parameters (not modified). ``None`` for k1/k2 means T. ``xi(t, j)`` is the multiplier of edge
    h_{j-1} -> h_j in the update at time t (a float, or a (B,) tensor for per-stream draws).
    ``history_params="current"`` is a deliberately wrong variant (Jacobians of stored steps at the
    current parameters) used only to show the tests can tell the difference.
    """
    assert x.dtype == torch.float64, "the reference works in float64"
    T, B = x.shape[0], x.shape[1]
    k1 = T if k1 is None else k1
    k2 = T if k2 is None else k2
    params = {name: p.detach().clone() for name, p in model.params().items()}
    for p in params.values():
        assert p.dtype == torch.float64, "convert the model with .double() first"
    h = model.init_state(B) if h0 is None else h0
    states = [_like(h, [v.detach().clone() for v in _tensors(h)])]  # states[j] = h_j
    params_at = [None]  # params_at[j] = the parameters in force when step j was computed
    out = RefResult(params=params)
    prev = 0
    for t in update_times(T, k1):
        # 1. forward steps prev+1..t with the current parameters; keep states and parameters
        with torch.no_grad():
            for j in range(prev + 1, t + 1):
                states.append(model.cell(params, x[j - 1], states[j - 1]))
                params_at.append(params)
        # 2. rebuild this update's graph from the constant h_start
        start = max(t - k2, 0)
        leaves = {}  # step j -> its own leaf copy of the parameters

        def leaf(j: int) -> dict:
            if j not in leaves:
                src = params_at[j] if history_params == "of_their_time" else params
                leaves[j] = {n: v.clone().requires_grad_(True) for n, v in src.items()}
            return leaves[j]

        hs = {start: states[start]}
        for j in range(start + 1, t + 1):
            h_in = hs[j - 1]
            if xi is not None and j - 1 > start:
                h_in = _scale_backward(h_in, xi(t, j))
            hs[j] = model.cell(leaf(j), x[j - 1], h_in)
            for a, b in zip(_tensors(hs[j]), _tensors(states[j])):  # recomputation = the forward pass
                if history_params == "of_their_time":
                    assert torch.equal(a.detach(), b), f"recomputed h_{j} differs from the forward state"
        # 3. the objective: mean over the update's steps, the batch (and outputs for mse)
        total = x.new_zeros(())
        count = 0
        for s in range(prev + 1, t + 1):
            h_s = hs[s] if s > start else states[s]  # s <= start: constant state, readout only
            o = model.readout(leaf(s), model.features(h_s))
            total = total + _step_loss_sum(o, y[s - 1], loss)
            count += o.numel() if loss == "mse" else o.shape[0]
        objective = total / count
        # 4. sum every leaf's gradient into one set, clip, step
        names = list(params)
        flat = [leaves[j][n] for j in sorted(leaves) for n in names]
        grads = torch.autograd.grad(objective, flat, allow_unused=True)
        g = {n: torch.zeros_like(params[n]) for n in names}
        for j_n, gr in zip([(j, n) for j in sorted(leaves) for n in names], grads):
            if gr is not None:
                g[j_n[1]] = g[j_n[1]] + gr
        norm = math.sqrt(sum(float((v * v).sum()) for v in g.values()))
        scale = 1.0
        if clip is not None and norm > 0:
            scale = min(1.0, clip / norm)
        applied = {n: v * scale for n, v in g.items()}
        params = {n: params[n] - lr * applied[n] for n in names}
        out.updates.append(
            RefUpdate(
                t=t,
                window_start=start,
                loss=float(objective.detach()),
                grad_norm=norm,
                clipped=scale < 1.0,
                grad=g,
                applied=applied,
            )
        )
        prev = t
    out.params = params
    out.states = states
    return out


# -- small helpers the oracle tests share (not part of the reference itself) -------------------


def make_case(
    cell: str, loss: str, T: int, *, B: int = 3, D: int = 2, H: int = 4, Q: int = 2, seed: int = 0, **model_kw
):
    """A float64 model and one batch of streams: x (T, B, D); y (T, B, Q) for mse, (T, B) int64 for ce.

    >>> m, x, y = make_case("gru", "ce", 5)
    >>> tuple(x.shape), tuple(y.shape), y.dtype
    ((5, 3, 2), (5, 3), torch.int64)
    """
    from tbptt_bench.models import make_model

    g = torch.Generator().manual_seed(seed)
    model = make_model(cell, D, H, Q, generator=g, **model_kw).double()
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    if loss == "mse":
        y = torch.randn(T, B, Q, generator=g, dtype=torch.float64)
    else:
        y = torch.randint(0, Q, (T, B), generator=g)
    return model, x, y


class RecordingSGD(torch.optim.SGD):
    """Plain SGD that keeps a copy of every gradient it applies, by parameter name."""

    def __init__(self, model, lr: float):
        named = list(model.named_parameters())
        super().__init__([p for _, p in named], lr=lr)
        self._names = [(n, p) for n, p in named]
        self.applied: list = []

    @torch.no_grad()
    def step(self, closure=None):
        self.applied.append(
            {n: (torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()) for n, p in self._names}
        )
        return super().step(closure)


def max_abs_diff(a: dict, b: dict) -> tuple:
    """(largest |a - b| over all entries, the parameter name where it occurs)."""
    assert set(a) == set(b), f"parameter names differ: {sorted(a)} vs {sorted(b)}"
    return max(((float((a[n] - b[n]).abs().max()), n) for n in a), default=(0.0, ""))
