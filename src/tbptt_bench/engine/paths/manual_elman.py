"""A hand-written backward for the Elman RNN over stored states: the fast path for stored history.

When k2 > k1 (Williams–Peng, overlapping windows) or under random truncation, the autograd path
needs one backward call per chunk and per update — for TBPTT(1, n) that is n calls every step.
For the Elman cell the backward pass is short enough to write out: the forward pass (no graph)
keeps, per step, h_j, the activation derivative f'(pre_j) and the readout's pull dl/dh_j; an
update then runs the recursion

    dpre_j = delta_j * f'(pre_j)          delta_{j-1} = xi_j * dpre_j @ W_hh(j) + dl_{j-1}/dh_{j-1}

from u down to u - k2 + 1 with W_hh(j) the matrix *of step j's time* (stored history), and forms
the parameter gradients in one batched product each (sum_j dpre_j^T h_{j-1}, ...). Same
semantics as the autograd path, checked against it and against the brute-force reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...models import ElmanRNN
from ..chunking import ChunkPlan
from ..losses import LOSS_GRADS, LOSSES
from ..xi import draw_window_xi

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


class ElmanPath:
    name = "manual-elman"

    def __init__(
        self,
        model: ElmanRNN,
        x: Tensor,
        y: Tensor,
        loss: str,
        k2: int,
        pi: float | None,
        per_stream: bool,
        generator: torch.Generator | None,
        denoms: dict[int, int],
    ):
        self.model, self.x, self.y, self.k2 = model, x, y, k2
        self.loss_sum, self.loss_grad = LOSSES[loss], LOSS_GRADS[loss]
        self.pi, self.per_stream, self.generator, self.denoms = pi, per_stream, generator, denoms
        self.tanh = model.nonlinearity == "tanh"
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
    def backward(self, u: int, start: int, names: list[str]) -> tuple[dict[str, Tensor | None], Tensor]:
        grads: dict[str, Tensor | None] = dict.fromkeys(names)
        objective = torch.zeros(())
        pieces: list[tuple[Tensor, Tensor, Tensor]] = []  # per block: (dpre, h_prev, x) of its steps
        delta: Tensor | None = None  # dL/dh_j arriving from later steps (None: stopped)
        xis = draw_window_xi(
            self.pi, self.per_stream, self.generator, start, u, self.x.shape[1], "cpu", torch.float64
        )
        alive = (
            None if xis is None else (xis != 0).flatten(1).any(1).tolist()
        )  # read on the host: no device sync
        if xis is not None:
            xis = xis.to(device=self.x.device, dtype=self.x.dtype)
        for block in reversed(self.blocks):
            plan, own = block.plan, block.plan.update == u
            if own:
                objective = objective + block.loss
                self._readout_grads(grads, block)
            if not plan.in_window or plan.a < start or (not own and delta is None):
                continue
            W_hh = block.params["W_hh"]
            L = plan.b - plan.a
            # A step that no later gradient reaches has dpre = pull * f' (own steps only): all of
            # them in one product, so the loop below touches only steps a carried delta reaches
            # (under random truncation, the few edges kept).
            if own:
                dpre = block.pull * block.dact if self.tanh else block.pull.clone()
            else:
                dpre = torch.empty_like(block.h)
            lo = L
            for i in range(L - 1, -1, -1):  # step j = a + 1 + i, newest first
                j = plan.a + 1 + i
                if delta is not None:
                    d = delta + block.pull[i] if own else delta
                    if self.tanh:
                        torch.mul(d, block.dact[i], out=dpre[i])
                    else:
                        dpre[i].copy_(d)
                lo = i
                if j - 1 <= start:
                    delta = None
                    break
                if xis is None:
                    delta = dpre[i] @ W_hh
                elif alive[j - start - 2]:  # edge j kept for some stream
                    delta = (dpre[i] @ W_hh) * xis[j - start - 2]
                else:
                    delta = None
                if delta is None and not own:
                    break
            h_prev = block.h_in.unsqueeze(0) if L == 1 else torch.cat([block.h_in.unsqueeze(0), block.h[:-1]])
            pieces.append((dpre[lo:], h_prev[lo:], block.x[lo:]))
        if pieces:
            dpre, h_prev, x = (parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*pieces))
            H = dpre.shape[-1]
            flat_dpre = dpre.reshape(-1, H)
            self._add(grads, "W_hh", flat_dpre.T @ h_prev.reshape(-1, H))
            self._add(grads, "W_hx", flat_dpre.T @ x.reshape(-1, x.shape[-1]))
            if "b_h" in grads:
                self._add(grads, "b_h", flat_dpre.sum(0))
        return grads, objective

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
