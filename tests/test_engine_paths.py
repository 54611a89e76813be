"""The engine's paths: the Elman fast path and the autograd path are the same function (draws of
xi included); every row of PATH_TABLE implements the Path contract; selection follows the table;
the engine reads no environment variable."""

import copy
import dataclasses
import pathlib

import pytest
import torch

from tbptt_bench.engine import EngineError, train_stream
from tbptt_bench.engine.paths.base import Path, PathInputs
from tbptt_bench.engine.paths.selection import (
    MANUAL_MAX_WINDOW,
    PATH_NAMES,
    PATH_TABLE,
    Situation,
    select_path,
)
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


def test_the_engine_reads_no_environment_variable():
    """Options are arguments (cuda_graphs, graph_forward); only the benchmark scripts map variables."""
    root = pathlib.Path(__file__).resolve().parents[1] / "src" / "tbptt_bench" / "engine"
    hits = [
        f"{p.relative_to(root)}:{i}"
        for p in sorted(root.rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "environ" in line or "getenv" in line
    ]
    assert len(list(root.rglob("*.py"))) > 10  # the folder was found
    assert hits == []


def test_every_row_of_the_path_table_implements_the_contract():
    assert [row.name for row in PATH_TABLE] == [
        "cuda-graph-elman",
        "manual-elman",
        "static-elman",
        "autograd",
    ]
    assert set(PATH_NAMES) == {"auto"} | {row.name for row in PATH_TABLE}
    model = ElmanRNN(2, 4, 1).double()
    x, y = torch.randn(6, 2, 2, dtype=torch.float64), torch.randn(6, 2, 1, dtype=torch.float64)
    for row in PATH_TABLE:
        assert row.why and callable(row.auto_when) and callable(row.refuse)
        if row.name == "cuda-graph-elman" and not torch.cuda.is_available():
            continue
        inputs = PathInputs(
            model=model,
            x=x,
            y=y,
            style=tf_style(3),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
            loss="mse",
            clip=None,
            generator=None,
            h0=model.init_state(2),
            k1=3,
            k2=3,
            updates=((0, 3), (3, 6)),
            stored_history=False,
            capture=row.name == "cuda-graph-elman",
        )
        with pytest.raises(dataclasses.FrozenInstanceError):
            inputs.k2 = 5  # one frozen bundle: a path cannot change what the engine checked
        path = row.cls(inputs)
        assert isinstance(path, Path)
        result = path.run()
        assert result.path.startswith(row.name) and [r.t for r in result.records] == [3, 6]
        assert result.forward_steps == 12 and result.backprop_steps == 12


def _situation(**kw):
    model = kw.pop("model", ElmanRNN(2, 4, 1))
    base = dict(
        model=model,
        style=tf_style(4),
        device=torch.device("cpu"),
        k2=4,
        batch=2,
        stored_history=False,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        cuda_graphs=True,
    )
    return Situation(**{**base, **kw})


def test_auto_selection_follows_the_table():
    pick = lambda **kw: select_path(_situation(**kw), "auto").name  # noqa: E731
    assert pick() == "manual-elman"  # CPU, short window
    assert pick(k2=MANUAL_MAX_WINDOW + 1, batch=64, model=ElmanRNN(2, 128, 1)) == "autograd"
    assert pick(k2=MANUAL_MAX_WINDOW + 1, batch=64, model=ElmanRNN(2, 128, 1), stored_history=True) == (
        "manual-elman"
    )
    assert pick(model=GRUModel(2, 4, 1)) == "autograd"
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert pick(device=cuda) == "cuda-graph-elman"
    assert pick(device=cuda, cuda_graphs=False) == "autograd"
    assert pick(device=cuda, cuda_graphs=False, stored_history=True) == "manual-elman"
    assert pick(device=cuda, k2=MANUAL_MAX_WINDOW + 1) == "autograd"
    assert pick(device=cuda, style=RandomTruncation(0.5, 4, 4)) == "manual-elman"
    with pytest.raises(EngineError, match="path='cuda-graph-elman' is not allowed with cuda_graphs=False"):
        select_path(_situation(device=cuda, cuda_graphs=False), "cuda-graph-elman")


def test_cuda_graph_options_are_arguments():
    model = ElmanRNN(2, 4, 1)
    x, y = torch.randn(8, 2, 2), torch.randn(8, 2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    r = train_stream(model, x, y, tf_style(4), opt, cuda_graphs=False, graph_forward="loop")
    assert r.path == "manual-elman"
    with pytest.raises(EngineError, match="graph_forward='cudnn' is not allowed: use one of fused, loop"):
        train_stream(model, x, y, tf_style(4), opt, graph_forward="cudnn")
