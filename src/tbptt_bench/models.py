"""Recurrent models behind one step/readout contract.

Every model is a pure function of an explicit parameter dict, so the engine can run a step
with the parameters of *its* time (stored history, docs/semantics.md rule 4) without copying modules:

    h_t = model.cell(params, x_t, h_{t-1})           # one step; h may be a tuple (LSTM)
    f_t = model.features(h_t)                         # what the readout sees (h of (h, c))
    o_t = model.readout(params, f_t)                  # works on (B, H) or stacked (L, B, H)
    fs, h_L = model.window(params, x[a:b], h_a)       # many steps; fused ATen/cuDNN kernel
                                                      # where the cell allows it

``params`` is ``model.params()`` (the live nn.Parameters) or a snapshot with the same keys.
Parameter names follow the notes: ``W_hx`` (H×D), ``W_hh`` (H×H), ``W_qh`` (Q×H), ``b_h``, ``b_q``.

>>> import torch
>>> m = ElmanRNN(3, 5, 2, nonlinearity="linear", bias=False)
>>> sorted(m.params())
['W_hh', 'W_hx', 'W_qh']
>>> h = m.cell(m.params(), torch.zeros(4, 3), m.init_state(4))
>>> tuple(m.readout(m.params(), m.features(h)).shape)
(4, 2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BenchError, check_int

State = Union[Tensor, tuple[Tensor, ...]]
Params = Mapping[str, Tensor]

__all__ = [
    "MODELS",
    "ElmanRNN",
    "GRUModel",
    "InfluenceBalancingRNN",
    "LSTMModel",
    "ModelError",
    "Params",
    "RecurrentModel",
    "State",
    "make_model",
    "map_state",
]


class ModelError(BenchError):
    """A model was asked for with values that are not allowed."""


def map_state(fn: Callable[[Tensor], Tensor], h: State) -> State:
    """Apply ``fn`` to every tensor of a (possibly tuple) hidden state."""
    return tuple(fn(t) for t in h) if isinstance(h, tuple) else fn(h)


#: cuDNN's note that separate weight tensors get copied into one buffer per call: intended here
#: (a snapshot's parameters can never share one buffer), and cheap next to the kernel.
_CUDNN_WEIGHT_COPY = "RNN module weights are not part of single contiguous chunk of memory"


def _fused(kernel: Callable, x: Tensor, *args):
    """Call a fused sequence kernel (torch.rnn_tanh / gru / lstm); on CUDA without cuDNN's
    per-call warning about weights outside one contiguous buffer."""
    if x.device.type != "cuda":
        return kernel(x, *args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CUDNN_WEIGHT_COPY)
        return kernel(x, *args)


def _uniform_(t: Tensor, bound: float, generator: torch.Generator | None) -> None:
    with torch.no_grad():
        t.uniform_(-bound, bound, generator=generator)


class RecurrentModel(nn.Module):
    """The contract the engine talks to. Subclasses set the sizes and implement ``cell``."""

    input_size: int
    hidden_size: int
    output_size: int
    #: True where ``window`` runs one fused sequence kernel instead of a Python loop.
    fused_window: bool = False

    def params(self) -> dict[str, Tensor]:
        """The live parameters by name (the dict the engine passes to ``cell``/``readout``)."""
        return dict(self.named_parameters())

    def init_state(self, batch: int, *, device=None, dtype=None) -> State:
        p = next(iter(self.parameters()))
        return torch.zeros(batch, self.hidden_size, device=device or p.device, dtype=dtype or p.dtype)

    def cell(self, params: Params, x: Tensor, h: State) -> State:
        raise NotImplementedError

    def features(self, h: State) -> Tensor:
        return h[0] if isinstance(h, tuple) else h

    def readout(self, params: Params, f: Tensor) -> Tensor:
        return F.linear(f, params["W_qh"], params.get("b_q"))  # one addmm: o = f W_qh^T + b_q

    def window(self, params: Params, x: Tensor, h: State) -> tuple[Tensor, State]:
        """Run ``len(x)`` steps from ``h``; return stacked features (L, B, H) and the last state."""
        feats = []
        for x_t in x:
            h = self.cell(params, x_t, h)
            feats.append(self.features(h))
        return torch.stack(feats), h

    def forward(self, x: Tensor, h0: State | None = None) -> tuple[Tensor, State]:
        """Outputs (T, B, Q) and the last state, with the live parameters (plain autograd)."""
        h = self.init_state(x.shape[1]) if h0 is None else h0
        feats, h = self.window(self.params(), x, h)
        return self.readout(self.params(), feats), h


class ElmanRNN(RecurrentModel):
    """h_t = f(W_hx x_t + W_hh h_{t-1} + b_h), o_t = W_qh h_t + b_q, f = tanh or identity."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        nonlinearity: str = "tanh",
        bias: bool = True,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if nonlinearity not in ("tanh", "linear"):
            raise ModelError(f"nonlinearity={nonlinearity!r} is not allowed: use 'tanh' or 'linear'")
        _check_sizes(input_size, hidden_size, output_size)
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.nonlinearity, self.bias = nonlinearity, bias
        self.fused_window = nonlinearity == "tanh"
        self.W_hx = nn.Parameter(torch.empty(hidden_size, input_size))
        self.W_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.W_qh = nn.Parameter(torch.empty(output_size, hidden_size))
        if bias:
            self.b_h = nn.Parameter(torch.empty(hidden_size))
            self.b_q = nn.Parameter(torch.empty(output_size))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """torch.nn.RNN's init: U(-1/sqrt(H), 1/sqrt(H)) for every parameter."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            _uniform_(p, bound, generator)

    def cell(self, params: Params, x: Tensor, h: Tensor) -> Tensor:
        pre = x @ params["W_hx"].T + h @ params["W_hh"].T
        if "b_h" in params:
            pre = pre + params["b_h"]
        return torch.tanh(pre) if self.nonlinearity == "tanh" else pre

    def window(self, params: Params, x: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        if not self.fused_window:
            return super().window(params, x, h)
        weights = [params["W_hx"], params["W_hh"]]
        if "b_h" in params:
            weights += [params["b_h"], torch.zeros_like(params["b_h"])]
        out, h_n = _fused(
            torch.rnn_tanh, x, h.unsqueeze(0), weights, "b_h" in params, 1, 0.0, True, False, False
        )
        return out, h_n.squeeze(0)


def _layer_suffix(layer: int) -> str:
    """Parameter-name suffix of a layer: "" for the first (the one-layer names), "_l1", "_l2", ... above."""
    return "" if layer == 0 else f"_l{layer}"


class _GatedRNN(RecurrentModel):
    """A stack of ``layers`` GRU/LSTM layers (torch.nn.GRU/LSTM's equations and init), linear readout.

    Layer l reads layer l-1's h (layer 0 reads x); the readout sees the top layer's h. Parameter
    names: ``W_ih``, ``W_hh``, ``b_ih``, ``b_hh`` for layer 0 (as with one layer) and the same with
    ``_l1``, ``_l2``, ... above. ``window`` runs all layers in one fused torch.gru/torch.lstm
    call (cuDNN on CUDA), as one layer does.
    """

    fused_window = True
    gates: int  # 3 (GRU) or 4 (LSTM)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        bias: bool = True,
        layers: int = 1,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        _check_sizes(input_size, hidden_size, output_size)
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= 8:
            raise ModelError(f"layers={layers!r} is not allowed: use an integer from 1 to 8")
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, output_size
        self.layers, self.bias = layers, bias
        G = self.gates * hidden_size
        # Registration order = initialisation order from ``generator``: with one layer it is the
        # order the one-layer models always had (W_ih, W_hh, W_qh, b_ih, b_hh, b_q), so a seed
        # gives the same initial weights as before layers existed.
        for layer in range(layers):
            sfx = _layer_suffix(layer)
            width = input_size if layer == 0 else hidden_size
            self.register_parameter(f"W_ih{sfx}", nn.Parameter(torch.empty(G, width)))
            self.register_parameter(f"W_hh{sfx}", nn.Parameter(torch.empty(G, hidden_size)))
        self.W_qh = nn.Parameter(torch.empty(output_size, hidden_size))
        if bias:
            for layer in range(layers):
                sfx = _layer_suffix(layer)
                self.register_parameter(f"b_ih{sfx}", nn.Parameter(torch.empty(G)))
                self.register_parameter(f"b_hh{sfx}", nn.Parameter(torch.empty(G)))
            self.b_q = nn.Parameter(torch.empty(output_size))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            _uniform_(p, bound, generator)

    def _layer_weights(self, params: Params, layer: int) -> list[Tensor]:
        sfx = _layer_suffix(layer)
        w = [params[f"W_ih{sfx}"], params[f"W_hh{sfx}"]]
        return w + [params[f"b_ih{sfx}"], params[f"b_hh{sfx}"]] if self.bias else w

    def _weights(self, params: Params) -> list[Tensor]:
        """The flat weight list of the fused kernels: layer 0's tensors, then layer 1's, ..."""
        return [w for layer in range(self.layers) for w in self._layer_weights(params, layer)]


class GRUModel(_GatedRNN):
    """A GRU of ``layers`` layers. State: h (B, H) for one layer, the tuple (h_1, ..., h_L) for more."""

    gates = 3

    def features(self, h: State) -> Tensor:
        return h[-1] if isinstance(h, tuple) else h

    def init_state(self, batch: int, *, device=None, dtype=None) -> State:
        h = super().init_state(batch, device=device, dtype=dtype)
        return h if self.layers == 1 else tuple(torch.zeros_like(h) for _ in range(self.layers))

    def cell(self, params: Params, x: Tensor, h: State) -> State:
        hs = (h,) if self.layers == 1 else h
        out = []
        inp = x
        for layer in range(self.layers):
            inp = torch.gru_cell(inp, hs[layer], *self._layer_weights(params, layer))
            out.append(inp)
        return out[0] if self.layers == 1 else tuple(out)

    def window(self, params: Params, x: Tensor, h: State) -> tuple[Tensor, State]:
        hx = h.unsqueeze(0) if self.layers == 1 else torch.stack(h)
        out, h_n = _fused(
            torch.gru, x, hx, self._weights(params), self.bias, self.layers, 0.0, True, False, False
        )
        return out, (h_n.squeeze(0) if self.layers == 1 else tuple(h_n.unbind(0)))


class LSTMModel(_GatedRNN):
    """An LSTM of ``layers`` layers. State: (h, c) for one layer, (h_1..h_L, c_1..c_L) for more."""

    gates = 4

    def features(self, h: State) -> Tensor:
        return h[self.layers - 1]

    def init_state(self, batch: int, *, device=None, dtype=None) -> tuple[Tensor, ...]:
        h = super().init_state(batch, device=device, dtype=dtype)
        return (
            tuple(torch.zeros_like(h) for _ in range(2 * self.layers))
            if self.layers > 1
            else (h, torch.zeros_like(h))
        )

    def cell(self, params: Params, x: Tensor, h: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        L = self.layers
        hs, cs = [], []
        inp = x
        for layer in range(L):
            h_l, c_l = torch.lstm_cell(inp, (h[layer], h[L + layer]), *self._layer_weights(params, layer))
            hs.append(h_l)
            cs.append(c_l)
            inp = h_l
        return (*hs, *cs)

    def window(self, params: Params, x: Tensor, h: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        L = self.layers
        hx = (torch.stack(h[:L]), torch.stack(h[L:]))
        out, h_n, c_n = _fused(
            torch.lstm, x, hx, self._weights(params), self.bias, L, 0.0, True, False, False
        )
        return out, (*h_n.unbind(0), *c_n.unbind(0))


class InfluenceBalancingRNN(RecurrentModel):
    """The influence-balancing system of the UORO paper as a model with one parameter ``theta``.

    s_t = A s_{t-1} + theta * u * x_t with A = 0.5 I + 0.5 (ones on the superdiagonal),
    u = (+1 × n_plus, -1 × the rest), s_0 = ones, o_t = s_t^1 (first coordinate), no readout
    parameters. Feed x_t = 1 and y_t = 1: theta has positive short-term and negative long-term
    influence on the loss, so short truncation pushes it the wrong way.
    """

    def __init__(
        self,
        input_size: int = 1,
        hidden_size: int = 23,
        output_size: int = 1,
        n_plus: int = 10,
        theta0: float = 0.5,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if (input_size, output_size) != (1, 1):
            raise ModelError(
                f"input_size={input_size}, output_size={output_size} are not allowed: the influence system takes 1 and 1"
            )
        _check_sizes(input_size, hidden_size, output_size)
        if not 0 <= n_plus <= hidden_size:
            raise ModelError(f"n_plus={n_plus} is not allowed: it must lie in [0, hidden_size={hidden_size}]")
        self.input_size, self.hidden_size, self.output_size = 1, hidden_size, 1
        self.theta = nn.Parameter(torch.tensor(float(theta0)))
        A = 0.5 * torch.eye(hidden_size) + 0.5 * torch.diag(torch.ones(hidden_size - 1), 1)
        u = torch.cat([torch.ones(n_plus), -torch.ones(hidden_size - n_plus)])
        self.register_buffer("A", A)
        self.register_buffer("u", u)

    def init_state(self, batch: int, *, device=None, dtype=None) -> Tensor:
        return torch.ones(
            batch, self.hidden_size, device=device or self.theta.device, dtype=dtype or self.theta.dtype
        )

    def cell(self, params: Params, x: Tensor, h: Tensor) -> Tensor:
        return h @ self.A.T + x * (params["theta"] * self.u)

    def readout(self, params: Params, f: Tensor) -> Tensor:
        return f[..., :1]


def _check_sizes(*sizes: int) -> None:
    for name, v in zip(("input_size", "hidden_size", "output_size"), sizes):
        check_int(name, v, 1, error=ModelError)


MODELS: dict[str, Callable[..., RecurrentModel]] = {
    "tanh": lambda D, H, Q, **kw: ElmanRNN(D, H, Q, nonlinearity="tanh", **kw),
    "linear": lambda D, H, Q, **kw: ElmanRNN(D, H, Q, nonlinearity="linear", **kw),
    "gru": GRUModel,
    "lstm": LSTMModel,
    # Two-layer stacks as cell names, so a spec picks them with `cell` alone and run ids read
    # "lstm2x50" (2 x 50): Aicher et al.'s copy-task model is a 2-layer LSTM of 50.
    "gru2x": lambda D, H, Q, **kw: GRUModel(D, H, Q, layers=2, **kw),
    "lstm2x": lambda D, H, Q, **kw: LSTMModel(D, H, Q, layers=2, **kw),
    "influence": InfluenceBalancingRNN,
}


def make_model(cell: str, input_size: int, hidden_size: int, output_size: int, **kwargs) -> RecurrentModel:
    """Build a model by cell name (one of ``MODELS``)."""
    if cell not in MODELS:
        raise ModelError(f"cell={cell!r} is not allowed: known cells are {', '.join(MODELS)}")
    return MODELS[cell](input_size, hidden_size, output_size, **kwargs)
