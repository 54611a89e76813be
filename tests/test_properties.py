"""Property tests: the update times and backprop depths the engine *applies* match docs/semantics.md.

Nothing here reads the style's schedule. The engine is observed from outside:

- a probe model counts the steps it has been run forward, and a recording optimizer notes that
  count and a copy of every ``p.grad`` when the engine calls ``step()`` (update time = steps
  forwarded at that moment);
- the probe is a bias-free linear Elman RNN in float64 with D = H = Q = T, ``W_hx = W_hh =
  W_qh = I`` and one-hot inputs x_t = e_t, so h_t = e_1 + ... + e_t. Targets are y_t = h_t - e_t,
  so the residual of step s is exactly e_s and dl_s/do_s = c e_s with c = 2 / (Q N) for an
  update averaging N steps (mse: mean over steps, batch and outputs). Then, per update,

      dL/dW_qh[s, :] != 0        iff the loss of step s is in this update's objective
      dL/dW_hx[s, j] = c          iff the gradient of loss s reaches step j (W_hh = I)

  so row s of dL/dW_hx shows loss s's realised backprop window (j, s] and its depth.
  Under random truncation each kept edge is scaled by 1/pi: dL/dW_hx[s, j] = c pi^-(s-j).

The oracle is docs/semantics.md's text, written out below (``spec_schedule``), on both engine paths.

At the end: every invalid combination of inputs raises EngineError (never another exception) and
leaves the parameters untouched, on every path.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tbptt_bench.engine import train_stream
from tbptt_bench.models import ElmanRNN
from tbptt_bench.styles import TBPTT, RandomTruncation

PATHS = ("autograd", "manual-elman")
SETTINGS = settings(
    max_examples=50,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class CountingElman(ElmanRNN):
    """A linear Elman RNN that counts the steps it has been run forward (any path, any call)."""

    def __init__(self, size: int):
        super().__init__(size, size, size, nonlinearity="linear", bias=False)
        self.double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.eye(size, dtype=torch.float64))
        self.steps = 0

    def cell(self, params, x, h):
        self.steps += 1
        return super().cell(params, x, h)

    def window(self, params, x, h):
        before = self.steps
        out = super().window(params, x, h)  # the linear cell's window loops over ``cell``
        if self.steps == before:  # a fused kernel: count its steps here instead
            self.steps += x.shape[0]
        return out


class Recorder(torch.optim.Optimizer):
    """An optimizer that changes nothing and records (steps forwarded, gradients) at every step."""

    def __init__(self, model: CountingElman):
        super().__init__(model.parameters(), {})
        self.model = model
        self.seen: list[tuple[int, dict[str, torch.Tensor]]] = []

    def step(self, closure=None):
        grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters()}
        self.seen.append((self.model.steps, grads))


def spec_schedule(T: int, k1: int | None, k2: int | None) -> list[tuple[int, int, int]]:
    """docs/semantics.md written out: (previous update, update time, held-constant state index) per update."""
    k1 = T if k1 is None else k1
    k2 = T if k2 is None else k2
    times = [t for t in range(1, T + 1) if t % k1 == 0]
    if not times or times[-1] != T:
        times.append(T)
    return [(prev, t, max(t - k2, 0)) for prev, t in zip([0] + times[:-1], times)]


def observe(T: int, B: int, style, path: str, seed: int = 0):
    """Train the probe on one stream; return the recorder's observations and the records."""
    model = CountingElman(T)
    x = torch.eye(T, dtype=torch.float64).unsqueeze(1).expand(T, B, T).contiguous()
    y = torch.cumsum(x, 0) - x
    opt = Recorder(model)
    gen = torch.Generator().manual_seed(seed)
    result = train_stream(model, x, y, style, opt, loss="mse", path=path, generator=gen)
    return opt.seen, result.records


def k_strategy(T: int):
    return st.one_of(st.none(), st.integers(1, T + 5))


@st.composite
def tbptt_cases(draw):
    T = draw(st.integers(1, 40))
    return T, draw(k_strategy(T)), draw(k_strategy(T)), draw(st.integers(1, 3))


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(case=tbptt_cases())
def test_tbptt_update_times_losses_and_depths_follow_the_spec(path, case):
    T, k1, k2, B = case
    seen, records = observe(T, B, TBPTT(k1, k2), path)
    schedule = spec_schedule(T, k1, k2)
    # 1. Update times: the steps forwarded when the optimizer stepped, and the records agree.
    assert [steps for steps, _ in seen] == [t for _, t, _ in schedule]
    assert [r.t for r in records] == [t for _, t, _ in schedule]
    used_by = {}
    for (steps, g), (prev, t, start), record in zip(seen, schedule, records):
        c = 2.0 / (T * (t - prev))  # d(objective)/d(o_s) = c e_s: the mean over the update's steps
        # 2. Losses: row s of dW_qh is nonzero exactly for the losses of (prev, t].
        used = [s for s in range(1, T + 1) if bool(g["W_qh"][s - 1].abs().sum() > 0)]
        assert used == list(range(prev + 1, t + 1))
        for s in used:
            assert s not in used_by, f"loss {s} used by updates {used_by[s]} and {t}"
            used_by[s] = t
            # 3. Depth: loss s reaches steps (start, s] (none when s <= start: readout only).
            expected = torch.zeros(T, dtype=torch.float64)
            expected[start:s] = c
            torch.testing.assert_close(g["W_hx"][s - 1], expected, rtol=1e-12, atol=0)
        # rows of losses outside this update carry nothing
        others = [s - 1 for s in range(1, T + 1) if s not in used]
        assert bool((g["W_hx"][others] == 0).all())
        # every loss is 1/Q (residual e_s), so the objective, their mean, is 1/Q too
        assert record.loss == pytest.approx(1.0 / T, rel=1e-12)
    assert sorted(used_by) == list(range(1, T + 1))  # every loss used by exactly one update


@st.composite
def random_cases(draw):
    T = draw(st.integers(1, 40))
    pi = draw(st.one_of(st.just(1.0), st.sampled_from([0.25, 0.5, 0.8]), st.floats(0.1, 1.0)))
    return T, draw(k_strategy(T)), draw(k_strategy(T)), pi, draw(st.integers(0, 2**16))


@pytest.mark.parametrize("path", PATHS)
@SETTINGS
@given(case=random_cases())
def test_random_truncation_depths_are_cut_deterministic_depths(path, case):
    T, k1, k2, pi, seed = case
    seen, _ = observe(T, 1, RandomTruncation(pi, k1, k2), path, seed)
    schedule = spec_schedule(T, k1, k2)
    assert [steps for steps, _ in seen] == [t for _, t, _ in schedule]
    for (_, g), (prev, t, start) in zip(seen, schedule):
        c = 2.0 / (T * (t - prev))
        reach = {}
        for s in range(prev + 1, t + 1):
            row = g["W_hx"][s - 1]
            cols = [j for j in range(1, T + 1) if bool(row[j - 1] != 0)]
            if s <= start:  # readout only, as without xi
                assert cols == []
                continue
            # The loss reaches a contiguous run of steps (r, s], never past the deterministic start.
            assert cols, f"loss {s} lost its own step"
            r = cols[0] - 1
            assert cols == list(range(r + 1, s + 1)) and start <= r < s
            # each crossed edge kept is scaled by 1/pi (E[xi] = 1); pi = 1 is exactly TBPTT
            expected = torch.zeros(T, dtype=torch.float64)
            for j in cols:
                expected[j - 1] = c * pi ** -(s - j)
            torch.testing.assert_close(row, expected, rtol=1e-9, atol=0)
            if pi == 1.0:
                assert r == start
            reach[s] = r
        # One draw per edge, shared by every loss of the update: a loss whose path passes step
        # s1 stops where the loss of s1 stops.
        for s2, r2 in reach.items():
            for s1, r1 in reach.items():
                if r2 < s1 < s2:
                    assert r1 == r2, (s1, r1, s2, r2)


def test_random_truncation_keeps_edges_at_rate_pi():
    """The observation is not blind: edge j is kept iff loss j reaches step j - 1, at rate pi."""
    T, pi, draws = 30, 0.5, 10
    kept = []
    for seed in range(draws):
        seen, _ = observe(T, 1, RandomTruncation(pi), "manual-elman", seed)  # full BPTT: one update
        g = seen[0][1]["W_hx"]
        kept += [bool(g[j - 1, j - 2] != 0) for j in range(2, T + 1)]
    assert len(kept) == draws * (T - 1)
    assert 0.35 < sum(kept) / len(kept) < 0.65  # 290 Bernoulli(0.5) draws: sd 0.03
    assert 0 < sum(kept) < len(kept)


# -- invalid input: always an EngineError, one line, nothing trained ---------------------------------


def _corrupt_optimizer(which):
    def apply(case):
        named = dict(case["model"].named_parameters())
        if which == "none":
            case["optimizer"] = None
        elif which == "missing":
            drop = sorted(named)[0]
            case["optimizer"] = torch.optim.SGD([p for n, p in named.items() if n != drop], lr=0.1)
        else:
            case["optimizer"] = torch.optim.SGD([*named.values(), torch.zeros(3, requires_grad=True)], lr=0.1)

    return apply


def _set(key, value):
    def apply(case):
        case[key] = value(case) if callable(value) else value

    return apply


def _freeze(case):
    next(iter(case["model"].parameters())).requires_grad_(False)


CORRUPTIONS = {
    "x dtype": _set("x", lambda c: c["x"].double()),
    "y dtype": _set("y", lambda c: c["y"].double()),
    "x device": _set("x", lambda c: c["x"].to("meta")),
    "x nan": _set("x", lambda c: c["x"].clone().fill_(float("nan"))),
    "y shape": _set("y", lambda c: c["y"][:-1]),
    "h0 dtype": _set("h0", lambda c: torch.zeros(c["x"].shape[1], 4, dtype=torch.float64)),
    "h0 shape": _set("h0", lambda c: torch.zeros(c["x"].shape[1], 5)),
    "h0 inf": _set("h0", lambda c: torch.full((c["x"].shape[1], 4), float("inf"))),
    "h0 type": _set("h0", lambda c: [torch.zeros(c["x"].shape[1], 4)]),
    "h0 device": _set("h0", lambda c: torch.zeros(c["x"].shape[1], 4, device="meta")),
    "optimizer none": _corrupt_optimizer("none"),
    "optimizer missing": _corrupt_optimizer("missing"),
    "optimizer extra": _corrupt_optimizer("extra"),
    "frozen parameter": _freeze,
    "clip": _set("clip", -1.0),
    "clip nan": _set("clip", float("nan")),
    "loss": _set("loss", "l1"),
    "path": _set("path", "fastest"),
    "graph_forward": _set("graph_forward", "cudnn"),
    "cuda_graphs": _set("cuda_graphs", 1),
    "style": _set("style", "tf_style(2)"),
    "generator": _set("generator", 7),
}


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(
    bad=st.lists(st.sampled_from(sorted(CORRUPTIONS)), min_size=1, max_size=3, unique=True),
    path=st.sampled_from(["auto", "autograd", "manual-elman", "static-elman"]),
    random=st.booleans(),
)
def test_every_invalid_input_raises_engine_error_and_trains_nothing(bad, path, random):
    from tbptt_bench.engine import EngineError

    torch.manual_seed(0)
    model = ElmanRNN(3, 4, 2)
    case = dict(
        model=model,
        x=torch.randn(6, 2, 3),
        y=torch.randn(6, 2, 2),
        style=RandomTruncation(0.5, 2, 3) if random else TBPTT(2, 3),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss="mse",
        clip=None,
        generator=None,
        h0=None,
        path=path,
        cuda_graphs=True,
        graph_forward="fused",
    )
    for name in bad:
        CORRUPTIONS[name](case)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(EngineError) as err:
        train_stream(
            case.pop("model"), case.pop("x"), case.pop("y"), case.pop("style"), case.pop("optimizer"), **case
        )
    assert "\n" not in str(err.value) and " is not allowed" in str(err.value)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "nothing may be trained"


@settings(max_examples=40, deadline=None, database=None, derandomize=True)
@given(
    chunk=st.one_of(
        st.integers(max_value=0), st.floats(allow_nan=True), st.booleans(), st.text(max_size=3), st.none()
    )
)
def test_evaluate_refuses_every_chunk_but_a_positive_int(chunk):
    from tbptt_bench.engine import EngineError, evaluate_stream

    model = ElmanRNN(3, 4, 2)
    with pytest.raises(EngineError, match="chunk=.* is not allowed: use a positive int"):
        evaluate_stream(model, torch.randn(5, 2, 3), torch.randn(5, 2, 2), chunk=chunk)
