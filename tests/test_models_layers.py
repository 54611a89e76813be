"""Stacked GRU/LSTM (``layers``): the fused kernel, the step-by-step cell and torch.nn agree."""

from __future__ import annotations

import pytest
import torch

from tbptt_bench.engine import train_stream
from tbptt_bench.models import GRUModel, LSTMModel, ModelError, make_model
from tbptt_bench.styles import full, tf_style


def _flat(h):
    return list(h) if isinstance(h, tuple) else [h]


@pytest.mark.parametrize("cls", [GRUModel, LSTMModel])
@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_window_equals_the_cell_loop_and_torch_nn(cls, layers, bias):
    torch.manual_seed(0)
    m = cls(3, 5, 2, bias=bias, layers=layers).double()
    x = torch.randn(9, 4, 3, dtype=torch.float64)
    h0 = tuple(torch.randn_like(t) for t in _flat(m.init_state(4)))
    h0 = h0 if isinstance(m.init_state(4), tuple) else h0[0]
    fused, h_fused = m.window(m.params(), x, h0)
    h, feats = h0, []
    for x_t in x:
        h = m.cell(m.params(), x_t, h)
        feats.append(m.features(h))
    torch.testing.assert_close(fused, torch.stack(feats), rtol=1e-12, atol=1e-12)
    for a, b in zip(_flat(h_fused), _flat(h)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # torch.nn's stacked module with the same weights gives the same top-layer outputs
    ref = (torch.nn.GRU if cls is GRUModel else torch.nn.LSTM)(3, 5, num_layers=layers, bias=bias).double()
    with torch.no_grad():
        for layer in range(layers):
            sfx = "" if layer == 0 else f"_l{layer}"
            getattr(ref, f"weight_ih_l{layer}").copy_(getattr(m, f"W_ih{sfx}"))
            getattr(ref, f"weight_hh_l{layer}").copy_(getattr(m, f"W_hh{sfx}"))
            if bias:
                getattr(ref, f"bias_ih_l{layer}").copy_(getattr(m, f"b_ih{sfx}"))
                getattr(ref, f"bias_hh_l{layer}").copy_(getattr(m, f"b_hh{sfx}"))
    flat = _flat(h0)
    if cls is GRUModel:
        hx = torch.stack(flat)
    else:
        hx = (torch.stack(flat[:layers]), torch.stack(flat[layers:]))
    out, _ = ref(x, hx)
    torch.testing.assert_close(out, fused, rtol=1e-12, atol=1e-12)


def test_one_layer_keeps_its_parameter_names_order_and_state():
    # The initialisation draws parameters in registration order, so one layer keeps the order
    # it always had and a seed gives the weights earlier records were trained from.
    for cell in ("gru", "lstm"):
        m = make_model(cell, 3, 5, 2)
        assert list(m.params()) == ["W_ih", "W_hh", "W_qh", "b_ih", "b_hh", "b_q"]
    assert isinstance(make_model("gru", 3, 5, 2).init_state(2), torch.Tensor)
    assert len(make_model("lstm", 3, 5, 2).init_state(2)) == 2
    assert len(make_model("gru2x", 3, 5, 2).init_state(2)) == 2
    assert len(make_model("lstm2x", 3, 5, 2).init_state(2)) == 4
    m = make_model("lstm2x", 6, 50, 6)
    assert m.layers == 2 and m.W_ih_l1.shape == (200, 50)


@pytest.mark.parametrize("layers", [0, 9, 1.5, True, "2"])
def test_bad_layers_raise_a_one_line_error(layers):
    with pytest.raises(ModelError, match="layers=") as e:
        LSTMModel(3, 5, 2, layers=layers)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("cell", ["gru2x", "lstm2x"])
def test_full_bptt_through_two_layers_is_plain_autograd(cell):
    torch.manual_seed(1)
    x, y = torch.randn(12, 3, 4, dtype=torch.float64), torch.randint(0, 3, (12, 3))
    a = make_model(cell, 4, 6, 3, generator=torch.Generator().manual_seed(0)).double()
    b = make_model(cell, 4, 6, 3, generator=torch.Generator().manual_seed(0)).double()
    train_stream(a, x, y, full(), torch.optim.SGD(a.parameters(), lr=0.1), loss="ce")
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    out, _ = b(x)
    torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1)).backward()
    opt.step()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
    # and a truncated style runs through the tuple state
    r = train_stream(a, x, y, tf_style(5), torch.optim.SGD(a.parameters(), lr=0.1), loss="ce")
    assert [u.t for u in r.records] == [5, 10, 12]
