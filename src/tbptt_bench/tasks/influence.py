"""UORO's influence-balancing task (Tallec & Ollivier 2017): constant inputs, a model with one parameter.

The model is ``models.InfluenceBalancingRNN`` (cell "influence"): s_t = A s_{t-1} + theta u x_t,
A = 0.5 I + 0.5 (ones on the superdiagonal), u = (+1 x n_plus, -1 x (n - n_plus)), s_0 = ones,
output s_t^1. The stream is x = ones (T, B, 1), y = ones (T, B, 1), loss "mse". theta's
short-term influence on s^1 is +u_1 but its long-term one is 2 sum(u), of the other sign:
short truncations push theta the wrong way.

Fixed point under x = 1: s* = theta (I - A)^{-1} u = 2 theta (I - N)^{-1} u, N the shift, so
s*^1 = 2 theta sum(u) = 2 theta (2 n_plus - n). Reference lines (MSE per step):
``optimal`` = 0 at theta* = 1 / (2 (2 n_plus - n)) (``optimal_theta``), which exists when
2 n_plus != n; ``no_memory`` = (s*^1(theta0) - 1)^2, the loss where training starts.

>>> task = InfluenceTask()
>>> s = task.make_train(seed=0, epoch=0, batch=2, length=3)
>>> s.x[:, 0, 0].tolist(), s.y[:, 0, 0].tolist()
([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
>>> optimal_theta(23, 10)
-0.16666666666666666
>>> task.references(s)
{'no_memory': 16.0, 'optimal': 0.0}
>>> task.fixed_hidden_size, task.model_kwargs()
(23, {'n_plus': 10, 'theta0': 0.5})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, TaskError, check_float, check_int

__all__ = ["InfluenceTask", "fixed_point_output", "optimal_theta"]


def _check(n: int, n_plus: int) -> None:
    check_int("n", n, 1)
    check_int("n_plus", n_plus, 0, n)
    if 2 * n_plus == n:
        raise TaskError(
            f"n_plus={n_plus} with n={n} is not allowed: 2 n_plus = n makes s*^1 = 0 for every theta"
        )


def fixed_point_output(theta: float, n: int = 23, n_plus: int = 10) -> float:
    """s*^1, the first coordinate of the fixed point of s = A s + theta u: 2 theta (2 n_plus - n)."""
    check_int("n", n, 1)
    check_int("n_plus", n_plus, 0, n)
    return 2.0 * float(theta) * (2 * n_plus - n)


def optimal_theta(n: int = 23, n_plus: int = 10) -> float:
    """theta* with s*^1(theta*) = 1, i.e. zero loss at the fixed point. ``optimal_theta(23, 10) == -1/6``."""
    _check(n, n_plus)
    return 1.0 / (2.0 * (2 * n_plus - n))


@dataclass(frozen=True)
class InfluenceTask(Task):
    """Constant ones in and out; n, n_plus and theta0 configure the required influence model."""

    n: int = 23
    n_plus: int = 10
    theta0: float = 0.5

    name: ClassVar[str] = "influence"
    smoke_params: ClassVar[dict[str, Any]] = {}  # sizes for a seconds-long test
    loss: ClassVar[str] = "mse"
    required_cell: ClassVar[str | None] = "influence"
    deterministic: ClassVar[bool] = True
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "loss at the fixed point of the initial theta0: (s*^1(theta0) - 1)^2",
        "optimal": "0: reached at the fixed point of theta* = 1 / (2 (2 n_plus - n))",
    }

    def __post_init__(self) -> None:
        _check(self.n, self.n_plus)
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "n_plus", int(self.n_plus))
        object.__setattr__(self, "theta0", check_float("theta0", self.theta0))

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return 1

    @property
    def fixed_hidden_size(self) -> int | None:
        return self.n

    def model_kwargs(self) -> dict[str, Any]:
        return {"n_plus": self.n_plus, "theta0": self.theta0}

    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        ones = torch.ones(length, batch, 1)
        return Stream(ones, ones.clone())

    def references(self, validation: Stream | None = None) -> dict[str, float]:
        """Reference lines in MSE per step (closed forms from the parameters)."""
        s1 = fixed_point_output(self.theta0, self.n, self.n_plus)
        return {"no_memory": (s1 - 1.0) ** 2, "optimal": 0.0}
