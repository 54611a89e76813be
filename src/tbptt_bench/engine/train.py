"""The training engine: one stream, one style, exactly as ../shared/SPEC.md decides.

``train_stream`` walks the sequence chunk by chunk (see ``chunking``); at every update time a
path (``autograd_path``: any model; ``elman_path``: the Elman cell's hand-written backward)
backpropagates the update's losses through the chunks of its window, newest first, then the
engine clips and steps. There is no per-style branch: every style is a schedule (update
times, window starts) and random truncation only adds a multiplier on each carried edge.

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
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor

from ..models import ElmanRNN, RecurrentModel, State, map_state
from ..styles import ARTBP, TBPTT, AdaptiveTBPTT, RandomTruncation, Style
from .chunking import needs_stored_history, plan_chunks
from .clipping import clip_by_global_norm_
from .losses import LOSSES, per_step_elements
from .paths.autograd import AutogradPath
from .paths.manual_elman import ElmanPath
from .paths.static_elman import FUSED_MIN_STEPS, GraphedElman, cuda_graphs_enabled, graph_safe_optimizer
from .saved_memory import SavedTensorMeter
from .xi import realise

__all__ = ["LOSSES", "PATHS", "EngineError", "TrainResult", "UpdateRecord", "evaluate_stream", "train_stream"]


class EngineError(ValueError):
    """Bad input to the engine, caught before any training."""


@dataclass(frozen=True)
class UpdateRecord:
    t: int  #: the update time (1-based step index)
    loss: float  #: the update's objective: mean loss over its steps and the batch
    grad_norm: float  #: global gradient norm before clipping
    clipped: bool  #: whether clipping scaled the gradient


@dataclass
class TrainResult:
    records: list[UpdateRecord]
    state: State  #: the final hidden state, detached
    path: str  #: which implementation ran
    saved_bytes_peak: int | None = None  #: peak bytes held for backward (when measured)
    fallback_reason: str | None = None  #: why a faster path chosen for this run could not run


#: When the Elman path's hand-written backward beats one autograd graph per window (measured on
#: CPU with benchmarks/ and torch 2.13): per-update autograd overhead dominates short windows
#: (k2 <= 64) and narrow states (B*H <= 2048, e.g. B=16, H=32: 45 vs 60 ms for T=512); for long
#: windows of wide states the Python loop of small ops loses (B=64, H=128, T=256: 121 vs 87 ms).
MANUAL_MAX_WINDOW = 64
MANUAL_MAX_WIDTH = 2048


def _choose_path(
    model: RecurrentModel,
    style: Style,
    stored_history: bool,
    k2: int,
    batch: int,
    path: str,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
):
    """The fastest path that applies.

    On CUDA, short windows of the Elman cell under a deterministic style run as one CUDA graph
    per update (launch overhead, not arithmetic, is their cost there); other CUDA cases use the
    hand-written backward only where autograd would need one backward call per chunk (stored
    history, random truncation), cuDNN through autograd otherwise. On the CPU the Elman
    cell's hand-written backward wins when windows reach into stored history or random
    truncation needs a decision per edge (the autograd path would need one backward call per
    chunk there), or the window is short or the state narrow; autograd otherwise (one fused
    cuDNN/ATen kernel per window).
    """
    if path not in PATHS:
        raise EngineError(f"path={path!r} is not allowed: use one of {', '.join(PATHS)}")
    elman = isinstance(model, ElmanRNN)
    if path == "auto":
        if (
            elman
            and device.type == "cuda"
            and isinstance(style, TBPTT)
            and k2 <= MANUAL_MAX_WINDOW
            and graph_safe_optimizer(optimizer)
            and cuda_graphs_enabled()
        ):
            return "cuda-graph-elman"
        needs_manual = stored_history or isinstance(style, (RandomTruncation, ARTBP))
        if device.type == "cuda":  # cuDNN's window kernels beat a loop of small launches
            return "manual-elman" if elman and needs_manual else "autograd"
        manual = elman and (
            needs_manual or k2 <= MANUAL_MAX_WINDOW or batch * model.hidden_size <= MANUAL_MAX_WIDTH
        )
        return "manual-elman" if manual else "autograd"
    if path != "autograd" and not elman:
        raise EngineError(f"path={path!r} is not allowed for {type(model).__name__}: it needs an ElmanRNN")
    if path in STATIC_PATHS and not isinstance(style, TBPTT):
        raise EngineError(
            f"path={path!r} is not allowed for {style.spec}: it runs deterministic TBPTT(k1, k2) only"
        )
    if path == "cuda-graph-elman" and device.type != "cuda":
        raise EngineError(f"path='cuda-graph-elman' is not allowed on {device}: it needs a CUDA device")
    if path == "cuda-graph-elman" and not graph_safe_optimizer(optimizer):
        raise EngineError(
            f"path='cuda-graph-elman' is not allowed with {type(optimizer).__name__}: use SGD or an "
            "optimizer built with capturable=True"
        )
    return path


PATHS = {
    "auto": None,
    "autograd": AutogradPath,
    "manual-elman": ElmanPath,
    "static-elman": GraphedElman,
    "cuda-graph-elman": GraphedElman,
}
STATIC_PATHS = ("static-elman", "cuda-graph-elman")


def train_stream(
    model: RecurrentModel,
    x: Tensor,
    y: Tensor,
    style: Style,
    optimizer: torch.optim.Optimizer,
    loss: str = "mse",
    clip: float | None = None,
    generator: torch.Generator | None = None,
    h0: State | None = None,
    *,
    callback: Callable[[UpdateRecord], None] | None = None,
    measure_memory: bool = False,
    path: str = "auto",
) -> TrainResult:
    """Train ``model`` on one stream of B rows under ``style``; return per-update records.

    x: (T, B, D) inputs; y: (T, B, Q) targets for ``loss="mse"`` or (T, B) class indices for
    ``loss="ce"``. The optimizer is the caller's; the engine sets every ``p.grad`` itself.
    ``clip`` (global norm, SPEC.md) is optional; ``generator`` drives random truncation;
    ``callback(record)`` runs after every update (raise from it to stop early);
    ``measure_memory`` counts the peak bytes held for backward (slower on the autograd path);
    ``path`` forces an implementation ("autograd", "manual-elman"); "auto" picks the fastest.
    """
    _validate(model, x, y, style, loss, clip, generator, h0)
    if isinstance(style, AdaptiveTBPTT):  # K chosen per period, each period a TBPTT(K, 2K-1) run
        from .adaptive import train_adaptive

        return train_adaptive(
            train_stream,
            model,
            x,
            y,
            style,
            optimizer,
            loss,
            clip,
            generator,
            h0,
            callback,
            measure_memory,
            path,
        )
    T, B = x.shape[0], x.shape[1]
    _, k2 = style.resolve(T)
    # Chance is drawn before the first forward step (xi.realise), so the planner cuts the graph
    # where xi = 0 and memory/backprop steps are the draw's; the paths read the same draws.
    draws = realise(style, T, B, generator)
    updates = draws.updates if draws is not None else style.updates(T)
    starts = {t: start for _, t, start in updates}
    plans = plan_chunks(style, T, cut_random_edges=False, draws=draws)
    stored_history = needs_stored_history(plans)
    per_step = per_step_elements(loss, B, model.output_size)
    denoms = {t: per_step * style.objective_steps(prev, t) for prev, t, _ in updates}
    pi = style.pi if isinstance(style, (RandomTruncation, ARTBP)) else None
    chosen = _choose_path(model, style, stored_history, k2, B, path, optimizer, x.device)
    h = model.init_state(B) if h0 is None else map_state(lambda t: t.detach(), h0)
    if chosen in STATIC_PATHS:
        return _train_static(
            model,
            x,
            y,
            style,
            optimizer,
            loss,
            clip,
            h,
            callback,
            measure_memory,
            capture=chosen == "cuda-graph-elman",
            stored_history=stored_history,
        )
    path_class = PATHS[chosen]
    xi_source = draws if draws is not None else generator
    runner = path_class(model, x, y, loss, k2, pi, getattr(style, "per_stream", False), xi_source, denoms)
    if path_class is AutogradPath and pi is not None:
        plans = plan_chunks(style, T, draws=draws)  # a graph per step: xi is applied between chunks
    live = model.params()
    names = list(live)

    pending: list[tuple[int, Tensor]] = []  # (t, [loss, norm, clipped]) on the device, read at the end
    records: list[UpdateRecord] = []
    params = live
    meter = SavedTensorMeter() if measure_memory and isinstance(runner, AutogradPath) else None
    with meter if meter else nullcontext():
        for plan in plans:
            # 1. A new segment starts. With stored history its steps run on a snapshot of the
            #    parameters, so later windows see the Jacobians of this segment's time (rule 4).
            if plan.a == plan.prev_update:
                params = (
                    {n: p.detach().clone().requires_grad_(True) for n, p in live.items()}
                    if stored_history
                    else live
                )
            # 2. Forward one chunk (graph, or stored states, only where a window will need them).
            h = runner.forward(plan, params, h)
            if plan.b != plan.update:
                continue
            # 3. Update time: backpropagate the window, clip, step; free what no later window needs.
            grads, objective = runner.backward(plan.update, starts[plan.update], names)
            pending.append((plan.update, _apply(live, names, grads, objective, clip, optimizer)))
            runner.release(plan.update)
            if callback is not None:  # a record now costs one device sync per update
                records += _read_records(pending)
                pending.clear()
                callback(records[-1])
    records += _read_records(pending)
    peak = meter.peak_bytes if meter else (runner.saved_bytes_peak if measure_memory else None)
    return TrainResult(records, h, runner.name + ("+stored-history" if stored_history else ""), peak)


def _train_static(
    model,
    x,
    y,
    style,
    optimizer,
    loss,
    clip,
    h,
    callback,
    measure_memory,
    *,
    capture: bool,
    stored_history: bool,
) -> TrainResult:
    """Every update as one static-shape function (graphed_elman); a CUDA graph on CUDA."""
    T, B = x.shape[0], x.shape[1]
    k1, k2 = style.resolve(T)
    segments = [t - prev for prev, t, _ in style.updates(T)]
    times = style.update_times(T)
    # A window inside its own segment (no stored history) of a fused cell backpropagates through
    # the fused kernel by autograd (cuDNN's backward on CUDA: one kernel, not two per step).
    autograd_window = not stored_history and model.fused_window and k2 >= FUSED_MIN_STEPS
    runner = GraphedElman(
        model,
        x,
        y,
        loss,
        k1,
        k2,
        clip,
        optimizer,
        per_step_elements(loss, B, model.output_size),
        h,
        capture,
        autograd_window,
    )

    def to_record(i: int, row) -> UpdateRecord:
        loss_value, norm, clipped = row.tolist()
        return UpdateRecord(times[i], loss_value, norm, bool(clipped))

    on_update = None if callback is None else (lambda i, row: callback(to_record(i, row)))
    meter = SavedTensorMeter() if measure_memory and autograd_window else None
    with meter if meter else nullcontext():
        rows = runner.run(segments, on_update)
    records = [to_record(i, row) for i, row in enumerate(rows)]
    name = (
        ("cuda-graph-elman" if runner.captured else "static-elman")
        + ("/fused-window" if autograd_window else "")
        + ("+stored-history" if stored_history else "")
    )
    saved = (meter.peak_bytes if meter else runner.saved_bytes(max(segments))) if measure_memory else None
    reason = None if runner.capture_error is None else f"CUDA graph capture failed: {runner.capture_error}"
    return TrainResult(records, runner.h.clone(), name, saved, reason)


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


def _read_records(pending: list[tuple[int, Tensor]]) -> list[UpdateRecord]:
    """Update records from device rows, in one host read."""
    if not pending:
        return []
    rows = torch.stack([row for _, row in pending]).double().tolist()
    return [
        UpdateRecord(t, loss, norm, bool(clipped)) for (t, _), (loss, norm, clipped) in zip(pending, rows)
    ]


def _flat(h: State) -> list[Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


@torch.no_grad()
def evaluate_stream(
    model: RecurrentModel, x: Tensor, y: Tensor, loss: str = "mse", h0: State | None = None, chunk: int = 1024
) -> tuple[float, State]:
    """Mean loss over a held-out stream, state carried from ``h0`` (zeros), no gradient."""
    _validate(model, x, y, TBPTT(), loss, None, None, h0)
    params, loss_sum = model.params(), LOSSES[loss]
    h = model.init_state(x.shape[1]) if h0 is None else h0
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[0], chunk):
        feats, h = model.window(params, x[a : a + chunk], h)
        total += loss_sum(model.readout(params, feats), y[a : a + chunk]).double()
    denom = x.shape[0] * x.shape[1] * (model.output_size if loss == "mse" else 1)
    return float(total) / denom, h


def _validate(model, x, y, style, loss, clip, generator, h0) -> None:
    """Every check SPEC.md's inputs need, with a message naming the value and what is allowed."""
    if not isinstance(model, RecurrentModel):
        raise EngineError(
            f"model={type(model).__name__} is not allowed: use a tbptt_bench.models.RecurrentModel"
        )
    if not isinstance(style, (TBPTT, RandomTruncation, ARTBP, AdaptiveTBPTT)):
        raise EngineError(
            f"style={style!r} is not allowed: use a style from tbptt_bench.styles (TBPTT, "
            "RandomTruncation, ARTBP, AdaptiveTBPTT)"
        )
    if loss not in LOSSES:
        raise EngineError(f"loss={loss!r} is not allowed: use one of {', '.join(LOSSES)}")
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise EngineError(
            f"x with shape {tuple(getattr(x, 'shape', ()))} is not allowed: x must be a float tensor (T, B, D)"
        )
    T, B, D = x.shape
    if T < 1 or B < 1:
        raise EngineError(f"x with shape {tuple(x.shape)} is not allowed: T and B must be at least 1")
    if D != model.input_size:
        raise EngineError(f"x with D={D} is not allowed: the model takes input_size={model.input_size}")
    Q = model.output_size
    if not isinstance(y, Tensor):
        raise EngineError(f"y={type(y).__name__} is not allowed: y must be a tensor")
    if loss == "mse" and (tuple(y.shape) != (T, B, Q) or not y.is_floating_point()):
        raise EngineError(
            f"y with shape {tuple(y.shape)} and dtype {y.dtype} is not allowed: loss 'mse' needs a float tensor {(T, B, Q)}"
        )
    if loss == "ce":
        if tuple(y.shape) != (T, B) or y.dtype != torch.long:
            raise EngineError(
                f"y with shape {tuple(y.shape)} and dtype {y.dtype} is not allowed: loss 'ce' needs int64 class indices {(T, B)}"
            )
    p = next(iter(model.parameters()))
    for name, t in (("x", x), ("y", y)):
        if t.device != p.device:
            raise EngineError(f"{name} on {t.device} is not allowed: the model is on {p.device}")
    # The value checks in one host read (one device sync on a GPU).
    stats = [torch.isfinite(x).all().double()]
    if loss == "mse":
        stats.append(torch.isfinite(y).all().double())
    elif y.numel():
        stats += [y.min().double(), y.max().double()]
    values = torch.stack(stats).tolist()
    if loss == "ce" and y.numel() and (values[1] < 0 or values[2] >= Q):
        raise EngineError(
            f"y with classes in [{int(values[1])}, {int(values[2])}] is not allowed: classes must lie in [0, {Q - 1}]"
        )
    if not values[0]:
        raise EngineError("x with non-finite values (nan or inf) is not allowed: inputs must be finite")
    if loss == "mse" and not values[1]:
        raise EngineError("y with non-finite values (nan or inf) is not allowed: targets must be finite")
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0
    ):
        raise EngineError(f"clip={clip!r} is not allowed: use None or a positive finite number")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise EngineError(f"generator={generator!r} is not allowed: use a torch.Generator or None")
    if h0 is not None:
        ref = model.init_state(B)
        if (
            isinstance(ref, tuple) != isinstance(h0, tuple)
            or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(_flat(ref), _flat(h0)))
            or len(_flat(ref)) != len(_flat(h0))
        ):
            shapes = [tuple(t.shape) for t in _flat(h0)] if isinstance(h0, (Tensor, tuple)) else h0
            raise EngineError(
                f"h0 with shapes {shapes} is not allowed: the model's state is {[tuple(t.shape) for t in _flat(ref)]}"
            )
