"""The figures drawn from the styles and closed-form maths alone, no run data: which earlier states
each loss's gradient reaches per preset (``truncation_patterns_figure``), and vanishing/exploding
gradient norms in a linear RNN with and without clipping (``gradient_norms_figure``). Torch-free:
the gradient-norm picture is closed-form numpy.

>>> fig = gradient_norms_figure(max_distance=10)
>>> [ax.get_xlabel() for ax in fig.axes][:2]
['distance i − t from the loss (steps)', 'distance i − t from the loss (steps)']
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Sequence

import numpy as np

from .. import styles as S
from .figure_style import _new_figure, _style

__all__ = ["gradient_norms_figure", "linear_rnn_gradient_norms", "truncation_patterns_figure"]


def _pattern(style: S.Style, T: int, depths: Sequence[int]) -> np.ndarray:
    """grid[s-1, j-1] = index of the update (1-based) whose gradient from loss s reaches h_j, else 0."""
    grid = np.zeros((T, T))
    for u, (prev, t, _) in enumerate(style.updates(T), start=1):
        for s in range(prev + 1, t + 1):
            d = depths[s - 1]
            grid[s - 1, s - d : s] = 1 + (u - 1) % 2  # alternate shades: which losses share an update
    return grid


def truncation_patterns_figure(T: int = 12, k: int = 4, pi: float = 0.5, seed: int = 0):
    """Which earlier states each loss's gradient reaches, per preset, drawn from the styles' schedules.

    Rows: the loss at step s; columns: hidden states h_j; shaded: reached (alternating shades =
    losses of consecutive updates); star: update after step t; ring: loss reaching the readout only.
    The random-truncation panel is one draw of ``RandomTruncation.sample_depths`` with a seeded RNG.
    """
    from matplotlib.colors import ListedColormap

    panels: list[tuple[S.Style, list[int], str]] = []
    for style in (
        S.full(),
        S.tf_style(k),
        S.williams_peng(k),
        S.overlapping(max(1, k // 2), k),
        S.one_step(k),
    ):
        panels.append((style, style.depths(T), style.label))
    rnd = S.random(pi)
    panels.append((rnd, rnd.sample_depths(T, _random.Random(seed)), f"{rnd.label}, one draw"))
    cmap = ListedColormap(["#ffffff", "#4c72b0", "#8fb0dd"])
    with _style():
        fig, axes = _new_figure(2, 3, 3.0, 3.0)
        for ax, (style, depths, title) in zip(axes.flat, panels):
            ax.imshow(
                _pattern(style, T, depths),
                cmap=cmap,
                vmin=0,
                vmax=2,
                origin="upper",
                extent=(0.5, T + 0.5, T + 0.5, 0.5),
                interpolation="nearest",
            )
            ax.grid(False)
            times = style.update_times(T)
            ax.scatter(times, times, marker="*", s=60, color="#c44e52", zorder=3, label="update after step t")
            ro = [s for s in range(1, T + 1) if depths[s - 1] == 0]
            if ro:
                ax.scatter(
                    ro,
                    ro,
                    marker="o",
                    s=30,
                    facecolors="none",
                    edgecolors="#dd8452",
                    zorder=3,
                    label="readout only",
                )
            for t in times[:-1]:
                ax.axhline(t + 0.5, color="0.5", lw=0.6)
            ticks = list(range(1, T + 1, max(1, T // 6)))
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xlabel("hidden state h_j reached by the gradient")
            ax.set_ylabel("loss at step s")
            ax.set_title(f"{title}\n{len(times)} update(s), mean depth {sum(depths) / T:.2f}")
        handles = {h.get_label(): h for ax in axes.flat for h in ax.collections}
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=2, fontsize=7)
        fig.suptitle(
            f"Truncation patterns, T = {T} (from styles.updates / depths; random draw: seed {seed}); "
            "shades alternate by update"
        )
    return fig


def linear_rnn_gradient_norms(
    rhos: Sequence[float] = (0.5, 0.9, 1.0, 1.1),
    hidden: int = 16,
    max_distance: int = 60,
    clip: float | None = None,
    seed: int = 0,
) -> dict[float, np.ndarray]:
    """||dL/dh_t|| = ||(W_hh^T)^(i-t) W_qh^T dL/do_i|| for distances i - t = 0..max_distance.

    W_hh = rho · Q with Q a random orthogonal matrix (numpy seed ``seed``), so every eigenvalue has
    modulus rho and the norm is exactly rho^(i-t) · ||W_qh^T dL/do_i|| (set to 1). With ``clip``,
    every entry is scaled by min(1, clip / ||g||), g = all the per-distance gradients together.

    >>> norms = linear_rnn_gradient_norms((0.5,), max_distance=3)
    >>> [round(float(v), 6) for v in norms[0.5]]
    [1.0, 0.5, 0.25, 0.125]
    """
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((hidden, hidden)))
    q = q * np.sign(np.diag(r))
    w_qh = rng.standard_normal((1, hidden))
    v0 = w_qh.T @ np.ones((1, 1))  # W_qh^T dL/do_i with dL/do_i = 1
    v0 = v0 / np.linalg.norm(v0)
    out = {}
    for rho in rhos:
        w_t = (rho * q).T
        v, norms = v0, []
        for _ in range(max_distance + 1):
            norms.append(np.linalg.norm(v))
            v = w_t @ v
        norms_arr = np.array(norms)
        if clip is not None:
            total = math.sqrt(float(np.sum(norms_arr**2)))
            norms_arr = norms_arr * min(1.0, clip / total)
        out[rho] = norms_arr
    return out


def gradient_norms_figure(
    rhos: Sequence[float] = (0.5, 0.9, 1.0, 1.1), max_distance: int = 60, clip: float = 1.0, seed: int = 0
):
    """Vanishing/exploding gradients in the linear RNN, without and with clipping (log scale)."""
    import seaborn as sns
    from matplotlib.ticker import LogFormatter, NullFormatter

    plain = linear_rnn_gradient_norms(rhos, max_distance=max_distance, seed=seed)
    clipped = linear_rnn_gradient_norms(rhos, max_distance=max_distance, clip=clip, seed=seed)
    colors = sns.color_palette("rocket", len(rhos))
    with _style():
        fig, axes = _new_figure(1, 2, 4.6, 3.4)
        for ax, norms, title in (
            (axes[0][0], plain, "no clipping"),
            (axes[0][1], clipped, f"clipped to global norm θ = {clip:g}"),
        ):
            d = np.arange(max_distance + 1)
            for color, rho in zip(colors, rhos):
                total = math.sqrt(float(np.sum(plain[rho] ** 2)))
                ax.plot(d, norms[rho], color=color, lw=1.5, label=f"ρ(W_hh) = {rho:g} (||g|| = {total:.3g})")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(LogFormatter())  # plain "1e-05" labels: no mathtext to parse
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("distance i − t from the loss (steps)")
            ax.set_ylabel("||dL/dh_t|| (log scale)")
            ax.set_title(f"linear RNN, {title}")
            ax.legend(fontsize=6, loc="lower left")
        fig.suptitle(
            "h_t = W_hh h_(t−1) + W_hx x_t with W_hh = ρ·Q (Q orthogonal): "
            "||(W_hh^T)^(i−t) W_qh^T dL/do_i|| = ρ^(i−t)\n"
            "clipping rescales the whole gradient; it tames exploding norms but cannot undo vanishing"
        )
    return fig
