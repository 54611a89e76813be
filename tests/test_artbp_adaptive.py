"""ARTBP (Tallec & Ollivier 2017) and adaptive TBPTT (Aicher et al. 2019): docs/artbp.md, docs/adaptive.md.

ARTBP's oracle: with lr = 0 the sum of a stream's update gradients, averaged over many draws of the
truncation points, equals T/n times the exact full-BPTT gradient of the mean loss (each loss is
weighted 1/(n B Q) and every crossed edge compensated by 1/(1 - c)). Checked per coordinate:
|mean - exact| <= 5 standard errors of the mean (se = sample sd / sqrt(draws)) + 1e-12.
"""

from __future__ import annotations

import math
import random as _random

import pytest
import torch

from reference_tbptt import RecordingSGD, make_case, reference_train
from tbptt_bench.engine import train_stream
from tbptt_bench.engine.adaptive import choose_k, decay_profile
from tbptt_bench.engine.xi import realise
from tbptt_bench.models import ElmanRNN
from tbptt_bench.styles import TBPTT, StyleError, adaptive, artbp, parse_style

SIZES = dict(B=2, D=2, H=3, Q=1)


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[n].reshape(-1) for n in sorted(grads)])


def test_artbp_style_names_and_schedule():
    s = parse_style("artbp(4)")
    assert (s.n, s.c, s.pi, s.preset, s.spec) == (4, 0.25, 0.75, "artbp", "artbp(4)")
    assert s.to_dict()["n"] == 4 and "ARTBP" in s.label
    times = s.sample_update_times(4000, _random.Random(0))
    assert times[-1] == 4000 and times == sorted(set(times))
    gaps = [b - a for a, b in zip([0, *times], times)]
    mean = sum(gaps) / len(gaps)
    assert abs(mean - 4) < 5 * math.sqrt(12 / len(gaps))  # geometric(1/4): sd sqrt(12)
    for bad in ("artbp(1)", "artbp(0)", "artbp(2.5)"):
        with pytest.raises(StyleError):
            parse_style(bad)


def test_artbp_realised_segments_are_the_windows():
    d = realise(artbp(3), 50, 2, torch.Generator().manual_seed(1))
    assert d.updates[-1][1] == 50
    prev = 0
    for p, t, start in d.updates:
        assert p == prev == start and t > p
        prev = t
    assert d.scale == pytest.approx(1.5)


@pytest.mark.parametrize("cell,path,n,S", [("tanh", "manual-elman", 2, 800), ("tanh", "autograd", 3, 600),
                                           ("gru", "autograd", 2, 300)])  # fmt: skip
def test_artbp_is_unbiased_for_full_bptt(cell, path, n, S):
    T = 6
    model, x, y = make_case(cell, "mse", T, **SIZES)
    exact = _flat(reference_train(model, x, y, None, None, lr=0.0).updates[0].grad) * (T / n)
    totals = []
    for seed in range(S):
        opt = RecordingSGD(model, lr=0.0)
        res = train_stream(
            model, x, y, artbp(n), opt, generator=torch.Generator().manual_seed(seed), path=path
        )
        assert res.path.startswith(path)
        totals.append(sum(_flat(a) for a in opt.applied))
    draws = torch.stack(totals)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(S)
    bad = ((mean - exact).abs() > 5 * se + 1e-12).nonzero().flatten().tolist()
    assert not bad, f"biased coordinates {bad}: {(mean - exact)[bad].tolist()} vs se {se[bad].tolist()}"
    assert float(draws.std(0).max()) > 1e-6, "ARTBP's gradient never varies"
    # and a plain truncation at the same points (no compensation) is biased: TF-style(n) differs
    tf = RecordingSGD(model, lr=0.0)
    train_stream(model, x, y, TBPTT(n, n), tf, path=path)
    tf_total = sum(_flat(a) for a in tf.applied)
    assert float(((tf_total - exact).abs() / (5 * se + 1e-12)).max()) > 1.0


def test_artbp_one_seed_one_result():
    def run(seed):
        model, x, y = make_case("tanh", "mse", 30, **SIZES)
        r = train_stream(
            model, x, y, artbp(4), torch.optim.SGD(model.parameters(), lr=0.1),
            generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip
        return [rec.t for rec in r.records], torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    (t1, p1), (t2, p2), (t3, _) = run(3), run(3), run(4)
    assert t1 == t2 and torch.equal(p1, p2) and t1 != t3
    assert t1[-1] == 30


# -- adaptive TBPTT ------------------------------------------------------------------------------


def test_choose_k_follows_the_geometric_tail():
    for beta in (0.5, 0.8, 0.9):
        phi = [beta**k for k in range(60)]
        cum = [sum(phi[:K]) for K in range(1, 61)]
        for delta in (0.1, 0.01):
            K = choose_k(phi, cum, tau=4, delta=delta, k_max=60)
            # relative tail beta^K / (1 - beta) / (1 / (1 - beta)) - err = beta^K / ... < delta
            lower = max(c - beta**k / (1 - beta) for k, c in enumerate(cum, start=1))
            assert beta**K / (1 - beta) / lower < delta <= beta ** (K - 1) / (1 - beta) / lower
    flat = [1.0] * 30
    assert choose_k(flat, [float(k) for k in range(1, 31)], tau=4, delta=0.1, k_max=30) == 30


def test_decay_profile_of_a_scaled_orthogonal_linear_rnn():
    """h_t = rho Q h_{t-1} + ...: ||dl/dh_{s-k}|| = rho^k ||dl/dh_s|| exactly."""
    torch.manual_seed(0)
    m = ElmanRNN(2, 6, 1, nonlinearity="linear", bias=False).double()
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    with torch.no_grad():
        m.W_hh.copy_(0.7 * q)
    x, y = torch.randn(20, 3, 2, dtype=torch.float64), torch.randn(20, 3, 1, dtype=torch.float64)
    phi, cum = decay_profile(m, x, y, m.init_state(3), "mse")
    assert len(phi) == len(cum) == 20
    for k in range(1, 20):
        assert phi[k] / phi[k - 1] == pytest.approx(0.7, rel=1e-9)


def test_adaptive_trains_period_by_period():
    torch.manual_seed(0)
    m = ElmanRNN(2, 8, 1)
    x, y = torch.randn(130, 4, 2), torch.randn(130, 4, 1)
    seen = []
    r = train_stream(
        m, x, y, adaptive(0.05, 16, 50), torch.optim.SGD(m.parameters(), lr=0.05), callback=seen.append
    )
    times = [rec.t for rec in r.records]
    assert times == sorted(set(times)) and times[-1] == 130 and seen == r.records
    assert {50, 100} <= set(times)  # a period boundary is an update time
    assert r.path.startswith("adaptive[K=")
    s = parse_style("adaptive(0.05, 16, 50)")
    assert (s.delta, s.k_max, s.period, s.preset, s.n) == (0.05, 16, 50, "adaptive", None)
    for bad in (
        "adaptive(0)",
        "adaptive(1.5)",
        "adaptive(0.1, 1)",
        "adaptive(0.1, 8, 0)",
        "adaptive(0.1, 4, 10, 4)",
    ):
        with pytest.raises(StyleError):
            parse_style(bad)


def test_adaptive_k_grows_as_delta_shrinks():
    torch.manual_seed(1)
    m = ElmanRNN(2, 8, 1)
    x, y = torch.randn(48, 4, 2), torch.randn(48, 4, 1)
    phi, cum = decay_profile(m, x, y, m.init_state(4), "mse")
    ks = [choose_k(phi, cum, 4, d, 48) for d in (0.3, 0.1, 0.01, 0.001)]
    assert ks == sorted(ks) and ks[0] < ks[-1], ks
