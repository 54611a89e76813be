"""A hand-written backward for the Elman RNN over stored states: the fast path for stored history.

When k2 > k1 (Williams–Peng, overlapping windows) or under random truncation, the autograd path
needs one backward call per chunk and per update — for TBPTT(1, n) that is n calls every step.
For the Elman cell the backward pass is short enough to write out: the forward pass (no graph)
keeps, per step, h_j, the activation derivative f'(pre_j) and the readout's pull dl/dh_j; an
update then runs the recursion of ``elman_backward`` (shared with the static path)

    dpre_j = (delta_j + dl_j/dh_j) * f'(pre_j)          delta_{j-1} = xi_j * dpre_j @ W_hh(j)

from u down to u - k2 + 1 with W_hh(j) the matrix *of step j's time* (stored history), and forms
the parameter gradients in one batched product each (sum_j dpre_j^T h_{j-1}, ...). Same
semantics as the autograd path, checked against it and against the brute-force reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..chunking import ChunkPlan
from ..counting import backprop_steps, keep_mask
from ..elman_backward import backward_steps, parameter_grads
from ..losses import LOSS_GRADS, LOSSES
from ..xi import draw_window_xi
from .base import PathInputs
from .chunked import ChunkedPath

__all__ = ["ElmanPath"]


@dataclass
class _Block:
    plan: ChunkPlan
    params: dict[str, Tensor]
    x: Tensor  # (L, B, D) inputs of its steps
    h_in: Tensor  # (B, H) state before its first step
    h: Tensor  # (L, B, H) states after each step
    dact: Tensor | None  # (L, B, H) f'(pre) for tanh; None for the linear cell
    g_o: Tensor  # (L, B, Q) d(objective)/d(o), scaled by the update's mean
    pull: Tensor | None  # (L, B, H) g_o @ W_qh: the readout's gradient into h (in-window only)
    loss: Tensor  # its share of the objective (no graph)

    @property
    def nbytes(self) -> int:
        ts = [self.h, self.g_o, self.dact, self.pull]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)


class ElmanPath(ChunkedPath):
    name = "manual-elman"

    def __init__(self, inputs: PathInputs):
        super().__init__(inputs)
        self.model, self.x, self.y, self.k2 = inputs.model, inputs.x, inputs.y, inputs.k2
        self.loss_sum, self.loss_grad = LOSSES[inputs.loss], LOSS_GRADS[inputs.loss]
        self.pi, self.per_stream, self.generator = inputs.pi, inputs.per_stream, inputs.generator
        self.denoms = inputs.denoms
        self.tanh = inputs.model.nonlinearity == "tanh"
        self.blocks: list[_Block] = []
        self.live_bytes = 0
        self.saved_bytes_peak = 0

    @torch.no_grad()
    def forward(self, plan: ChunkPlan, params: dict[str, Tensor], h: Tensor) -> Tensor:
        model = self.model
        xs, ys = self.x[plan.a : plan.b], self.y[plan.a : plan.b]
        if self.tanh and plan.b - plan.a > 1:
            hs, h_out = model.window(params, xs, h)
        else:
            steps, h_out = [], h
            for x_t in xs:
                h_out = model.cell(params, x_t, h_out)
                steps.append(h_out)
            hs = torch.stack(steps)
        o = model.readout(params, hs)
        scale = 1.0 / self.denoms[plan.update]
        g_o = self.loss_grad(o, ys) * scale
        inside = plan.in_window
        block = _Block(
            plan,
            params,
            xs,
            h,
            hs,
            (1.0 - hs * hs) if (inside and self.tanh) else None,
            g_o,
            g_o @ params["W_qh"] if inside else None,
            self.loss_sum(o, ys) * scale,
        )
        self.blocks.append(block)
        self.live_bytes += block.nbytes
        self.saved_bytes_peak = max(self.saved_bytes_peak, self.live_bytes)
        return h_out

    @torch.no_grad()
    def backward(
        self, u: int, start: int, prev: int, names: list[str]
    ) -> tuple[dict[str, Tensor | None], Tensor, int]:
        grads: dict[str, Tensor | None] = dict.fromkeys(names)
        objective = torch.zeros(())
        pieces: list[tuple[Tensor, Tensor, Tensor]] = []  # per block: (dpre, h_prev, x) of its steps
        delta: Tensor | None = None  # dL/dh arriving from later steps (None: stopped)
        B = self.x.shape[1]
        xis = draw_window_xi(self.pi, self.per_stream, self.generator, start, u, B, "cpu", torch.float64)
        steps = backprop_steps(prev, u, start, B, keep_mask(xis))
        alive = None if xis is None else (xis != 0).flatten(1).any(1).tolist()  # on the host: no sync
        if xis is not None:
            xis = xis.to(device=self.x.device, dtype=self.x.dtype)
        for block in reversed(self.blocks):
            plan, own = block.plan, block.plan.update == u
            if own:
                objective = objective + block.loss
                self._readout_grads(grads, block)
            if not plan.in_window or plan.a < start or (not own and delta is None):
                continue
            # A step that no carried gradient reaches has dpre = pull * f' (own steps only): all
            # of them in one product, so the recursion touches only steps a carried delta reaches
            # (under random truncation, the few edges kept).
            if own:
                dpre = block.pull * block.dact if self.tanh else block.pull.clone()
            else:
                dpre = torch.empty_like(block.h)
            L = plan.b - plan.a
            # Step i of the block is step j = a + 1 + i; xi row j - start - 2 is its incoming edge.
            delta, lo = backward_steps(
                dpre,
                block.dact,
                block.params["W_hh"],
                delta,
                pull=block.pull if own else None,
                stop=max(start - plan.a, 0),
                held=start >= plan.a,
                xi=xis,
                alive=alive,
                xi_row=plan.a - start - 1,
                pulled=True,
            )
            h_prev = block.h_in.unsqueeze(0) if L == 1 else torch.cat([block.h_in.unsqueeze(0), block.h[:-1]])
            pieces.append((dpre[lo:], h_prev[lo:], block.x[lo:]))
        if pieces:
            dpre, h_prev, x = (parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*pieces))
            d_hh, d_hx, d_bh = parameter_grads(dpre, h_prev, x)
            self._add(grads, "W_hh", d_hh)
            self._add(grads, "W_hx", d_hx)
            if "b_h" in grads:
                self._add(grads, "b_h", d_bh)
        return grads, objective, steps

    def _readout_grads(self, grads, block: _Block) -> None:
        Q, H = block.g_o.shape[-1], block.h.shape[-1]
        g_o = block.g_o.reshape(-1, Q)
        self._add(grads, "W_qh", g_o.T @ block.h.reshape(-1, H))
        if "b_q" in grads:
            self._add(grads, "b_q", g_o.sum(0))

    @staticmethod
    def _add(grads, name: str, g: Tensor) -> None:
        grads[name] = g if grads[name] is None else grads[name] + g

    def release(self, u: int) -> None:
        keep = [b for b in self.blocks if b.plan.last_use > u]
        self.live_bytes -= sum(b.nbytes for b in self.blocks if b.plan.last_use <= u)
        self.blocks = keep
