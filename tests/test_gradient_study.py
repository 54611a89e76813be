"""tbptt_bench.analysis: the gradient a style uses on one window, against brute-force references.

* Deterministic presets: ``style_gradient`` equals a float64 brute force that builds each loss's
  truncated graph separately (from the constant state d_s steps back, d_s = style.depths(T)),
  sums the losses' gradients and divides by T B Q — to 1e-10.
* Random presets: the mean over draws is within 5 standard errors (per coordinate, se = sample
  sd / sqrt(draws)) + 1e-12 of the deterministic gradient of the capped window (random_depth:
  TBPTT(n, K); random: full BPTT; ARTBP: full BPTT).
* random_depth's measured expected depth and backprop steps match their formulas within 5 SE.
"""

from __future__ import annotations

import math

import pytest
import torch

from reference_tbptt import make_case
from tbptt_bench.analysis import realised_depths, style_gradient, window_backprop_steps
from tbptt_bench.engine.adaptive import choose_k, decay_profile
from tbptt_bench.models import map_state
from tbptt_bench.styles import TBPTT, adaptive, artbp, full, parse_style, random, random_depth

SIZES = dict(B=2, D=2, H=3, Q=2)


def _flat(g: dict) -> torch.Tensor:
    return torch.cat([g[n].reshape(-1) for n in sorted(g)])


def brute_force(model, x, y, depths, loss="mse", h0=None) -> dict:
    """Each loss's own graph: from the constant state d_s steps back, fresh parameter leaves."""
    T, B = x.shape[0], x.shape[1]
    params = {n: p.detach() for n, p in model.params().items()}
    h = model.init_state(B) if h0 is None else h0
    states = [h]
    with torch.no_grad():
        for t in range(T):
            states.append(model.cell(params, x[t], states[-1]))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in range(1, T + 1):
        d = depths[s - 1]
        leaf = {n: p.clone().requires_grad_(True) for n, p in params.items()}
        state = states[s - d]
        for j in range(s - d + 1, s + 1):
            state = model.cell(leaf, x[j - 1], state)
        o = model.readout(leaf, model.features(state))
        if loss == "mse":
            ls = ((o - y[s - 1]) ** 2).sum()
        else:
            ls = -torch.log_softmax(o, -1).gather(-1, y[s - 1].unsqueeze(-1)).sum()
        grads = torch.autograd.grad(ls, list(leaf.values()), allow_unused=True)
        for n, g in zip(leaf, grads):
            if g is not None:
                total[n] += g
    denom = T * B * (y.shape[-1] if loss == "mse" else 1)
    return {n: v / denom for n, v in total.items()}


DETERMINISTIC = ["full()", "tf_style(3)", "williams_peng(3)", "overlapping(2, 5)", "one_step(3)", "tbptt(5, 2)",
                 "tbptt(4, 6)", "tf_style(20)"]  # fmt: skip


@pytest.mark.parametrize("cell,loss", [("tanh", "mse"), ("gru", "ce"), ("lstm", "mse")])
@pytest.mark.parametrize("spec", DETERMINISTIC)
def test_deterministic_presets_match_per_loss_brute_force(cell, loss, spec):
    T = 11
    model, x, y = make_case(cell, loss, T, **SIZES)
    style = parse_style(spec)
    h0 = map_state(lambda t: t + 0.1, model.init_state(x.shape[1]))  # not zeros: a burned-in-like start
    got = style_gradient(model, x, y, style, loss, h0=h0)
    want = brute_force(model, x, y, style.depths(T), loss, h0=h0)
    err = float((_flat(got) - _flat(want)).abs().max())
    assert err <= 1e-10, f"{spec}: off by {err:g}"
    before = _flat({n: p.detach() for n, p in model.named_parameters()})
    style_gradient(model, x, y, style, loss)
    assert torch.equal(before, _flat({n: p.detach() for n, p in model.named_parameters()})), "params moved"


def test_full_is_the_exact_gradient_of_the_mean_loss():
    model, x, y = make_case("tanh", "mse", 9, **SIZES)
    out, _ = model(x)
    exact = torch.autograd.grad(((out - y) ** 2).mean(), list(model.parameters()))
    got = style_gradient(model, x, y, full())
    for (n, _), e in zip(model.named_parameters(), exact):
        assert float((got[n] - e).abs().max()) <= 1e-12, n


def test_adaptive_matches_brute_force_of_its_chosen_k():
    T = 24
    model, x, y = make_case("tanh", "mse", T, **SIZES)
    style = adaptive(0.05, k_max=16, period=T, tau=3)
    phi, cum = decay_profile(model, x[:16], y[:16], model.init_state(x.shape[1]), "mse")
    K = choose_k(phi, cum, 3, 0.05, 16)
    want = brute_force(model, x, y, style.for_k(K).depths(T))
    got = style_gradient(model, x, y, style)
    assert float((_flat(got) - _flat(want)).abs().max()) <= 1e-10


def _assert_unbiased(draws: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    N = draws.shape[0]
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(N)
    bad = ((mean - exact).abs() > 5 * se + 1e-12).nonzero().flatten().tolist()
    assert not bad, (
        f"{what}: biased coordinates {bad}: {(mean - exact)[bad].tolist()} vs se {se[bad].tolist()}"
    )
    assert float(draws.std(0).max()) > 1e-8, f"{what}: never varies"


@pytest.mark.parametrize(
    "style,target,N",
    [
        (random_depth(2, cap=2), TBPTT(2, 4), 500),  # unbiased for the capped window
        (random_depth(3, cap=2), TBPTT(3, 6), 400),
        (random(0.5), full(), 400),  # the notes' full-BPTT form
        (artbp(2), full(), 500),  # ARTBP: unbiased for the untruncated gradient
    ],
)
def test_random_presets_are_unbiased_for_their_window(style, target, N):
    T = 8
    model, x, y = make_case("tanh", "mse", T, **SIZES)
    exact = _flat(brute_force(model, x, y, target.depths(T)))
    gen = torch.Generator().manual_seed(0)
    draws = torch.stack([_flat(style_gradient(model, x, y, style, generator=gen)) for _ in range(N)])
    _assert_unbiased(draws, exact, style.spec)


def test_random_depth_expected_depth_and_backprop_steps_match_formulas():
    """Loss at position s of an update with window start: depth min(D, s - start), D geometric,
    E = (1 - pi^m)/(1 - pi) with m = s - start. An update with L = prev - start stored steps
    traverses n + (run of kept edges from prev+1 down, capped at L) steps per row:
    E = n + pi (1 - pi^L)/(1 - pi)."""
    n, cap, T, B, N = 3, 3, 30, 2, 400
    style = random_depth(n, cap)
    pi = style.pi
    gen = torch.Generator().manual_seed(1)
    depth_means, step_means = [], []
    for _ in range(N):
        state = gen.get_state()
        d = realised_depths(style, T, gen)
        gen.set_state(state)  # the same draw for the backprop steps
        steps = window_backprop_steps(style, T, B, gen)
        depth_means.append(sum(d) / T)
        step_means.append(sum(steps[cap:]) / (B * len(steps[cap:])))  # updates with a full window
    want_depth = 0.0
    for prev, u, start in style.updates(T):
        want_depth += sum((1 - pi ** (s - start)) / (1 - pi) for s in range(prev + 1, u + 1))
    want_depth /= T
    L = style.k2 - style.k1
    want_steps = n + pi * (1 - pi**L) / (1 - pi)
    for name, vals, want in (("depth", depth_means, want_depth), ("backprop steps", step_means, want_steps)):
        t = torch.tensor(vals, dtype=torch.float64)
        se = float(t.std()) / math.sqrt(N)
        assert abs(float(t.mean()) - want) <= 5 * se, (
            f"{name}: {float(t.mean()):.4f} vs formula {want:.4f} (se {se:.4f})"
        )
    # and the expected depth is n up to the cap's small tail
    assert abs(want_depth - n) < 0.6


def test_backprop_steps_of_deterministic_rows():
    # the short last block of TF-style(4) on T = 10 still reaches back k2 = 4 steps (SPEC rule 3)
    assert window_backprop_steps(parse_style("tf_style(4)"), 10, 2) == [8, 8, 8]
    assert window_backprop_steps(parse_style("williams_peng(3)"), 5, 1) == [1, 2, 3, 3, 3]
    assert window_backprop_steps(parse_style("one_step(3)"), 6, 2) == [2, 2]
    assert window_backprop_steps(full(), 7, 3) == [21]


def test_study_smoke_cli_records_and_report(tmp_path, capsys):
    """``tbptt-bench gradients echo --smoke``: records, then the report renders them (torch-free)."""
    import json

    from tbptt_bench.cli import main
    from tbptt_bench.report.build import build_report

    assert main(["gradients", "nosuch", "--results", str(tmp_path), "--smoke", "--quiet"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main(["gradients", "echo", "--results", str(tmp_path), "--smoke", "--quiet"]) == 0
    out = next(tmp_path.glob("*/gradients"))
    data = json.loads((out / "gradients.json").read_text())
    assert (
        data["meta"]["size"] == "smoke" and (out / "styles.csv").is_file() and (out / "depth.csv").is_file()
    )
    rows = data["styles"]
    assert {r["checkpoint"] for r in rows} == {0.0, 0.1, 0.5, 1.0}
    fams = {r["family"] for r in rows}
    assert {"tf_style", "williams_peng", "random_depth", "artbp", "adaptive", "random_full"} <= fams
    for r in rows:
        assert r["rel_bias"] >= 0 and r["cost"] > 0 and -1.0 - 1e-9 <= r["cos"] <= 1.0 + 1e-9
        if r["family"] in ("tf_style", "williams_peng", "one_step", "overlapping"):
            assert r["rel_std"] == 0.0
        if r["family"] == "adaptive":
            assert r["K"] in range(1, 7)  # the smoke study caps K at 6
    assert all(d["contrib"] >= 0 for d in data["depth"])
    written = build_report(tmp_path, tmp_path / "report")
    names = {p.name for p in written}
    assert {"gradients.md", "echo_bias.png", "echo_bias.svg", "echo_depth.png", "echo_depth.svg"} <= names
    md = next(p for p in written if p.name == "gradients.md").read_text()
    assert "## echo" in md and "Random depth (E[depth]=2" in md and "ARTBP n=2" in md


@pytest.mark.parametrize("cell,loss", [("tanh", "mse"), ("gru", "ce")])
def test_window_contributions_reproduce_style_gradient_draw_for_draw(cell, loss):
    """The study's fast path: weighted sums of (loss, cell) contributions equal the engine's
    gradient for deterministic presets, and for random presets with the same generator state."""
    from tbptt_bench.analysis import WindowContributions

    T = 10
    model, x, y = make_case(cell, loss, T, **SIZES)
    h0 = map_state(lambda t: t + 0.2, model.init_state(x.shape[1]))
    wc = WindowContributions(model, x, y, loss, h0)

    def flat(g):
        return torch.cat([g[n].reshape(-1) for n in wc.names])

    for spec in DETERMINISTIC:
        st = parse_style(spec)
        got = wc.gradient(wc.depth_weights(st.depths(T)))
        assert float((got - flat(style_gradient(model, x, y, st, loss, h0=h0))).abs().max()) <= 1e-10, spec
    for st in (random_depth(2, cap=2), random_depth(3), artbp(2), artbp(3), random(0.6)):
        for seed in range(4):
            got = wc.gradient(wc.draw_weights(st, torch.Generator().manual_seed(seed)))
            want = flat(
                style_gradient(model, x, y, st, loss, generator=torch.Generator().manual_seed(seed), h0=h0)
            )
            assert float((got - want).abs().max()) <= 1e-10, (st.spec, seed)
    d = torch.diagonal(wc.C, offset=-2, dim1=0, dim2=1).sum(-1)  # depth-3 contribution
    g3 = flat(style_gradient(model, x, y, parse_style("williams_peng(3)"), loss, h0=h0))
    g2 = flat(style_gradient(model, x, y, parse_style("williams_peng(2)"), loss, h0=h0))
    assert float((d - (g3 - g2)).abs().max()) <= 1e-10
