"""The static-shape Elman update (graphed_elman) that CUDA replays as a graph.

On the CPU the same function runs eagerly (path "static-elman"); tests/test_engine_oracles.py
checks it against the brute-force reference for every (T, k1, k2) row. Here: agreement with the
hand-written path on float32 streams, callbacks, h0, path choice and refusals, the memory it
holds, and (on CUDA only) graph replay against eager execution.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tbptt_bench.engine import EngineError, train_stream
from tbptt_bench.engine.paths.static_elman import graph_safe_optimizer
from tbptt_bench.models import ElmanRNN, GRUModel
from tbptt_bench.styles import (
    TBPTT,
    RandomTruncation,
    full,
    one_step,
    overlapping,
    tf_style,
    williams_peng,
)

#: both backward modes: the hand-written window (stored history, or k2 < 4) and autograd through
#: the fused kernel (window inside its segment: tf_style, TBPTT(8, 4), TBPTT(6, 5), full BPTT)
STYLES = [
    tf_style(4),
    williams_peng(5),
    overlapping(3, 7),
    one_step(4),
    TBPTT(5, 2),
    full(),
    tf_style(8),
    TBPTT(8, 4),
    TBPTT(6, 5),
]


def _case(T=23, B=3, H=6, device="cpu", dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = ElmanRNN(2, H, 3, generator=g).to(device=device, dtype=dtype)
    x = torch.randn(T, B, 2, generator=g).to(device=device, dtype=dtype)
    y = torch.randn(T, B, 3, generator=g).to(device=device, dtype=dtype)
    return model, x, y


def _train(model, x, y, style, path, clip=0.3, **kw):
    m = copy.deepcopy(model)
    r = train_stream(m, x, y, style, torch.optim.SGD(m.parameters(), lr=0.05), clip=clip, path=path, **kw)
    return m, r


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.spec)
def test_static_path_equals_the_elman_path_in_float32(style):
    model, x, y = _case()
    (m1, r1), (m2, r2) = (
        _train(model, x, y, style, "manual-elman"),
        _train(model, x, y, style, "static-elman"),
    )
    assert r2.path.startswith("static-elman")
    assert [(a.t, a.clipped) for a in r1.records] == [(b.t, b.clipped) for b in r2.records]
    for a, b in zip(r1.records, r2.records):
        assert b.loss == pytest.approx(a.loss, rel=1e-5) and b.grad_norm == pytest.approx(
            a.grad_norm, rel=1e-5
        )
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r2.state, r1.state, rtol=1e-5, atol=1e-6)


def test_callback_sees_every_record_in_order_and_h0_is_used():
    model, x, y = _case(dtype=torch.float64)
    h0 = torch.randn(3, 6, dtype=torch.float64)
    seen = []
    _, r1 = _train(model, x, y, overlapping(3, 7), "static-elman", h0=h0, callback=seen.append)
    _, r2 = _train(model, x, y, overlapping(3, 7), "manual-elman", h0=h0)
    assert seen == r1.records
    assert [a.t for a in r1.records] == [3, 6, 9, 12, 15, 18, 21, 23]
    for a, b in zip(r1.records, r2.records):
        assert a.loss == pytest.approx(b.loss, abs=1e-12)
    _, r3 = _train(model, x, y, overlapping(3, 7), "static-elman")
    assert r3.records[0].loss != pytest.approx(r1.records[0].loss, abs=1e-9)  # h0 mattered


def test_a_raising_callback_stops_training():
    model, x, y = _case()

    def stop(record):
        if record.t >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(model, x, y, tf_style(4), "static-elman", callback=stop)


def test_refusals_name_the_value_and_what_is_allowed():
    model, x, y = _case()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        EngineError, match="path='cuda-graph-elman' is not allowed on cpu: it needs a CUDA device"
    ):
        train_stream(model, x, y, tf_style(4), opt, path="cuda-graph-elman")
    with pytest.raises(
        EngineError, match="path='static-elman' is not allowed for random.*deterministic TBPTT"
    ):
        train_stream(model, x, y, RandomTruncation(0.5, 4, 4), opt, path="static-elman")
    gru = GRUModel(2, 6, 3)
    with pytest.raises(EngineError, match="path='static-elman' is not allowed for GRUModel"):
        train_stream(gru, x, y, tf_style(4), torch.optim.SGD(gru.parameters(), lr=0.1), path="static-elman")
    before = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_graph_safe_optimizers():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert graph_safe_optimizer(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert graph_safe_optimizer(torch.optim.Adam(params, lr=0.1, capturable=True))
    assert not graph_safe_optimizer(torch.optim.Adam(params, lr=0.1))
    assert not graph_safe_optimizer(torch.optim.Adagrad(params, lr=0.1))


@pytest.mark.parametrize(
    "style,mode",
    [
        (full(), "/fused-window"),
        (TBPTT(8, 4), "/fused-window"),
        (one_step(4), ""),
        (williams_peng(5), "+stored-history"),
        (tf_style(5), "+stored-history"),
    ],
    ids=lambda v: getattr(v, "spec", v),
)
def test_the_path_name_says_which_backward_ran(style, mode):
    """tf_style(5) on T = 23: the last update's window reaches into the previous segment."""
    model, x, y = _case()
    _, r = _train(model, x, y, style, "static-elman")
    assert r.path == "static-elman" + mode


def test_cpu_auto_never_picks_the_static_path():
    model, x, y = _case()
    _, r = _train(model, x, y, tf_style(4), "auto")
    assert not r.path.startswith(("static", "cuda-graph"))


@pytest.mark.parametrize("T", [100, 1000])
def test_memory_held_is_bounded_by_the_window(T):
    """Window slots (state before, f', input) + one segment's states, pulls and output grads."""
    B, H, D, Q, k = 2, 4, 2, 3, 16
    model = ElmanRNN(D, H, Q)
    x, y = torch.randn(T, B, D), torch.randn(T, B, Q)
    _, r = _train(model, x, y, williams_peng(k), "static-elman", measure_memory=True)
    assert r.saved_bytes_peak == 4 * (k * B * (2 * H + D) + 1 * B * (2 * H + Q))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuda: not available here")
@pytest.mark.parametrize(
    "style", [tf_style(16), williams_peng(16), overlapping(8, 16), one_step(16)], ids=lambda s: s.spec
)
def test_cuda_graph_replay_equals_eager(style):
    model, x, y = _case(T=200, B=16, H=32, device="cuda")
    (m1, r1), (m2, r2) = (
        _train(model, x, y, style, "static-elman"),
        _train(model, x, y, style, "cuda-graph-elman"),
    )
    assert r2.path.startswith("cuda-graph-elman"), r2.path
    for a, b in zip(r1.records, r2.records):
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
