"""Random truncation (docs/semantics.md): xi_j in {0, 1/pi} on every recurrent edge of a backward window.

The reference (tests/reference_tbptt.py) takes xi as an explicit function, so every possible draw of
one update can be enumerated: its gradient and its probability. That gives exact oracles:

* the probability-weighted mean over all patterns is the deterministic TBPTT(k1, k2) gradient
  (unbiasedness of the construction itself, to 1e-12);
* every gradient the engine produces is one of those patterns' gradients (to 1e-10), and the
  patterns occur as often as their probabilities say (per class |count - expected| <= 5 sd + 1,
  and Pearson's chi-square below its 1e-6 tail quantile);
* the engine's mean over many draws matches the deterministic gradient within a few standard
  errors per coordinate: |mean - exact| <= 5 se + 1e-12;
* pi = 1 is the deterministic style; one generator seed gives one result.

All float64, with lr = 0 where draws are pooled, so every update sees the same parameters.
"""

from __future__ import annotations

import itertools
import math
import random as _random

import pytest
import torch

from reference_tbptt import RecordingSGD, make_case, max_abs_diff, reference_train
from tbptt_bench.styles import PRESETS, TBPTT, RandomTruncation, StyleError, parse_style, random_depth

SIZES = dict(B=2, D=2, H=3, Q=1)


@pytest.fixture(scope="module")
def engine():
    return pytest.importorskip(
        "tbptt_bench.engine.train", reason="tbptt_bench.engine.train is not written yet"
    )


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[n].reshape(-1) for n in sorted(grads)])


def _patterns(pi: float, n_bits: int):
    """Every keep/cut pattern over n_bits edge draws, with its probability."""
    for bits in itertools.product((0, 1), repeat=n_bits):
        yield bits, math.prod(pi if b else 1 - pi for b in bits)


def _xi_fn(bits, pi, k2, per_stream, B):
    """xi(t, j) reading a pattern: bit r (per stream: bits r*B .. r*B+B-1) for edge j = start + 2 + r."""

    def xi(t, j):
        r = j - max(t - k2, 0) - 2
        if per_stream:
            return torch.tensor([bits[r * B + b] / pi for b in range(B)], dtype=torch.float64)
        return bits[r] / pi

    return xi


def _pattern_classes(model, x, y, k1, k2, pi, per_stream):
    """Per update: the distinct gradients a draw can give, with their probabilities.

    Returns (deterministic (U, n), list over updates of [(gradient (n,), probability, key)]).
    Patterns with equal gradients (edges that carry no gradient, edges past a short window) merge.
    """
    B = x.shape[1]
    n_edges = k2 - 1
    det = reference_train(model, x, y, k1, k2, lr=0.0)
    U = len(det.updates)
    classes: list[list] = [[] for _ in range(U)]
    for bits, prob in _patterns(pi, n_edges * (B if per_stream else 1)):
        ref = reference_train(model, x, y, k1, k2, lr=0.0, xi=_xi_fn(bits, pi, k2, per_stream, B))
        for u, upd in enumerate(ref.updates):
            g = _flat(upd.grad)
            for c in classes[u]:
                if float((c[0] - g).abs().max()) <= 1e-12:
                    c[1] += prob
                    c[2].add(bits)
                    break
            else:
                classes[u].append([g, prob, {bits}])
    det_flat = torch.stack([_flat(u.grad) for u in det.updates])
    return det_flat, [[(g, p, frozenset(k)) for g, p, k in cs] for cs in classes]


def _engine_draws(engine, model, x, y, style, seeds, path="auto"):
    """(S, U, n): the gradient of every update, for one call per generator seed, lr = 0."""
    out = []
    for s in seeds:
        opt = RecordingSGD(model, lr=0.0)
        res = engine.train_stream(
            model, x, y, style, opt, generator=torch.Generator().manual_seed(s), path=path
        )
        assert path == "auto" or res.path.startswith(path), f"asked for path {path}, ran {res.path}"
        out.append(torch.stack([_flat(a) for a in opt.applied]))
    return torch.stack(out)


_CLASS_CACHE: dict = {}


def _cached_classes(T, k1, k2, pi, per_stream):
    key = (T, k1, k2, pi, per_stream)
    if key not in _CLASS_CACHE:
        model, x, y = make_case("tanh", "mse", T, **SIZES)
        _CLASS_CACHE[key] = _pattern_classes(model, x, y, k1, k2, pi, per_stream)
    return _CLASS_CACHE[key]


def _chi2(observed: dict, expected: dict) -> tuple[float, int]:
    """Pearson's statistic over pattern classes; classes expected < 5 times share one bucket.

    Degrees of freedom = buckets - 1 (conservative: each update structure adds a constraint).
    """
    chi2, buckets, rare_o, rare_e = 0.0, 0, 0, 0.0
    for key, (e, _) in expected.items():
        o = observed.get(key, 0)
        if e >= 5:
            chi2, buckets = chi2 + (o - e) ** 2 / e, buckets + 1
        else:
            rare_o, rare_e = rare_o + o, rare_e + e
    if rare_e > 0:
        chi2, buckets = chi2 + (rare_o - rare_e) ** 2 / max(rare_e, 1.0), buckets + 1
    return chi2, max(buckets - 1, 1)


def _chi2_quantile(df: int, z: float = 4.75) -> float:
    """Wilson-Hilferty: the chi-square quantile at the normal's z (4.75: p about 1e-6)."""
    c = 2.0 / (9.0 * df)
    return df * (1.0 - c + z * math.sqrt(c)) ** 3


def _assert_unbiased(draws: torch.Tensor, exact: torch.Tensor, what: str) -> torch.Tensor:
    """Per coordinate |mean - exact| <= 5 se + 1e-12; returns the per-coordinate variance."""
    resid = (draws - exact).reshape(-1, draws.shape[-1])
    N = resid.shape[0]
    mean, var = resid.mean(0), resid.var(0, unbiased=True)
    se = (var / N).sqrt()
    bad = (mean.abs() > 5 * se + 1e-12).nonzero().flatten().tolist()
    assert not bad, (
        f"{what}: biased coordinates {bad}: mean-exact {mean[bad].tolist()} vs se {se[bad].tolist()}"
    )
    return var


# -- the reference's xi is unbiased by construction --------------------------------------------


@pytest.mark.parametrize("k1,k2,per_stream", [(4, 4, False), (2, 4, False), (1, 3, False), (3, 3, True)])
def test_reference_expectation_over_all_patterns_is_deterministic(k1, k2, per_stream):
    model, x, y = make_case("tanh", "mse", 10, **SIZES)
    det, classes = _pattern_classes(model, x, y, k1, k2, 0.3, per_stream)
    for u, cs in enumerate(classes):
        assert abs(sum(p for _, p, _ in cs) - 1.0) <= 1e-12
        expectation = sum(p * g for g, p, _ in cs)
        assert float((expectation - det[u]).abs().max()) <= 1e-12, f"update {u}"
    assert all(len(cs) > 1 for cs in classes[2:]), "random truncation changed nothing"


# -- (a) pi = 1 is the deterministic style ---------------------------------------------------


@pytest.mark.parametrize("cell,path", [("tanh", "manual-elman"), ("tanh", "autograd"), ("lstm", "autograd")])
@pytest.mark.parametrize("T,k1,k2", [(9, None, None), (11, 3, 5), (10, 1, 4), (10, 4, 4), (11, 5, 2)])
@pytest.mark.parametrize("per_stream", [False, True])
def test_pi_one_equals_deterministic(engine, cell, path, T, k1, k2, per_stream):
    runs = {}
    for name, style in (("det", TBPTT(k1, k2)), ("pi=1", RandomTruncation(1.0, k1, k2, per_stream))):
        model, x, y = make_case(cell, "mse", T)
        opt = RecordingSGD(model, lr=0.2)
        res = engine.train_stream(
            model, x, y, style, opt, clip=0.1, generator=torch.Generator().manual_seed(1), path=path
        )
        assert res.path.startswith(path)
        runs[name] = ({n: p.detach() for n, p in model.named_parameters()}, res.records)
    ref = reference_train(*make_case(cell, "mse", T), k1, k2, lr=0.2, clip=0.1)
    err, name = max_abs_diff(runs["pi=1"][0], runs["det"][0])
    assert err <= 1e-12, f"pi=1 vs deterministic engine: {name} off by {err:g}"
    err, name = max_abs_diff(runs["pi=1"][0], ref.params)
    assert err <= 1e-10, f"pi=1 vs reference: {name} off by {err:g}"
    assert [(r.t, r.clipped) for r in runs["pi=1"][1]] == [(r.t, r.clipped) for r in runs["det"][1]]


# -- (b, d) every draw is a pattern of the reference, at the right frequency; unbiased ---------


@pytest.mark.parametrize("path", ["manual-elman", "autograd"])
@pytest.mark.parametrize(
    "k1,k2,per_stream,pi,U,S",
    [
        (4, 4, False, 0.3, 20, 16),  # TF-style windows
        (2, 4, False, 0.5, 25, 12),  # overlapping: draws reach into stored history
        (1, 3, False, 0.4, 40, 8),  # Williams-Peng
        (3, 3, True, 0.5, 20, 16),  # per-stream draws: patterns mixing kept and cut streams
    ],
)
def test_engine_draws_are_reference_patterns(engine, k1, k2, per_stream, pi, U, S, path):
    T = k1 * U
    model, x, y = make_case("tanh", "mse", T, **SIZES)
    det, classes = _cached_classes(T, k1, k2, pi, per_stream)
    for cs in classes:  # classes must be told apart unambiguously
        for (g1, *_), (g2, *_) in itertools.combinations(cs, 2):
            assert float((g1 - g2).abs().max()) > 1e-8
    draws = _engine_draws(engine, model, x, y, RandomTruncation(pi, k1, k2, per_stream), range(S), path)
    assert draws.shape[:2] == (S, len(classes))

    observed: dict = {}
    expected: dict = {}
    for u, cs in enumerate(classes):
        for g, p, key in cs:
            e = expected.setdefault(key, [0.0, 0.0])
            e[0] += S * p
            e[1] += S * p * (1 - p)
        for s in range(S):
            dist = [float((draws[s, u] - g).abs().max()) for g, _, _ in cs]
            best = min(range(len(cs)), key=dist.__getitem__)
            assert dist[best] <= 1e-10, (
                f"seed {s}, update {u}: gradient matches no xi pattern (nearest {dist[best]:g})"
            )
            observed[cs[best][2]] = observed.get(cs[best][2], 0) + 1
    for key, (e, v) in expected.items():
        o = observed.get(key, 0)
        assert abs(o - e) <= 5 * math.sqrt(v) + 1, (
            f"pattern class {sorted(key)[:2]}...: seen {o} times, expected {e:.1f}"
        )
    chi2, df = _chi2(observed, expected)
    assert chi2 <= _chi2_quantile(df), (
        f"pattern frequencies off: chi2 = {chi2:.1f} with {df} degrees of freedom"
    )

    var = _assert_unbiased(
        draws, det.unsqueeze(0), f"{path}: TBPTT({k1}, {k2}) pi={pi} per_stream={per_stream}"
    )
    assert float(var.max()) > 1e-8, "pi < 1 but the gradient never varies"


@pytest.mark.parametrize("path", ["manual-elman", "autograd"])
def test_single_update_mean_over_seeds_is_unbiased(engine, path):
    """Random truncation on full BPTT (one update): 250 generator seeds, mean vs exact gradient."""
    model, x, y = make_case("tanh", "mse", 6, **SIZES)
    exact = _flat(reference_train(model, x, y, None, None, lr=0.0).updates[0].grad)
    draws = _engine_draws(engine, model, x, y, RandomTruncation(0.5), range(250), path)
    var = _assert_unbiased(draws, exact, "random(0.5) on full BPTT")
    names = sorted(model.params())
    sizes = [model.params()[n].numel() for n in names]
    var_by_name = dict(zip(names, torch.split(var, sizes)))
    assert float(var_by_name["W_hh"].max()) > 1e-8, "W_hh's gradient must vary when pi < 1"
    assert float(var_by_name["W_qh"].max()) <= 1e-24, "xi must not touch the readout's gradient"


# -- (c) one seed, one result ------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["gru", "tanh"])
@pytest.mark.parametrize("per_stream", [False, True])
def test_same_seed_same_result_other_seed_other_result(engine, cell, per_stream):
    def run(seed):
        model, x, y = make_case(cell, "ce", 12)
        opt = RecordingSGD(model, lr=0.2)
        res = engine.train_stream(
            model,
            x,
            y,
            RandomTruncation(0.5, 2, 5, per_stream),
            opt,
            loss="ce",
            generator=torch.Generator().manual_seed(seed),
        )
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), res.records

    (p1, r1), (p2, r2), (p3, _) = run(7), run(7), run(8)
    assert torch.equal(p1, p2) and r1 == r2
    assert not torch.equal(p1, p3), "a different generator seed should draw different truncations"


# -- draws made before the forward pass: the same draws as today's per-update drawing ---------


def _todays_xi(T, k1, k2, pi, per_stream, B, seed):
    """xi(t, j) from the rule the engine followed before it drew ahead: at each update, in
    order, torch.rand((edges, B or 1, 1), float64) < pi from the generator, kept edges = 1/pi."""
    from reference_tbptt import update_times

    g = torch.Generator().manual_seed(seed)
    table = {}
    for t in update_times(T, k1):
        start = max(t - k2, 0)
        draw = torch.rand(
            (max(t - start - 1, 0), B if per_stream else 1, 1), generator=g, dtype=torch.float64
        )
        table[t] = (draw < pi).double() / pi

    def xi(t, j):
        row = table[t][j - max(t - k2, 0) - 2].flatten()
        return row if per_stream else float(row[0])

    return xi


@pytest.mark.parametrize("path", ["manual-elman", "autograd"])
@pytest.mark.parametrize(
    "k1,k2,per_stream,pi",
    [(2, 6, False, 0.5), (3, 3, True, 0.6), (1, 4, False, 0.5), (4, 12, False, 0.75), (3, 2, False, 0.5)],
)
def test_drawing_ahead_keeps_todays_draws(engine, path, k1, k2, per_stream, pi):
    """Same seed, same gradients: SGD (lr > 0, so stored history matters) matches the reference fed
    with the per-update draws of the old engine, to 1e-10, update by update."""
    T, B = 17, SIZES["B"]
    ref = reference_train(
        *make_case("tanh", "mse", T, **SIZES), k1, k2, lr=0.3, xi=_todays_xi(T, k1, k2, pi, per_stream, B, 5)
    )
    model, x, y = make_case("tanh", "mse", T, **SIZES)
    opt = RecordingSGD(model, lr=0.3)
    engine.train_stream(
        model, x, y, RandomTruncation(pi, k1, k2, per_stream), opt,
        generator=torch.Generator().manual_seed(5), path=path,
    )  # fmt: skip
    assert len(opt.applied) == len(ref.updates)
    for u, (got, want) in enumerate(zip(opt.applied, ref.updates)):
        err, name = max_abs_diff(got, want.grad)
        assert err <= 1e-10, f"update {u} (t={want.t}): {name} off by {err:g}"
    err, name = max_abs_diff({n: p.detach() for n, p in model.named_parameters()}, ref.params)
    assert err <= 1e-10, f"final parameters: {name} off by {err:g}"


def test_planner_cuts_where_xi_is_zero():
    """A chunk lives exactly until the last update whose backward pass reaches it."""
    from tbptt_bench.engine.chunking import plan_chunks
    from tbptt_bench.engine.xi import realise

    style = random_depth(2, cap=5)  # k1 = 2, k2 = 10, pi = 0.5
    T = 40
    draws = realise(style, T, 1, torch.Generator().manual_seed(0))
    plans = plan_chunks(style, T, cut_random_edges=False, draws=draws)
    assert [c.b for c in plans if c.b == c.update] == style.update_times(T)
    for c in plans:
        reaching = [
            u for prev, u, start in draws.updates
            if u >= c.update and c.a >= start and draws.reach(u, prev, start) <= c.a + 1
        ]  # fmt: skip
        assert c.last_use == max(reaching, default=c.update), (c, reaching)
    # without draws the same style keeps every chunk for the whole cap
    blind = plan_chunks(style, T, cut_random_edges=False)
    assert sum(c.last_use - c.update for c in plans) < sum(c.last_use - c.update for c in blind) / 2


@pytest.mark.parametrize("path", ["manual-elman", "autograd"])
def test_random_depth_memory_is_far_below_tbptt_of_its_cap(engine, path):
    """Cutting at drawn zeros: random_depth(2, cap=20) (window cap 40, expected depth 2) holds a
    few steps for backward, TBPTT(2, 40) holds 40."""
    T = 240
    peaks = {}
    for name, style in (("random", random_depth(2, cap=20)), ("tbptt", TBPTT(2, 40))):
        model, x, y = make_case("tanh", "mse", T, B=4, D=2, H=16, Q=1)
        res = engine.train_stream(
            model, x, y, style, torch.optim.SGD(model.parameters(), lr=0.0),
            generator=torch.Generator().manual_seed(0), measure_memory=True, path=path,
        )  # fmt: skip
        peaks[name] = res.saved_bytes_peak
    assert peaks["random"] < 0.35 * peaks["tbptt"], peaks


# -- the random_depth preset -------------------------------------------------------------------


def test_random_depth_semantics_and_names():
    s = parse_style("random_depth(5)")
    assert (s.k1, s.k2, s.pi, s.per_stream) == (5, 20, 0.8, False)
    assert s.expected_depth == pytest.approx(5.0)
    assert (s.preset, s.n, s.spec) == ("random_depth", 5, "random_depth(5)")
    assert "E[depth]=5" in s.label and "pi=0.8" in s.label and "K=20" in s.label
    assert parse_style("random_depth(3, 10)") == RandomTruncation(1 - 1 / 3, 3, 30)
    assert parse_style(parse_style("random_depth(3, 10)").spec) == parse_style("random_depth(3, 10)")
    old = parse_style("random(0.2)")
    assert old.n is None and "full-BPTT form" in old.label and old.preset == "random"
    assert old.expected_depth == pytest.approx(1.25)
    for bad in ("random_depth(1)", "random_depth(0)", "random_depth(2.5)", "random_depth(3, 0)"):
        with pytest.raises(StyleError):
            parse_style(bad)
    assert {"random_depth", "artbp", "adaptive"} <= set(PRESETS)


def test_random_depth_sampled_depth_is_geometric_with_mean_n():
    """styles.sample_depths (the report's picture helper): mean depth of the losses whose window
    leaves room for the cap is n, up to a small capped tail, within 5 standard errors."""
    n, T = 4, 4000
    s = random_depth(n, cap=8)
    d = s.sample_depths(T, _random.Random(0))
    assert len(d) == T and min(d) >= 1 and max(d) <= s.k2
    tail = d[s.k2 :]
    mean = sum(tail) / len(tail)
    sd = (sum((v - mean) ** 2 for v in tail) / (len(tail) - 1)) ** 0.5
    assert abs(mean - n) <= 5 * sd / len(tail) ** 0.5 + n * s.pi ** (s.k2 - s.k1), (mean, sd)
