"""Adaptive TBPTT (Aicher, Foti & Fox 2019): choose the truncation K from the measured decay of
the gradient through the recurrence, so that an estimated relative bias stays below delta.
What was kept from the paper and what departs: docs/adaptive.md.

Per period of ``style.period`` steps:

1. From the carried state, run the next W = ``k_max`` steps with a graph and take
   phi_k = mean over the batch of ||dl_s/dh_{s-k}|| for the last loss s and k = 0 .. W-1, and
   c_K = ||sum_{k<K} mean_b dl_s/dh_{s-k}|| (``decay_profile``).
2. Fit log phi_k = a + k log(beta) by least squares over k >= tau; the truncation error of
   keeping K lags is bounded by the tail E(K) = sum_{K<=k<tau} phi_k + phi_tau beta^(K-tau)/(1-beta)
   for K < tau, phi_tau beta^(K-tau)/(1-beta) for K >= tau (infinite if beta >= 1); a lower
   bound of the untruncated norm is G = max_K (c_K - E(K)).
3. K = the smallest K with E(K)/G < delta, else k_max (``choose_k``).
4. Train the period as TBPTT(K, 2K-1): every K steps an update whose every loss reaches back at
   least K steps (so the per-loss bias is the one just bounded).

>>> import torch
>>> phi = [0.5 ** k for k in range(32)]
>>> choose_k(phi, [sum(phi[:K]) for K in range(1, 33)], tau=4, delta=0.01, k_max=32)
7
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor

from ..models import RecurrentModel, State, map_state
from .losses import LOSSES

__all__ = ["choose_k", "decay_profile", "train_adaptive"]


def _flat(h: State) -> list[Tensor]:
    return list(h) if isinstance(h, tuple) else [h]


def decay_profile(
    model: RecurrentModel, x: Tensor, y: Tensor, h0: State, loss: str
) -> tuple[list[float], list[float]]:
    """(phi_k for k = 0..W-1, c_K for K = 1..W) of the last loss of the W = len(x) steps from h0."""
    params = model.params()
    h = map_state(lambda t: t.detach(), h0)
    states = []
    with torch.enable_grad():
        for x_t in x:
            h = model.cell(params, x_t, h)
            states.append(h)
        last = LOSSES[loss](model.readout(params, model.features(h)).unsqueeze(0), y[-1:])
        flat_states = [t for s in states for t in _flat(s)]
        grads = torch.autograd.grad(last, flat_states, allow_unused=True)
    per = len(_flat(states[0]))
    phi, cum, running = [], [], None
    for k in range(len(states)):
        j = len(states) - 1 - k  # state h_{s-k}
        parts = [
            torch.zeros_like(t) if g is None else g
            for g, t in zip(grads[j * per : (j + 1) * per], flat_states[j * per : (j + 1) * per])
        ]
        g = torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1).double()  # (B, state)
        phi.append(float(g.norm(dim=1).mean()))
        running = g.mean(0) if running is None else running + g.mean(0)
        cum.append(float(running.norm()))
    return phi, cum


def choose_k(phi: list[float], cum: list[float], tau: int, delta: float, k_max: int) -> int:
    """The smallest K in 1..len(phi) whose estimated relative bias is below delta (see above)."""
    W = len(phi)
    tau = min(tau, W - 2)
    logs = [math.log(max(p, 1e-300)) for p in phi]
    ks = [k for k in range(tau, W) if phi[k] > 1e-300]
    if len(ks) < 2:
        return 1  # the gradient dies within tau steps: nothing to backpropagate further
    km = sum(ks) / len(ks)
    lm = sum(logs[k] for k in ks) / len(ks)
    log_beta = sum((k - km) * (logs[k] - lm) for k in ks) / sum((k - km) ** 2 for k in ks)
    if log_beta >= 0:
        return k_max  # no measured decay: truncation cannot be bounded
    beta = math.exp(log_beta)
    tail = phi[tau] / (1.0 - beta)

    def err(K: int) -> float:
        if K >= tau:
            return phi[tau] * beta ** (K - tau) / (1.0 - beta)
        return sum(phi[K:tau]) + tail

    lower = max(c - err(K) for K, c in enumerate(cum, start=1))
    if lower <= 0:
        return k_max
    for K in range(1, W + 1):
        if err(K) / lower < delta:
            return K
    return k_max


def train_adaptive(
    train_stream, model, x, y, style, optimizer, loss, clip, generator, h0, callback, measure_memory, path
):
    """Train period by period, K re-estimated at the start of each (``train_stream`` runs the
    period's TBPTT(K, 2K-1)); records carry stream times; ``path`` says the Ks chosen."""
    T, B = x.shape[0], x.shape[1]
    h = model.init_state(B) if h0 is None else map_state(lambda t: t.detach(), h0)
    records, ks, peak, last = [], [], None, None
    K = style.k_max
    for pos in range(0, T, style.period):
        end = min(pos + style.period, T)
        W = min(style.k_max, T - pos)
        if W >= style.tau + 2:  # enough steps to fit a decay; else keep the last K
            phi, cum = decay_profile(model, x[pos : pos + W], y[pos : pos + W], h, loss)
            K = choose_k(phi, cum, style.tau, style.delta, style.k_max)
        ks.append(K)
        shift = (lambda r, p=pos: dataclasses.replace(r, t=r.t + p)) if pos else (lambda r: r)
        cb = None if callback is None else (lambda r, s=shift: callback(s(r)))
        last = train_stream(
            model,
            x[pos:end],
            y[pos:end],
            style.for_k(K),
            optimizer,
            loss=loss,
            clip=clip,
            generator=generator,
            h0=h,
            callback=cb,
            measure_memory=measure_memory,
            path=path,
        )
        records += [shift(r) for r in last.records]
        h = last.state
        if last.saved_bytes_peak is not None:
            peak = max(peak or 0, last.saved_bytes_peak)
    span = f"{ks[0]}" if min(ks) == max(ks) else f"{min(ks)}-{max(ks)}"  # short: records keep it
    name = f"adaptive[K={span}]/{last.path}"
    return dataclasses.replace(last, records=records, state=h, path=name, saved_bytes_peak=peak)
