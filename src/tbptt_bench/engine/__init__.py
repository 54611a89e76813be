"""The engine layer: train one stream under one style, exactly as docs/semantics.md defines it.

``train_stream`` is the entry point; ``train.py`` holds the loop, ``chunking.py`` the schedule of
update times and truncation points, ``paths/`` the implementations that compute one update
(autograd for any cell, a hand-written Elman backward, and the static/CUDA-graph Elman update).
This package imports nothing above it (runs, report, cli).
"""

from .train import EngineError, TrainResult, UpdateRecord, evaluate_stream, train_stream

__all__ = ["EngineError", "TrainResult", "UpdateRecord", "evaluate_stream", "train_stream"]
