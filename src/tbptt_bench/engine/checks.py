"""Every check the engine's inputs need, before any training (docs/semantics.md, "Input checks").

Each failure is one ``EngineError`` whose single line names the value and what is allowed. The
checks never train, step or modify anything; value checks read the device once (one sync).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..models import RecurrentModel, State
from ..styles import ARTBP, TBPTT, AdaptiveTBPTT, RandomTruncation
from .losses import LOSSES
from .paths.base import GRAPH_FORWARDS
from .records import EngineError

__all__ = ["check_chunk", "check_optimizer", "check_options", "check_stream"]


def _flat(h) -> list:
    return list(h) if isinstance(h, tuple) else [h]


def check_model(model) -> tuple[torch.device, torch.dtype]:
    """A RecurrentModel whose parameters share one device and dtype and are all trainable."""
    if not isinstance(model, RecurrentModel):
        raise EngineError(
            f"model={type(model).__name__} is not allowed: use a tbptt_bench.models.RecurrentModel"
        )
    named = list(model.named_parameters())
    if not named:
        raise EngineError(f"model={type(model).__name__} with no parameters is not allowed: nothing to train")
    p0 = named[0][1]
    for name, p in named:
        if p.device != p0.device or p.dtype != p0.dtype:
            raise EngineError(
                f"parameter {name} on {p.device} as {p.dtype} is not allowed: every parameter must be "
                f"on {p0.device} as {p0.dtype}"
            )
        # Frozen parameters are refused: clipping's global norm and the oracles are defined
        # over the whole parameter set (docs/semantics.md, "Input checks").
        if not p.requires_grad:
            raise EngineError(
                f"parameter {name} with requires_grad=False is not allowed: the engine trains every "
                "parameter of the model"
            )
    return p0.device, p0.dtype


def check_stream(model, x, y, loss: str, h0: State | None) -> None:
    """Model, loss, x, y and h0: types, shapes, dtypes, devices and finite values."""
    device, dtype = check_model(model)
    if not isinstance(loss, str) or loss not in LOSSES:
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
    if loss == "ce" and (tuple(y.shape) != (T, B) or y.dtype != torch.long):
        raise EngineError(
            f"y with shape {tuple(y.shape)} and dtype {y.dtype} is not allowed: loss 'ce' needs int64 class indices {(T, B)}"
        )
    for name, t in (("x", x), ("y", y)):
        if t.device != device:
            raise EngineError(f"{name} on {t.device} is not allowed: the model is on {device}")
    if x.dtype != dtype:
        raise EngineError(f"x with dtype {x.dtype} is not allowed: the model's parameters are {dtype}")
    if loss == "mse" and y.dtype != dtype:
        raise EngineError(f"y with dtype {y.dtype} is not allowed: the model's parameters are {dtype}")
    h0_parts = _check_h0_structure(model, h0, B, device, dtype)
    _check_values(x, y, loss, Q, h0_parts)


def _check_h0_structure(model, h0, B: int, device, dtype) -> list[Tensor]:
    """h0's type, shapes, dtype and device against the model's own initial state."""
    if h0 is None:
        return []
    ref = model.init_state(B)
    parts = _flat(h0)
    if not isinstance(h0, (Tensor, tuple)) or not all(isinstance(t, Tensor) for t in parts):
        raise EngineError(
            f"h0={type(h0).__name__} is not allowed: use None or the model's state "
            f"({'a tuple of tensors' if isinstance(ref, tuple) else 'a tensor'})"
        )
    if (
        isinstance(ref, tuple) != isinstance(h0, tuple)
        or len(_flat(ref)) != len(parts)
        or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(_flat(ref), parts))
    ):
        raise EngineError(
            f"h0 with shapes {[tuple(t.shape) for t in parts]} is not allowed: the model's state is "
            f"{[tuple(t.shape) for t in _flat(ref)]}"
        )
    for t in parts:
        if t.dtype != dtype:
            raise EngineError(f"h0 with dtype {t.dtype} is not allowed: the model's parameters are {dtype}")
        if t.device != device:
            raise EngineError(f"h0 on {t.device} is not allowed: the model is on {device}")
    return parts


def _check_values(x: Tensor, y: Tensor, loss: str, Q: int, h0_parts: list[Tensor]) -> None:
    """Finite x, y (mse), h0; class indices in range (ce): one host read for all of them."""
    stats = [torch.isfinite(x).all().double()]
    stats += [torch.isfinite(t).all().double() for t in h0_parts]
    if loss == "mse":
        stats.append(torch.isfinite(y).all().double())
    elif y.numel():
        stats += [y.min().double(), y.max().double()]
    values = torch.stack(stats).tolist()
    x_ok, h_ok, rest = values[0], values[1 : 1 + len(h0_parts)], values[1 + len(h0_parts) :]
    if loss == "ce" and y.numel() and (rest[0] < 0 or rest[1] >= Q):
        raise EngineError(
            f"y with classes in [{int(rest[0])}, {int(rest[1])}] is not allowed: classes must lie in [0, {Q - 1}]"
        )
    if not x_ok:
        raise EngineError("x with non-finite values (nan or inf) is not allowed: inputs must be finite")
    if loss == "mse" and not rest[0]:
        raise EngineError("y with non-finite values (nan or inf) is not allowed: targets must be finite")
    if not all(h_ok):
        raise EngineError("h0 with non-finite values (nan or inf) is not allowed: the state must be finite")


def check_optimizer(model: RecurrentModel, optimizer) -> None:
    """A torch optimizer over exactly the model's parameters (each once)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise EngineError(
            f"optimizer={type(optimizer).__name__} is not allowed: use a torch.optim.Optimizer over "
            "the model's parameters"
        )
    given = [p for group in optimizer.param_groups for p in group["params"]]
    ids = {id(p) for p in given}
    names = {id(p): n for n, p in model.named_parameters()}
    missing = [n for i, n in names.items() if i not in ids]
    if missing:
        raise EngineError(
            f"optimizer without parameter(s) {', '.join(missing)} is not allowed: it must cover exactly "
            "the model's parameters"
        )
    if len(ids) != len(given) or ids - set(names):
        raise EngineError(
            f"optimizer over {len(given)} tensors is not allowed: it must cover exactly the model's "
            f"{len(names)} parameters, each once"
        )


def check_options(style, clip, generator, path, cuda_graphs, graph_forward, measure_memory, callback) -> None:
    """The style and the keyword options of ``train_stream``."""
    if not isinstance(style, (TBPTT, RandomTruncation, ARTBP, AdaptiveTBPTT)):
        raise EngineError(
            f"style={style!r} is not allowed: use a TBPTT, RandomTruncation, ARTBP or AdaptiveTBPTT from tbptt_bench.styles"
        )
    if clip is not None and (
        isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0
    ):
        raise EngineError(f"clip={clip!r} is not allowed: use None or a positive finite number")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise EngineError(f"generator={generator!r} is not allowed: use a torch.Generator or None")
    if not isinstance(path, str):
        raise EngineError(f"path={path!r} is not allowed: use a path name such as 'auto'")
    if not isinstance(cuda_graphs, bool):
        raise EngineError(f"cuda_graphs={cuda_graphs!r} is not allowed: use True or False")
    if not isinstance(graph_forward, str) or graph_forward not in GRAPH_FORWARDS:
        raise EngineError(
            f"graph_forward={graph_forward!r} is not allowed: use one of {', '.join(GRAPH_FORWARDS)}"
        )
    if not isinstance(measure_memory, bool):
        raise EngineError(f"measure_memory={measure_memory!r} is not allowed: use True or False")
    if callback is not None and not callable(callback):
        raise EngineError(f"callback={callback!r} is not allowed: use None or a function of one UpdateRecord")


def check_chunk(chunk) -> None:
    """``evaluate_stream``'s chunk: a positive int (not a bool)."""
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise EngineError(f"chunk={chunk!r} is not allowed: use a positive int")
