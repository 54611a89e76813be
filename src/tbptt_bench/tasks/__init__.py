"""Synthetic sequence tasks with known optimal losses, registered by name in ``TASKS``.

A task outside the package is named ``"package.module:Class"`` (a ``Task`` subclass importable
from ``sys.path``); see docs/extending.md. Every registered task carries ``smoke_params``, the
generator parameters of a seconds-long run, so tests parametrize over ``TASKS`` alone.

>>> sorted(TASKS)
['adding', 'copy', 'echo', 'echo_nochain', 'influence', 'language']
>>> "echo" in TASKS and all(isinstance(cls.smoke_params, dict) for cls in TASKS.values())
True
>>> task = make_task("copy", m=5)
>>> task.loss, task.input_size, task.output_size, task.references(None)["optimal"]
('ce', 6, 6, 0.0)
>>> make_task("nope")
Traceback (most recent call last):
...
tbptt_bench.tasks.base.TaskError: task='nope' is not allowed: known tasks are echo, copy, adding, influence, language, echo_nochain, or 'package.module:Class'
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from .adding import AddingTask
from .base import Stream, Task, TaskError
from .copy import CopyTask
from .echo import EchoNoChainTask, EchoTask
from .influence import InfluenceTask, optimal_theta
from .language import LanguageTask

__all__ = [
    "TASKS",
    "AddingTask",
    "CopyTask",
    "EchoNoChainTask",
    "EchoTask",
    "InfluenceTask",
    "LanguageTask",
    "Stream",
    "Task",
    "TaskError",
    "make_task",
    "optimal_theta",
    "task_class",
]

TASKS: dict[str, type[Task]] = {
    "echo": EchoTask,
    "copy": CopyTask,
    "adding": AddingTask,
    "influence": InfluenceTask,
    "language": LanguageTask,
    "echo_nochain": EchoNoChainTask,
}


def task_class(name: str) -> type[Task]:
    """The task class of ``name``: a ``TASKS`` key, or ``"package.module:Class"`` naming a ``Task``
    subclass importable from ``sys.path`` (``TaskError`` if it is neither)."""
    allowed = f"known tasks are {', '.join(TASKS)}, or 'package.module:Class'"
    if isinstance(name, str) and name in TASKS:
        return TASKS[name]
    if not isinstance(name, str) or name.count(":") != 1:
        raise TaskError(f"task={name!r} is not allowed: {allowed}")
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise TaskError(f"task={name!r} is not allowed: cannot import it ({type(e).__name__}: {e})") from None
    if not (isinstance(cls, type) and issubclass(cls, Task) and dataclasses.is_dataclass(cls)):
        raise TaskError(
            f"task={name!r} is not allowed: it must be a dataclass subclassing tbptt_bench.tasks.Task"
        )
    return cls


def make_task(name: str, **params: Any) -> Task:
    """Build a task by name (``task_class``) from its generator parameters.

    Unknown names and unknown parameters raise ``TaskError`` naming what is allowed; bad
    values raise it from the task's own checks.
    """
    cls = task_class(name)
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TaskError(
            f"parameter {unknown[0]}={params[unknown[0]]!r} of task {name!r} is not allowed: "
            f"known parameters are {', '.join(allowed)}"
        )
    return cls(**params)
