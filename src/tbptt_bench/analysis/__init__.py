"""Gradient-quality analysis: the gradient each style uses on a window, against the exact one.

Sits beside ``runs`` (imports engine, models, tasks, styles and runs.envinfo); the report never
imports it (it reads the study's records).
"""

from .gradient import WindowContributions, realised_depths, style_gradient, window_backprop_steps

__all__ = ["WindowContributions", "realised_depths", "run_study", "style_gradient", "window_backprop_steps"]


def run_study(*args, **kwargs):
    """``study.run_study`` (imported on use: it pulls in the tasks and the run specs)."""
    from .study import run_study as _run

    return _run(*args, **kwargs)
