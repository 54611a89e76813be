"""Task generators: statistics match their definitions, references match independent computations.

Oracles: closed forms checked against Monte-Carlo estimates (with stated sigma bounds), causal
decoders that rebuild every target from the inputs alone, brute-force enumeration over hidden
paths for the forward algorithm, and r2rt's published echo numbers.
"""

from __future__ import annotations

import doctest
import importlib
import itertools
import json
import math
import time

import numpy as np
import pytest
import torch

from tbptt_bench.models import make_model
from tbptt_bench.tasks import TASKS, Stream, Task, TaskError, make_task
from tbptt_bench.tasks.adding import AddingTask
from tbptt_bench.tasks.copy import BLANK, START, CopyTask
from tbptt_bench.tasks.echo import EchoNoChainTask, EchoTask, min_learning_window
from tbptt_bench.tasks.influence import (
    InfluenceTask,
    best_theta_on_stream,
    fixed_point_output,
    optimal_theta,
    stream_loss,
)
from tbptt_bench.tasks.language import LanguageTask, log_likelihood, predictive_logprobs

SIGMAS = 5.0  # every Monte-Carlo comparison: |estimate - truth| <= 5 standard errors


def _tokens(stream: Stream) -> np.ndarray:
    return stream.x.argmax(-1).numpy()


# -- contract, for every registered task -----------------------------------------------------
@pytest.fixture(params=sorted(TASKS))
def task(request) -> Task:
    return make_task(request.param, **TASKS[request.param].smoke_params)  # each task's own small sizes


def test_registry_covers_every_task_module():
    import importlib
    import inspect
    import pkgutil

    import tbptt_bench.tasks as package

    defined = {
        obj
        for info in pkgutil.iter_modules(package.__path__, "tbptt_bench.tasks.")
        for obj in vars(importlib.import_module(info.name)).values()
        if inspect.isclass(obj) and issubclass(obj, Task) and not inspect.isabstract(obj)
    }
    assert defined and defined == set(TASKS.values())  # a task class nobody registered fails here
    for name, cls in TASKS.items():
        assert isinstance(cls.smoke_params, dict) and make_task(name, **cls.smoke_params).name == name
        assert cls.name == name and cls.loss in ("ce", "mse")
        assert (
            set(cls.reference_notes) <= {"no_memory", "partial", "optimal", "predict_zero"}
            and "optimal" in cls.reference_notes
        )


def test_shapes_dtypes_and_class_range(task):
    s = task.make_train(seed=3, epoch=0, batch=5, length=17)
    assert s.x.shape == (17, 5, task.input_size) and s.x.dtype == torch.float32
    assert (s.length, s.batch) == (17, 5)
    if task.loss == "ce":
        assert s.y.shape == (17, 5) and s.y.dtype == torch.int64
        assert 0 <= int(s.y.min()) and int(s.y.max()) < task.output_size
        assert torch.equal(s.x.sum(-1), torch.ones(17, 5))  # every ce task's input is one-hot
    else:
        assert s.y.shape == (17, 5, task.output_size) and s.y.dtype == torch.float32


def test_same_seed_same_stream_other_seed_or_epoch_differs(task):
    def get(seed, epoch):
        return task.make_train(seed=seed, epoch=epoch, batch=4, length=64)

    a, b = get(0, 0), get(0, 0)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    others = [get(1, 0), get(0, 1), task.make_validation(seed=0, batch=4, length=64)]
    assert torch.equal(task.make_validation(0, 4, 64).x, others[-1].x)
    for o in others:
        same = torch.equal(a.x, o.x) and torch.equal(a.y, o.y)
        assert same == task.deterministic  # only the constant influence stream may repeat


def test_validation_differs_from_every_training_epoch(task):
    if task.deterministic:
        v, t = task.make_validation(0, 2, 8), task.make_train(0, 0, 2, 8)
        assert torch.equal(v.x, t.x) and torch.equal(v.y, t.y)
        return
    v = task.make_validation(seed=7, batch=3, length=50)
    for epoch in range(20):
        t = task.make_train(seed=7, epoch=epoch, batch=3, length=50)
        assert not (torch.equal(v.x, t.x) and torch.equal(v.y, t.y))


def test_references_are_ordered_and_described(task):
    refs = task.references(task.make_validation(seed=0, batch=8, length=300))
    assert "optimal" in refs and set(refs) <= set(task.reference_notes)
    assert all(isinstance(v, float) and math.isfinite(v) for v in refs.values())
    chain = [refs[k] for k in ("optimal", "partial", "no_memory", "predict_zero") if k in refs]
    assert chain == sorted(chain) and refs["optimal"] >= 0.0


def test_params_round_trip_through_json(task):
    params = json.loads(json.dumps(task.params()))
    assert make_task(task.name, **params) == task


def test_streams_feed_a_model_of_the_right_size(task):
    cell = task.required_cell or "tanh"
    hidden = task.fixed_hidden_size or 4
    model = make_model(cell, task.input_size, hidden, task.output_size, **task.model_kwargs())
    s = task.make_train(seed=0, epoch=0, batch=2, length=5)
    out, _ = model(s.x)
    assert out.shape == (5, 2, task.output_size)


@pytest.mark.parametrize("module", ["base", "echo", "copy", "adding", "influence", "language", "__init__"])
def test_module_docstring_examples_run(module):
    name = "tbptt_bench.tasks" if module == "__init__" else f"tbptt_bench.tasks.{module}"
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_r2rt_echo_epoch_generates_fast():
    task = EchoTask()
    best = min(_timed(lambda: task.make_train(seed=0, epoch=e, batch=200, length=5000)) for e in range(3))
    assert best < 1.0, f"one r2rt epoch (200 x 5000 steps) took {best:.2f} s"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- bad input ---------------------------------------------------------------------------------
def test_unknown_task_names_the_known_ones():
    with pytest.raises(
        TaskError,
        match=r"task='nope' is not allowed: known tasks are echo, copy, adding, influence, language",
    ):
        make_task("nope")


def test_unknown_parameter_names_the_known_ones():
    with pytest.raises(TaskError, match=r"lagz=\(3, 8\).*known parameters are lags, effects, base"):
        make_task("echo", lagz=(3, 8))


@pytest.mark.parametrize(
    "name, params, named",
    [
        ("echo", {"effects": (0.5, 0.25)}, "effects="),  # p = 1.25 for bits (1, 1)
        ("echo", {"lags": (3, 3)}, "lags="),
        ("echo", {"lags": (3,)}, "effects="),  # one effect per lag
        ("echo", {"lags": (0, 8)}, "lag=0"),
        ("echo", {"lags": "3,8"}, "lags='3,8'"),
        ("echo", {"base": 1.5}, "base=1.5"),
        ("echo", {"base": True}, "base=True"),
        ("copy", {"m": 0}, "m=0"),
        ("copy", {"m": "10"}, "m='10'"),
        ("copy", {"m_min": 5}, "m_max=None"),
        ("copy", {"m_min": 8, "m_max": 5}, "m_min=8"),
        ("copy", {"m": 10, "m_min": 5, "m_max": 10}, "m=10"),
        ("adding", {"segment_length": 1}, "segment_length=1"),
        ("adding", {"segment_length": 2.5}, "segment_length=2.5"),
        ("influence", {"n_plus": 24}, "n_plus=24"),
        ("influence", {"n": 20, "n_plus": 10}, "n_plus=10 with n=20"),
        ("influence", {"theta0": float("nan")}, "theta0=nan"),
        ("language", {"vocab": 1}, "vocab=1"),
        ("language", {"branching": 20}, "branching=20"),
        ("language", {"switch_prob": 1.5}, "switch_prob=1.5"),
        ("language", {"concentration": 0.0}, "concentration=0.0"),
        ("language", {"source_seed": -1}, "source_seed=-1"),
    ],
)
def test_bad_parameters_raise_task_error_naming_the_value(name, params, named):
    with pytest.raises(TaskError, match="is not allowed") as e:
        make_task(name, **params)
    assert named in str(e.value)


@pytest.mark.parametrize(
    "kw, named",
    [
        ({"seed": -1, "epoch": 0, "batch": 2, "length": 3}, "seed=-1"),
        ({"seed": 0, "epoch": 1.0, "batch": 2, "length": 3}, "epoch=1.0"),
        ({"seed": 0, "epoch": 0, "batch": 0, "length": 3}, "batch=0"),
        ({"seed": 0, "epoch": 0, "batch": 2, "length": 0}, "length=0"),
    ],
)
def test_bad_stream_arguments_raise_task_error(kw, named):
    with pytest.raises(TaskError, match=f"^{named} is not allowed"):
        EchoTask().make_train(**kw)


def test_error_messages_are_one_line():
    for name, params in [
        ("echo", {"effects": (0.5, 0.25)}),
        ("copy", {"m_min": 3}),
        ("language", {"vocab": 0}),
    ]:
        with pytest.raises(TaskError) as e:
            make_task(name, **params)
        assert "\n" not in str(e.value)


# -- echo ---------------------------------------------------------------------------------------
def test_echo_references_match_r2rt():
    refs = EchoTask().references()
    assert refs["no_memory"] == pytest.approx(0.6615632, abs=1e-6)
    assert refs["partial"] == pytest.approx(0.5191667, abs=1e-6)
    assert refs["optimal"] == pytest.approx(0.4544544, abs=1e-6)


def test_echo_conditional_probabilities_match_definition():
    # P(Y=1 | X_{t-3}, X_{t-8}) per cell = 0.5, 1.0, 0.25, 0.75, within 5 binomial sigmas.
    s = EchoTask().make_train(seed=11, epoch=0, batch=100, length=2000)
    X, Y = _tokens(s), s.y.numpy()
    x3, x8, y = X[5:-3], X[:-8], Y[8:]
    for (b3, b8), p in {(0, 0): 0.5, (1, 0): 1.0, (0, 1): 0.25, (1, 1): 0.75}.items():
        cell = (x3 == b3) & (x8 == b8)
        n = int(cell.sum())
        freq = y[cell].mean()
        sd = math.sqrt(p * (1 - p) / n)
        assert abs(freq - p) <= SIGMAS * sd + 1e-12, (b3, b8, freq, p)
    assert abs(X.mean() - 0.5) <= SIGMAS * math.sqrt(0.25 / X.size)


def test_echo_references_for_general_lags_match_monte_carlo():
    task = EchoTask(lags=(6, 2, 4), effects=(0.3, -0.2, 0.15), base=0.4)
    refs = task.references()
    s = task.make_train(seed=5, epoch=0, batch=200, length=2500)
    X, Y = _tokens(s).astype(float), s.y.numpy()
    pad = 6
    p = 0.4 + 0.3 * X[pad - 6 : -6] + -0.2 * X[pad - 2 : -2] + 0.15 * X[pad - 4 : -4]  # for steps t >= 6
    y = Y[pad:]
    # optimal: the Bayes predictor's loss on the stream, within 5 standard errors
    losses = -np.where(y == 1, np.log(p), np.log1p(-p))
    assert abs(losses.mean() - refs["optimal"]) <= SIGMAS * losses.std() / math.sqrt(losses.size)
    # partial: knows only the shortest lag (2): its P(Y=1 | X_{t-2}) averages over the other lags
    q = np.where(X[pad - 2 : -2] == 1, 0.4 - 0.2 + (0.3 + 0.15) / 2, 0.4 + (0.3 + 0.15) / 2)
    losses = -np.where(y == 1, np.log(q), np.log1p(-q))
    assert abs(losses.mean() - refs["partial"]) <= SIGMAS * losses.std() / math.sqrt(losses.size)
    m = Y.mean()
    assert abs(-(m * math.log(m) + (1 - m) * math.log(1 - m)) - refs["no_memory"]) < 2e-4


@pytest.mark.parametrize(
    "lags, k",
    [((3, 8), 5), ((1, 9), 8), ((8,), 9), ((1,), 2), ((2, 4, 12), 8), ((3, 6, 9), 4), ((2, 10), 8)],
)
def test_min_learning_window_follows_the_chaining_argument(lags, k):
    # Brute force over windows: lag l is learned when l <= w - 1 (directly) or l <= l' + w for
    # a learned l' (carried through the state); k is the smallest w that learns every lag.
    def learns_all(w):
        learned = set()
        for _ in lags:
            learned |= {lag for lag in lags if lag <= w - 1 or any(lag <= s + w for s in learned)}
        return learned == set(lags)

    assert min_learning_window(lags) == k == min(w for w in range(1, 40) if learns_all(w))
    assert not learns_all(k - 1)


def test_echo_nochain_needs_a_window_of_8_where_r2rt_needs_5():
    task = EchoNoChainTask()
    assert task.name == "echo_nochain" and task.lags == (1, 9)
    assert min_learning_window(task.lags) == 8 > 5 == min_learning_window(EchoTask().lags)
    # Same effects and base as r2rt's task, so the same reference lines, from the parameters.
    assert task.references() == EchoTask(lags=(1, 9)).references()
    assert task.references() == pytest.approx(EchoTask().references(), abs=1e-15)


def test_echo_nochain_references_match_monte_carlo():
    task = EchoNoChainTask()
    refs = task.references()
    s = task.make_train(seed=6, epoch=0, batch=200, length=2500)
    X, Y = _tokens(s).astype(float), s.y.numpy()
    p = 0.5 + 0.5 * X[8:-1] - 0.25 * X[:-9]  # P(Y_t = 1 | X_{t-1}, X_{t-9}) for t >= 9
    y = Y[9:]
    losses = -np.where(y == 1, np.log(np.maximum(p, 1e-300)), np.log(np.maximum(1 - p, 1e-300)))
    losses = np.where((p == 1) & (y == 1), 0.0, losses)
    assert abs(losses.mean() - refs["optimal"]) <= SIGMAS * losses.std() / math.sqrt(losses.size)
    q = np.where(X[8:-1] == 1, 0.875, 0.375)  # knows X_{t-1} only
    losses = -np.where(y == 1, np.log(q), np.log1p(-q))
    assert abs(losses.mean() - refs["partial"]) <= SIGMAS * losses.std() / math.sqrt(losses.size)


def test_echo_single_lag_has_no_partial_line():
    assert set(EchoTask(lags=(2,), effects=(0.3,)).references()) == {"no_memory", "optimal"}


# -- copy ----------------------------------------------------------------------------------------
def _decode_copy(x_row: np.ndarray) -> np.ndarray:
    """A causal predictor: each target from the inputs up to and including that step only."""
    out, shown, recall = [], [], 0
    for sym in x_row:
        if sym != BLANK:
            if sym == START:
                shown, recall = [], 0
            shown.append(int(sym))
            out.append(BLANK)
        else:  # a blank input: the show phase is over, c = len(shown)
            out.append(shown[recall])
            recall += 1
    return np.array(out)


@pytest.mark.parametrize("params", [{"m": 10}, {"m_min": 5, "m_max": 10}, {"m": 1}, {"m_min": 1, "m_max": 3}])
def test_copy_targets_are_the_inputs_c_steps_earlier(params):
    task = CopyTask(**params)
    s = task.make_train(seed=2, epoch=0, batch=6, length=700)
    X, Y = _tokens(s), s.y.numpy()
    lo, hi = task.c_range
    for b in range(6):
        assert X[0, b] == START  # rows start at a segment start
        np.testing.assert_array_equal(_decode_copy(X[:, b]), Y[:, b])  # optimal = 0 is reachable
        starts = np.flatnonzero(X[:, b] == START)
        for a, e in zip(starts[:-1], starts[1:]):  # every complete segment
            c = (e - a) // 2
            assert e - a == 2 * c and lo <= c <= hi
            assert np.all(X[a + 1 : a + c, b] >= 2) and np.all(X[a + c : e, b] == BLANK)
            assert np.all(Y[a : a + c, b] == BLANK)
            np.testing.assert_array_equal(Y[a + c : e, b], X[a : a + c, b])


def test_copy_lengths_and_symbols_are_uniform():
    s = CopyTask(m_min=5, m_max=10).make_train(seed=4, epoch=0, batch=50, length=4000)
    X = _tokens(s)
    lengths = np.concatenate([np.diff(np.flatnonzero(X[:, b] == START)) // 2 for b in range(50)])
    counts = np.bincount(lengths, minlength=11)[5:11]
    n, p = counts.sum(), 1 / 6
    assert np.all(np.abs(counts / n - p) <= SIGMAS * math.sqrt(p * (1 - p) / n)), counts
    sym = X[X >= 2]
    counts = np.bincount(sym, minlength=6)[2:]
    assert np.all(np.abs(counts / sym.size - 0.25) <= SIGMAS * math.sqrt(0.25 * 0.75 / sym.size)), counts


@pytest.mark.parametrize("params", [{"m": 10}, {"m_min": 5, "m_max": 10}, {"m": 3}, {"m_min": 1, "m_max": 4}])
def test_copy_no_memory_matches_monte_carlo(params):
    # The best memoryless predictor p(y | x), estimated from counts on a long stream, scored on
    # each row's complete segments (a row's cut-off last segment would bias the average).
    # Distinguishes the renewal-reward p = 1 / E[c] from E[1 / c] (0.0017 nats apart for 5..10).
    task = CopyTask(**params)
    s = task.make_train(seed=8, epoch=0, batch=40, length=50_000)
    X, Y = _tokens(s), s.y.numpy()
    joint = np.zeros((6, 6))
    np.add.at(joint, (X.ravel(), Y.ravel()), 1.0)
    losses = -np.log((joint / joint.sum(axis=1, keepdims=True))[X, Y])
    rows = np.array([losses[: np.flatnonzero(X[:, b] == START)[-1], b].mean() for b in range(X.shape[1])])
    se = rows.std() / math.sqrt(rows.size)  # rows are independent
    assert abs(rows.mean() - task.references()["no_memory"]) <= SIGMAS * se + 1e-5


def test_copy_no_memory_closed_form_for_m10():
    # p = 1/10: H = -0.1 log 0.1 - 0.9 log(0.9 / 4), half of the steps are blank.
    h = -0.1 * math.log(0.1) - 0.9 * math.log(0.9 / 4)
    assert CopyTask().references() == {
        "no_memory": pytest.approx(h / 2, abs=1e-12),
        "partial": pytest.approx(9 * math.log(4) / 20, abs=1e-15),
        "optimal": 0.0,
    }


@pytest.mark.parametrize("params", [{"m": 10}, {"m_min": 5, "m_max": 10}, {"m": 3}, {"m": 1}])
def test_copy_position_only_plateau_matches_monte_carlo(params):
    # The position-only predictor, run causally: it tracks its place in the segment from the
    # inputs (a nonblank input: show phase; the first blank: recall starts, target START) and
    # predicts blank / START / uniform over the 4 symbols there, never a shown symbol.
    task = CopyTask(**params)
    s = task.make_train(seed=12, epoch=0, batch=30, length=20_000)
    X, Y = _tokens(s), s.y.numpy()
    rows = []
    for b in range(X.shape[1]):
        loss, recall = np.zeros(X.shape[0]), 0
        for t, sym in enumerate(X[:, b]):
            if sym != BLANK:
                recall = 0
                loss[t] = 0.0 if Y[t, b] == BLANK else np.inf
            else:
                loss[t] = (0.0 if Y[t, b] == START else np.inf) if recall == 0 else math.log(4)
                recall += 1
        rows.append(loss[: np.flatnonzero(X[:, b] == START)[-1]].mean())  # complete segments
    rows = np.array(rows)
    assert np.all(np.isfinite(rows))
    se = rows.std() / math.sqrt(rows.size)
    assert abs(rows.mean() - task.references()["partial"]) <= SIGMAS * se + 1e-9


# -- adding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [2, 7, 20])
def test_adding_markers_query_and_targets(L):
    task = AddingTask(segment_length=L)
    s = task.make_train(seed=1, epoch=0, batch=8, length=L * 30 + L // 2)  # ends mid-segment
    x, y = s.x.double().numpy(), s.y.double().numpy()[..., 0]
    n_full = 30
    seg = lambda a: a[: n_full * L].reshape(n_full, L, *a.shape[1:])  # noqa: E731
    value, marker, query, target = seg(x[..., 0]), seg(x[..., 1]), seg(x[..., 2]), seg(y)
    half = L // 2
    assert np.all(marker[:, :half].sum(1) == 1) and np.all(marker[:, half:].sum(1) == 1)
    assert np.all(query[:, -1] == 1) and np.all(query[:, :-1] == 0)
    np.testing.assert_allclose(target[:, -1], (value * marker).sum(1), atol=1e-6)
    assert np.all(target[:, :-1] == 0)
    assert np.all((0 <= value) & (value < 1))


def test_adding_value_and_marker_distributions():
    L = 20
    s = AddingTask(segment_length=L).make_train(seed=9, epoch=0, batch=100, length=L * 200)
    x = s.x.double().numpy().reshape(200, L, 100, 3)
    v = x[..., 0]
    assert abs(v.mean() - 0.5) <= SIGMAS * math.sqrt(1 / 12 / v.size)
    pos = x[..., 1].sum(axis=(0, 2))  # marker count per position in the segment
    n = 200 * 100
    assert np.all(np.abs(pos / n - 0.1) <= SIGMAS * math.sqrt(0.1 * 0.9 / n)), pos


@pytest.mark.parametrize("L", [4, 20])
def test_adding_references_match_monte_carlo(L):
    task = AddingTask(segment_length=L)
    refs = task.references()
    s = task.make_train(seed=3, epoch=0, batch=200, length=L * 1000)
    x, y = s.x.double().numpy(), s.y.double().numpy()[..., 0]
    # memoryless: on a query step predict value + 1/2 if it is marked, else 1; elsewhere 0
    pred = np.where(x[..., 2] == 1, np.where(x[..., 1] == 1, x[..., 0] + 0.5, 1.0), 0.0)
    err = ((pred - y) ** 2).reshape(-1, L).sum(1) / L  # per segment: independent samples
    assert abs(err.mean() - refs["no_memory"]) <= SIGMAS * err.std() / math.sqrt(err.size)
    # with memory: sum the marked values since the last query, exactly the target
    marked = x[..., 0] * x[..., 1]
    running = np.cumsum(marked.reshape(-1, L, 200), axis=1).reshape(-1, 200)
    np.testing.assert_allclose(np.where(x[..., 2] == 1, running, 0.0), y, atol=1e-6)
    assert refs["optimal"] == 0.0
    # predict 0 everywhere
    err = (y**2).reshape(-1, L).sum(1) / L
    assert abs(err.mean() - refs["predict_zero"]) <= SIGMAS * err.std() / math.sqrt(err.size)
    # second value only: on the query step predict (the value at the second marker) + 1/2
    seg = x.reshape(-1, L, 200, 3)
    second = np.take_along_axis(
        seg[..., 0], (L - 1 - np.argmax(seg[:, ::-1, :, 1], axis=1))[:, None, :], axis=1
    )[:, 0]
    pred = np.zeros_like(seg[..., 0])
    pred[:, -1] = second + 0.5
    err = ((pred.reshape(-1, 200) - y) ** 2).reshape(-1, L, 200).sum(1).ravel() / L
    assert abs(err.mean() - refs["partial"]) <= SIGMAS * err.std() / math.sqrt(err.size)


def test_adding_no_memory_sees_a_marker_on_the_query_step():
    # L = 2: the second marker is always on the query step, so a memoryless predictor knows
    # half the sum: MSE 1/12 there, (1/12) / 2 per step, not the naive (1/6) / 2.
    task = AddingTask(segment_length=2)
    assert task.references()["no_memory"] == pytest.approx(1 / 24, abs=1e-15)
    x = task.make_train(seed=0, epoch=0, batch=100, length=2000).x.double().numpy()
    assert np.all(x[1::2, :, 1] == 1) and np.all(x[1::2, :, 2] == 1)


def test_adding_no_memory_closed_form():
    # L = 20: the second marker is on the query step with probability 1/10.
    refs = AddingTask().references()
    assert refs["no_memory"] == pytest.approx((0.9 / 6 + 0.1 / 12) / 20, abs=1e-15)
    assert refs["predict_zero"] == pytest.approx((1 + 1 / 6) / 20, abs=1e-15)
    assert refs["partial"] == pytest.approx(1 / 12 / 20, abs=1e-15)


# -- influence ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, n_plus", [(23, 10), (5, 3), (8, 0), (4, 4), (1, 1)])
def test_optimal_theta_puts_the_fixed_point_on_target(n, n_plus):
    A = 0.5 * torch.eye(n, dtype=torch.float64) + 0.5 * torch.diag(torch.ones(n - 1, dtype=torch.float64), 1)
    u = torch.cat([torch.ones(n_plus), -torch.ones(n - n_plus)]).double()
    s = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - A, optimal_theta(n, n_plus) * u)
    assert float(s[0]) == pytest.approx(1.0, abs=1e-12)
    s = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - A, 0.7 * u)
    assert float(s[0]) == pytest.approx(fixed_point_output(0.7, n, n_plus), abs=1e-12)


def test_influence_fixed_point_loss_matches_the_models_fixed_point():
    # The fixed point of models.InfluenceBalancingRNN's own cell, built from the task's settings.
    task = InfluenceTask()
    s = task.make_train(seed=0, epoch=0, batch=2, length=50)
    assert torch.equal(s.x, torch.ones(50, 2, 1)) and torch.equal(s.y, torch.ones(50, 2, 1))
    model = make_model("influence", 1, task.fixed_hidden_size, 1, **task.model_kwargs()).double()
    eye = torch.eye(task.n, dtype=torch.float64)
    with torch.no_grad():
        for theta in (task.theta0, optimal_theta(23, 10)):
            model.theta.fill_(theta)
            fixed = torch.linalg.solve(eye - model.A, theta * model.u).expand(2, -1)
            params = model.params()
            np.testing.assert_allclose(
                model.cell(params, torch.ones(2, 1, dtype=torch.float64), fixed), fixed, atol=1e-12
            )
            out = model.readout(params, model.features(fixed))
            assert float((out[0, 0] - 1) ** 2) == pytest.approx(task.fixed_point_loss(theta), abs=1e-12)
    assert task.fixed_point_loss(0.5) == 16.0 and task.fixed_point_loss(-1 / 6) == pytest.approx(0.0)


@pytest.mark.parametrize("noise, seed", [(0.0, 0), (0.1, 0), (0.1, 1), (0.3, 2)])
def test_influence_references_are_the_validation_metric_at_theta0_and_its_exact_minimum(noise, seed):
    # The harness's metric: evaluate_stream of the model from its initial state over the stream.
    from tbptt_bench.engine import evaluate_stream

    task = InfluenceTask(input_noise=noise)
    val = task.make_validation(seed=seed, batch=2, length=300)
    refs = task.references(val)
    model = make_model("influence", 1, 23, 1, **task.model_kwargs()).double()
    x, y = val.x.double(), val.y.double()
    assert evaluate_stream(model, x, y, "mse")[0] == pytest.approx(refs["no_memory"], rel=1e-12)
    theta_hat, best = best_theta_on_stream(x[..., 0].numpy(), y[..., 0].numpy())
    assert best == pytest.approx(refs["optimal"], rel=1e-12) and best < refs["no_memory"]
    with torch.no_grad():
        model.theta.fill_(theta_hat)
    assert evaluate_stream(model, x, y, "mse")[0] == pytest.approx(best, rel=1e-10)
    # a minimum: a grid of thetas around it is never lower, and theta_hat lies near theta* = -1/6
    grid = theta_hat + np.linspace(-0.05, 0.05, 21)
    assert min(stream_loss(t, x[..., 0].numpy(), y[..., 0].numpy()) for t in grid) >= best - 1e-12
    assert -0.25 < theta_hat < -0.05


def test_influence_noise_makes_seeds_differ_and_zero_noise_is_the_paper_task():
    assert InfluenceTask().deterministic and not InfluenceTask(input_noise=0.1).deterministic
    a = InfluenceTask(input_noise=0.1).make_validation(0, 1, 100)
    b = InfluenceTask(input_noise=0.1).make_validation(1, 1, 100)
    assert not torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert abs(float(a.x.std()) - 0.1) < 0.05 and torch.equal(a.y, torch.ones(100, 1, 1))


# -- language -----------------------------------------------------------------------------------
def _brute_log_likelihood(pi, P, E, w) -> float:
    total = 0.0
    for path in itertools.product(range(len(pi)), repeat=len(w)):
        p = pi[path[0]] * E[path[0], w[0]]
        for (a, b), tok in zip(zip(path, path[1:]), w[1:]):
            p *= P[a, b] * E[b, tok]
        total += p
    return math.log(total)


@pytest.mark.parametrize("K, V, T", [(2, 2, 5), (3, 3, 5), (3, 2, 6)])
def test_forward_algorithm_equals_brute_force_enumeration(K, V, T):
    rng = np.random.default_rng(K * 100 + V * 10 + T)
    pi = rng.dirichlet(np.ones(K))
    P = rng.dirichlet(np.ones(K), size=K)
    E = rng.dirichlet(np.ones(V), size=K)
    tokens = rng.integers(0, V, size=(T, 4))
    ll = log_likelihood(pi, P, E, tokens)
    for b in range(4):
        assert ll[b] == pytest.approx(_brute_log_likelihood(pi, P, E, tokens[:, b]), abs=1e-12)
    # the per-step predictive terms are conditionals: log p(w_1..w_t+1) - log p(w_1..w_t)
    lp = predictive_logprobs(pi, P, E, tokens)
    for t in range(1, T):
        want = _brute_log_likelihood(pi, P, E, tokens[: t + 1, 0]) - _brute_log_likelihood(
            pi, P, E, tokens[:t, 0]
        )
        assert lp[t - 1, 0] == pytest.approx(want, abs=1e-12)


def test_language_optimal_reference_equals_brute_force_on_a_tiny_source():
    task = LanguageTask(vocab=3, n_states=2, branching=2, n_topics=2, switch_prob=0.2)
    src = task.source()
    v = task.make_validation(seed=0, batch=3, length=4)
    w = np.concatenate([_tokens(v)[:1], v.y.numpy()], axis=0)  # w_1..w_5 per row
    losses = [
        _brute_log_likelihood(src.pi, src.P, src.E, w[:t, b])
        - _brute_log_likelihood(src.pi, src.P, src.E, w[: t + 1, b])
        for b in range(3)
        for t in range(1, 5)
    ]
    assert task.references(v)["optimal"] == pytest.approx(np.mean(losses), abs=1e-12)


def test_language_source_is_a_stationary_sparse_hmm():
    task = LanguageTask()
    src = task.source()
    K = task.n_states * task.n_topics
    assert src.P.shape == (K, K) and src.E.shape == (K, task.vocab)
    np.testing.assert_allclose(src.P.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(src.E.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(src.pi @ src.P, src.pi, atol=1e-12)
    fast = src.P[: task.n_states, : task.n_states] / (1 - task.switch_prob)  # topic 0 -> topic 0 block
    assert np.all((fast > 0).sum(1) <= task.branching)
    assert task.source() is src  # cached
    other = LanguageTask(source_seed=1).source()
    assert not np.allclose(other.E, src.E)


def test_language_references_order_for_the_default_source():
    task = LanguageTask()
    refs = task.references(task.make_validation(seed=0, batch=32, length=1000))
    assert refs["optimal"] + 0.2 < refs["partial"] < refs["no_memory"] <= math.log(task.vocab)


def test_language_token_and_pair_frequencies_match_the_stationary_source():
    task = LanguageTask(vocab=8, n_states=6, n_topics=3, switch_prob=0.05)
    src = task.source()
    s = task.make_train(seed=1, epoch=0, batch=400, length=400)
    w = np.concatenate([_tokens(s)[:1], s.y.numpy()], axis=0)
    V = task.vocab
    # rows are independent draws: per-row frequencies, mean and standard error across rows
    freq = np.stack([np.bincount(w[:, b], minlength=V) / len(w) for b in range(w.shape[1])])
    se = freq.std(0) / math.sqrt(freq.shape[0])
    assert np.all(np.abs(freq.mean(0) - src.unigram) <= SIGMAS * se + 1e-9), (freq.mean(0), src.unigram)
    pair = w[:-1] * V + w[1:]
    freq = np.stack([np.bincount(pair[:, b], minlength=V * V) / len(pair) for b in range(pair.shape[1])])
    joint = (src.unigram[:, None] * src.bigram).ravel()
    se = freq.std(0) / math.sqrt(freq.shape[0])
    assert np.all(np.abs(freq.mean(0) - joint) <= SIGMAS * se + 1e-9)


def test_language_streams_are_drawn_from_the_source_the_references_assume():
    # Under the true source, the Bayes predictor's log loss minus the entropy of its own
    # prediction is a martingale difference (mean 0). A generator that disagrees with
    # source() (e.g. another switch rate: 0.02 instead of 0.01 gives z ~ 9) breaks it.
    # The filter here is written independently of predictive_logprobs.
    task = LanguageTask()
    src = task.source()
    s = task.make_train(seed=1, epoch=0, batch=200, length=300)
    w = np.concatenate([_tokens(s)[:1], s.y.numpy()], axis=0)
    rows = np.arange(w.shape[1])
    post = src.pi * src.E[:, w[0]].T
    post /= post.sum(1, keepdims=True)
    gap = np.zeros(w.shape[1])
    for t in range(1, len(w)):
        prior = post @ src.P
        pred = prior @ src.E  # p(w_t | w_<t), (B, V)
        gap += -np.log(pred[rows, w[t]]) + (pred * np.log(pred)).sum(1)
        post = prior * src.E[:, w[t]].T
        post /= post.sum(1, keepdims=True)
    gap /= len(w) - 1
    assert abs(gap.mean()) <= SIGMAS * gap.std() / math.sqrt(gap.size)


def test_language_generates_fast():
    task = LanguageTask()
    task.make_train(seed=0, epoch=0, batch=2, length=2)  # build the source
    best = min(_timed(lambda: task.make_train(seed=0, epoch=e, batch=64, length=2000)) for e in range(2))
    assert best < 1.0, f"64 x 2000 language steps took {best:.2f} s"


def test_language_references_reject_a_foreign_stream():
    task = LanguageTask(vocab=6, n_states=4, n_topics=2)
    with pytest.raises(TaskError, match="not allowed"):
        task.references(EchoTask().make_validation(0, 2, 10))
    s = task.make_validation(0, 2, 10)
    with pytest.raises(TaskError, match="y_t must equal"):
        task.references(Stream(s.x, torch.roll(s.y, 1, 0)))
