"""The engine against oracles (docs/semantics.md, "What pins each rule"), all in float64.

1. TBPTT(T, T) = plain full BPTT through autograd.
2. The notes' closed forms for the linear, bias-free RNN with squared loss.
3. ``TABLE``: parameters after SGD training = the brute-force reference (tests/reference_tbptt.py)
   to 1e-10, for every (T, k1, k2) row x cell x engine path x loss x clipping.
4. Clipping: records carry the pre-clip norm and ``clipped``; the applied update = the reference's.

The reference itself is first checked against plain autograd (``test_reference_*``), and the
deliberately wrong variants at the end show that 1e-10 separates right from nearly right.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from reference_tbptt import RecordingSGD, make_case, max_abs_diff, reference_train, update_times
from tbptt_bench.styles import full, parse_style

TOL = 1e-10
CELLS = ("linear", "tanh", "gru", "lstm")
LOSSES = ("mse", "ce")
LR = 0.2
CLIP = 0.1  # below the typical gradient norm of these cases, so clipping is active

#: (case, T, k1, k2, style spec). None = the whole sequence. Quoted by the lead; keep it in sync.
TABLE: list[tuple[str, int, int | None, int | None, str]] = [
    ("full BPTT", 11, None, None, "full()"),
    ("Williams-Peng", 11, 1, 4, "williams_peng(4)"),
    ("one-step context, k1 > 1", 12, 4, 1, "one_step(4)"),
    ("overlapping, k2 = 2 k1", 12, 3, 6, "overlapping(3, 6)"),
    ("TF-style", 12, 4, 4, "tf_style(4)"),
    ("k2 not a multiple of k1", 13, 3, 5, "overlapping(3, 5)"),
    ("k2 not a multiple of k1, long T", 23, 2, 7, "overlapping(2, 7)"),
    ("k1 > T", 7, 10, 3, "tbptt(10, 3)"),
    ("k2 > T", 9, 2, 15, "overlapping(2, 15)"),
    ("k1 > T and k2 > T", 6, 8, 9, "overlapping(8, 9)"),
    ("T not a multiple of k1", 10, 4, 4, "tf_style(4)"),
    ("T not a multiple of k1, k2 > k1", 11, 3, 4, "overlapping(3, 4)"),
    ("k2 < k1 (readout-only losses)", 11, 5, 2, "tbptt(5, 2)"),
    ("k1 = k2 = 1", 8, 1, 1, "tf_style(1)"),
]

#: the engine's implementations each cell can run on ("auto" picks one of them)
PATHS = {
    "linear": ("autograd", "manual-elman", "static-elman"),
    "tanh": ("autograd", "manual-elman", "static-elman"),
    "gru": ("autograd",),
    "lstm": ("autograd",),
}
CELL_PATHS = [(cell, path) for cell in CELLS for path in PATHS[cell]]

CASES = [
    pytest.param(
        row, cell, path, loss, clip, id=f"{row[0]}-{cell}-{path}-{loss}-{'clip' if clip else 'noclip'}"
    )
    for row in TABLE
    for cell, path in CELL_PATHS
    for loss in LOSSES
    for clip in (None, CLIP)
]
_REF_CACHE: dict = {}


def _reference(row, cell, loss, clip):
    """The reference run for a table case (shared by the engine's paths)."""
    key = (row, cell, loss, clip)
    if key not in _REF_CACHE:
        _, T, k1, k2, _ = row
        model, x, y = make_case(cell, loss, T)
        _REF_CACHE[key] = reference_train(model, x, y, k1, k2, lr=LR, loss=loss, clip=clip)
    return _REF_CACHE[key]


@pytest.fixture(scope="module")
def engine():
    return pytest.importorskip(
        "tbptt_bench.engine.train", reason="tbptt_bench.engine.train is not written yet"
    )


def _train_engine(engine, cell, loss, T, spec, clip=None, lr=LR, seed=0, path="auto", **kw):
    model, x, y = make_case(cell, loss, T, seed=seed, **kw)
    opt = RecordingSGD(model, lr=lr)
    result = engine.train_stream(model, x, y, parse_style(spec), opt, loss=loss, clip=clip, path=path)
    if path != "auto":
        assert result.path.startswith(path), f"asked for path {path}, ran {result.path}"
    return model, result, opt


# -- the reference against plain autograd ----------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("loss", LOSSES)
def test_reference_full_equals_autograd(cell, loss):
    model, x, y = make_case(cell, loss, 9)
    ref = reference_train(model, x, y, None, None, lr=LR, loss=loss)
    o, _ = model(x)
    obj = F.mse_loss(o, y) if loss == "mse" else F.cross_entropy(o.reshape(-1, o.shape[-1]), y.reshape(-1))
    obj.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    err, name = max_abs_diff(ref.updates[0].grad, grads)
    assert err <= 1e-12, f"{cell}/{loss}: reference gradient of {name} off by {err:g}"
    assert abs(ref.updates[0].loss - obj.item()) <= 1e-12


@pytest.mark.parametrize("cell", CELLS)
def test_reference_tf_style_equals_detached_chunks(cell):
    """TBPTT(k, k) with T a multiple of k is the textbook loop: detach, forward k steps, step."""
    T, k = 12, 4
    model, x, y = make_case(cell, "mse", T)
    ref = reference_train(model, x, y, k, k, lr=LR)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    h = model.init_state(x.shape[1])
    for a in range(0, T, k):
        h = tuple(v.detach() for v in h) if isinstance(h, tuple) else h.detach()
        o, h = model(x[a : a + k], h)
        opt.zero_grad()
        F.mse_loss(o, y[a : a + k]).backward()
        opt.step()
    err, name = max_abs_diff(ref.params, {n: p.detach() for n, p in model.named_parameters()})
    assert err <= 1e-12, f"{cell}: {name} off by {err:g}"


@pytest.mark.parametrize("k1,k2", [(1, 3), (3, 5), (5, 2), (4, 1), (2, 20)])
def test_reference_windows_equal_autograd_when_parameters_are_frozen(k1, k2):
    """With lr = 0 every update's gradient is plain autograd over x[start:t] from the stored state."""
    T = 11
    model, x, y = make_case("tanh", "mse", T)
    ref = reference_train(model, x, y, k1, k2, lr=0.0)
    assert [u.t for u in ref.updates] == update_times(T, k1)
    prev = 0
    for u in ref.updates:
        start = max(u.t - k2, 0)
        model.zero_grad()
        o_win, _ = model(x[start : u.t], ref.states[start])
        o = torch.cat(
            [model.readout(model.params(), ref.states[s]).unsqueeze(0) for s in range(prev + 1, start + 1)]
            + [o_win[max(prev - start, 0) :]]
        )
        F.mse_loss(o, y[prev : u.t]).backward()
        err, name = max_abs_diff(u.grad, {n: p.grad for n, p in model.named_parameters()})
        assert err <= 1e-12, f"update t={u.t}: {name} off by {err:g}"
        prev = u.t


def test_update_times_follow_spec_rule_1():
    assert update_times(12, 4) == [4, 8, 12]
    assert update_times(10, 4) == [4, 8, 10]
    assert update_times(7, 10) == [7]
    assert update_times(3, 1) == [1, 2, 3]


@pytest.mark.parametrize("row", TABLE, ids=[r[0] for r in TABLE])
def test_table_specs_match_their_k1_k2(row):
    _, T, k1, k2, spec = row
    assert parse_style(spec).resolve(T) == (T if k1 is None else k1, T if k2 is None else k2)


# -- 1. full BPTT = plain autograd -------------------------------------------------------------


@pytest.mark.parametrize("cell,path", CELL_PATHS + [(c, "auto") for c in CELLS])
@pytest.mark.parametrize("loss", LOSSES)
def test_full_bptt_equals_plain_autograd(engine, cell, path, loss):
    T = 10
    plain, x, y = make_case(cell, loss, T)
    o, _ = plain(x)
    obj = F.mse_loss(o, y) if loss == "mse" else F.cross_entropy(o.reshape(-1, o.shape[-1]), y.reshape(-1))
    obj.backward()
    expected_grad = {n: p.grad.clone() for n, p in plain.named_parameters()}
    expected_params = {n: p.detach() - LR * p.grad for n, p in plain.named_parameters()}

    model, result, opt = _train_engine(engine, cell, loss, T, "full()", path=path)
    assert [r.t for r in result.records] == [T]
    err, name = max_abs_diff(opt.applied[0], expected_grad)
    assert err <= 1e-12, f"{cell}/{loss}: gradient of {name} off by {err:g}"
    err, name = max_abs_diff({n: p.detach() for n, p in model.named_parameters()}, expected_params)
    assert err <= 1e-12, f"{cell}/{loss}: {name} after one step off by {err:g}"
    assert abs(result.records[0].loss - obj.item()) <= 1e-12


# -- 2. the notes' closed forms (linear, bias-free RNN, squared loss) ------------------------


def _closed_form(model, x, y):
    """dL/dW_qh, dL/dh_t (t = 1..T), dL/dW_hx, dL/dW_hh from the notes, with explicit matrix powers.

    Column-vector formulas, applied per stream b and summed over the batch; L is the mse mean over
    steps, batch and outputs, so dL/do_t = 2 (o_t - y_t) / (T B Q).
    """
    W_hx, W_hh, W_qh = (model.params()[n].detach() for n in ("W_hx", "W_hh", "W_qh"))
    T, B, _ = x.shape
    Q = W_qh.shape[0]
    h = [torch.zeros(B, W_hh.shape[0], dtype=x.dtype)]
    for t in range(T):
        h.append(x[t] @ W_hx.T + h[-1] @ W_hh.T)
    dL_do = [2.0 * (h[t] @ W_qh.T - y[t - 1]) / (T * B * Q) for t in range(1, T + 1)]  # dL_do[i-1]: (B, Q)
    dW_qh = sum(dL_do[t - 1].T @ h[t] for t in range(1, T + 1))
    dL_dh = []  # dL_dh[t-1] = sum_{i=t..T} (W_hh^T)^{i-t} W_qh^T dL/do_i, one column per stream
    for t in range(1, T + 1):
        dL_dh.append(
            sum(torch.linalg.matrix_power(W_hh.T, i - t) @ W_qh.T @ dL_do[i - 1].T for i in range(t, T + 1)).T
        )
    dW_hx = sum(dL_dh[t - 1].T @ x[t - 1] for t in range(1, T + 1))
    dW_hh = sum(dL_dh[t - 1].T @ h[t - 1] for t in range(1, T + 1))
    return {"W_qh": dW_qh, "W_hx": dW_hx, "W_hh": dW_hh}, dL_dh


def test_closed_form_dL_dh_equals_autograd():
    model, x, y = make_case("linear", "mse", 8, bias=False)
    expected, dL_dh = _closed_form(model, x, y)
    params = model.params()
    h = model.init_state(x.shape[1])
    hs = []
    for t in range(8):
        h = model.cell(params, x[t], h)
        h.retain_grad()
        hs.append(h)
    F.mse_loss(model.readout(params, torch.stack(hs)), y).backward()
    for t in range(8):
        assert torch.allclose(hs[t].grad, dL_dh[t], rtol=0, atol=1e-13), f"dL/dh_{t + 1}"
    for n in expected:
        assert torch.allclose(params[n].grad, expected[n], rtol=0, atol=1e-13), n


@pytest.mark.parametrize("path", PATHS["linear"])
def test_full_bptt_equals_closed_forms(engine, path):
    T = 8
    model, x, y = make_case("linear", "mse", T, bias=False, H=5)
    expected, _ = _closed_form(model, x, y)
    opt = RecordingSGD(model, lr=LR)
    assert engine.train_stream(model, x, y, full(), opt, loss="mse", path=path).path.startswith(path)
    assert sorted(opt.applied[0]) == ["W_hh", "W_hx", "W_qh"]
    err, name = max_abs_diff(opt.applied[0], expected)
    assert err <= 1e-12, f"closed form of dL/d{name} off by {err:g}"


# -- 3. the table ----------------------------------------------------------------------------


@pytest.mark.parametrize("row,cell,path,loss,clip", CASES)
def test_table_engine_equals_reference(engine, row, cell, path, loss, clip):
    case, T, k1, k2, spec = row
    ref = _reference(row, cell, loss, clip)
    if clip is not None:
        assert any(u.clipped for u in ref.updates), "the clip value does not bite here; lower CLIP"
    model, result, opt = _train_engine(engine, cell, loss, T, spec, clip=clip, path=path)

    assert [r.t for r in result.records] == [u.t for u in ref.updates]
    err, name = max_abs_diff({n: p.detach() for n, p in model.named_parameters()}, ref.params)
    assert err <= TOL, f"{case} {cell}/{path}/{loss}/clip={clip}: final {name} off by {err:g}"
    for r, u, applied in zip(result.records, ref.updates, opt.applied):
        assert abs(r.loss - u.loss) <= TOL, f"t={u.t}: loss {r.loss!r} vs {u.loss!r}"
        assert abs(r.grad_norm - u.grad_norm) <= TOL, f"t={u.t}: grad_norm {r.grad_norm!r} vs {u.grad_norm!r}"
        assert r.clipped == u.clipped, f"t={u.t}: clipped {r.clipped} vs {u.clipped}"
        err, name = max_abs_diff(applied, u.applied)
        assert err <= TOL, f"t={u.t}: applied gradient of {name} off by {err:g}"
    final = result.state if isinstance(result.state, tuple) else (result.state,)
    ref_final = ref.states[-1] if isinstance(ref.states[-1], tuple) else (ref.states[-1],)
    for a, b in zip(final, ref_final):
        assert torch.allclose(a, b, rtol=0, atol=TOL), "final carried state differs"


def test_table_covers_every_preset():
    presets = {parse_style(spec).preset for *_, spec in TABLE}
    assert {"full", "williams_peng", "one_step", "overlapping", "tf_style"} <= presets


# -- 4. clipping -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS["tanh"])
def test_clip_records_pre_clip_norm_and_applies_reference_update(engine, path):
    T = 9
    model, x, y = make_case("tanh", "mse", T)
    ref = reference_train(model, x, y, 3, 5, lr=LR, clip=CLIP)
    model, result, opt = _train_engine(engine, "tanh", "mse", T, "overlapping(3, 5)", clip=CLIP, path=path)
    for r, u, applied in zip(result.records, ref.updates, opt.applied):
        assert u.grad_norm > CLIP and r.clipped, f"t={u.t}: clip {CLIP} should bite (norm {u.grad_norm:g})"
        assert abs(r.grad_norm - u.grad_norm) <= TOL  # the norm BEFORE clipping
        applied_norm = sum(float((g * g).sum()) for g in applied.values()) ** 0.5
        assert abs(applied_norm - CLIP) <= 1e-12, (
            f"t={u.t}: applied norm {applied_norm!r}, not the clip {CLIP}"
        )
        err, name = max_abs_diff(applied, u.applied)
        assert err <= TOL, f"t={u.t}: applied gradient of {name} off by {err:g}"


@pytest.mark.parametrize("cell", ["gru", "tanh"])
def test_large_clip_changes_nothing(engine, cell):
    T = 9
    _, plain, plain_opt = _train_engine(engine, cell, "ce", T, "tf_style(3)")
    _, big, big_opt = _train_engine(engine, cell, "ce", T, "tf_style(3)", clip=1e6)
    assert not any(r.clipped for r in big.records)
    assert [r.grad_norm for r in big.records] == [r.grad_norm for r in plain.records]
    for a, b in zip(plain_opt.applied, big_opt.applied):
        assert max_abs_diff(a, b)[0] == 0.0


# -- the oracle can fail: nearly right variants are far outside 1e-10 ---------------------------


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_jacobians_at_current_parameters_are_detected(cell):
    """docs/semantics.md rule 4: using today's parameters for stored steps moves the result by >> 1e-10."""
    model, x, y = make_case(cell, "mse", 12)
    right = reference_train(model, x, y, 3, 6, lr=LR)
    wrong = reference_train(model, x, y, 3, 6, lr=LR, history_params="current")
    assert max_abs_diff(right.params, wrong.params)[0] > 1e3 * TOL


@pytest.mark.parametrize("row", [r for r in TABLE if r[3] is not None and r[3] < r[1]], ids=lambda r: r[0])
def test_off_by_one_truncation_is_detected(row):
    _, T, k1, k2, _ = row
    model, x, y = make_case("tanh", "mse", T)
    right = reference_train(model, x, y, k1, k2, lr=LR)
    wrong = reference_train(model, x, y, k1, k2 + 1, lr=LR)
    assert max_abs_diff(right.params, wrong.params)[0] > 1e3 * TOL
