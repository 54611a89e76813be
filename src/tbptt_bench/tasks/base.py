"""The task contract: a frozen dataclass of generator parameters that makes streams and knows its optimum.

A task draws a fresh training stream per epoch (deterministic from ``(seed, epoch)``), one
held-out validation stream per seed, and the reference lines of its loss (``"optimal"``
always; ``"partial"`` and ``"no_memory"`` where meaningful), computed from its parameters —
never typed in. Units: nats per step for ``loss == "ce"``, squared error per step and output
for ``loss == "mse"``.

>>> from tbptt_bench.tasks import make_task
>>> task = make_task("echo")
>>> s = task.make_train(seed=0, epoch=0, batch=3, length=7)
>>> tuple(s.x.shape), tuple(s.y.shape), s.x.dtype, s.y.dtype
((7, 3, 2), (7, 3), torch.float32, torch.int64)
>>> round(task.references(task.make_validation(seed=0, batch=2, length=5))["optimal"], 7)
0.4544544

Adding a task: one module with a frozen dataclass subclassing ``Task`` (validate in
``__post_init__``, implement ``input_size``, ``output_size``, ``_generate`` and
``references``), one line in ``TASKS`` (``tasks/__init__.py``); the parametrized tests pick
it up.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .. import errors
from ..errors import BenchError

__all__ = ["Stream", "Task", "TaskError", "check_float", "check_int", "one_hot"]

# Stream tags mixed into the seed so that training and validation never share a stream.
_TRAIN, _VALIDATION = 0, 1


class TaskError(BenchError):
    """A task was asked for with parameters (or inputs) it does not allow."""


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` if it is an int in [lo, hi], else a one-line TaskError naming it."""
    return errors.check_int(name, value, lo, hi, error=TaskError)


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None) -> float:
    """``float(value)`` if it is a finite number in [lo, hi], else a one-line TaskError naming it."""
    return errors.check_float(name, value, lo, hi, error=TaskError)


def one_hot(idx: np.ndarray, depth: int) -> torch.Tensor:
    """float32 one-hot of an integer array: shape ``idx.shape + (depth,)``.

    >>> one_hot(np.array([[0, 2]]), 3).tolist()
    [[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]]
    """
    out = np.zeros(idx.size * depth, dtype=np.float32)
    out[np.arange(0, idx.size * depth, depth) + idx.ravel()] = 1.0  # flat scatter: the fastest numpy way
    return torch.from_numpy(out.reshape(idx.shape + (depth,)))


@dataclass(frozen=True)
class Stream:
    """One stream cut into B parallel rows of T steps.

    ``x``: (T, B, D) float32 inputs. ``y``: (T, B) int64 class indices for loss "ce",
    (T, B, Q) float32 targets for loss "mse". Row b is ``x[:, b]``; the engine carries the
    hidden state along a row.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if (
            self.x.dim() != 3
            or self.y.dim() not in (2, 3)
            or tuple(self.y.shape[:2]) != tuple(self.x.shape[:2])
        ):
            raise TaskError(
                f"stream shapes x={tuple(self.x.shape)}, y={tuple(self.y.shape)} are not allowed: "
                "x must be (T, B, D) and y (T, B) or (T, B, Q)"
            )

    @property
    def length(self) -> int:
        """T, steps per row."""
        return int(self.x.shape[0])

    @property
    def batch(self) -> int:
        """B, number of rows."""
        return int(self.x.shape[1])

    def to(self, device: torch.device | str) -> Stream:
        """The same stream on ``device``."""
        return Stream(self.x.to(device), self.y.to(device))


class Task(abc.ABC):
    """Base of every task. Subclasses are frozen dataclasses of their generator parameters."""

    name: ClassVar[str]
    loss: ClassVar[str]  # "ce" or "mse"
    required_cell: ClassVar[str | None] = None  # a models.MODELS key the task needs, if any
    deterministic: ClassVar[bool] = False  # True: every stream is the same (nothing random)
    reference_notes: ClassVar[dict[str, str]]
    #: Generator parameters that keep a test or smoke run to seconds; the registry-driven tests
    #: build every task with ``make_task(name, **cls.smoke_params)``.
    smoke_params: ClassVar[dict[str, Any]] = {}

    # -- sizes ------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_size(self) -> int:
        """D, features per step."""

    @property
    @abc.abstractmethod
    def output_size(self) -> int:
        """Q: number of classes for "ce", outputs per step for "mse"."""

    @property
    def fixed_hidden_size(self) -> int | None:
        """The hidden size the task's required cell must have (None: the harness chooses)."""
        return None

    def model_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments for ``models.make_model`` that the task fixes (default none)."""
        return {}

    # -- streams ----------------------------------------------------------------------------
    def make_train(self, seed: int, epoch: int, batch: int, length: int) -> Stream:
        """The training stream of ``epoch``: B rows of ``length`` steps, fixed by (seed, epoch)."""
        check_int("epoch", epoch, 0)
        return self._generate(
            self._rng(seed, _TRAIN, epoch), check_int("batch", batch, 1), check_int("length", length, 1)
        )

    def make_validation(self, seed: int, batch: int, length: int) -> Stream:
        """The held-out stream of ``seed`` (drawn from a seed stream no training epoch uses)."""
        return self._generate(
            self._rng(seed, _VALIDATION, 0), check_int("batch", batch, 1), check_int("length", length, 1)
        )

    @staticmethod
    def _rng(seed: int, tag: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([check_int("seed", seed, 0), tag, epoch]))

    @abc.abstractmethod
    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        """Draw B independent rows of ``length`` steps with ``rng``."""

    # -- references -------------------------------------------------------------------------
    @abc.abstractmethod
    def references(self, validation: Stream) -> dict[str, float]:
        """Reference losses in the task's loss units; keys among no_memory, partial, optimal."""

    # -- config -----------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        """The generator parameters as a JSON-ready dict; ``make_task(name, **params())`` rebuilds the task."""
        out = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out
