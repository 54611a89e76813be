"""Forward and backprop step counts per update (docs/semantics.md, "Counting").

By hand on tiny streams for every preset and on every path that runs it, then against what the
backward pass is observed to traverse (the probe of tests/test_properties.py: column j of
dL/dW_hx is nonzero exactly when the backward pass reached step j), random truncation included.
"""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tbptt_bench.engine import train_stream
from tbptt_bench.engine.counting import backprop_steps, forward_steps
from tbptt_bench.models import ElmanRNN, GRUModel
from tbptt_bench.styles import TBPTT, RandomTruncation, full, one_step, overlapping, tf_style, williams_peng
from test_properties import SETTINGS, observe, random_cases, tbptt_cases

#: (style, T, [(t, forward steps per row, backprop steps per row)]), worked out by hand
HAND = [
    (full(), 6, [(6, 6, 6)]),
    (williams_peng(3), 5, [(1, 1, 1), (2, 1, 2), (3, 1, 3), (4, 1, 3), (5, 1, 3)]),
    (one_step(4), 10, [(4, 4, 1), (8, 4, 1), (10, 2, 1)]),
    (overlapping(2, 5), 7, [(2, 2, 2), (4, 2, 4), (6, 2, 5), (7, 1, 5)]),
    (tf_style(3), 6, [(3, 3, 3), (6, 3, 3)]),
    # T not a multiple of k1: the last window (6, 10] reaches back into the previous segment
    (tf_style(4), 10, [(4, 4, 4), (8, 4, 4), (10, 2, 4)]),
    (TBPTT(2, 15), 5, [(2, 2, 2), (4, 2, 4), (5, 1, 5)]),  # k2 > T
    # k2 < k1: losses before u - k2 are readout-only; the last update's window (9, 11] holds step 10
    (TBPTT(5, 2), 11, [(5, 5, 2), (10, 5, 2), (11, 1, 2)]),
    (TBPTT(4, 2), 4, [(4, 4, 2)]),
]
PATHS = ("autograd", "manual-elman", "static-elman")


def _run(style, T, path, B=2, model=None):
    torch.manual_seed(0)
    model = model or ElmanRNN(2, 3, 1).double()
    x, y = torch.randn(T, B, 2, dtype=torch.float64), torch.randn(T, B, 1, dtype=torch.float64)
    m = copy.deepcopy(model)
    return train_stream(m, x, y, style, torch.optim.SGD(m.parameters(), lr=0.1), path=path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("style,T,expected", HAND, ids=[f"{s.spec}-T{T}" for s, T, _ in HAND])
def test_counts_by_hand(style, T, expected, path):
    B = 2
    result = _run(style, T, path, B)
    got = [(r.t, r.forward_steps, r.backprop_steps) for r in result.records]
    assert got == [(t, f * B, b * B) for t, f, b in expected]
    assert result.forward_steps == T * B
    assert result.backprop_steps == sum(b for _, _, b in expected) * B


def test_counts_on_a_gru_and_the_contract_formulas():
    result = _run(tf_style(4), 12, "auto", B=3, model=GRUModel(2, 3, 1).double())
    assert [r.backprop_steps for r in result.records] == [4 * 3] * 3  # TF-style(k): k B per block
    assert _run(full(), 9, "auto", B=2).backprop_steps == 9 * 2  # full BPTT: T B
    wp = _run(williams_peng(3), 6, "auto", B=2)
    assert [r.backprop_steps for r in wp.records] == [min(3, t) * 2 for t in range(1, 7)]


def test_backprop_steps_from_a_keep_mask_by_hand():
    """Update at u = 9 after p = 6 with window start 2 (k2 = 7): own steps 7-9; stored steps
    3-6 reached through edges 7, 6, 5, 4 (rows 4, 3, 2, 1) while they are kept."""
    keep = torch.ones(6, 2, dtype=torch.bool)  # edges j = 4..9 are rows j - 4
    assert backprop_steps(6, 9, 2, 2, None) == 7 * 2
    assert backprop_steps(6, 9, 2, 2, keep) == 7 * 2
    keep[3, 0] = False  # edge 7 cut for row 0: none of its stored steps is reached
    keep[1, 1] = False  # edge 5 cut for row 1: steps 6, 5 reached, 4 and 3 not
    assert backprop_steps(6, 9, 2, 2, keep) == (3 + 0) + (3 + 2)
    shared = torch.tensor([[True], [False], [True], [True], [False], [True]])  # one draw for the batch
    assert backprop_steps(6, 9, 2, 4, shared) == (3 + 2) * 4  # edges 7, 6 kept, edge 5 cut
    assert forward_steps(6, 9, 4) == 12


def _reached(g_hx: torch.Tensor) -> int:
    """Steps whose cell the backward pass traversed: nonzero columns of dL/dW_hx (x_j = e_j)."""
    return int((g_hx != 0).any(0).sum())


@pytest.mark.parametrize("path", ("autograd", "manual-elman"))
@SETTINGS
@given(case=tbptt_cases())
def test_backprop_steps_equal_the_steps_the_backward_reached(path, case):
    T, k1, k2, B = case
    seen, records = observe(T, B, TBPTT(k1, k2), path)
    prev = 0
    for (_, g), r in zip(seen, records):
        assert r.forward_steps == (r.t - prev) * B
        assert r.backprop_steps == _reached(g["W_hx"]) * B
        prev = r.t


@pytest.mark.parametrize("path", ("autograd", "manual-elman"))
@SETTINGS
@given(case=random_cases())
def test_random_truncation_counts_follow_the_drawn_cuts(path, case):
    """One draw shared by the batch (B = 2): the count is the reached steps of one row times 2."""
    T, k1, k2, pi, seed = case
    seen, records = observe(T, 2, RandomTruncation(pi, k1, k2), path, seed)
    for (_, g), r in zip(seen, records):
        assert r.backprop_steps == _reached(g["W_hx"]) * 2


@given(T=st.integers(1, 20), k1=st.integers(1, 25), k2=st.integers(1, 25))
@SETTINGS
def test_static_path_counts_equal_the_manual_paths(T, k1, k2):
    a = _run(TBPTT(k1, k2), T, "static-elman", B=1)
    b = _run(TBPTT(k1, k2), T, "manual-elman", B=1)
    assert [(r.forward_steps, r.backprop_steps) for r in a.records] == [
        (r.forward_steps, r.backprop_steps) for r in b.records
    ]


def _brute_force_count(prev: int, u: int, start: int, xi: torch.Tensor) -> int:
    """Per row: step j of (start, u] counts if some loss s in (prev, u] with s > start reaches it,
    i.e. every edge i in (j, s] has xi != 0 (xi row i - start - 2). Summed over rows."""
    total = 0
    for b in range(xi.shape[1]):
        for j in range(start + 1, u + 1):
            total += any(
                all(bool(xi[i - start - 2, b, 0] != 0) for i in range(j + 1, s + 1))
                for s in range(max(prev, start) + 1, u + 1)
                if s >= j
            )
    return total


@pytest.mark.parametrize("path", ("autograd", "manual-elman"))
@pytest.mark.parametrize("per_stream", (False, True))
def test_counts_equal_a_brute_force_count_of_the_drawn_xi(path, per_stream):
    """The xi the engine drew, replayed from the same seed (one window per update, in order)."""
    from tbptt_bench.engine.xi import draw_window_xi

    T, B, k1, k2, pi = 17, 4, 3, 7, 0.6
    style = RandomTruncation(pi, k1, k2, per_stream=per_stream)
    torch.manual_seed(0)
    model = ElmanRNN(2, 3, 1).double()
    x, y = torch.randn(T, B, 2, dtype=torch.float64), torch.randn(T, B, 1, dtype=torch.float64)
    r = train_stream(
        model,
        x,
        y,
        style,
        torch.optim.SGD(model.parameters(), lr=0.1),
        generator=torch.Generator().manual_seed(3),
        path=path,
    )
    replay = torch.Generator().manual_seed(3)
    expected, prev = [], 0
    for u in style.update_times(T):
        start = max(u - k2, 0)
        xi = draw_window_xi(pi, per_stream, replay, start, u, B, "cpu", torch.float64)
        xi = xi.expand(-1, B, -1)
        expected.append(_brute_force_count(prev, u, start, xi))
        prev = u
    assert [rec.backprop_steps for rec in r.records] == expected
    assert expected != [min(k2, u) * B for u in style.update_times(T)]  # some cut landed
