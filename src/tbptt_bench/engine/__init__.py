"""The engine layer: train one stream under one style, exactly as docs/semantics.md defines it.

``train_stream`` is the entry point; ``train.py`` checks, selects and hands over, ``checks.py``
refuses bad input, ``chunking.py`` plans update times and truncation points, ``counting.py``
counts the steps each update ran and backpropagated, ``elman_backward.py`` is the Elman cell's
hand-written backward, and ``paths/`` holds the implementations behind one contract
(``paths/base.py``: ``Path``, ``PathInputs``) chosen by ``paths/selection.py``'s ``PATH_TABLE``.
This package imports nothing above it (runs, report, cli).
"""

from .records import EngineError, TrainResult, UpdateRecord
from .train import evaluate_stream, train_stream

__all__ = ["EngineError", "TrainResult", "UpdateRecord", "evaluate_stream", "train_stream"]
