"""What the speed benchmarks run: styles, sizes, and the implementations standing for each style.

One *case* is a fixed stream (x, y) and a fixed initial ElmanRNN for a (size, device); one *run* is
one training pass over that stream, from a fresh copy of the initial model and a fresh SGD, by
one implementation: ``"engine"`` (tbptt_bench.engine.train_stream) or a plain-PyTorch baseline
from tbptt_bench.baselines. ``semantics`` says how far the baseline computes the style of docs/semantics.md.

>>> [impl.name for impl in IMPLS["williams_peng(16)"]]
['engine', 'retain_graph_k1k2', 'rerun_window']
>>> SIZES["small"]
Size(name='small', B=16, H=32, T=512, T_cpu=512)
"""

from __future__ import annotations

import copy
import gc
import os
import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from tbptt_bench import baselines
from tbptt_bench.engine import train_stream
from tbptt_bench.engine.saved_memory import SavedTensorMeter
from tbptt_bench.models import ElmanRNN
from tbptt_bench.runs.envinfo import synchronize
from tbptt_bench.styles import Style, parse_style

D = Q = 8  #: input and output width of every case (mse loss)
LR = 1e-3  #: SGD learning rate: small, so no run diverges whatever its style
SEED = 0


@dataclass(frozen=True)
class Size:
    """Batch B, hidden H, stream length T (steps); ``T_cpu`` replaces T on the CPU to keep the suite short."""

    name: str
    B: int
    H: int
    T: int
    T_cpu: int

    def length(self, device: str) -> int:
        return self.T_cpu if device == "cpu" else self.T


SIZES: dict[str, Size] = {
    "small": Size("small", B=16, H=32, T=512, T_cpu=512),
    "large": Size("large", B=64, H=128, T=1024, T_cpu=256),
}

#: The styles benchmarked (spec strings; parse_style reads them).
STYLES: tuple[str, ...] = (
    "full()",
    "tf_style(16)",
    "tf_style(64)",
    "williams_peng(16)",
    "overlapping(8, 16)",
    "one_step(16)",
    "random(0.0625)",
)


@dataclass(frozen=True)
class Impl:
    """One implementation of a style: ``name`` (the impl column), baseline kwargs, and how exact it is."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    semantics: str = (
        "exact"  #: exact | exact when k divides T | exact for update(s) ... only | approximate: ...
    )

    @property
    def is_engine(self) -> bool:
        return self.name == "engine"


ENGINE = Impl("engine")
IMPLS: dict[str, list[Impl]] = {
    "full()": [ENGINE, Impl("chunked_rnn", {"k": None}), Impl("rnncell_loop", {"k": None})],
    "tf_style(16)": [
        ENGINE,
        Impl("chunked_rnn", {"k": 16}, "exact when k divides T"),
        Impl("rnncell_loop", {"k": 16}, "exact when k divides T"),
    ],
    "tf_style(64)": [
        ENGINE,
        Impl("chunked_rnn", {"k": 64}, "exact when k divides T"),
        Impl("rnncell_loop", {"k": 64}, "exact when k divides T"),
    ],
    "williams_peng(16)": [
        ENGINE,
        Impl("retain_graph_k1k2", {"k1": 1, "k2": 16}, "exact for updates 1-2 only"),
        Impl("rerun_window", {"n": 16}, "exact for update 1 only"),
    ],
    "overlapping(8, 16)": [
        ENGINE,
        Impl("retain_graph_k1k2", {"k1": 8, "k2": 16}, "approximate: last loss only"),
    ],
    "one_step(16)": [
        ENGINE,
        Impl("chunked_rnn", {"k": 16, "k2": 1}, "exact when k divides T"),
        Impl("rnncell_loop", {"k": 16, "k2": 1}, "exact when k divides T"),
        Impl("retain_graph_k1k2", {"k1": 16, "k2": 1}, "approximate: last loss only"),
    ],
    "random(0.0625)": [ENGINE, Impl("rnncell_loop", {"k": None, "pi": 0.0625}, "exact in distribution")],
}


@dataclass
class Case:
    """A fixed stream and initial model on one device."""

    size: Size
    device: str
    T: int
    x: torch.Tensor
    y: torch.Tensor
    model: ElmanRNN


def make_case(size: Size, device: str) -> Case:
    """The stream and initial model of ``size`` on ``device`` (seeded, float32)."""
    g = torch.Generator().manual_seed(SEED)
    T = size.length(device)
    model = ElmanRNN(D, size.H, Q, generator=g).to(device)
    x = torch.randn(T, size.B, D, generator=g).to(device)
    y = torch.randn(T, size.B, Q, generator=g).to(device)
    return Case(size, device, T, x, y, model)


def device_or_skip(device: str) -> str:
    """``device`` when it is present here; otherwise skip the test, saying why."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip(
            f"cuda: not available here (torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        )
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            pytest.skip(f"mps: not available here (torch {torch.__version__})")
    return device


def engine_options(environ=os.environ) -> dict[str, Any]:
    """The engine's CUDA-graph options from the benchmark scripts' variables (the engine itself
    reads none): ``TBPTT_BENCH_CUDA_GRAPHS=0`` -> ``cuda_graphs=False``;
    ``TBPTT_BENCH_GRAPH_FORWARD=fused|loop`` -> ``graph_forward``.

    >>> engine_options({"TBPTT_BENCH_CUDA_GRAPHS": "0", "TBPTT_BENCH_GRAPH_FORWARD": "loop"})
    {'cuda_graphs': False, 'graph_forward': 'loop'}
    >>> engine_options({})
    {'cuda_graphs': True, 'graph_forward': 'fused'}
    """
    return {
        "cuda_graphs": environ.get("TBPTT_BENCH_CUDA_GRAPHS", "1") != "0",
        "graph_forward": environ.get("TBPTT_BENCH_GRAPH_FORWARD", "fused"),
    }


def prepare(
    case: Case, style_spec: str, impl: Impl, measure_memory: bool = False, options: dict | None = None
) -> Callable[[], dict]:
    """A fresh model and optimizer, and the function that runs ONE pass over the case's stream.

    The pass synchronizes the device before returning {"updates", "path", "saved_bytes_peak"};
    ``measure_memory`` counts the peak bytes saved for backward (the engine's own
    ``measure_memory=True``; a SavedTensorMeter around a baseline), which slows the pass.
    ``options``: the engine's keyword options (default: ``engine_options()`` from the environment).
    """
    style: Style = parse_style(style_spec)
    model = copy.deepcopy(case.model)
    if impl.is_engine:
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        gen = torch.Generator().manual_seed(SEED)
        kw = engine_options() if options is None else options

        def run() -> dict:
            result = train_stream(
                model, case.x, case.y, style, opt, "mse", generator=gen, measure_memory=measure_memory, **kw
            )
            synchronize(case.device)
            return {
                "updates": len(result.records),
                "path": result.path,
                "saved_bytes_peak": result.saved_bytes_peak,
                "fallback_reason": result.fallback_reason,
            }

        return run

    net = baselines.torch_elman(model)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    fn = baselines.BASELINES[impl.name]
    kwargs = dict(impl.kwargs)
    if "pi" in kwargs:
        kwargs["generator"] = random.Random(SEED)

    def run() -> dict:
        meter = SavedTensorMeter() if measure_memory else None
        with meter if meter else nullcontext():
            losses = fn(net, case.x, case.y, opt, "mse", **kwargs)
        synchronize(case.device)
        return {
            "updates": len(losses),
            "path": impl.name,
            "saved_bytes_peak": meter.peak_bytes if meter else None,
            "fallback_reason": None,
        }

    return run


def peak_device_bytes(case: Case, style_spec: str, impl: Impl) -> int | None:
    """CUDA: the allocator's peak during one untimed pass above what was allocated when it began
    (the case's stream, the fresh model, and whatever earlier tests still hold are excluded);
    None elsewhere (on the CPU the process-wide ru_maxrss says nothing about one pass)."""
    if case.device != "cuda":
        return None
    gc.collect()
    run = prepare(case, style_spec, impl)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = torch.cuda.memory_allocated()
    run()
    return int(torch.cuda.max_memory_allocated()) - start
