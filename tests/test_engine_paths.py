"""The Elman fast path and the autograd path are the same function, draws of xi included."""

import copy

import pytest
import torch

from tbptt_bench.engine import EngineError, train_stream
from tbptt_bench.models import ElmanRNN, GRUModel
from tbptt_bench.styles import TBPTT, RandomTruncation, full, tf_style, williams_peng

STYLES = [
    full(),
    williams_peng(4),
    TBPTT(3, 1),
    TBPTT(3, 5),
    tf_style(4),
    RandomTruncation(0.5),
    RandomTruncation(0.6, 2, 5, per_stream=True),
    RandomTruncation(0.7, 3, 1),
]


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.spec)
@pytest.mark.parametrize("nonlinearity", ["tanh", "linear"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_paths_agree_with_the_same_generator(style, nonlinearity, loss):
    torch.manual_seed(1)
    model = ElmanRNN(2, 4, 3, nonlinearity=nonlinearity).double()
    x = torch.randn(11, 3, 2, dtype=torch.float64)
    y = torch.randn(11, 3, 3, dtype=torch.float64) if loss == "mse" else torch.randint(0, 3, (11, 3))
    runs = []
    for path in ("autograd", "manual-elman"):
        m = copy.deepcopy(model)
        r = train_stream(
            m,
            x,
            y,
            style,
            torch.optim.SGD(m.parameters(), lr=0.1),
            loss=loss,
            clip=0.5,
            generator=torch.Generator().manual_seed(5),
            path=path,
        )
        runs.append((m, r))
    (m1, r1), (m2, r2) = runs
    assert r1.path.startswith("autograd/") and r2.path.startswith("manual-elman")
    assert [(a.t, a.clipped) for a in r1.records] == [(b.t, b.clipped) for b in r2.records]
    for a, b in zip(r1.records, r2.records):
        assert a.loss == pytest.approx(b.loss, abs=1e-12) and a.grad_norm == pytest.approx(
            b.grad_norm, abs=1e-12
        )
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_auto_picks_the_elman_path_for_stored_history_and_reports_it():
    model = ElmanRNN(2, 4, 1)
    x, y = torch.randn(8, 2, 2), torch.randn(8, 2, 1)
    r = train_stream(model, x, y, williams_peng(3), torch.optim.SGD(model.parameters(), lr=0.01))
    assert r.path == "manual-elman+stored-history"
    gru = GRUModel(2, 4, 1)
    r = train_stream(gru, x, y, williams_peng(3), torch.optim.SGD(gru.parameters(), lr=0.01))
    assert r.path == "autograd/fused-window+stored-history"
    with pytest.raises(EngineError, match="path='manual-elman' is not allowed for GRUModel"):
        train_stream(gru, x, y, full(), torch.optim.SGD(gru.parameters(), lr=0.01), path="manual-elman")
    with pytest.raises(EngineError, match="path='fast' is not allowed"):
        train_stream(model, x, y, full(), torch.optim.SGD(model.parameters(), lr=0.01), path="fast")
