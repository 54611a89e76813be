"""The plain-PyTorch baselines against the engine: where they agree with docs/semantics.md and where they differ.

Every case runs in float64 on a tiny ElmanRNN; gradients are captured by an SGD that records
``p.grad`` at every ``step()`` (engine and baselines both call ``optimizer.step()`` once per update).
"""

from __future__ import annotations

import random

import pytest
import torch

from tbptt_bench.baselines import (
    BASELINES,
    ENGINE_NAMES,
    BaselineError,
    TorchElman,
    chunked_rnn,
    rerun_window,
    retain_graph_k1k2,
    rnncell_loop,
    torch_elman,
)
from tbptt_bench.engine import train_stream
from tbptt_bench.models import ElmanRNN
from tbptt_bench.styles import TBPTT, Style, full, one_step, tf_style, williams_peng
from tbptt_bench.styles import random as random_style

D, H, Q, B = 2, 3, 2, 2


class Recorder(torch.optim.SGD):
    """SGD that records every update's gradient by our ElmanRNN's parameter names."""

    def __init__(self, params: dict[str, torch.Tensor], lr: float):
        self.names = list(params)
        super().__init__(list(params.values()), lr=lr)
        self.grads: list[dict[str, torch.Tensor]] = []

    def step(self, closure=None):
        ps = self.param_groups[0]["params"]
        self.grads.append(
            {n: (torch.zeros_like(p) if p.grad is None else p.grad.clone()) for n, p in zip(self.names, ps)}
        )
        return super().step(closure)


def case(T: int, seed: int = 0, loss: str = "mse"):
    g = torch.Generator().manual_seed(seed)
    model = ElmanRNN(D, H, Q, generator=g).double()
    with torch.no_grad():  # larger recurrent weights, so truncation depth shows in the gradients
        model.W_hh.mul_(3.0)
    x = torch.randn(T, B, D, generator=g, dtype=torch.float64)
    y = (
        torch.randn(T, B, Q, generator=g, dtype=torch.float64)
        if loss == "mse"
        else torch.randint(0, Q, (T, B), generator=g)
    )
    return model, x, y


def run_engine(model, x, y, style: Style, lr: float = 0.1, loss: str = "mse", **kw):
    opt = Recorder(model.params(), lr)
    result = train_stream(model, x, y, style, opt, loss, **kw)
    return [r.loss for r in result.records], opt.grads, model.params()


def run_baseline(fn, model, x, y, lr: float = 0.1, loss: str = "mse", **kw):
    net = torch_elman(model)
    opt = Recorder(net.engine_params(), lr)
    losses = fn(net, x, y, opt, loss, **kw)
    return losses, opt.grads, net.engine_params()


def assert_same(a: dict, b: dict, tol: float = 1e-10):
    assert set(a) == set(b)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=tol, msg=lambda m: f"{n}: {m}")


def max_diff(a: dict, b: dict) -> float:
    return max(float((a[n] - b[n]).abs().max()) for n in a)


# -- the pair computes our ElmanRNN ----------------------------------------------------------------
def test_torch_elman_computes_the_same_outputs_by_rnn_and_by_cell():
    model, x, _ = case(T=6)
    net = torch_elman(model)
    want, h_want = model(x)
    feats, h = net.rnn(x)
    torch.testing.assert_close(net.head(feats), want, rtol=0, atol=1e-12)
    torch.testing.assert_close(h[0], h_want, rtol=0, atol=1e-12)
    h = torch.zeros(B, H, dtype=torch.float64)
    for t in range(6):
        h = net.cell(x[t], h)
        torch.testing.assert_close(net.head(h), want[t], rtol=0, atol=1e-12)


def test_torch_elman_shares_cell_weights_and_freezes_the_second_bias():
    net = torch_elman(ElmanRNN(D, H, Q))
    assert net.cell.weight_hh is net.rnn.weight_hh_l0 and net.cell.bias_ih is net.rnn.bias_ih_l0
    assert not net.rnn.bias_hh_l0.requires_grad and float(net.rnn.bias_hh_l0.abs().sum()) == 0.0
    assert {n for n, p in net.named_parameters() if p.requires_grad} == set(ENGINE_NAMES.values())
    assert sorted(torch_elman(ElmanRNN(D, H, Q, bias=False)).engine_params()) == ["W_hh", "W_hx", "W_qh"]


# -- chunked_rnn and rnncell_loop: TBPTT(k, k2 <= k), every update when k divides T --------------------
CHUNKED = [  # (style, baseline kwargs)
    (full(), {"k": None}),
    (tf_style(4), {"k": 4}),
    (one_step(4), {"k": 4, "k2": 1}),
    (TBPTT(4, 2), {"k": 4, "k2": 2}),
]


@pytest.mark.parametrize("impl", [chunked_rnn, rnncell_loop], ids=lambda f: f.__name__)
@pytest.mark.parametrize("style,kw", CHUNKED, ids=[s.spec for s, _ in CHUNKED])
def test_chunked_baselines_equal_the_engine_on_every_update(impl, style, kw):
    model, x, y = case(T=8)
    e_loss, e_grads, e_params = run_engine(model, x, y, style)
    b_loss, b_grads, b_params = run_baseline(impl, case(T=8)[0], x, y, **kw)
    assert len(b_grads) == len(e_grads) == len(style.update_times(8))
    assert_same(b_grads[0], e_grads[0])  # the first update's gradient ...
    assert b_loss == pytest.approx(e_loss, abs=1e-12)
    assert_same(b_params, e_params)  # ... and every later one


@pytest.mark.parametrize("impl", [chunked_rnn, rnncell_loop], ids=lambda f: f.__name__)
def test_chunked_baselines_equal_the_engine_with_cross_entropy(impl):
    model, x, y = case(T=8, loss="ce")
    _, e_grads, e_params = run_engine(model, x, y, tf_style(4), loss="ce")
    _, b_grads, b_params = run_baseline(impl, case(T=8, loss="ce")[0], x, y, loss="ce", k=4)
    assert_same(b_grads[0], e_grads[0])
    assert_same(b_params, e_params)


@pytest.mark.parametrize("impl", [chunked_rnn, rnncell_loop], ids=lambda f: f.__name__)
def test_chunked_baselines_cut_the_last_short_window_unlike_spec(impl):
    # T = 10, k = 4: docs/semantics.md's last update (at t=10) reaches back to h_6, into the previous chunk;
    # the baselines detach at h_8. The first two updates agree, the third does not.
    model, x, y = case(T=10)
    _, e_grads, _ = run_engine(model, x, y, tf_style(4))
    _, b_grads, _ = run_baseline(impl, case(T=10)[0], x, y, k=4)
    assert len(b_grads) == len(e_grads) == 3
    assert_same(b_grads[1], e_grads[1])
    assert max_diff(b_grads[2], e_grads[2]) > 1e-4


def test_rnncell_loop_with_pi_one_is_full_bptt():
    model, x, y = case(T=6)
    _, e_grads, e_params = run_engine(
        model, x, y, random_style(1.0), generator=torch.Generator().manual_seed(0)
    )
    _, b_grads, b_params = run_baseline(rnncell_loop, case(T=6)[0], x, y, pi=1.0)
    assert_same(b_grads[0], e_grads[0])
    assert_same(b_params, e_params)


def test_rnncell_loop_random_truncation_is_unbiased_and_truncates():
    # One update of full BPTT with pi = 0.5, 800 draws: the mean gradient matches the deterministic
    # one within 5 standard errors, and some draws differ from it (the graph really is cut).
    model, x, y = case(T=4)
    _, want, _ = run_baseline(rnncell_loop, model, x, y, lr=0.0)
    rng = random.Random(1)
    net = torch_elman(model)
    draws = []
    for _ in range(800):
        opt = Recorder(net.engine_params(), lr=0.0)
        rnncell_loop(net, x, y, opt, "mse", pi=0.5, generator=rng)
        draws.append(opt.grads[0]["W_hh"])
    stack = torch.stack(draws)
    se = stack.std(0) / len(draws) ** 0.5
    assert bool(((stack.mean(0) - want[0]["W_hh"]).abs() <= 5 * se + 1e-12).all())
    assert max(float((d - want[0]["W_hh"]).abs().max()) for d in draws) > 1e-3


# -- retain_graph_k1k2: the forum recipe -----------------------------------------------------------
def test_retain_graph_first_update_equals_williams_peng():
    model, x, y = case(T=6)
    _, e_grads, _ = run_engine(model, x, y, williams_peng(3))
    _, b_grads, _ = run_baseline(retain_graph_k1k2, case(T=6)[0], x, y, k1=1, k2=3)
    assert_same(b_grads[0], e_grads[0])
    assert_same(b_grads[1], e_grads[1])  # the walk back has reached one state only: still exact


def test_retain_graph_reuses_accumulated_state_grads_from_the_third_update():
    # Update 3 walks back two states; the leaf h_1 still holds update 2's gradient, which is
    # pushed through step 1 again. Clearing the state leaves' .grad repairs it: then the recipe
    # equals Williams–Peng on every update (its retained steps keep their time's Jacobians).
    model, x, y = case(T=6)
    e_loss, e_grads, e_params = run_engine(model, x, y, williams_peng(3))
    _, b_grads, _ = run_baseline(retain_graph_k1k2, case(T=6)[0], x, y, k1=1, k2=3)
    assert max_diff(b_grads[2], e_grads[2]) > 1e-4
    f_loss, f_grads, f_params = run_baseline(
        retain_graph_k1k2, case(T=6)[0], x, y, k1=1, k2=3, zero_state_grads=True
    )
    assert all(max_diff(f, e) < 1e-10 for f, e in zip(f_grads, e_grads))
    assert f_loss == pytest.approx(e_loss, abs=1e-12)
    assert_same(f_params, e_params)


def test_retain_graph_uses_only_the_last_loss_and_skips_the_tail():
    # k1 = 2, k2 = 4: docs/semantics.md's first update uses the mean of l_1 and l_2; the recipe uses l_2 alone.
    # T = 7: docs/semantics.md updates at 2, 4, 6, 7; the recipe never updates at 7.
    model, x, y = case(T=7)
    _, e_grads, _ = run_engine(model, x, y, TBPTT(2, 4))
    _, b_grads, _ = run_baseline(retain_graph_k1k2, case(T=7)[0], x, y, k1=2, k2=4)
    assert (len(b_grads), len(e_grads)) == (3, 4)
    assert max_diff(b_grads[0], e_grads[0]) > 1e-4
    ref = case(T=7)[0]
    out, _ = ref(x[:2])
    l2 = torch.nn.functional.mse_loss(out[1], y[1])
    want = dict(zip(ref.params(), torch.autograd.grad(l2, list(ref.params().values()))))
    assert_same(b_grads[0], want)


# -- rerun_window: Williams–Peng by recomputation --------------------------------------------------
def test_rerun_window_first_update_equals_williams_peng_and_the_second_differs():
    model, x, y = case(T=5)
    e_loss, e_grads, _ = run_engine(model, x, y, williams_peng(3))
    b_loss, b_grads, _ = run_baseline(rerun_window, case(T=5)[0], x, y, n=3)
    assert_same(b_grads[0], e_grads[0])
    assert b_loss[0] == pytest.approx(e_loss[0], abs=1e-12)
    # update 2 recomputes h_1 with the updated parameters: docs/semantics.md keeps the stored h_1 and its Jacobian
    assert abs(b_loss[1] - e_loss[1]) > 1e-6
    assert max_diff(b_grads[1], e_grads[1]) > 1e-4


def test_rerun_window_of_one_step_equals_tbptt_1_1_throughout():
    model, x, y = case(T=6)
    e_loss, _, e_params = run_engine(model, x, y, TBPTT(1, 1))
    b_loss, _, b_params = run_baseline(rerun_window, case(T=6)[0], x, y, n=1)
    assert b_loss == pytest.approx(e_loss, abs=1e-12)
    assert_same(b_params, e_params)


# -- registry and bad input ------------------------------------------------------------------------
def test_registry_names_every_baseline():
    import tbptt_bench.baselines as module

    assert BASELINES and all(getattr(module, name) is fn for name, fn in BASELINES.items())


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda n, x, y, o: chunked_rnn(n, x, y, o, "mse", k=0), "k=0 is not allowed"),
        (lambda n, x, y, o: chunked_rnn(n, x, y, o, "mse", k=2, k2=3), "k2=3 is not allowed"),
        (lambda n, x, y, o: rnncell_loop(n, x, y, o, "mse", pi=0.0), "pi=0.0 is not allowed"),
        (lambda n, x, y, o: retain_graph_k1k2(n, x, y, o, "mse", k1=None, k2=2), "k1=None is not allowed"),
        (lambda n, x, y, o: rerun_window(n, x, y, o, "mse", n=True), "n=True is not allowed"),
        (lambda n, x, y, o: chunked_rnn(n, x, y, o, "l1", k=2), "loss='l1' is not allowed"),
        (lambda n, x, y, o: chunked_rnn(n, x[0], y, o, "mse", k=2), "x with shape (2, 2) is not allowed"),
        (lambda n, x, y, o: chunked_rnn(n, x, y[:3], o, "mse", k=2), "y with shape (3, 2, 2) is not allowed"),
        (lambda n, x, y, o: chunked_rnn(object(), x, y, o, "mse", k=2), "net=object is not allowed"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, message):
    model, x, y = case(T=4)
    net = torch_elman(model)
    with pytest.raises(BaselineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(net, x, y, torch.optim.SGD(net.parameters(), lr=0.1))


def test_torch_elman_refuses_a_linear_rnn():
    with pytest.raises(BaselineError, match="copy a tanh ElmanRNN"):
        torch_elman(ElmanRNN(D, H, Q, nonlinearity="linear"))
    assert isinstance(torch_elman(ElmanRNN(D, H, Q)), TorchElman)
