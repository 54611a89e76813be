"""The chunk loop shared by the autograd and manual-elman paths.

The loop walks the chunks of ``chunking.plan_chunks``; at every update time the path
backpropagates the update's losses through the chunks of its window, newest first, and the loop
clips and steps. There is no per-style branch: every style is a schedule (update times, window
starts) and random truncation only adds a multiplier on each carried edge.

A subclass implements ``forward(plan, params, h) -> h``, ``backward(u, start, prev, names) ->
(grads, objective, backprop_steps)`` and ``release(u)``; ``name`` is its ``engine_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import Tensor

from ...models import State
from ..chunking import ChunkPlan, plan_chunks
from ..clipping import clip_by_global_norm_
from ..counting import forward_steps
from ..records import TrainResult, UpdateRecord
from ..saved_memory import SavedTensorMeter
from .base import PathInputs

__all__ = ["ChunkedPath"]


class ChunkedPath:
    """Base of the paths that run chunk by chunk and leave clipping and the step to the loop."""

    name: str
    #: per-step chunks under random truncation (xi applied between chunks), or whole windows
    cut_random_edges = False
    #: measure saved bytes with autograd's hooks (else the path counts its own buffers)
    meter_autograd = False

    def __init__(self, inputs: PathInputs):
        self.inputs = inputs
        self.saved_bytes_peak: int | None = None

    def forward(self, plan: ChunkPlan, params: dict[str, Tensor], h: State) -> State:
        raise NotImplementedError

    def backward(
        self, u: int, start: int, prev: int, names: list[str]
    ) -> tuple[dict[str, Tensor | None], Tensor, int]:
        raise NotImplementedError

    def release(self, u: int) -> None:
        raise NotImplementedError

    def run(self, callback: Callable[[UpdateRecord], None] | None = None) -> TrainResult:
        """Every update in order (see ``Path``). The records are read from the device once at the
        end, unless a callback needs each as it happens (one sync per update then)."""
        inp = self.inputs
        plans = plan_chunks(
            inp.style, inp.x.shape[0], cut_random_edges=self.cut_random_edges, draws=inp.draws
        )
        live = inp.model.params()
        names = list(live)
        h = inp.h0
        pending: list[tuple[int, int, int, Tensor]] = []  # (t, fwd, bwd, [loss, norm, clipped])
        records: list[UpdateRecord] = []
        params = live
        meter = SavedTensorMeter() if inp.measure_memory and self.meter_autograd else None
        with meter if meter else nullcontext():
            for plan in plans:
                # 1. A new segment starts. With stored history its steps run on a snapshot of the
                #    parameters, so later windows see the Jacobians of this segment's time.
                if plan.a == plan.prev_update:
                    params = (
                        {n: p.detach().clone().requires_grad_(True) for n, p in live.items()}
                        if inp.stored_history
                        else live
                    )
                # 2. Forward one chunk (graph, or stored states, only where a window will need them).
                h = self.forward(plan, params, h)
                if plan.b != plan.update:
                    continue
                # 3. Update time: backpropagate the window, clip, step; free what no later window needs.
                u, prev, start = plan.update, plan.prev_update, inp.starts[plan.update]
                grads, objective, bwd = self.backward(u, start, prev, names)
                row = _apply(live, names, grads, objective, inp.clip, inp.optimizer)
                pending.append((u, forward_steps(prev, u, inp.batch), bwd, row))
                self.release(u)
                if callback is not None:
                    records += _read_records(pending)
                    pending.clear()
                    callback(records[-1])
        records += _read_records(pending)
        peak = meter.peak_bytes if meter else (self.saved_bytes_peak if inp.measure_memory else None)
        return TrainResult(records, h, self.name + ("+stored-history" if inp.stored_history else ""), peak)


def _apply(live: dict[str, Tensor], names: list[str], grads, objective, clip, optimizer) -> Tensor:
    """Set p.grad, clip by global norm (g <- min(1, clip/||g||) g, no epsilon), step; return
    [objective, norm before clipping, clipped] as one device tensor. Nothing is read on the host
    (no device sync): below the threshold the factor is exactly 1, so the gradient is unchanged."""
    gs = [torch.zeros_like(live[n]) if grads[n] is None else grads[n] for n in names]
    norm, clipped = clip_by_global_norm_(gs, clip)
    for n, g in zip(names, gs):
        live[n].grad = g
    optimizer.step()
    for n in names:
        live[n].grad = None
    return torch.stack([objective.detach().to(norm.device, norm.dtype), norm.detach(), clipped])


def _read_records(pending: list[tuple[int, int, int, Tensor]]) -> list[UpdateRecord]:
    """Update records from device rows, in one host read."""
    if not pending:
        return []
    rows = torch.stack([row for *_, row in pending]).double().tolist()
    return [
        UpdateRecord(t, loss, norm, bool(clipped), fwd, bwd)
        for (t, fwd, bwd, _), (loss, norm, clipped) in zip(pending, rows)
    ]
