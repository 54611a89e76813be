"""Which path trains a stream: ``PATH_TABLE``, one row per path, in order of preference.

``path="auto"`` takes the first row whose ``auto_when`` holds; a named path takes its row, and
the row's ``refuse`` says why it cannot run here (an EngineError naming the path). The table is
the whole policy: to add a path, write a class that implements ``base.Path`` and add a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...models import ElmanRNN, RecurrentModel
from ...styles import ARTBP, TBPTT, RandomTruncation, Style
from ..records import EngineError
from .autograd import AutogradPath
from .base import Path
from .manual_elman import ElmanPath
from .static_elman import GraphedElman, graph_safe_optimizer

__all__ = ["MANUAL_MAX_WIDTH", "MANUAL_MAX_WINDOW", "PATH_NAMES", "PATH_TABLE", "PathRow", "Situation"]

#: When the Elman path's hand-written backward beats one autograd graph per window (measured on
#: CPU with benchmarks/ and torch 2.13): per-update autograd overhead dominates short windows
#: (k2 <= 64) and narrow states (B*H <= 2048, e.g. B=16, H=32: 45 vs 60 ms for T=512); for long
#: windows of wide states the Python loop of small ops loses (B=64, H=128, T=256: 121 vs 87 ms).
#: The CUDA-graph row reuses MANUAL_MAX_WINDOW as its window bound (inherited, not measured
#: separately on a GPU): for longer windows the arithmetic, not kernel launches, is expected to
#: dominate an update, where cuDNN's window kernels through autograd serve.
MANUAL_MAX_WINDOW = 64
MANUAL_MAX_WIDTH = 2048


@dataclass(frozen=True)
class Situation:
    """What path selection looks at, all known before training."""

    model: RecurrentModel
    style: Style
    device: torch.device
    k2: int  #: resolved against T
    batch: int
    stored_history: bool
    optimizer: torch.optim.Optimizer
    cuda_graphs: bool  #: the caller allows CUDA-graph capture

    @property
    def elman(self) -> bool:
        return isinstance(self.model, ElmanRNN)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def deterministic(self) -> bool:
        return isinstance(self.style, TBPTT)

    @property
    def needs_manual(self) -> bool:
        """Autograd would need one backward call per chunk (stored history, random truncation)."""
        return self.stored_history or isinstance(self.style, (RandomTruncation, ARTBP))


@dataclass(frozen=True)
class PathRow:
    name: str  #: the ``path=`` name (and the start of the recorded ``engine_path``)
    cls: type[Path]
    auto_when: Callable[[Situation], bool]  #: "auto" picks this row when it holds
    refuse: Callable[[Situation], str | None]  #: why the path cannot run here (None: it can)
    why: str


def _needs_elman(s: Situation) -> str | None:
    return None if s.elman else f"for {type(s.model).__name__}: it needs an ElmanRNN"


def _refuse_static(s: Situation) -> str | None:
    if not s.elman:
        return _needs_elman(s)
    if not s.deterministic:
        return f"for {s.style.spec}: it runs deterministic TBPTT(k1, k2) only"
    return None


def _refuse_graph(s: Situation) -> str | None:
    if (why := _refuse_static(s)) is not None:
        return why
    if not s.cuda:
        return f"on {s.device}: it needs a CUDA device"
    if not graph_safe_optimizer(s.optimizer):
        return f"with {type(s.optimizer).__name__}: use SGD or an optimizer built with capturable=True"
    if not s.cuda_graphs:
        return "with cuda_graphs=False: use path='static-elman' or cuda_graphs=True"
    return None


def _manual_pays(s: Situation) -> bool:
    """An Elman cell with stored history or random truncation (any device), or on the CPU a short
    window or a narrow state (MANUAL_MAX_WINDOW, MANUAL_MAX_WIDTH)."""
    if not s.elman:
        return False
    short = s.k2 <= MANUAL_MAX_WINDOW or s.batch * s.model.hidden_size <= MANUAL_MAX_WIDTH
    return s.needs_manual or (not s.cuda and short)


PATH_TABLE: tuple[PathRow, ...] = (
    PathRow(
        "cuda-graph-elman",
        GraphedElman,
        lambda s: _refuse_graph(s) is None and s.k2 <= MANUAL_MAX_WINDOW,
        _refuse_graph,
        "on CUDA a short window's time is kernel launches; one graph replay per update removes them",
    ),
    PathRow(
        "manual-elman",
        ElmanPath,
        _manual_pays,
        _needs_elman,
        "stored history and random truncation cost autograd one backward call per chunk; on the "
        "CPU short windows and narrow states pay more for autograd's per-update overhead",
    ),
    PathRow(
        "static-elman",
        GraphedElman,
        lambda s: False,
        _refuse_static,
        "the CUDA-graph update run eagerly: never faster, kept so CPU tests pin the graphed function",
    ),
    PathRow(
        "autograd",
        AutogradPath,
        lambda s: True,
        lambda s: None,
        "any model; one fused (cuDNN/ATen) window kernel where the model has one",
    ),
)

#: The names ``train_stream(path=...)`` accepts, in the order its error message lists them.
PATH_NAMES = ("auto", "autograd", "manual-elman", "static-elman", "cuda-graph-elman")
_ROWS = {row.name: row for row in PATH_TABLE}


def select_path(situation: Situation, path: str) -> PathRow:
    """The row that runs: the first auto row that applies, or the named one if it can run here
    (EngineError naming the path and why not, otherwise)."""
    if path not in PATH_NAMES:
        raise EngineError(f"path={path!r} is not allowed: use one of {', '.join(PATH_NAMES)}")
    if path == "auto":
        return next(row for row in PATH_TABLE if row.auto_when(situation))
    row = _ROWS[path]
    why = row.refuse(situation)
    if why is not None:
        raise EngineError(f"path={path!r} is not allowed {why}")
    return row
