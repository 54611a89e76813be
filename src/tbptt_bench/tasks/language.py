"""A synthetic language: next-token prediction on a random hidden Markov source with known entropy.

The hidden state is a pair (topic z, fast state s). Fast states follow a sparse chain: each
state reaches ``branching`` next states (always including s + 1 mod n_states, so the chain
is irreducible) with Dirichlet(1) weights. The topic is slow: it stays with probability
1 - ``switch_prob`` per step, else jumps to another topic uniformly. Every (topic, state)
emits a word from its own Dirichlet(``concentration``) table over ``vocab`` words, so a
word says a little about the topic and evidence must be gathered over many steps: the
long-range structure a truncated gradient can miss. The source is drawn from
``source_seed`` alone; rows are independent runs started from its stationary distribution.
Stream: x_t = one-hot(w_t) (D = vocab), y_t = w_{t+1} (vocab classes, loss "ce").

Reference lines (nats per token), exact on the validation stream it is given:
``optimal`` = the Bayes predictor p(w_{t+1} | w_1..w_t) by the scaled forward algorithm
(float64); ``partial`` = the exact bigram p(w_{t+1} | w_t) of the stationary source;
``no_memory`` = the stationary unigram p(w_{t+1}).

>>> task = LanguageTask(vocab=8, n_states=4, n_topics=2)
>>> s = task.make_train(seed=0, epoch=0, batch=1, length=10)
>>> s.x[:, 0].argmax(-1).tolist()      # w_1..w_10
[3, 4, 1, 5, 0, 5, 5, 5, 2, 0]
>>> s.y[:, 0].tolist()                 # w_2..w_11
[4, 1, 5, 0, 5, 5, 5, 2, 0, 0]
>>> refs = task.references(task.make_validation(seed=0, batch=16, length=200))
>>> {k: round(v, 3) for k, v in refs.items()}      # nats per token
{'no_memory': 1.637, 'partial': 1.362, 'optimal': 1.24}
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from .base import Stream, Task, TaskError, check_float, check_int, one_hot

__all__ = ["HMMSource", "LanguageTask", "log_likelihood", "predictive_logprobs", "sample_categorical"]


@dataclass(frozen=True, eq=False)
class HMMSource:
    """A hidden Markov source: initial/stationary pi (K,), transitions P (K, K), emissions E (K, V)."""

    pi: np.ndarray
    P: np.ndarray
    E: np.ndarray

    @property
    def unigram(self) -> np.ndarray:
        """Stationary word marginal mu (V,), assuming pi is stationary."""
        return self.pi @ self.E

    @property
    def bigram(self) -> np.ndarray:
        """Stationary p(w' | w) (V, V): sum_{h,h'} pi(h) E(h,w) P(h,h') E(h',w') / mu(w)."""
        joint = (self.pi[:, None] * self.E).T @ self.P @ self.E
        return joint / joint.sum(axis=1, keepdims=True)


def sample_categorical(cum: np.ndarray, last: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws from the rows of a probability table, vectorised over draws.

    ``cum`` is the flat array ``k + cumsum(table[k])`` over rows k (each row ends at k + 1),
    ``last[k]`` the last column of row k with positive probability, ``rows`` the row of each
    draw and ``u`` its U[0, 1) number. Returns the column of each draw.
    """
    width = cum.size // last.size
    col = np.searchsorted(cum, rows + u, side="right") - rows * width
    return np.minimum(col, last[rows])  # guards k + u rounding up to k + 1


def _cdf(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cum = np.cumsum(table, axis=1)
    cum[:, -1] = 1.0
    last = table.shape[1] - 1 - np.argmax(table[:, ::-1] > 0, axis=1)
    return (cum + np.arange(len(table))[:, None]).ravel(), last


def predictive_logprobs(pi: np.ndarray, P: np.ndarray, E: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(w_{t+1} | w_1..w_t) for t = 1..T-1 of every row: the scaled forward algorithm in float64.

    ``tokens`` is (T, B) int; returns (T - 1, B). The filtered posterior over the hidden state
    is renormalised every step, so long rows neither underflow nor overflow.
    """
    ET = np.ascontiguousarray(np.asarray(E, dtype=np.float64).T)
    P = np.asarray(P, dtype=np.float64)
    alpha = np.asarray(pi, dtype=np.float64)[None, :] * ET[tokens[0]]
    alpha /= _positive(alpha.sum(axis=1, keepdims=True))
    out = np.empty((tokens.shape[0] - 1, tokens.shape[1]))
    for t in range(1, tokens.shape[0]):
        joint = (alpha @ P) * ET[tokens[t]]
        norm = _positive(joint.sum(axis=1))
        out[t - 1] = np.log(norm)
        alpha = joint / norm[:, None]
    return out


def log_likelihood(pi: np.ndarray, P: np.ndarray, E: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """log p(w_1..w_T) of every row (B,), in nats, by the forward algorithm."""
    first = np.log(
        _positive(np.asarray(pi, dtype=np.float64) @ np.asarray(E, dtype=np.float64)[:, tokens[0]])
    )
    return first + predictive_logprobs(pi, P, E, tokens).sum(axis=0)


def _positive(a: np.ndarray) -> np.ndarray:
    if not np.all(a > 0):
        raise TaskError("token stream is not allowed: it has probability 0 under this source")
    return a


@dataclass(frozen=True)
class LanguageTask(Task):
    """Next word of a random HMM source with sparse fast states and slowly switching topics."""

    vocab: int = 32
    n_states: int = 16
    branching: int = 3
    n_topics: int = 4
    switch_prob: float = 0.01
    concentration: float = 0.1
    source_seed: int = 0

    name: ClassVar[str] = "language"
    smoke_params: ClassVar[dict[str, Any]] = {
        "vocab": 6,
        "n_states": 4,
        "n_topics": 2,
    }  # sizes for a seconds-long test
    loss: ClassVar[str] = "ce"
    reference_notes: ClassVar[dict[str, str]] = {
        "no_memory": "stationary unigram predictor p(w_{t+1}) on the validation stream",
        "partial": "exact bigram predictor p(w_{t+1} | w_t) of the source on the validation stream",
        "optimal": "Bayes predictor p(w_{t+1} | w_1..w_t) (forward algorithm) on the validation stream",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "vocab", check_int("vocab", self.vocab, 2))
        object.__setattr__(self, "n_states", check_int("n_states", self.n_states, 1))
        object.__setattr__(self, "branching", check_int("branching", self.branching, 1, self.n_states))
        object.__setattr__(self, "n_topics", check_int("n_topics", self.n_topics, 1))
        object.__setattr__(self, "switch_prob", check_float("switch_prob", self.switch_prob, 0.0, 1.0))
        object.__setattr__(self, "concentration", check_float("concentration", self.concentration, 1e-3))
        object.__setattr__(self, "source_seed", check_int("source_seed", self.source_seed, 0))
        if self.n_states * self.n_topics > 4096:
            raise TaskError(
                f"n_states * n_topics = {self.n_states * self.n_topics} is not allowed: at most 4096 hidden states"
            )

    @property
    def input_size(self) -> int:
        return self.vocab

    @property
    def output_size(self) -> int:
        return self.vocab

    def source(self) -> HMMSource:
        """The hidden Markov source, drawn from ``source_seed`` (cached per parameter set)."""
        return _build_source(self)

    def _generate(self, rng: np.random.Generator, batch: int, length: int) -> Stream:
        # The transition matrix factorises, P = kron(topic chain, fast chain), so the slow topic
        # path is drawn for all steps at once and only the sparse fast chain needs a time loop.
        f, S, Z = _factors(self), self.n_states, self.n_topics
        n = length + 1
        u_fast, u_word = rng.random((n, batch)), rng.random((n, batch))
        z0 = rng.integers(0, Z, size=batch)
        jumps = (rng.random((n - 1, batch)) < self.switch_prob) * rng.integers(
            1, max(Z, 2), size=(n - 1, batch)
        )
        z = (z0 + np.concatenate([np.zeros((1, batch), np.int64), np.cumsum(jumps, axis=0)])) % Z
        s = np.empty((n, batch), dtype=np.int64)
        s[0] = sample_categorical(*f.pi_fast_cdf, np.zeros(batch, dtype=np.int64), u_fast[0])
        last = f.succ.shape[1] - 1
        for t in range(1, n):
            j = np.minimum((u_fast[t, :, None] >= f.succ_cdf[s[t - 1]]).sum(axis=1), last)
            s[t] = f.succ[s[t - 1], j]
        w = sample_categorical(*f.emit_cdf, z * S + s, u_word)
        return Stream(one_hot(w[:-1], self.vocab), torch.from_numpy(np.ascontiguousarray(w[1:])))

    def references(self, validation: Stream) -> dict[str, float]:
        """Reference lines in nats per token, exact on ``validation`` (a stream of this task)."""
        w = self._tokens(validation)
        src = self.source()
        optimal = -predictive_logprobs(src.pi, src.P, src.E, w).mean()
        partial = -np.log(src.bigram[w[:-1], w[1:]]).mean()
        no_memory = -np.log(src.unigram[w[1:]]).mean()
        return {"no_memory": float(no_memory), "partial": float(partial), "optimal": float(optimal)}

    def _tokens(self, stream: Stream) -> np.ndarray:
        """w_1..w_{T+1} of every row, (T + 1, B), read back from a stream of this task."""
        if stream.x.shape[2] != self.vocab or stream.y.dim() != 2:
            raise TaskError(
                f"stream with x {tuple(stream.x.shape)}, y {tuple(stream.y.shape)} is not allowed: "
                f"expected x (T, B, {self.vocab}) and y (T, B) of this task"
            )
        x = stream.x.detach().cpu().argmax(-1).numpy()
        y = stream.y.detach().cpu().numpy().astype(np.int64)
        if not np.array_equal(x[1:], y[:-1]):
            raise TaskError("stream is not allowed: y_t must equal the word x_{t+1} (a stream of this task)")
        return np.concatenate([x[:1], y], axis=0)


@dataclass(frozen=True, eq=False)
class _Factors:
    """The source in factored form, for sampling: P = kron(topic, fast), E rows z * S + s."""

    fast: np.ndarray  # (S, S) fast-state transitions
    topic: np.ndarray  # (Z, Z) topic transitions
    emit: np.ndarray  # (Z * S, V) emissions
    pi_fast: np.ndarray  # (S,) stationary fast-state distribution
    succ: np.ndarray  # (S, b) successors of each fast state
    succ_cdf: np.ndarray  # (S, b) their cumulative weights (last = 1)
    pi_fast_cdf: tuple[np.ndarray, np.ndarray]  # sample_categorical tables
    emit_cdf: tuple[np.ndarray, np.ndarray]


@functools.lru_cache(maxsize=16)
def _factors(task: LanguageTask) -> _Factors:
    rng = np.random.default_rng(np.random.SeedSequence([task.source_seed, 0x4C414E47]))
    S, Z, V, b = task.n_states, task.n_topics, task.vocab, task.branching
    succ = np.empty((S, b), dtype=np.int64)
    weights = np.empty((S, b))
    for s in range(S):
        others = np.setdiff1d(np.arange(S), [(s + 1) % S])
        succ[s] = np.concatenate([[(s + 1) % S], rng.choice(others, size=b - 1, replace=False)])
        weights[s] = rng.dirichlet(np.ones(b))
    fast = np.zeros((S, S))
    np.put_along_axis(fast, succ, weights, axis=1)
    topic = np.full((Z, Z), task.switch_prob / max(Z - 1, 1))
    np.fill_diagonal(topic, 1.0 - task.switch_prob if Z > 1 else 1.0)
    emit = rng.dirichlet(np.full(V, task.concentration), size=Z * S)
    # Stationary fast-state distribution: unique, the chain is irreducible (s -> s + 1 always possible).
    A = fast.T - np.eye(S)
    A[-1] = 1.0
    pi_fast = np.clip(np.linalg.solve(A, np.eye(S)[-1]), 0.0, None)
    pi_fast /= pi_fast.sum()
    succ_cdf = np.cumsum(weights, axis=1)
    succ_cdf[:, -1] = 1.0
    return _Factors(fast, topic, emit, pi_fast, succ, succ_cdf, _cdf(pi_fast[None, :]), _cdf(emit))


@functools.lru_cache(maxsize=16)
def _build_source(task: LanguageTask) -> HMMSource:
    f = _factors(task)
    pi = np.kron(np.full(task.n_topics, 1.0 / task.n_topics), f.pi_fast)  # topics: uniform
    return HMMSource(pi=pi, P=np.kron(f.topic, f.fast), E=f.emit)
