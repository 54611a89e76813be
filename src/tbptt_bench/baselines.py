"""Plain-PyTorch TBPTT loops, written the way users write them today: the engine's yardsticks.

Each baseline trains an ``nn.RNN``/``nn.RNNCell`` + ``nn.Linear`` pair (``TorchElman``, built
from our ``ElmanRNN`` by ``torch_elman`` so both start identical) on one stream with the
engine's inputs: x (T, B, D); y (T, B, Q) for ``loss="mse"`` or (T, B) int64 for ``"ce"``.
Each returns the per-update objectives (floats), read back once at the end.

=====================  ===========================  =========================================
baseline               stands for                   where it equals docs/semantics.md
=====================  ===========================  =========================================
chunked_rnn(k, k2)     TBPTT(k, k2), k2 <= k        every update, when k divides T
rnncell_loop(k, k2)    TBPTT(k, k2), k2 <= k;       every update, when k divides T
  (+ pi)               random truncation            (in distribution for pi < 1)
retain_graph_k1k2      TBPTT(k1, k2)                updates 1-2, and only when k1 = 1
rerun_window(n)        TBPTT(1, n) (Williams–Peng)  first update only
=====================  ===========================  =========================================

Where they differ from docs/semantics.md (each difference is pinned by tests/test_baselines.py):

* chunked_rnn / rnncell_loop detach at every chunk start, so when T is not a multiple of k the
  last, shorter update does not reach back k2 steps into the previous chunk (docs/semantics.md rule 3).
* retain_graph_k1k2 is the PyTorch-forum recipe ("Implementing Truncated Backpropagation
  Through Time"): (a) an update uses only the loss of its own step, the k1 - 1 losses between
  updates are never used (docs/semantics.md rule 2); (b) no update at T unless k1 divides T (rule 1);
  (c) it never clears the ``.grad`` of the detached state leaves, so when windows overlap
  (k1 < k2) a gradient that already flowed through a state at an earlier update is sent back
  through the older steps again: from the first update that walks back two states,
  gradients are wrong (``zero_state_grads=True`` repairs it); (d) as posted it raises
  "modified by an inplace operation" under today's optimizers once k1 < k2, because
  ``optimizer.step()`` bumps the version of weights the retained graphs saved. Here the
  steps run on a differentiable clone of the weights taken after every step, which keeps
  the Jacobians of their time (docs/semantics.md rule 4) at the cost of one copy per update.
* rerun_window re-runs its window from the stored h_{t-n} with the *current* parameters at
  every step: after the first update the old steps' Jacobians and states are recomputed with
  new parameters, unlike docs/semantics.md's stored history (rule 4), and the carried state is the rerun's.

>>> import torch
>>> from tbptt_bench.models import ElmanRNN
>>> model = ElmanRNN(2, 8, 1, generator=torch.Generator().manual_seed(0))
>>> net = torch_elman(model)
>>> x, y = torch.randn(12, 4, 2), torch.randn(12, 4, 1)
>>> len(chunked_rnn(net, x, y, torch.optim.SGD(net.parameters(), lr=0.1), "mse", k=4))
3
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BenchError, check_int
from .models import ElmanRNN

__all__ = [
    "BASELINES",
    "ENGINE_NAMES",
    "BaselineError",
    "TorchElman",
    "chunked_rnn",
    "rerun_window",
    "retain_graph_k1k2",
    "rnncell_loop",
    "torch_elman",
]


class BaselineError(BenchError):
    """A baseline was asked for with values that are not allowed."""


#: Our ElmanRNN parameter name -> the TorchElman parameter holding the same weights.
ENGINE_NAMES = {
    "W_hx": "rnn.weight_ih_l0",
    "W_hh": "rnn.weight_hh_l0",
    "b_h": "rnn.bias_ih_l0",
    "W_qh": "head.weight",
    "b_q": "head.bias",
}


class TorchElman(nn.Module):
    """``nn.RNN`` (tanh, one layer) + ``nn.Linear``; ``cell`` is an ``nn.RNNCell`` sharing the RNN's
    parameters. ``bias_hh`` is zero and frozen, so the pair computes exactly our ElmanRNN."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, bias: bool = True):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="tanh", bias=bias)
        self.cell = nn.RNNCell(input_size, hidden_size, bias=bias, nonlinearity="tanh")
        self.head = nn.Linear(hidden_size, output_size, bias=bias)
        for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ()):
            setattr(self.cell, name, getattr(self.rnn, name + "_l0"))
        if bias:
            with torch.no_grad():
                self.rnn.bias_hh_l0.zero_()
            self.rnn.bias_hh_l0.requires_grad_(False)

    def engine_params(self) -> dict[str, Tensor]:
        """The parameters under our ElmanRNN's names (``ENGINE_NAMES``)."""
        mine = dict(self.named_parameters())
        return {k: mine[v] for k, v in ENGINE_NAMES.items() if v in mine}


def torch_elman(model: ElmanRNN) -> TorchElman:
    """A TorchElman on ``model``'s device and dtype with its weights copied (W_hx -> weight_ih_l0, ...)."""
    if not isinstance(model, ElmanRNN) or model.nonlinearity != "tanh":
        raise BaselineError(
            f"model={type(model).__name__} is not allowed: the baselines copy a tanh ElmanRNN"
        )
    p = model.W_hh
    net = TorchElman(model.input_size, model.hidden_size, model.output_size, bias=model.bias).to(
        p.device, p.dtype
    )
    with torch.no_grad():
        for ours, theirs in net.engine_params().items():
            theirs.copy_(getattr(model, ours))
    return net


def _loss_fn(loss: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The engine's objective: mean over steps, batch (and outputs for mse)."""
    if loss == "mse":
        return F.mse_loss
    if loss == "ce":
        return lambda o, y: F.cross_entropy(o.reshape(-1, o.shape[-1]), y.reshape(-1))
    raise BaselineError(f"loss={loss!r} is not allowed: use 'mse' or 'ce'")


def _check(
    net, x: Tensor, y: Tensor, loss: str, optional: tuple[str, ...] = (), **ks: int | None
) -> tuple[int, Callable]:
    if not isinstance(net, TorchElman):
        raise BaselineError(f"net={type(net).__name__} is not allowed: build one with torch_elman(model)")
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[0] < 1:
        raise BaselineError(
            f"x with shape {tuple(getattr(x, 'shape', ()))} is not allowed: x must be (T, B, D), T >= 1"
        )
    if not isinstance(y, Tensor) or tuple(y.shape[:2]) != tuple(x.shape[:2]):
        raise BaselineError(
            f"y with shape {tuple(getattr(y, 'shape', ()))} is not allowed: y must start with (T, B) = {tuple(x.shape[:2])}"
        )
    for name, k in ks.items():
        if not (k is None and name in optional):  # None: the whole sequence
            check_int(name, k, 1, error=BaselineError)
    return x.shape[0], _loss_fn(loss)


def _step(optimizer: torch.optim.Optimizer, objective: Tensor) -> Tensor:
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    optimizer.step()
    return objective.detach()


def _floats(losses: list[Tensor]) -> list[float]:
    return torch.stack(losses).tolist() if losses else []


def chunked_rnn(
    net: TorchElman,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    loss: str = "mse",
    k: int | None = None,
    k2: int | None = None,
) -> list[float]:
    """TBPTT(k, k2) with one fused ``nn.RNN`` call per chunk of k steps, state detached between chunks.

    ``k=None`` is the whole sequence (full BPTT in one kernel); ``k2`` (<= k, default k) runs the
    chunk's first k - k2 steps without graph: their losses reach only the readout.
    """
    T, fn = _check(net, x, y, loss, ("k", "k2"), k=k, k2=k2)
    k = T if k is None else k
    k2 = k if k2 is None else k2
    if k2 > k:
        raise BaselineError(f"k2={k2} is not allowed: chunked_rnn needs k2 <= k={k} (use retain_graph_k1k2)")
    h, out = torch.zeros(1, x.shape[1], net.rnn.hidden_size, device=x.device, dtype=x.dtype), []
    for a in range(0, T, k):
        b = min(a + k, T)
        c = max(a, b - k2)
        feats = []
        if c > a:
            with torch.no_grad():
                f, h = net.rnn(x[a:c], h)
            feats.append(f)
        f, h_b = net.rnn(x[c:b], h)
        feats.append(f)
        out.append(_step(optimizer, fn(net.head(torch.cat(feats)), y[a:b])))
        h = h_b.detach()
    return _floats(out)


def rnncell_loop(
    net: TorchElman,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    loss: str = "mse",
    k: int | None = None,
    k2: int | None = None,
    pi: float | None = None,
    generator: _random.Random | None = None,
) -> list[float]:
    """TBPTT(k, k2) as a Python loop over ``nn.RNNCell``; with ``pi``, random truncation on top.

    Random truncation (docs/semantics.md): each recurrent edge inside an update's window gets xi = 0
    (detach) with probability 1 - pi, else its backward gradient is scaled by 1/pi; one draw per
    edge and update, shared by the batch, from ``generator`` (a ``random.Random``).
    """
    T, fn = _check(net, x, y, loss, ("k", "k2"), k=k, k2=k2)
    if pi is not None and (isinstance(pi, bool) or not isinstance(pi, (int, float)) or not 0 < pi <= 1):
        raise BaselineError(f"pi={pi!r} is not allowed: pi must be a number in (0, 1]")
    k = T if k is None else k
    k2 = k if k2 is None else k2
    if k2 > k:
        raise BaselineError(f"k2={k2} is not allowed: rnncell_loop needs k2 <= k={k}")
    rng = generator or _random.Random(0)
    h, out = torch.zeros(x.shape[1], net.rnn.hidden_size, device=x.device, dtype=x.dtype), []
    for a in range(0, T, k):
        b = min(a + k, T)
        c = max(a, b - k2)
        feats = []
        with torch.no_grad():
            for t in range(a, c):
                h = net.cell(x[t], h)
                feats.append(h)
        h = h.detach()
        for t in range(c, b):
            if t > c and pi is not None:  # the edge h_t -> h_{t+1} inside the window
                xi = 1.0 / pi if rng.random() < pi else 0.0
                h_rec = h.detach() if xi == 0.0 else h.detach() + (h - h.detach()) * xi
            else:
                h_rec = h
            h = net.cell(x[t], h_rec)
            feats.append(h)
        out.append(_step(optimizer, fn(net.head(torch.stack(feats)), y[a:b])))
        h = h.detach()
    return _floats(out)


def retain_graph_k1k2(
    net: TorchElman,
    x: Tensor,
    y: Tensor,
    optimizer: torch.optim.Optimizer,
    loss: str = "mse",
    k1: int = 1,
    k2: int = 1,
    zero_state_grads: bool = False,
) -> list[float]:
    """The forum TBPTT(k1, k2) recipe: one ``nn.RNNCell`` step at a time on a detached leaf state,
    a list of (state_in, state_out) pairs; every k1 steps backprop the step's loss, then walk back
    k2 - 1 pairs with ``retain_graph=True`` (when k1 < k2). Differences to docs/semantics.md: module docstring.
    """
    T, fn = _check(net, x, y, loss, k1=k1, k2=k2)
    retain = k1 < k2
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    live = {n: getattr(net.cell, n) for n in names if getattr(net.cell, n, None) is not None}

    def weights() -> dict[str, Tensor]:  # differentiable clones: optimizer.step() must not touch saved ones
        return {n: p.clone() if p.requires_grad else p for n, p in live.items()}

    w = weights() if retain else live
    states: list[tuple[Tensor | None, Tensor]] = [
        (None, torch.zeros(x.shape[1], net.rnn.hidden_size, device=x.device, dtype=x.dtype))
    ]
    out = []
    for t in range(T):
        state = states[-1][1].detach().requires_grad_(True)
        new = torch.func.functional_call(net.cell, w, (x[t], state)) if retain else net.cell(x[t], state)
        states.append((state, new))
        while len(states) > k2:
            del states[0]
        if (t + 1) % k1:
            continue
        objective = fn(net.head(new), y[t])
        optimizer.zero_grad(set_to_none=True)
        if zero_state_grads:
            for s_in, _ in states:
                if s_in is not None:
                    s_in.grad = None
        objective.backward(retain_graph=retain)
        for i in range(k2 - 1):
            if states[-i - 2][0] is None:
                break
            states[-i - 2][1].backward(states[-i - 1][0].grad, retain_graph=retain)
        optimizer.step()
        if retain:
            w = weights()
        out.append(objective.detach())
    return _floats(out)


def rerun_window(
    net: TorchElman, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer, loss: str = "mse", n: int = 1
) -> list[float]:
    """TBPTT(1, n) by re-running the window: at every step t, run ``nn.RNN`` over steps t-n+1..t
    from the stored, detached h_{t-n} with the current parameters and backprop l_t alone."""
    T, fn = _check(net, x, y, loss, n=n)
    hist = [
        torch.zeros(1, x.shape[1], net.rnn.hidden_size, device=x.device, dtype=x.dtype)
    ]  # h_{t-n} .. h_{t-1}
    out = []
    for t in range(1, T + 1):
        a = max(t - n, 0)
        feats, h_t = net.rnn(x[a:t], hist[0])
        out.append(_step(optimizer, fn(net.head(feats[-1]), y[t - 1])))
        hist.append(h_t.detach())
        if len(hist) > n:
            del hist[0]
    return _floats(out)


#: Baselines by name (the ``impl`` column of the benchmarks).
BASELINES: dict[str, Callable[..., list[float]]] = {
    "chunked_rnn": chunked_rnn,
    "rnncell_loop": rnncell_loop,
    "retain_graph_k1k2": retain_graph_k1k2,
    "rerun_window": rerun_window,
}
