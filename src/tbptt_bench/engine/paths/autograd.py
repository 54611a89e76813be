"""The reference path: one autograd graph per chunk, gradients carried between chunks by hand.

Works for every model (``engine_path`` "autograd/fused-window" or "autograd/step-loop"). A chunk's graph starts from a detached copy of its input state (a leaf),
so an update can stop its backward pass at exactly u - k2 (by not asking for the leaf's
gradient) while the chunk stays alive for later windows (``retain_graph`` until its last use,
then freed). Within a chunk the model's fused window kernel runs where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...models import State, map_state
from ..chunking import ChunkPlan
from ..counting import backprop_steps, keep_mask
from ..losses import LOSSES
from ..xi import draw_window_xi
from .base import PathInputs
from .chunked import ChunkedPath

__all__ = ["AutogradPath"]


def flat(h: State) -> list[Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


@dataclass
class _Chunk:
    plan: ChunkPlan
    params: dict[str, Tensor]  # the parameters it ran with (live, or its segment's snapshot)
    h_in: State  # input state: a leaf when gradient must pass through it
    h_out: State  # output state, with graph (when in a window)
    loss: Tensor | None  # its share of its update's objective, with graph until spent


class AutogradPath(ChunkedPath):
    cut_random_edges = True  # under random truncation: a chunk per step, xi applied between them
    meter_autograd = True

    def __init__(self, inputs: PathInputs):
        super().__init__(inputs)
        model = inputs.model
        self.model, self.x, self.y, self.k2 = model, inputs.x, inputs.y, inputs.k2
        self.loss_sum = LOSSES[inputs.loss]
        self.pi, self.per_stream, self.generator = inputs.pi, inputs.per_stream, inputs.generator
        self.denoms = inputs.denoms  # update time -> element count of its mean
        self.fused = model.fused_window and self.pi is None
        self.name = "autograd/" + ("fused-window" if self.fused else "step-loop")
        self.chunks: list[_Chunk] = []

    def forward(self, plan: ChunkPlan, params: dict[str, Tensor], h: State) -> State:
        """Run steps a+1..b from h (graph only inside a window); return the detached end state."""
        model = self.model
        xs, ys = self.x[plan.a : plan.b], self.y[plan.a : plan.b]
        through = plan.in_window and plan.a > plan.update - self.k2
        h_in = map_state(lambda t: t.detach().requires_grad_(True), h) if through else h
        # Outside its window the recurrence needs no graph; only the readout does (docs/semantics.md rule 3).
        with torch.enable_grad() if plan.in_window else torch.no_grad():
            if self.fused and plan.b - plan.a > 1:
                feats, h_out = model.window(params, xs, h_in)
            else:
                feats, state = [], h_in
                for x_t in xs:
                    state = model.cell(params, x_t, state)
                    feats.append(model.features(state))
                feats, h_out = torch.stack(feats), state
        loss = self.loss_sum(model.readout(params, feats), ys) / self.denoms[plan.update]
        self.chunks.append(_Chunk(plan, params, h_in, h_out, loss))
        return map_state(lambda t: t.detach(), h_out)

    def backward(
        self, u: int, start: int, prev: int, names: list[str]
    ) -> tuple[dict[str, Tensor | None], Tensor, int]:
        """Gradients of update u's objective (window (start, u]) by name, the objective, and the
        steps traversed (summed over rows)."""
        grads: dict[str, Tensor | None] = dict.fromkeys(names)
        objective = torch.zeros(())
        g_next: list[Tensor] | None = None  # gradient arriving at the newer chunk's input state
        B = self.x.shape[1]
        # Drawn on the host in float64 (as xi.py defines them), counted there, then moved.
        xis = draw_window_xi(self.pi, self.per_stream, self.generator, start, u, B, "cpu", torch.float64)
        steps = backprop_steps(prev, u, start, B, keep_mask(xis))
        if xis is not None:
            xis = xis.to(device=self.x.device, dtype=self.x.dtype)
        for chunk in reversed(self.chunks):
            plan, own = chunk.plan, chunk.plan.update == u
            if own:
                objective = objective + chunk.loss.detach()
            if not plan.in_window:  # readout-only losses (k2 < k1)
                if own and chunk.loss.requires_grad:
                    self._add(
                        grads,
                        chunk,
                        torch.autograd.grad(chunk.loss, list(chunk.params.values()), allow_unused=True),
                    )
                continue
            if plan.a < start or (not own and g_next is None):
                continue
            outs, gouts = ([chunk.loss], [torch.ones_like(chunk.loss)]) if own else ([], [])
            if g_next is not None:
                outs += flat(chunk.h_out)
                gouts += g_next
            # The edge h_a -> h_{a+1} passes gradient on only if h_a is not the held-constant
            # start and random truncation keeps it (xi = 0 stops the backward pass right here).
            xi = xis[plan.a - start - 1] if xis is not None and plan.a > start else None  # edge a+1
            pass_on = plan.a > start and (xi is None or bool((xi != 0).any()))
            inputs = list(chunk.params.values()) + (flat(chunk.h_in) if pass_on else [])
            got = torch.autograd.grad(outs, inputs, gouts, retain_graph=plan.last_use > u, allow_unused=True)
            self._add(grads, chunk, got[: len(chunk.params)])
            if own:
                chunk.loss = None  # its readout graph is spent; later windows need only the cell's
            g_next = None
            if pass_on:
                g_next = [
                    torch.zeros_like(t) if g is None else g
                    for g, t in zip(got[len(chunk.params) :], flat(chunk.h_in))
                ]
                if xi is not None:
                    g_next = [g * xi for g in g_next]
        return grads, objective, steps

    def release(self, u: int) -> None:
        """Drop every chunk no window after update u needs (frees its graph)."""
        self.chunks = [c for c in self.chunks if c.plan.last_use > u]

    @staticmethod
    def _add(grads: dict[str, Tensor | None], chunk: _Chunk, got) -> None:
        for name, g in zip(chunk.params, got):
            if g is not None:
                grads[name] = g if grads[name] is None else grads[name] + g
