"""The gradient a training style uses, measured on one window at fixed parameters.

``style_gradient(model, x, y, style)`` runs the engine itself on the window with a zero learning
rate (so the parameters never change between the style's updates), captures every update's
gradient and reweights it into the gradient of the *mean* loss over all T steps, the batch and
the outputs: update u's objective is its loss sum over ``per_step * style.objective_steps``
elements, so its gradient times objective_steps/T is its losses' share of the mean. Each loss is
therefore backpropagated exactly as deep as the style lets it (random styles: one draw from
``generator``); ``full()`` gives the exact gradient.

``realised_depths`` and ``window_backprop_steps`` read the same draws the engine makes
(``engine.xi.realise``) to give each loss's realised depth and each update's backprop steps
(the steps of its window reached by at least one of its losses, summed over the B rows).

>>> import torch
>>> from tbptt_bench.models import ElmanRNN
>>> from tbptt_bench.styles import full, tf_style
>>> m = ElmanRNN(2, 4, 1, generator=torch.Generator().manual_seed(0)).double()
>>> x, y = torch.randn(8, 3, 2, dtype=torch.float64), torch.randn(8, 3, 1, dtype=torch.float64)
>>> g = style_gradient(m, x, y, full())
>>> out, _ = m(x)
>>> exact = torch.autograd.grad(((out - y) ** 2).mean(), m.W_hh)[0]
>>> bool(torch.allclose(g["W_hh"], exact, atol=1e-12))
True
>>> window_backprop_steps(tf_style(4), 8, 3)   # two windows of 4 steps, 3 rows
[12, 12]
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..engine.train import train_stream
from ..engine.xi import realise
from ..models import RecurrentModel, State
from ..styles import ARTBP, AdaptiveTBPTT, RandomTruncation, Style, parse_style

__all__ = ["WindowContributions", "realised_depths", "style_gradient", "window_backprop_steps"]


class _Capture(torch.optim.SGD):
    """SGD with lr = 0 that keeps every gradient it is handed (the parameters never move)."""

    def __init__(self, model: RecurrentModel):
        self._named = list(model.named_parameters())
        super().__init__([p for _, p in self._named], lr=0.0)
        self.grads: list[dict[str, Tensor]] = []

    @torch.no_grad()
    def step(self, closure=None):
        self.grads.append(
            {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for n, p in self._named}
        )


def _style(style: Style | str) -> Style:
    return parse_style(style) if isinstance(style, str) else style


def style_gradient(
    model: RecurrentModel,
    x: Tensor,
    y: Tensor,
    style: Style | str,
    loss: str = "mse",
    generator: torch.Generator | None = None,
    *,
    h0: State | None = None,
) -> dict[str, Tensor]:
    """The gradient ``style`` uses for all losses of the window, as the gradient of the mean loss
    over T steps (batch and outputs); parameters are not changed. ``h0``: the window's start
    state (zeros by default; the study passes a burned-in state)."""
    style = _style(style)
    T = x.shape[0]
    opt = _Capture(model)
    res = train_stream(model, x, y, style, opt, loss=loss, generator=generator, h0=h0)
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    prev = 0
    for rec, g in zip(res.records, opt.grads):
        w = (
            style.objective_steps(prev, rec.t) / T
            if not isinstance(style, AdaptiveTBPTT)
            else (rec.t - prev) / T
        )
        for n in total:
            total[n] += w * g[n]
        prev = rec.t
    return total


def realised_depths(style: Style | str, T: int, generator: torch.Generator | None = None) -> list[int]:
    """Each loss's realised depth under one draw (shared by the batch), as the engine draws it:
    1 + the run of kept edges behind it inside its window (0: readout only)."""
    style = _style(style)
    draws = realise(style, T, 1, generator)
    if draws is None:
        return style.depths(T)
    out = []
    for prev, u, start in draws.updates:
        keep = draws.keep[u][:, 0].tolist()  # edge j = start+2+r
        for s in range(prev + 1, u + 1):
            if s <= start:
                out.append(0)
                continue
            d, j = 1, s
            while j - 1 > start and keep[j - start - 2]:
                d, j = d + 1, j - 1
            out.append(d)
    return out


def window_backprop_steps(
    style: Style | str, T: int, batch: int, generator: torch.Generator | None = None
) -> list[int]:
    """Per update: the steps of its window whose cell its backward pass traverses (reached by at
    least one of its losses), summed over the ``batch`` rows; 0 for a readout-only update."""
    style = _style(style)
    if isinstance(style, AdaptiveTBPTT):
        raise ValueError("adaptive's K depends on the parameters: count its TBPTT(K, 2K-1) instead")
    draws = realise(style, T, batch, generator)
    if draws is None:
        out, depths = [], style.depths(T)
        for prev, u, _ in style.updates(T):
            lows = [s - depths[s - 1] + 1 for s in range(prev + 1, u + 1) if depths[s - 1] > 0]
            out.append(batch * (u - min(lows) + 1) if lows else 0)
        return out
    out = []
    per_stream = isinstance(style, RandomTruncation) and style.per_stream
    for prev, u, start in draws.updates:
        if start >= u:
            out.append(0)
            continue
        if not per_stream:
            out.append(batch * (u - draws.reach(u, prev, start) + 1))
            continue
        total = 0
        for b in range(batch):
            m = max(prev + 1, start + 1)
            while m - 1 > start and bool(draws.keep[u][m - start - 2, b]):
                m -= 1
            total += u - m + 1
        out.append(total)
    return out


def is_random(style: Style) -> bool:
    """Whether the style's gradient is a random draw (needs many draws to measure)."""
    return isinstance(style, (RandomTruncation, ARTBP)) and not (
        isinstance(style, RandomTruncation) and style.pi == 1.0
    )


class WindowContributions:
    """Every (loss s, cell j) contribution to the window's gradient, computed once, so that any
    truncation pattern's gradient is a weighted sum (the study's fast path; tests pin it to
    ``style_gradient`` draw for draw).

    ``C[s-1, j-1]`` (flattened parameters) is the part of the gradient of loss s (divided by the
    mean's T B Q) that flows through the cell at step j <= s; ``R[s-1]`` its readout part. A style
    that backpropagates loss s to depth d with edge multipliers xi uses
    R[s] + sum_{j = s-d+1..s} (prod_{e = j+1..s} xi_e) C[s, j].
    """

    def __init__(
        self, model: RecurrentModel, x: Tensor, y: Tensor, loss: str = "mse", h0: State | None = None
    ):
        from ..engine.losses import LOSSES, per_step_elements
        from ..models import map_state

        T, B = x.shape[0], x.shape[1]
        self.T, self.B = T, B
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        params = {n: p.detach() for n, p in model.named_parameters()}
        denom = T * per_step_elements(loss, B, model.output_size)
        h = model.init_state(B) if h0 is None else map_state(lambda t: t.detach(), h0)
        cells, outs = [], []
        with torch.enable_grad():
            for t in range(T):
                leaf = {n: p.clone().requires_grad_(True) for n, p in params.items()}
                h = model.cell(leaf, x[t], h)
                cells.append(leaf)
                ro = {n: p.clone().requires_grad_(True) for n, p in params.items()}
                outs.append(
                    (ro, LOSSES[loss](model.readout(ro, model.features(h)).unsqueeze(0), y[t : t + 1]))
                )
            P = sum(p.numel() for p in params.values())
            dtype = next(iter(params.values())).dtype
            self.C = torch.zeros(T, T, P, dtype=dtype)
            self.R = torch.zeros(T, P, dtype=dtype)
            for s in range(T):
                ro, ls = outs[s]
                inputs = [v for j in range(s + 1) for v in cells[j].values()] + list(ro.values())
                got = torch.autograd.grad(ls / denom, inputs, retain_graph=s < T - 1, allow_unused=True)
                k = len(params)
                for j in range(s + 1):
                    self.C[s, j] = self._flat(got[j * k : (j + 1) * k], params)
                self.R[s] = self._flat(got[(s + 1) * k :], params)

    @staticmethod
    def _flat(grads, params) -> Tensor:
        return torch.cat([
            (torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params.values())
        ])  # fmt: skip

    def unflat(self, g: Tensor) -> dict[str, Tensor]:
        out, i = {}, 0
        for n, shape in zip(self.names, self.shapes):
            k = int(torch.Size(shape).numel())
            out[n] = g[i : i + k].reshape(shape)
            i += k
        return out

    def gradient(self, W: Tensor) -> Tensor:
        """Flat gradient for weights W[s-1, j-1] on the cell contributions (readout always in)."""
        # one (1, T*T) x (T*T, P) product: no broadcast temporary of C's size per call
        flat = self.C.reshape(self.T * self.T, -1)
        return self.R.sum(0) + (W.to(self.C.dtype).reshape(1, -1) @ flat).reshape(-1)

    def depth_weights(self, depths: list[int]) -> Tensor:
        """0/1 weights of a deterministic pattern: loss s reaches cells s-d_s+1 .. s."""
        W = torch.zeros(self.T, self.T, dtype=torch.float64)
        for s, d in enumerate(depths):
            if d > 0:
                W[s, s - d + 1 : s + 1] = 1.0
        return W

    def draw_weights(self, style: Style | str, generator: torch.Generator | None) -> Tensor:
        """Weights of one draw of a random style (the engine's draws: ``xi.realise``)."""
        style = _style(style)
        draws = realise(style, self.T, 1, generator)
        if draws is None:
            return self.depth_weights(style.depths(self.T))
        if isinstance(style, RandomTruncation) and style.per_stream:
            raise ValueError("per-stream draws weight each row differently: use style_gradient")
        W = torch.zeros(self.T, self.T, dtype=torch.float64)
        for prev, u, start in draws.updates:
            keep = draws.keep[u][:, 0].tolist()
            for s in range(max(prev + 1, start + 1), u + 1):
                w, j = 1.0, s
                W[s - 1, j - 1] = 1.0
                while j - 1 > start and keep[j - start - 2]:
                    w *= draws.scale
                    j -= 1
                    W[s - 1, j - 1] = w
        return W
