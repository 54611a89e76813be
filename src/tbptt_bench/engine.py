"""The training engine: one stream, one style, exactly as ../shared/SPEC.md decides.

``train_stream`` walks the sequence chunk by chunk (see ``chunking``); at every update time it
backpropagates the update's losses through the chunks of its window, newest first, passing the
gradient of each chunk's input state on to the chunk before it by hand, then clips and steps.
There is no per-style branch: every style is a schedule (update times, window starts) and
random truncation only adds a multiplier on each carried edge gradient.

>>> import torch
>>> from tbptt_bench.models import ElmanRNN
>>> from tbptt_bench.styles import tf_style
>>> torch.manual_seed(0) and None
>>> model = ElmanRNN(2, 8, 1)
>>> x, y = torch.randn(20, 4, 2), torch.randn(20, 4, 1)
>>> result = train_stream(model, x, y, tf_style(5), torch.optim.SGD(model.parameters(), lr=0.1))
>>> [r.t for r in result.records]
[5, 10, 15, 20]
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .chunking import ChunkPlan, needs_stored_history, plan_chunks
from .models import RecurrentModel, State, map_state
from .saved_memory import SavedTensorMeter
from .styles import TBPTT, RandomTruncation, Style

__all__ = ["train_stream", "evaluate_stream", "UpdateRecord", "TrainResult", "EngineError", "LOSSES"]


class EngineError(ValueError):
    """Bad input to the engine, caught before any training."""


@dataclass(frozen=True)
class UpdateRecord:
    t: int             #: the update time (1-based step index)
    loss: float        #: the update's objective: mean loss over its steps and the batch
    grad_norm: float   #: global gradient norm before clipping
    clipped: bool      #: whether clipping scaled the gradient


@dataclass
class TrainResult:
    records: list[UpdateRecord]
    state: State                      #: the final hidden state, detached
    path: str                         #: which implementation ran
    saved_bytes_peak: int | None = None  #: peak bytes held for backward (when measured)


def _mse_sum(o: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(o, y, reduction="sum")


def _ce_sum(o: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(o.reshape(-1, o.shape[-1]), y.reshape(-1), reduction="sum")


#: Summed per-step losses; the engine divides by the update's element count (a mean).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _mse_sum, "ce": _ce_sum}


@dataclass
class _Chunk:
    plan: ChunkPlan
    params: dict[str, Tensor]         # the parameters it ran with (live, or its update's snapshot)
    h_in: State                        # its input state: a leaf when gradient must pass through it
    h_out: State                       # its output state, with graph (when in a window)
    loss: Tensor | None = None         # its share of its update's objective, with graph
    readout_only: bool = field(default=False)


def train_stream(model: RecurrentModel, x: Tensor, y: Tensor, style: Style, optimizer: torch.optim.Optimizer,
                 loss: str = "mse", clip: float | None = None, generator: torch.Generator | None = None,
                 h0: State | None = None, *, callback: Callable[[UpdateRecord], None] | None = None,
                 measure_memory: bool = False) -> TrainResult:
    """Train ``model`` on one stream of B rows under ``style``; return per-update records.

    x: (T, B, D) inputs; y: (T, B, Q) targets for ``loss="mse"`` or (T, B) class indices for
    ``loss="ce"``. The optimizer is the caller's; the engine sets every ``p.grad`` itself.
    ``clip`` (global norm, SPEC.md) is optional; ``generator`` drives random truncation;
    ``callback(record)`` runs after every update (raise from it to stop early);
    ``measure_memory`` counts the peak bytes saved for backward (slower).
    """
    _validate(model, x, y, style, loss, clip, generator, h0)
    T, B = x.shape[0], x.shape[1]
    loss_sum = LOSSES[loss]
    per_elem = B * (model.output_size if loss == "mse" else 1)
    _, k2 = style.resolve(T)
    chunks_plan = plan_chunks(style, T)
    snapshots = needs_stored_history(chunks_plan)
    pi = style.pi if isinstance(style, RandomTruncation) else None
    live = model.params()
    names = list(live)
    use_fused = model.fused_window and pi is None
    path = ("fused-window" if use_fused else "step-loop") + ("+stored-history" if snapshots else "")

    h = model.init_state(B) if h0 is None else map_state(lambda t: t.detach(), h0)
    window: list[_Chunk] = []           # chunks whose graphs a current or later update still needs
    records: list[UpdateRecord] = []
    params = live
    meter = SavedTensorMeter() if measure_memory else None
    with meter if meter else nullcontext():
        for plan in chunks_plan:
            # 1. A new update segment starts: with stored history its steps run on a snapshot,
            #    so later windows still see the Jacobians of this segment's parameters.
            if plan.a == plan.prev_update:
                params = {n: p.detach().clone().requires_grad_(True) for n, p in live.items()} if snapshots else live
            # 2. Forward the chunk. Outside its window the recurrence needs no graph, only the
            #    readout does (those losses reach W_qh and b_q alone, SPEC.md rule 3).
            chunk = _forward(model, params, x, y, plan, h, loss_sum, per_elem * (plan.update - plan.prev_update),
                             use_fused, through=plan.in_window and plan.a > plan.update - k2)
            h = map_state(lambda t: t.detach(), chunk.h_out)
            window.append(chunk)
            if plan.b != plan.update:
                continue
            # 3. Update time: backpropagate, clip, step; then free chunks no later window needs.
            record = _update(model, names, window, plan.update, k2, pi, getattr(style, "per_stream", False),
                             generator, clip, optimizer, B)
            records.append(record)
            window = [c for c in window if c.plan.last_use > plan.update]
            if callback is not None:
                callback(record)
    return TrainResult(records, h, path, meter.peak_bytes if meter else None)


def _forward(model: RecurrentModel, params: dict[str, Tensor], x: Tensor, y: Tensor, plan: ChunkPlan, h: State,
             loss_sum, denom: int, use_fused: bool, through: bool) -> _Chunk:
    """Run steps a+1..b from h; ``through`` makes h a leaf so gradient can pass to the chunk before."""
    xs, ys = x[plan.a:plan.b], y[plan.a:plan.b]
    h_in = map_state(lambda t: t.detach().requires_grad_(True), h) if through else h
    with torch.enable_grad() if plan.in_window else torch.no_grad():
        if use_fused and plan.b - plan.a > 1:
            feats, h_out = model.window(params, xs, h_in)
        else:
            feats, state = [], h_in
            for x_t in xs:
                state = model.cell(params, x_t, state)
                feats.append(model.features(state))
            feats, h_out = torch.stack(feats), state
    loss = loss_sum(model.readout(params, feats), ys) / denom
    return _Chunk(plan, params, h_in, h_out, loss, readout_only=not plan.in_window)


def _update(model, names, window: list[_Chunk], u: int, k2: int, pi, per_stream: bool, generator, clip,
            optimizer, B: int) -> UpdateRecord:
    grads: dict[str, Tensor | None] = dict.fromkeys(names)
    start = max(u - k2, 0)
    g_next: list[Tensor] | None = None     # gradient arriving at the next-newer chunk's input state
    objective = 0.0
    for chunk in reversed(window):
        own = chunk.plan.update == u
        if own:
            objective = objective + chunk.loss.detach()
        if chunk.readout_only:
            if own and chunk.loss.requires_grad:
                _accumulate(grads, chunk, torch.autograd.grad(chunk.loss, list(chunk.params.values()), allow_unused=True))
            continue
        if chunk.plan.a < start or (not own and g_next is None):
            continue
        outs, gouts = ([chunk.loss], [torch.ones_like(chunk.loss)]) if own else ([], [])
        if g_next is not None:
            outs += _flat(chunk.h_out)
            gouts += g_next
        # The edge h_a -> h_{a+1} carries gradient on only if h_a is not the held-constant start
        # and random truncation keeps it (xi = 0 stops the backward pass right here).
        xi = _draw_xi(pi, per_stream, generator, B, outs[0].device, outs[0].dtype) if chunk.plan.a > start else None
        pass_on = chunk.plan.a > start and (xi is None or bool((xi != 0).any()))
        inputs = list(chunk.params.values()) + (_flat(chunk.h_in) if pass_on else [])
        retain = chunk.plan.last_use > u
        got = torch.autograd.grad(outs, inputs, gouts, retain_graph=retain, allow_unused=True)
        _accumulate(grads, chunk, got[:len(chunk.params)])
        if own:
            chunk.loss = None      # its readout graph is spent; later windows need only the cell's
        g_next = None
        if pass_on:
            g_next = [torch.zeros_like(t) if g is None else g for g, t in zip(got[len(chunk.params):], _flat(chunk.h_in))]
            if xi is not None:
                g_next = [g * xi for g in g_next]
    return _apply(model, names, grads, objective, clip, optimizer, u)


def _draw_xi(pi, per_stream: bool, generator, B: int, device, dtype) -> Tensor | None:
    """xi with P(0) = 1 - pi and P(1/pi) = pi: one per edge, shared by the batch unless per stream."""
    if pi is None:
        return None
    shape = (B, 1) if per_stream else (1, 1)
    keep = torch.rand(shape, generator=generator, dtype=torch.float64) < pi
    return (keep.to(dtype) / pi).to(device)


def _accumulate(grads: dict[str, Tensor | None], chunk: _Chunk, got) -> None:
    for name, g in zip(chunk.params, got):
        if g is not None:
            grads[name] = g if grads[name] is None else grads[name] + g


def _apply(model, names, grads, objective, clip, optimizer, u: int) -> UpdateRecord:
    """Set p.grad, clip by global norm (g <- min(1, clip/||g||) g, no epsilon), step."""
    live = model.params()
    gs = [torch.zeros_like(live[n]) if grads[n] is None else grads[n] for n in names]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in gs]))
    clipped = False
    if clip is not None and float(norm) > clip:
        coef = clip / norm
        gs = [g * coef for g in gs]
        clipped = True
    for n, g in zip(names, gs):
        live[n].grad = g
    optimizer.step()
    for n in names:
        live[n].grad = None
    return UpdateRecord(u, float(objective), float(norm), clipped)


def _flat(h: State) -> list[Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


@torch.no_grad()
def evaluate_stream(model: RecurrentModel, x: Tensor, y: Tensor, loss: str = "mse", h0: State | None = None,
                    chunk: int = 1024) -> tuple[float, State]:
    """Mean loss over a held-out stream, state carried from ``h0`` (zeros), no gradient."""
    _validate(model, x, y, TBPTT(), loss, None, None, h0)
    params, loss_sum = model.params(), LOSSES[loss]
    h = model.init_state(x.shape[1]) if h0 is None else h0
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[0], chunk):
        feats, h = model.window(params, x[a:a + chunk], h)
        total += loss_sum(model.readout(params, feats), y[a:a + chunk]).double()
    denom = x.shape[0] * x.shape[1] * (model.output_size if loss == "mse" else 1)
    return float(total) / denom, h


def _validate(model, x, y, style, loss, clip, generator, h0) -> None:
    """Every check SPEC.md's inputs need, with a message naming the value and what is allowed."""
    if not isinstance(model, RecurrentModel):
        raise EngineError(f"model={type(model).__name__} is not allowed: use a tbptt_bench.models.RecurrentModel")
    if not isinstance(style, (TBPTT, RandomTruncation)):
        raise EngineError(f"style={style!r} is not allowed: use a TBPTT or RandomTruncation from tbptt_bench.styles")
    if loss not in LOSSES:
        raise EngineError(f"loss={loss!r} is not allowed: use one of {', '.join(LOSSES)}")
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise EngineError(f"x with shape {tuple(getattr(x, 'shape', ()))} is not allowed: x must be a float tensor (T, B, D)")
    T, B, D = x.shape
    if T < 1 or B < 1:
        raise EngineError(f"x with shape {tuple(x.shape)} is not allowed: T and B must be at least 1")
    if D != model.input_size:
        raise EngineError(f"x with D={D} is not allowed: the model takes input_size={model.input_size}")
    Q = model.output_size
    if not isinstance(y, Tensor):
        raise EngineError(f"y={type(y).__name__} is not allowed: y must be a tensor")
    if loss == "mse" and (tuple(y.shape) != (T, B, Q) or not y.is_floating_point()):
        raise EngineError(f"y with shape {tuple(y.shape)} and dtype {y.dtype} is not allowed: loss 'mse' needs a float tensor {(T, B, Q)}")
    if loss == "ce":
        if tuple(y.shape) != (T, B) or y.dtype != torch.long:
            raise EngineError(f"y with shape {tuple(y.shape)} and dtype {y.dtype} is not allowed: loss 'ce' needs int64 class indices {(T, B)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= Q):
            raise EngineError(f"y with classes in [{int(y.min())}, {int(y.max())}] is not allowed: classes must lie in [0, {Q - 1}]")
    p = next(iter(model.parameters()))
    for name, t in (("x", x), ("y", y)):
        if t.device != p.device:
            raise EngineError(f"{name} on {t.device} is not allowed: the model is on {p.device}")
    if not bool(torch.isfinite(x).all()):
        raise EngineError("x with non-finite values (nan or inf) is not allowed: inputs must be finite")
    if loss == "mse" and not bool(torch.isfinite(y).all()):
        raise EngineError("y with non-finite values (nan or inf) is not allowed: targets must be finite")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0):
        raise EngineError(f"clip={clip!r} is not allowed: use None or a positive finite number")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise EngineError(f"generator={generator!r} is not allowed: use a torch.Generator or None")
    if h0 is not None:
        ref = model.init_state(B)
        if isinstance(ref, tuple) != isinstance(h0, tuple) or any(
                tuple(a.shape) != tuple(b.shape) for a, b in zip(_flat(ref), _flat(h0))) or len(_flat(ref)) != len(_flat(h0)):
            shapes = [tuple(t.shape) for t in _flat(h0)] if isinstance(h0, (Tensor, tuple)) else h0
            raise EngineError(f"h0 with shapes {shapes} is not allowed: the model's state is {[tuple(t.shape) for t in _flat(ref)]}")
