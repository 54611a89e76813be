"""Activation memory of TBPTT(k1, k2) does not grow with T: it is bounded by ~ (max(k1, k2) + c) steps.

Measured with this file's own saved-tensor counter (independent of tbptt_bench.engine.saved_memory):
a pack hook adds a saved tensor's bytes to a live total the first time its memory (device, data
pointer, byte size) is saved, a weakref finalizer on the packed handle subtracts them when autograd
frees the last handle, and the peak of the live total is kept. Two totals are tracked:

* ``activation``: non-leaf tensors (hidden states, gates, inputs' slices) — the TBPTT cost;
* ``total``: also leaves that require grad (live parameters, and the per-segment parameter
  snapshots the engine keeps for stored history when k2 > k1).

Per-step bytes come from full BPTT itself: (peak(T=2n) - peak(T=n)) / n. ``MEASURED`` keeps the
numbers of the last run so the lead can quote them.
"""

from __future__ import annotations

import weakref

import pytest
import torch

from tbptt_bench.models import make_model
from tbptt_bench.styles import parse_style

#: (style spec, steps an update keeps = max(k1, k2), short T, long T for the fast run).
#: Every style also runs at T = 10,000 under the ``slow`` marker where the fast run is shorter.
STYLES = [
    ("tf_style(16)", 16, 100, {"autograd": 10_000, "manual-elman": 2_000}),
    ("one_step(16)", 16, 100, {"autograd": 10_000, "manual-elman": 10_000}),
    ("overlapping(8, 16)", 16, 100, {"autograd": 1_000, "manual-elman": 1_000}),
    ("williams_peng(16)", 16, 100, {"autograd": 300, "manual-elman": 300}),
    ("random_tbptt(0.5, 16, 16)", 16, 100, {"autograd": 1_000, "manual-elman": 1_000}),
]
PATHS = ("autograd", "manual-elman")  # the autograd path is measured by this file's hooks; the
#                                       Elman path keeps no graph, so its own byte count is used
CASES = [
    pytest.param(spec, kept, short, long[path], path, id=f"{path}-{spec}-T{long[path]}")
    for spec, kept, short, long in STYLES
    for path in PATHS
]
CASES += [
    pytest.param(spec, kept, short, 10_000, path, id=f"{path}-{spec}-T10000", marks=pytest.mark.slow)
    for spec, kept, short, long in STYLES
    for path in PATHS
    if long[path] < 10_000
]
SLACK_STEPS = 4  # the bound: activation peak <= (max(k1, k2) + SLACK_STEPS) * per-step bytes
MEASURED: dict = {}


class SavedBytesPeak:
    """Context manager counting the bytes autograd holds for backward; peaks in bytes.

    >>> w, h = torch.ones(3, 3, requires_grad=True), torch.ones(5, 3, requires_grad=True)
    >>> with SavedBytesPeak() as m:
    ...     y = (h @ w).tanh().sum()    # saves leaves h (60 B) and w (36 B), and tanh's output (60 B)
    >>> (m.peak["activation"], m.peak["total"])
    (60, 156)
    >>> y.backward(); (m.live["activation"], m.live["total"])
    (0, 0)
    """

    def __init__(self) -> None:
        self.live = {"activation": 0, "total": 0}
        self.peak = {"activation": 0, "total": 0}
        self._count: dict = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _add(self, kinds, nbytes: int) -> None:
        for k in kinds:
            self.live[k] += nbytes
            self.peak[k] = max(self.peak[k], self.live[k])

    def _drop(self, key, kinds, nbytes: int) -> None:
        self._count[key] -= 1
        if self._count[key] == 0:
            del self._count[key]
            for k in kinds:
                self.live[k] -= nbytes

    def _pack(self, t: torch.Tensor):
        nbytes = t.numel() * t.element_size()
        kinds = ("total",) if (t.is_leaf and t.requires_grad) else ("activation", "total")
        key = (t.device, t.data_ptr(), nbytes, kinds)
        if key not in self._count:
            self._count[key] = 0
            self._add(kinds, nbytes)
        self._count[key] += 1
        handle = _Handle(t if t.is_leaf else t.detach())  # a detached view: no cycle through grad_fn
        weakref.finalize(handle, self._drop, key, kinds, nbytes)
        return handle

    @staticmethod
    def _unpack(handle):
        return handle.tensor

    def __enter__(self) -> SavedBytesPeak:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


class _Handle:
    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


@pytest.fixture(scope="module")
def engine():
    return pytest.importorskip(
        "tbptt_bench.engine.train", reason="tbptt_bench.engine.train is not written yet"
    )


def _measure(engine, spec: str, T: int, path: str = "autograd", *, engine_meter: bool = False) -> dict:
    """Peak saved bytes of one training run of a tiny tanh RNN (H=4, B=2, float32).

    Autograd path, ``engine_meter=False``: this file's hooks ({"activation", "total"}). Otherwise
    the engine's own ``saved_bytes_peak`` (nested hooks: only the innermost run, so never both).
    """
    g = torch.Generator().manual_seed(0)
    model = make_model("tanh", 1, 4, 1, generator=g)
    x, y = torch.randn(T, 2, 1, generator=g), torch.randn(T, 2, 1, generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kw = dict(generator=torch.Generator().manual_seed(0), path=path)
    if engine_meter or path != "autograd":
        res = engine.train_stream(model, x, y, parse_style(spec), opt, measure_memory=True, **kw)
        assert res.path.startswith(path), f"asked for path {path}, ran {res.path}"
        return {"activation": res.saved_bytes_peak}
    with SavedBytesPeak() as meter:
        res = engine.train_stream(model, x, y, parse_style(spec), opt, **kw)
    assert res.path.startswith(path), f"asked for path {path}, ran {res.path}"
    assert meter.live == {"activation": 0, "total": 0}, f"{spec}, T={T}: the engine left saved tensors alive"
    return dict(meter.peak)


@pytest.fixture(scope="module")
def per_step_bytes(engine) -> dict:
    """Activation bytes one step of full BPTT keeps, per path: (peak(T=100) - peak(T=50)) / 50."""
    out = {}
    for path in PATHS:
        p50, p100 = _measure(engine, "full()", 50, path), _measure(engine, "full()", 100, path)
        out[path] = (p100["activation"] - p50["activation"]) / 50
        MEASURED[f"{path} full() T=50 / T=100 activation peak"] = (p50["activation"], p100["activation"])
        assert out[path] > 0
    MEASURED["per-step activation bytes"] = out
    return out


def test_counter_sees_full_bptt_grow_linearly(engine, per_step_bytes):
    """The meter can fail: full BPTT's saved bytes double (minus a constant) when T doubles."""
    p200, p100 = _measure(engine, "full()", 200), _measure(engine, "full()", 100)
    assert p200["activation"] - p100["activation"] == pytest.approx(
        100 * per_step_bytes["autograd"], rel=0.01
    )
    assert p200["activation"] > 1.8 * p100["activation"]


@pytest.mark.parametrize("spec,kept,T_short,T_long,path", CASES)
def test_activation_memory_is_independent_of_T(engine, per_step_bytes, spec, kept, T_short, T_long, path):
    short, long = _measure(engine, spec, T_short, path), _measure(engine, spec, T_long, path)
    MEASURED[f"{path} {spec} T={T_short}"] = short
    MEASURED[f"{path} {spec} T={T_long}"] = long
    for kind in short:
        assert abs(long[kind] - short[kind]) <= 0.05 * short[kind], (
            f"{path} {spec}: {kind} peak {short[kind]} B at T={T_short} but {long[kind]} B at T={T_long}"
        )
    per_step = per_step_bytes[path]
    bound = (kept + SLACK_STEPS) * per_step  # one_step(16) keeps 16 readout inputs, not 1 step
    assert long["activation"] <= bound, (
        f"{path} {spec}: activation peak {long['activation']} B exceeds ({kept} + {SLACK_STEPS}) x {per_step:g} B = {bound:g} B"
    )


@pytest.mark.parametrize(
    "spec",
    [
        "full()",
        "tf_style(16)",
        "overlapping(8, 16)",
        "williams_peng(16)",
        "one_step(16)",
        "random_tbptt(0.5, 16, 16)",
    ],
)
def test_engine_reported_peak_matches_independent_count(engine, spec):
    """TrainResult.saved_bytes_peak (autograd path, measure_memory=True) = this file's count."""
    mine = _measure(engine, spec, 100)
    reported = _measure(engine, spec, 100, engine_meter=True)["activation"]
    MEASURED[f"autograd {spec} T=100 engine saved_bytes_peak"] = reported
    assert reported == mine["activation"], (
        f"{spec}: engine reports {reported} B, this counter {mine['activation']} B"
    )
