"""Synthetic sequence tasks with known optimal losses, registered by name in ``TASKS``.

>>> sorted(TASKS)
['adding', 'copy', 'echo', 'echo_nochain', 'influence', 'language']
>>> task = make_task("copy", m=5)
>>> task.loss, task.input_size, task.output_size, task.references(None)["optimal"]
('ce', 6, 6, 0.0)
>>> make_task("nope")
Traceback (most recent call last):
...
tbptt_bench.tasks.base.TaskError: task='nope' is not allowed: known tasks are echo, copy, adding, influence, language, echo_nochain
"""

from __future__ import annotations

import dataclasses
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
]

TASKS: dict[str, type[Task]] = {
    "echo": EchoTask,
    "copy": CopyTask,
    "adding": AddingTask,
    "influence": InfluenceTask,
    "language": LanguageTask,
    "echo_nochain": EchoNoChainTask,
}


def make_task(name: str, **params: Any) -> Task:
    """Build a task by name (one of ``TASKS``) from its generator parameters.

    Unknown names and unknown parameters raise ``TaskError`` naming what is allowed; bad
    values raise it from the task's own checks.
    """
    if not isinstance(name, str) or name not in TASKS:
        raise TaskError(f"task={name!r} is not allowed: known tasks are {', '.join(TASKS)}")
    cls = TASKS[name]
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TaskError(
            f"parameter {unknown[0]}={params[unknown[0]]!r} of task {name!r} is not allowed: "
            f"known parameters are {', '.join(allowed)}"
        )
    return cls(**params)
