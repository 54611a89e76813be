"""Figures for the report: learning curves, quality vs cost, truncation patterns, gradient norms.

Every ``*_figure`` function returns a ``matplotlib.figure.Figure`` built without pyplot (no global
backend or figure registry is touched; PNGs are drawn by Agg) so tests can inspect axes; ``save``
writes PNG and SVG with fixed metadata and hash salt, so the same input gives the same SVG bytes.
Torch-free: the gradient-norm picture is closed-form numpy.

>>> fig = gradient_norms_figure(max_distance=10)
>>> [ax.get_xlabel() for ax in fig.axes][:2]
['distance i − t from the loss (steps)', 'distance i − t from the loss (steps)']
"""

from __future__ import annotations

import math
import random as _random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .. import styles as S
from .tables import LOSS_UNITS, STYLE_ORDER, fmt_lr, model_groups, references

__all__ = [
    "RC",
    "gradient_norms_figure",
    "learning_curves_figure",
    "linear_rnn_gradient_norms",
    "quality_cost_figure",
    "save",
    "truncation_patterns_figure",
]

#: rc settings applied while a figure is built and saved (seaborn's whitegrid look, stable SVG).
RC = {
    "svg.hashsalt": "tbptt-bench",
    "svg.fonttype": "none",
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "font.size": 9,
    "axes.titlesize": 9,
    "legend.fontsize": 7,
}
MiB = 1024.0 * 1024.0


@contextmanager
def _style() -> Iterator[None]:
    import matplotlib
    import seaborn as sns

    with matplotlib.rc_context({**sns.axes_style("whitegrid"), **RC}):
        yield


def _new_figure(nrows: int, ncols: int, w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save(fig, stem: Path, formats: Sequence[str] = ("png", "svg")) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg`` (no date metadata, fixed hash salt); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with _style():
        fig.draw_without_rendering()  # run the constrained layout once, then keep it for both formats
        fig.set_layout_engine("none")
        metadata = {"png": {"Software": None}, "svg": {"Date": None}}
        for ext in formats:
            meta = metadata[ext]
            path = stem.with_suffix(f".{ext}")
            tmp = path.with_name(f".{path.name}.tmp")
            fig.savefig(tmp, format=ext, metadata=meta)
            tmp.replace(path)
            out.append(path)
    return out


def _palette(labels: Sequence[str]) -> dict[str, tuple]:
    import seaborn as sns

    n = max(len(labels), 1)  # colorblind-safe up to its 10 colours; beyond, 20 distinct ones
    colors = sns.color_palette("colorblind" if n <= 10 else "tab20", n)
    return {lab: colors[i % len(colors)] for i, lab in enumerate(labels)}


def _ref_lines(ax, refs: Sequence[tuple[str, float, str | None]]) -> None:
    for name, value, _ in refs:
        ax.axhline(value, ls="--", lw=0.8, color="0.35", zorder=1)
        ax.annotate(
            f"{name} {value:.4g}",
            xy=(1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-2, 2),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=7,
            color="0.25",
        )


def _style_order(runs: pd.DataFrame) -> list[str]:
    firsts = runs.drop_duplicates("style_spec")
    keys = sorted(
        (
            STYLE_ORDER.get(r.style_preset, 9),
            -1 if pd.isna(r.style_n) else int(r.style_n),
            r.style_spec,
            r.style_label,
        )
        for r in firsts.itertuples()
    )
    return list(dict.fromkeys(k[3] for k in keys))


def _style_legend(fig, labels: Sequence[str], colors: dict, title: str) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colors[lab], marker="o", markersize=3, lw=1.2) for lab in labels]
    if handles:
        fig.legend(
            handles, list(labels), title=title, loc="outside right center", fontsize=7, title_fontsize=7
        )


def _plain_log_ticks(axis) -> None:
    """Log-scale tick labels as plain numbers ('20', '0.001'): readable, and no mathtext to parse."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def learning_curves_figure(runs: pd.DataFrame, curves: pd.DataFrame):
    """Validation loss vs timesteps and vs training wall time for one (device, sweep, task).

    One row of panels per model group; one line per style at its best learning rate (one line per
    seed), reference lines dashed. ``runs``/``curves`` are ``load_runs`` frames for that group.
    """
    r0 = runs.iloc[0]
    units = LOSS_UNITS.get(str(r0["loss_kind"]), "loss")
    groups = model_groups(runs)
    refs = references(runs)
    order = _style_order(runs)
    colors = _palette(order)
    with _style():
        fig, axes = _new_figure(len(groups), 2, 4.6, 3.2)
        for row, g in zip(axes, groups):
            picks = []
            for spec in dict.fromkeys(c.style_spec for c in g.cells):
                cells = [c for c in g.cells if c.style_spec == spec and c.mean is not None]
                if cells:
                    best = min(cells, key=lambda c: (c.mean, -c.lr))
                    picks.append((spec, best.lr))
            same_clip = runs["clip"].isna() if g.clip is None else runs["clip"] == g.clip
            sel = runs[
                (runs["cell"] == g.cell)
                & (runs["hidden_size"] == g.hidden_size)
                & (runs["optimizer"] == g.optimizer)
                & same_clip
                & (runs["status"] == "ok")
            ]
            ids = [
                rid
                for spec, lr in picks
                for rid in sel[(sel["style_spec"] == spec) & (sel["lr"] == lr)]["run_id"]
            ]
            data = curves[(curves["split"] == "val") & curves["run_id"].isin(ids)]
            data = data[np.isfinite(data["loss"].astype(float))]
            by_run = list(data.groupby("run_id", sort=True))
            lines = [
                (label, run) for label in order for _, run in by_run if run["style_label"].iloc[0] == label
            ]  # style order, then run_id (seeds)
            for ax, x, xlabel in (
                (row[0], "timesteps", "timesteps processed"),
                (row[1], "train_wall_s", "training wall time (s)"),
            ):
                for label, run in lines:  # one line per seed
                    ax.plot(
                        run[x].to_numpy(float),
                        run["loss"].to_numpy(float),
                        color=colors[label],
                        marker="o",
                        markersize=3,
                        lw=1.2,
                        ls="-",
                    )
                _ref_lines(ax, refs)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"validation loss ({units})")
                ax.set_title(f"{g.label}: vs {'timesteps' if x == 'timesteps' else 'training wall time'}")
        _style_legend(
            fig, [lab for lab in order if lab in set(curves["style_label"])], colors, "style (best lr)"
        )
        fig.suptitle(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']})\n"
            "validation loss per style at its best learning rate, one line per seed"
        )
    return fig


def quality_cost_figure(runs: pd.DataFrame):
    """Minimum validation loss vs training wall time, marker size = peak memory (MiB); ok runs only."""
    import seaborn as sns

    r0 = runs.iloc[0]
    units = LOSS_UNITS.get(str(r0["loss_kind"]), "loss")
    ok = runs[
        (runs["status"] == "ok")
        & np.isfinite(runs["min_val_loss"].astype(float))
        & np.isfinite(runs["train_wall_s"].astype(float))
    ]
    data = pd.DataFrame(
        {
            "train_wall_s": ok["train_wall_s"].astype(float),
            "min_val_loss": ok["min_val_loss"].astype(float),
            "style": ok["style_label"],
            "peak memory (MiB)": ok["peak_mem_bytes"].astype(float) / MiB,
            "model, lr": [
                f"{c}{h}, lr {fmt_lr(v)}" for c, h, v in zip(ok["cell"], ok["hidden_size"], ok["lr"])
            ],
        }
    )
    order = _style_order(runs)
    with _style():
        fig, axes = _new_figure(1, 1, 6.4, 4.2)
        ax = axes[0][0]
        if len(data):
            size = "peak memory (MiB)" if data["peak memory (MiB)"].notna().any() else None
            sns.scatterplot(
                data=data,
                x="train_wall_s",
                y="min_val_loss",
                hue="style",
                hue_order=[lab for lab in order if lab in set(data["style"])],
                palette=_palette(order),
                size=size,
                sizes=(20, 200),
                style="model, lr",
                style_order=sorted(set(data["model, lr"])),
                ax=ax,
            )
            if data["train_wall_s"].max() > 10 * max(data["train_wall_s"].min(), 1e-12):
                ax.set_xscale("log")
                _plain_log_ticks(ax.xaxis)
            sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=6, frameon=False)
        _ref_lines(ax, references(runs))
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(f"min validation loss ({units})")
        ax.set_title(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']})\nquality vs cost, ok runs "
            "(marker size = peak memory)"
        )
    return fig


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
