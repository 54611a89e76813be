"""r2rt's binary echo task: Y_t ~ Bern(p_t), p_t = base + sum_i effects_i [X_{t - lags_i} = 1].

X_t ~ Bern(0.5) i.i.d.; the input is one-hot(X_t) (D = 2), the target Y_t is a class index
(2 classes, loss "ce"). With the defaults, p = 0.5, 1.0, 0.25, 0.75 for
(X_{t-3}, X_{t-8}) = (0,0), (1,0), (0,1), (1,1). Every row draws max(lags) extra X's before
its first step, so every Y_t is defined.

Reference lines (nats per step), from the parameters: ``no_memory`` = entropy of Y's
marginal; ``partial`` = expected entropy knowing only the shortest lag; ``optimal`` =
expected entropy knowing all lags. Defaults: 0.6615632 / 0.5191667 / 0.4544544 (r2rt).

>>> task = EchoTask()
>>> s = task.make_train(seed=0, epoch=0, batch=1, length=10)
>>> s.x[:, 0].argmax(-1).tolist()      # X_1..X_10 of row 0
[0, 1, 1, 1, 1, 1, 1, 1, 1, 1]
>>> s.y[:, 0].tolist()                 # Y_1..Y_10
[0, 0, 1, 0, 1, 1, 1, 1, 1, 1]
>>> {k: round(v, 7) for k, v in task.references(s).items()}
{'no_memory': 0.6615632, 'partial': 0.5191667, 'optimal': 0.4544544}
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, TaskError, check_float, check_int, one_hot

__all__ = ["EchoNoChainTask", "EchoTask", "binary_entropy", "min_learning_window"]

_MAX_LAGS = 16


def min_learning_window(lags: tuple[int, ...] | list[int]) -> int:
    """The smallest TF-style window k from which every lag can be learned, by the chaining argument.

    A loss at step t backpropagated d steps traverses the cells t-d+1..t, so the input weight
    sees x_{t-d+1}: a lag l is learned *directly* when the window's deepest loss reaches it,
    l <= k - 1. A lag is also learned by *chaining* when the state at t-k already carries the
    bit it needs: a network that predicts from lag l' keeps X at lags 0..l' in its state, so
    h_{t-k} holds X_{t-k-l'} and the gradient from t teaches it to carry that bit k more steps:
    l <= l' + k for an already learned l'. Iterate until nothing new is learned. r2rt's
    (3, 8): k = 5 learns 3 directly and 8 = 3 + 5 by chaining. (1, 9): 9 <= 1 + k needs k >= 8.

    >>> min_learning_window((3, 8)), min_learning_window((1, 9)), min_learning_window((8,))
    (5, 8, 9)
    """
    todo = sorted(int(v) for v in lags)
    for k in range(2, max(todo) + 2):
        learned: list[int] = []
        grew = True
        while grew:
            grew = False
            for lag in todo:
                if lag not in learned and (lag <= k - 1 or any(lag <= short + k for short in learned)):
                    learned.append(lag)
                    grew = True
        if len(learned) == len(todo):
            return k
    return max(todo) + 1  # unreachable: k = max lag + 1 learns every lag directly


def binary_entropy(p: float) -> float:
    """H(Bern(p)) in nats, with 0 log 0 = 0. ``binary_entropy(0.5) == log 2``."""
    return -sum(q * math.log(q) for q in (p, 1.0 - p) if q > 0.0)


@dataclass(frozen=True)
class EchoTask(Task):
    """Echo of past bits: lags (steps back), effects (added to p when that bit is 1), base p."""

    lags: tuple[int, ...] = (3, 8)
    effects: tuple[float, ...] = (0.5, -0.25)
    base: float = 0.5

    name: ClassVar[str] = "echo"
    smoke_params: ClassVar[dict[str, Any]] = {}  # sizes for a seconds-long test
    loss: ClassVar[str] = "ce"
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "entropy of Y's marginal: a predictor that remembers nothing",
        "partial": "expected entropy of Y knowing only the shortest lag's bit",
        "optimal": "expected entropy of Y knowing every lagged bit (Bayes predictor)",
    }

    def __post_init__(self) -> None:
        for field in ("lags", "effects"):
            v = getattr(self, field)
            if not isinstance(v, (tuple, list)) or not 1 <= len(v) <= _MAX_LAGS:
                raise TaskError(
                    f"{field}={v!r} is not allowed: {field} must be a list of 1 to {_MAX_LAGS} numbers"
                )
        lags = tuple(check_int("lag", v, 1) for v in self.lags)
        effects = tuple(check_float("effect", v) for v in self.effects)
        if len(set(lags)) != len(lags):
            raise TaskError(f"lags={self.lags!r} is not allowed: lags must be distinct")
        if len(lags) != len(effects):
            raise TaskError(
                f"effects={self.effects!r} is not allowed: give one effect per lag ({len(lags)} lags)"
            )
        base = check_float("base", self.base, 0.0, 1.0)
        object.__setattr__(self, "lags", lags)
        object.__setattr__(self, "effects", effects)
        object.__setattr__(self, "base", base)
        for bits, p in self.cell_probabilities().items():
            if not 0.0 <= p <= 1.0:
                raise TaskError(
                    f"effects={effects!r} is not allowed: p = {p:g} for lagged bits {bits} "
                    "lies outside [0, 1]"
                )

    @property
    def input_size(self) -> int:
        return 2

    @property
    def output_size(self) -> int:
        return 2

    def cell_probabilities(self) -> dict[tuple[int, ...], float]:
        """P(Y_t = 1) for every value of the lagged bits (ordered as ``lags``)."""
        return {
            bits: self.base + sum(e for e, b in zip(self.effects, bits) if b)
            for bits in itertools.product((0, 1), repeat=len(self.lags))
        }

    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        pad = max(self.lags)
        X = rng.integers(0, 2, size=(length + pad, batch), dtype=np.int64)
        p = np.full((length, batch), self.base)
        for lag, effect in zip(self.lags, self.effects):
            p += effect * X[pad - lag : pad - lag + length]
        Y = (rng.random((length, batch)) < p).astype(np.int64)
        return Stream(one_hot(X[pad:], 2), torch.from_numpy(Y))

    def references(self, validation: Stream | None = None) -> dict[str, float]:
        """Reference lines in nats per step (from the parameters; the stream is not needed)."""
        cells = self.cell_probabilities()  # every lagged-bit pattern has probability 2^-k
        optimal = sum(map(binary_entropy, cells.values())) / len(cells)
        no_memory = binary_entropy(sum(cells.values()) / len(cells))
        refs = {"no_memory": no_memory}
        if len(self.lags) > 1:
            i = self.lags.index(min(self.lags))
            given = [np.mean([p for bits, p in cells.items() if bits[i] == b]) for b in (0, 1)]
            refs["partial"] = sum(binary_entropy(float(q)) for q in given) / 2
        refs["optimal"] = optimal
        return refs


@dataclass(frozen=True)
class EchoNoChainTask(EchoTask):
    """The echo task with lags (1, 9): the long lag cannot be reached by chaining through short windows.

    Same effects and base as r2rt's task, so the same reference lines (0.6616 / 0.5192 / 0.4545
    nats), but with lags (1, 9) the chaining route (see ``min_learning_window``) needs a window
    of k >= 8 (9 <= 1 + k), and a direct route k >= 10. TF-style(5) can learn the lag-1 line
    only; a window of 10 or more can reach the both-lags line. r2rt's (3, 8) lets TF-style(5)
    reach it by 8 = 3 + 5.

    >>> task = EchoNoChainTask()
    >>> task.lags, min_learning_window(task.lags)
    ((1, 9), 8)
    >>> {k: round(v, 7) for k, v in task.references().items()}
    {'no_memory': 0.6615632, 'partial': 0.5191667, 'optimal': 0.4544544}
    """

    lags: tuple[int, ...] = (1, 9)

    name: ClassVar[str] = "echo_nochain"
