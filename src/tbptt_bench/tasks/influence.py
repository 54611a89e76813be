"""UORO's influence-balancing task (Tallec & Ollivier 2017): constant inputs, a model with one parameter.

The model is ``models.InfluenceBalancingRNN`` (cell "influence"): s_t = A s_{t-1} + theta u x_t,
A = 0.5 I + 0.5 (ones on the superdiagonal), u = (+1 x n_plus, -1 x (n - n_plus)), s_0 = ones,
output s_t^1. The stream is x = ones (T, B, 1), y = ones (T, B, 1), loss "mse". theta's
short-term influence on s^1 is +u_1 but its long-term one is 2 sum(u), of the other sign:
short truncations push theta the wrong way.

Fixed point under x = 1: s* = theta (I - A)^{-1} u = 2 theta (I - N)^{-1} u, N the shift, so
s*^1 = 2 theta sum(u) = 2 theta (2 n_plus - n); zero long-run loss at
theta* = 1 / (2 (2 n_plus - n)) (``optimal_theta``), which exists when 2 n_plus != n.

``input_noise`` sigma > 0 makes x_t = 1 + sigma eps_t (eps ~ N(0, 1)) while y stays 1: then the
streams differ by seed (training by seed and epoch, validation by seed) and several seeds are
several problems; sigma = 0 (default) is the paper's noiseless task, the same for every seed.

Reference lines (MSE per step) are for the metric the harness reports: the mean loss over the
validation stream, evaluated from the model's initial state s_0 = ones with the state carried
over the whole stream. s_t^1 = a_t + theta b_t is affine in theta (a_t from s_0, b_t from the
inputs), so the loss is a quadratic in theta, computed exactly in float64:
``no_memory`` = the loss at theta0 (where training starts); ``optimal`` = its minimum over
theta, at theta_hat = -sum (a_t - y_t) b_t / sum b_t^2 (close to theta*, not equal: the
transient from s_0 counts). ``fixed_point_loss`` gives the long-run (infinite stream) values.

>>> task = InfluenceTask()
>>> s = task.make_train(seed=0, epoch=0, batch=2, length=3)
>>> s.x[:, 0, 0].tolist(), s.y[:, 0, 0].tolist()
([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])
>>> optimal_theta(23, 10)
-0.16666666666666666
>>> {k: round(v, 4) for k, v in task.references(task.make_validation(0, 1, 500)).items()}
{'no_memory': 16.7791, 'optimal': 0.2033}
>>> task.fixed_hidden_size, task.model_kwargs()
(23, {'n_plus': 10, 'theta0': 0.5})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, TaskError, check_float, check_int

__all__ = ["InfluenceTask", "best_theta_on_stream", "fixed_point_output", "optimal_theta", "stream_loss"]


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


def _affine_outputs(x: np.ndarray, n: int, n_plus: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each (T, B): s_t^1 = a_t + theta b_t for the system run from s_0 = ones on inputs x (T, B)."""
    u = np.concatenate([np.ones(n_plus), -np.ones(n - n_plus)])
    a_state = np.ones((x.shape[1], n))
    b_state = np.zeros((x.shape[1], n))
    a, b = np.empty(x.shape), np.empty(x.shape)
    for t in range(x.shape[0]):
        # A s = 0.5 s + 0.5 (s shifted up by one coordinate): the superdiagonal pulls s^{i+1} into s^i.
        a_state = 0.5 * a_state + 0.5 * np.pad(a_state[:, 1:], ((0, 0), (0, 1)))
        b_state = 0.5 * b_state + 0.5 * np.pad(b_state[:, 1:], ((0, 0), (0, 1))) + x[t][:, None] * u
        a[t], b[t] = a_state[:, 0], b_state[:, 0]
    return a, b


def stream_loss(theta: float, x: np.ndarray, y: np.ndarray, n: int = 23, n_plus: int = 10) -> float:
    """Mean of (s_t^1 - y_t)^2 over a stream (x, y: (T, B)) run from s_0 = ones with a fixed theta."""
    a, b = _affine_outputs(np.asarray(x, dtype=np.float64), n, n_plus)
    return float(np.mean((a + theta * b - np.asarray(y, dtype=np.float64)) ** 2))


def best_theta_on_stream(x: np.ndarray, y: np.ndarray, n: int = 23, n_plus: int = 10) -> tuple[float, float]:
    """(theta_hat, loss): the exact minimiser over theta of ``stream_loss`` and its value (a quadratic)."""
    a, b = _affine_outputs(np.asarray(x, dtype=np.float64), n, n_plus)
    r = a - np.asarray(y, dtype=np.float64)
    theta = -float(np.sum(r * b) / np.sum(b * b))
    return theta, float(np.mean((r + theta * b) ** 2))


@dataclass(frozen=True)
class InfluenceTask(Task):
    """Constant ones in and out; n, n_plus and theta0 configure the required influence model."""

    n: int = 23
    n_plus: int = 10
    theta0: float = 0.5
    input_noise: float = 0.0

    name: ClassVar[str] = "influence"
    smoke_params: ClassVar[dict[str, Any]] = {}  # sizes for a seconds-long test
    loss: ClassVar[str] = "mse"
    required_cell: ClassVar[str | None] = "influence"
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "loss at theta0 on the validation stream from s_0 = ones (where training starts)",
        "optimal": "exact minimum over theta of the loss on the validation stream from s_0 = ones",
    }

    def __post_init__(self) -> None:
        _check(self.n, self.n_plus)
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "n_plus", int(self.n_plus))
        object.__setattr__(self, "theta0", check_float("theta0", self.theta0))
        object.__setattr__(self, "input_noise", check_float("input_noise", self.input_noise, 0.0))

    @property
    def deterministic(self) -> bool:  # type: ignore[override]
        """Without input noise every stream is ones in, ones out."""
        return self.input_noise == 0.0

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
        if self.input_noise == 0.0:
            return Stream(ones, ones.clone())
        noise = rng.standard_normal((length, batch, 1)).astype(np.float32)
        return Stream(ones + self.input_noise * torch.from_numpy(noise), ones)

    def references(self, validation: Stream) -> dict[str, float]:
        """Reference lines in MSE per step on ``validation``, from s_0 = ones (exact, float64)."""
        x = validation.x[..., 0].double().numpy()
        y = validation.y[..., 0].double().numpy()
        _, best = best_theta_on_stream(x, y, self.n, self.n_plus)
        start = stream_loss(self.theta0, x, y, self.n, self.n_plus)
        return {"no_memory": start, "optimal": min(best, start)}

    def fixed_point_loss(self, theta: float) -> float:
        """Long-run loss per step at ``theta`` without noise: (s*^1(theta) - 1)^2 (16 at theta0 = 0.5)."""
        return (fixed_point_output(theta, self.n, self.n_plus) - 1.0) ** 2
