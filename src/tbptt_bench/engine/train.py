"""The training engine: one stream, one style, exactly as docs/semantics.md defines it.

``train_stream`` checks its inputs (``checks``), picks a path from ``paths.selection.PATH_TABLE``,
gathers what the path needs into one frozen ``paths.base.PathInputs`` and returns
``Path(inputs).run(callback)``. The engine reads no process-wide settings: CUDA-graph capture and
the graph's forward are arguments (the benchmark scripts map their variables onto them).

>>> import torch
>>> from tbptt_bench.models import ElmanRNN
>>> from tbptt_bench.styles import tf_style
>>> torch.manual_seed(0) and None
>>> model = ElmanRNN(2, 8, 1)
>>> x, y = torch.randn(20, 4, 2), torch.randn(20, 4, 1)
>>> result = train_stream(model, x, y, tf_style(5), torch.optim.SGD(model.parameters(), lr=0.1))
>>> [(r.t, r.forward_steps, r.backprop_steps) for r in result.records]
[(5, 20, 20), (10, 20, 20), (15, 20, 20), (20, 20, 20)]
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..models import RecurrentModel, State, map_state
from ..styles import AdaptiveTBPTT, Style
from .checks import check_chunk, check_optimizer, check_options, check_stream
from .chunking import needs_stored_history, plan_chunks
from .losses import LOSSES
from .paths.base import PathInputs
from .paths.selection import (
    MANUAL_MAX_WIDTH,
    MANUAL_MAX_WINDOW,
    PATH_NAMES,
    PATH_TABLE,
    Situation,
    select_path,
)
from .records import EngineError, TrainResult, UpdateRecord
from .xi import realise

__all__ = [
    "LOSSES",
    "MANUAL_MAX_WIDTH",
    "MANUAL_MAX_WINDOW",
    "PATH_NAMES",
    "PATH_TABLE",
    "EngineError",
    "TrainResult",
    "UpdateRecord",
    "evaluate_stream",
    "train_stream",
]


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
    cuda_graphs: bool = True,
    graph_forward: str = "fused",
) -> TrainResult:
    """Train ``model`` on one stream of B rows under ``style``; return per-update records.

    x: (T, B, D) inputs; y: (T, B, Q) targets for ``loss="mse"`` or (T, B) class indices for
    ``loss="ce"``; both, and ``h0``, on the model's device and (x, float y, h0) in its dtype.
    The optimizer is the caller's and must cover exactly the model's parameters; the engine
    sets every ``p.grad`` itself. ``clip`` (global norm, docs/semantics.md) is optional;
    ``generator`` drives random truncation; ``callback(record)`` runs after every update (raise
    from it to stop early); ``measure_memory`` counts the peak bytes held for backward (slower
    on the autograd path); ``path`` forces an implementation (``PATH_NAMES``), "auto" picks the
    first row of ``PATH_TABLE`` that applies. ``cuda_graphs=False`` keeps "auto" off the
    CUDA-graph path; ``graph_forward`` ("fused" or "loop") is the forward inside that graph.
    """
    check_options(style, clip, generator, path, cuda_graphs, graph_forward, measure_memory, callback)
    check_stream(model, x, y, loss, h0)
    check_optimizer(model, optimizer)
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
    k1, k2 = style.resolve(T)
    # Chance is drawn before the first forward step, so the planner cuts the graph where xi = 0
    # (memory and backprop steps are the draw's) and the paths read the same draws (xi.DrawnXi).
    draws = realise(style, T, B, generator)
    schedule = draws.updates if draws is not None else style.updates(T)
    stored_history = needs_stored_history(plan_chunks(style, T, cut_random_edges=False, draws=draws))
    situation = Situation(model, style, x.device, k2, B, stored_history, optimizer, cuda_graphs)
    row = select_path(situation, path)
    inputs = PathInputs(
        model=model,
        x=x,
        y=y,
        style=style,
        optimizer=optimizer,
        loss=loss,
        clip=clip,
        generator=draws if draws is not None else generator,
        h0=model.init_state(B) if h0 is None else map_state(lambda t: t.detach(), h0),
        k1=k1,
        k2=k2,
        updates=tuple((prev, u) for prev, u, _ in schedule),
        starts={u: start for _, u, start in schedule},
        draws=draws,
        stored_history=stored_history,
        measure_memory=measure_memory,
        capture=row.name == "cuda-graph-elman",
        graph_forward=graph_forward,
    )
    return row.cls(inputs).run(callback)


@torch.no_grad()
def evaluate_stream(
    model: RecurrentModel, x: Tensor, y: Tensor, loss: str = "mse", h0: State | None = None, chunk: int = 1024
) -> tuple[float, State]:
    """Mean loss over a held-out stream, state carried from ``h0`` (zeros), no gradient."""
    check_chunk(chunk)
    check_stream(model, x, y, loss, h0)
    params, loss_sum = model.params(), LOSSES[loss]
    h = model.init_state(x.shape[1]) if h0 is None else h0
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for a in range(0, x.shape[0], chunk):
        feats, h = model.window(params, x[a : a + chunk], h)
        total += loss_sum(model.readout(params, feats), y[a : a + chunk]).double()
    denom = x.shape[0] * x.shape[1] * (model.output_size if loss == "mse" else 1)
    return float(total) / denom, h
