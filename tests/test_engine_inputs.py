"""Bad input to the engine is refused before any training, with a message naming the value."""

import pytest
import torch

from tbptt_bench.engine import EngineError, evaluate_stream, train_stream
from tbptt_bench.models import ElmanRNN, LSTMModel, ModelError, make_model
from tbptt_bench.styles import TBPTT, tf_style


def _setup(Q=2):
    torch.manual_seed(0)
    model = ElmanRNN(3, 4, Q)
    before = [p.detach().clone() for p in model.parameters()]
    return model, torch.optim.SGD(model.parameters(), lr=0.1), before


GOOD_X, GOOD_Y = torch.randn(6, 2, 3), torch.randn(6, 2, 2)
CASES = [
    (dict(x=torch.randn(6, 3)), "x with shape (6, 3)"),
    (dict(x=torch.randn(6, 2, 5)), "D=5"),
    (dict(x=torch.zeros(6, 2, 3, dtype=torch.long)), "float tensor"),
    (dict(y=torch.randn(6, 2, 3)), "y with shape (6, 2, 3)"),
    (dict(y=torch.randn(5, 2, 2)), "y with shape (5, 2, 2)"),
    (dict(loss="hinge"), "loss='hinge'"),
    (dict(loss="ce"), "loss 'ce' needs int64"),
    (dict(loss="ce", y=torch.full((6, 2), 7)), "classes in [7, 7]"),
    (dict(x=GOOD_X.clone().index_fill_(0, torch.tensor([2]), float("nan"))), "non-finite"),
    (dict(y=GOOD_Y.clone().index_fill_(0, torch.tensor([1]), float("inf"))), "non-finite"),
    (dict(clip=0.0), "clip=0.0"),
    (dict(clip=float("inf")), "clip=inf"),
    (dict(style="tf_style(3)"), "style='tf_style(3)'"),
    (dict(generator=3), "generator=3"),
    (dict(h0=torch.zeros(2, 5)), "h0 with shapes [(2, 5)]"),
    (dict(h0=(torch.zeros(2, 4), torch.zeros(2, 4))), "h0 with shapes"),
    (dict(h0=[torch.zeros(2, 4)]), "h0=list"),
    (dict(h0=torch.zeros(2, 4, dtype=torch.float64)), "h0 with dtype torch.float64"),
    (dict(h0=torch.full((2, 4), float("nan"))), "h0 with non-finite"),
    (dict(h0=torch.zeros(2, 4, device="meta")), "h0 on meta"),
    (dict(x=GOOD_X.double()), "x with dtype torch.float64"),
    (dict(y=GOOD_Y.double()), "y with dtype torch.float64"),
    (dict(x=GOOD_X.to("meta")), "x on meta"),
    (dict(y=GOOD_Y.to("meta")), "y on meta"),
    (dict(optimizer=None), "optimizer=NoneType"),
    (dict(optimizer="drop W_hh"), "optimizer without parameter(s) W_hh"),
    (dict(optimizer="extra tensor"), "optimizer over 6 tensors"),
    (dict(freeze="b_q"), "parameter b_q with requires_grad=False"),
    (dict(path="fast"), "path='fast'"),
    (dict(path=3), "path=3"),
    (dict(cuda_graphs="yes"), "cuda_graphs='yes'"),
    (dict(graph_forward="cudnn"), "graph_forward='cudnn'"),
    (dict(measure_memory=1), "measure_memory=1"),
    (dict(callback=5), "callback=5"),
]


def _optimizer(model, which):
    """The optimizer a case asks for: the model's, None, one missing W_hh, or one extra tensor."""
    named = dict(model.named_parameters())
    if which is None:
        return None
    if which == "drop W_hh":
        return torch.optim.SGD([p for n, p in named.items() if n != "W_hh"], lr=0.1)
    if which == "extra tensor":
        return torch.optim.SGD([*named.values(), torch.zeros(2, requires_grad=True)], lr=0.1)
    return torch.optim.SGD(model.parameters(), lr=0.1)


@pytest.mark.parametrize("override, message", CASES)
def test_bad_input_raises_before_training(override, message):
    model, _, before = _setup()
    kwargs = dict(x=GOOD_X, y=GOOD_Y, style=tf_style(3), loss="mse", optimizer="ok")
    kwargs.update(override)
    if "freeze" in kwargs:
        getattr(model, kwargs.pop("freeze")).requires_grad_(False)
    opt = _optimizer(model, kwargs.pop("optimizer"))
    with pytest.raises(EngineError) as err:
        train_stream(model, kwargs.pop("x"), kwargs.pop("y"), kwargs.pop("style"), opt, **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "nothing may be trained"


@pytest.mark.parametrize("chunk", [0, -3, 1.5, True, "8", None])
def test_evaluate_chunk_must_be_a_positive_int(chunk):
    model, _, _ = _setup()
    with pytest.raises(EngineError, match=f"chunk={chunk!r} is not allowed: use a positive int"):
        evaluate_stream(model, GOOD_X, GOOD_Y, chunk=chunk)


def test_evaluate_checks_the_stream_like_training():
    model, _, _ = _setup()
    with pytest.raises(EngineError, match="x with dtype torch.float64"):
        evaluate_stream(model, GOOD_X.double(), GOOD_Y)
    with pytest.raises(EngineError, match="h0 with non-finite"):
        evaluate_stream(model, GOOD_X, GOOD_Y, h0=torch.full((2, 4), float("inf")))
    assert evaluate_stream(model, GOOD_X, GOOD_Y, chunk=4)[0] == pytest.approx(
        evaluate_stream(model, GOOD_X, GOOD_Y, chunk=1024)[0], rel=1e-6
    )


def test_model_constructor_errors():
    with pytest.raises(ModelError, match="nonlinearity='relu'"):
        ElmanRNN(2, 3, 1, nonlinearity="relu")
    with pytest.raises(ModelError, match="hidden_size=0"):
        ElmanRNN(2, 0, 1)
    with pytest.raises(ModelError, match="cell='rnn'"):
        make_model("rnn", 2, 3, 1)


def test_state_is_carried_and_returned_detached():
    torch.manual_seed(0)
    model = LSTMModel(3, 4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: parameters fixed, so states must chain exactly
    x, y = torch.randn(10, 2, 3), torch.randn(10, 2, 2)
    whole = train_stream(model, x, y, TBPTT(5, 5), opt)
    first = train_stream(model, x[:4], y[:4], TBPTT(5, 5), opt)
    second = train_stream(model, x[4:], y[4:], TBPTT(5, 5), opt, h0=first.state)
    assert all(not t.requires_grad for t in whole.state)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.state, second.state))
    _, h_eval = evaluate_stream(model, x, y)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(whole.state, h_eval))


def test_callback_sees_every_update_and_can_stop_training():
    model, opt, _ = _setup()
    seen = []

    def stop_after_two(record):
        seen.append(record.t)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_stream(model, GOOD_X, GOOD_Y, tf_style(2), opt, callback=stop_after_two)
    assert seen == [2, 4]
