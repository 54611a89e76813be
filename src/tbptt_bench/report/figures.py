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
import os
import random as _random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .. import styles as S
from .cells import LOSS_UNITS, STYLE_ORDER, model_groups, references

__all__ = [
    "RC",
    "family_styles",
    "gradient_norms_figure",
    "informative_ylim",
    "learning_curves_figure",
    "linear_rnn_gradient_norms",
    "loss_vs_n_figure",
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
    # matplotlib's bundled font, so a machine with Arial installed draws the same bytes
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
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
    """Write ``stem.png`` and ``stem.svg`` (no date metadata, fixed hash salt); returns the paths.

    A file whose bytes would not change is left alone (its mtime too), so a report over unchanged
    records touches nothing on disk.
    """
    import io

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    with _style():
        fig.draw_without_rendering()  # run the constrained layout once, then keep it for both formats
        fig.set_layout_engine("none")
        metadata = {"png": {"Software": None}, "svg": {"Date": None}}
        for ext in formats:
            path = stem.with_suffix(f".{ext}")
            buf = io.BytesIO()
            fig.savefig(buf, format=ext, metadata=metadata[ext])
            write_bytes_if_changed(path, buf.getvalue())
            out.append(path)
    return out


def write_bytes_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write ``data`` unless ``path`` already holds exactly it; True when written."""
    path = Path(path)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written copy behind
        raise
    return True


#: One hue per style family (Okabe–Ito, colour-blind safe); members of a family differ by shade and
#: dash with n, so two families never share a colour (tab20's light/dark pairs did).
FAMILY_COLORS = {
    "full": "#1a1a1a",
    "tf_style": "#0072b2",
    "williams_peng": "#d55e00",
    "overlapping": "#009e73",
    "one_step": "#cc79a7",
    "random": "#e69f00",
    "random_depth": "#f0c000",
    "tbptt": "#56b4e9",
    "artbp": "#8c564b",
    "adaptive": "#7f7f00",
}
#: Legend names of the families on the loss-vs-n axis (n = the x value).
FAMILY_NAMES = {
    "tf_style": "TF-style (n, n)",
    "williams_peng": "Williams–Peng (1, n)",
    "overlapping": "overlapping (k1 < n, n)",
    "one_step": "one-step (n, 1)",
    "random": "random truncation, full-BPTT form (n = 1/pi)",
    "random_depth": "random depth (E[depth] = n, cap 4n)",
    "artbp": "ARTBP (E[segment] = n)",
    "adaptive": "adaptive TBPTT",
    "tbptt": "TBPTT (k1, n)",
}
OTHER_COLORS = ("#6a3d9a", "#b15928", "#1f78b4", "#33a02c")
#: Dashes by rank of n inside a family (never "--": dashed means a reference line).
N_DASHES = ("-", "-.", ":", (0, (5, 1, 1, 1)), (0, (1, 1)))


def _mix(color: str, t: float) -> tuple[float, float, float]:
    """``color`` moved a fraction ``t`` towards white."""
    from matplotlib.colors import to_rgb

    r, g, b = to_rgb(color)
    return (r + (1 - r) * t, g + (1 - g) * t, b + (1 - b) * t)


def family_styles(runs: pd.DataFrame) -> dict[str, dict]:
    """{style_label: {color, ls, family}}: hue by family, lighter and more broken for smaller n."""
    firsts = runs.drop_duplicates("style_label")
    fams: dict[str, list[tuple]] = {}
    for r in firsts.itertuples():
        n = None if pd.isna(r.style_n) else int(r.style_n)
        fams.setdefault(str(r.style_preset), []).append((n is None, n or 0, str(r.style_spec), r.style_label))
    others = iter(OTHER_COLORS * 4)
    out = {}
    for fam in sorted(fams, key=lambda f: (STYLE_ORDER.get(f, 9), f)):
        base = FAMILY_COLORS.get(fam) or next(others)
        members = sorted(fams[fam])
        m = len(members)
        for i, (*_, label) in enumerate(members):
            rank = m - 1 - i  # 0 = the largest n: full colour, solid
            out[label] = {
                "color": _mix(base, 0.6 * rank / max(m - 1, 1)) if m > 1 else _mix(base, 0.0),
                "ls": N_DASHES[min(rank, len(N_DASHES) - 1)],
                "family": fam,
            }
    return out


def informative_ylim(values: Sequence[float], refs: Sequence[float] = ()) -> tuple[float, float, bool]:
    """(low, high, clipped): a y range holding the references and the bulk of the values.

    High is the larger of the highest reference and the 90th percentile of the values, unless all
    values fit within 15% above that; a start-of-training loss far above the no-memory line would
    otherwise squash every curve into a flat line. ``clipped``: some values lie above ``high``.
    """
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    r = [float(x) for x in refs if np.isfinite(x)]
    if not len(v) and not r:
        return 0.0, 1.0, False
    lo = min([*(v.tolist() if len(v) else []), *r])
    top = max([*r, float(np.quantile(v, 0.9)) if len(v) else lo])
    vmax = float(v.max()) if len(v) else top
    span = max(top - lo, 1e-12)
    clipped = vmax > top + 0.15 * span
    hi = top if clipped else max(vmax, top)
    pad = 0.05 * max(hi - lo, 1e-12)
    return lo - pad, hi + pad, clipped


def _mark_outliers(ax, xs, ys, color, hi: float) -> None:
    """Points above the axis drawn as ▲ on its top edge (so clipping never hides them silently)."""
    xs, ys = np.asarray(xs, float), np.asarray(ys, float)
    sel = np.isfinite(ys) & (ys > hi)
    if sel.any():
        ax.plot(
            xs[sel], np.full(sel.sum(), hi), ls="none", marker="^", markersize=4, color=color, clip_on=False
        )


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


def _style_legend(fig, labels: Sequence[str], looks: dict, title: str) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=looks[lab]["color"], ls=looks[lab]["ls"], marker="o", markersize=3, lw=1.4)
        for lab in labels
    ]
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


def _ok_group_runs(runs: pd.DataFrame, g) -> pd.DataFrame:
    same_clip = runs["clip"].isna() if g.clip is None else runs["clip"] == g.clip
    return runs[
        (runs["cell"] == g.cell)
        & (runs["hidden_size"] == g.hidden_size)
        & (runs["optimizer"] == g.optimizer)
        & same_clip
        & (runs["status"] == "ok")
    ]


def _best_lr_per_style(g) -> list[tuple[str, float]]:
    """(style_spec, lr) of each style's best learning rate (mean min val loss over ok seeds)."""
    picks = []
    for spec in dict.fromkeys(c.style_spec for c in g.cells):
        cells = [c for c in g.cells if c.style_spec == spec and c.mean is not None]
        if cells:
            best = min(cells, key=lambda c: (c.mean, -c.lr))
            picks.append((spec, best.lr))
    return picks


def learning_curves_figure(runs: pd.DataFrame, curves: pd.DataFrame):
    """Validation loss for one (device, sweep, task) against each budget axis: timesteps (equal
    data), updates, backprop steps (equal compute; records that count them) and training wall time.

    One row of panels per model group; one line per style at its best learning rate (mean over
    seeds, band = min–max), reference lines dashed. Updates and backprop steps differ by orders of
    magnitude between styles, so those axes are symlog. The y axis keeps the references and the bulk
    of the losses; losses above it (early, untrained points) are marked ▲ on the top edge.
    """
    r0 = runs.iloc[0]
    units = LOSS_UNITS.get(str(r0["loss_kind"]), "loss")
    groups = model_groups(runs)
    refs = references(runs)
    order = _style_order(runs)
    looks = family_styles(runs)
    any_clipped = False
    panels = [("timesteps", "timesteps processed", False), ("update", "updates made (symlog)", True)]
    if "backprop_steps" in curves.columns and curves["backprop_steps"].notna().any():
        panels.append(("backprop_steps", "backprop steps, all rows (symlog)", True))
    panels.append(("train_wall_s", "training wall time (s, mean over seeds)", False))
    with _style():
        # tall enough for the legend (one line per style) beside the panels, under the title
        fig, axes = _new_figure(
            len(groups), len(panels), 4.6, max(3.2, (0.19 * len(order) + 1.4) / len(groups))
        )
        for row, g in zip(axes, groups):
            sel = _ok_group_runs(runs, g)
            ids = [
                rid
                for spec, lr in _best_lr_per_style(g)
                for rid in sel[(sel["style_spec"] == spec) & (sel["lr"] == lr)]["run_id"]
            ]
            data = curves[(curves["split"] == "val") & curves["run_id"].isin(ids)]
            data = data[np.isfinite(data["loss"].astype(float))]
            # seeds of a style share the validation schedule: average them point by point (the
            # k-th evaluation of every seed), and shade the seeds' min–max
            data = data.assign(_k=data.groupby("run_id", sort=False).cumcount())
            lo, hi, clipped = informative_ylim(data["loss"].to_numpy(float), [v for _, v, _ in refs])
            any_clipped = any_clipped or clipped
            for ax, (x, xlabel, symlog) in zip(row, panels):
                for label in order:
                    one = data[data["style_label"] == label]
                    if one.empty:
                        continue
                    agg = one.groupby("_k", sort=True).agg(
                        x=(x, "mean"), y=("loss", "mean"), lo=("loss", "min"), hi=("loss", "max")
                    )
                    xs, ys = agg["x"].to_numpy(float), agg["y"].to_numpy(float)
                    look = looks[label]
                    ax.plot(xs, ys, color=look["color"], ls=look["ls"], marker="o", markersize=2.5, lw=1.3)
                    if one["run_id"].nunique() > 1:
                        ax.fill_between(
                            xs,
                            agg["lo"].to_numpy(float),
                            agg["hi"].to_numpy(float),
                            color=look["color"],
                            alpha=0.15,
                            lw=0,
                        )
                    if clipped:
                        _mark_outliers(ax, xs, ys, look["color"], hi)
                _ref_lines(ax, refs)
                ax.set_ylim(lo, hi)
                if symlog:  # counts are >= 0: no negative decades in the margin
                    ax.set_xscale("symlog", linthresh=1.0)
                    ax.set_xlim(left=0)
                ax.set_xlabel(xlabel)
                ax.set_ylabel(f"validation loss ({units})")
                ax.set_title(
                    g.label if x == "timesteps" else f"{g.label}, vs {xlabel.split(' (')[0]}", fontsize=8
                )
        _style_legend(
            fig, [lab for lab in order if lab in set(curves["style_label"])], looks, "style (best lr)"
        )
        fig.suptitle(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']})\n"
            "validation loss per style at its best learning rate: mean over seeds, band = min–max"
            + ("\n▲ on the top edge = a mean above the axis (early, untrained points)" if any_clipped else "")
        )
    return fig


def loss_vs_n_figure(runs: pd.DataFrame):
    """Final validation loss (the primary metric) against truncation length n, one line per family.

    Each point is the family member with that n at its best learning rate: mean over ok seeds,
    error bar ± one sample sd (none with one seed). Full BPTT is the solid black level with its
    ±sd band; reference lines are dashed. One panel per model group.
    """
    from matplotlib.lines import Line2D

    r0 = runs.iloc[0]
    units = LOSS_UNITS.get(str(r0["loss_kind"]), "loss")
    groups = model_groups(runs)
    refs = references(runs)
    fam_order = sorted(
        {str(p) for p in runs["style_preset"]} - {"full"}, key=lambda f: (STYLE_ORDER.get(f, 9), f)
    )
    looks = family_styles(runs)
    fam_color = {v["family"]: v["color"] for v in looks.values() if v["ls"] == "-"}
    legend: dict[str, object] = {}
    with _style():
        # + room for the legend beside the panels, so one panel is not squeezed below its labels
        fig, axes = _new_figure(1, len(groups), 4.8 + 2.4 / len(groups), 3.4)
        for ax, g in zip(axes[0], groups):
            values: list[float] = []
            best: dict[tuple[str, int], object] = {}
            for c in g.cells:
                if c.mean is None or c.n is None or c.style_preset == "full":
                    continue
                key = (c.style_preset, int(c.n))
                if key not in best or c.mean < best[key].mean:
                    best[key] = c
            ns = sorted({n for _, n in best})
            for i, fam in enumerate(fam_order):
                pts = sorted((n, c) for (f, n), c in best.items() if f == fam)
                if not pts:
                    continue
                dodge = 1.04 ** (i - (len(fam_order) - 1) / 2)  # side by side on a log axis
                xs = [n * dodge for n, _ in pts]
                ys = [c.mean for _, c in pts]
                err = [c.sd or 0.0 for _, c in pts]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=err,
                    color=fam_color.get(fam, "0.4"),
                    marker="o",
                    markersize=4,
                    lw=1.4,
                    capsize=2.5,
                    label=FAMILY_NAMES.get(fam, fam),
                )
                values += [y + e for y, e in zip(ys, err)] + [y - e for y, e in zip(ys, err)]
            full = [c for c in g.cells if c.style_preset == "full" and c.mean is not None]
            handles = []
            if full:
                f = min(full, key=lambda c: (c.mean, -c.lr))
                ax.axhline(f.mean, color=FAMILY_COLORS["full"], lw=1.4, zorder=2)
                if f.sd:
                    ax.axhspan(f.mean - f.sd, f.mean + f.sd, color="0.5", alpha=0.15, lw=0)
                values += [f.mean + (f.sd or 0), f.mean - (f.sd or 0)]
                handles.append(
                    Line2D(
                        [], [], color=FAMILY_COLORS["full"], lw=1.4, label="full BPTT (best lr, ± sd band)"
                    )
                )
            _ref_lines(ax, refs)
            lo, hi, clipped = informative_ylim(values, [v for _, v, _ in refs])
            ax.set_ylim(lo, hi)
            if ns:
                ax.set_xscale("log")
                ax.set_xlim(min(ns) / 1.35, max(ns) * 1.35)
                ax.set_xticks(ns)
                from matplotlib.ticker import FuncFormatter, NullFormatter

                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("truncation length n (log scale; older random(pi) rows: 1/pi)")
            ax.set_ylabel(f"final validation loss ({units})")
            ax.set_title(g.label)
            h, _ = ax.get_legend_handles_labels()
            for hh in h + handles:
                legend.setdefault(hh.get_label(), hh)
        if legend:
            fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize=7)
        fig.suptitle(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']}): loss vs truncation length\n"
            "each point: best learning rate, mean ± sd over seeds"
        )
    return fig


def quality_cost_figure(runs: pd.DataFrame):
    """Minimum validation loss vs training wall time per ok run; marker area = saved-for-backward
    memory (the activations autograd kept, the device-independent memory cost); colour by family,
    shade by n."""
    r0 = runs.iloc[0]
    units = LOSS_UNITS.get(str(r0["loss_kind"]), "loss")
    ok = runs[
        (runs["status"] == "ok")
        & np.isfinite(runs["final_val_loss"].astype(float))
        & np.isfinite(runs["train_wall_s"].astype(float))
    ]
    order = _style_order(runs)
    looks = family_styles(runs)
    refs = references(runs)
    with _style():
        fig, axes = _new_figure(1, 1, 6.4, 4.2)
        ax = axes[0][0]
        saved = ok["saved_for_backward_peak_bytes"].astype(float) / MiB
        smax = float(np.nanmax(saved)) if saved.notna().any() else 0.0
        size = (20 + 180 * (saved / smax)).fillna(30) if smax > 0 else pd.Series(30.0, index=ok.index)
        lo, hi, clipped = informative_ylim(ok["final_val_loss"].to_numpy(float), [v for _, v, _ in refs])
        for label in order:
            sel = ok["style_label"] == label
            if not sel.any():
                continue
            xs, ys = (
                ok.loc[sel, "train_wall_s"].to_numpy(float),
                ok.loc[sel, "final_val_loss"].to_numpy(float),
            )
            ax.scatter(
                xs,
                np.minimum(ys, hi),
                s=size[sel].to_numpy(float),
                color=looks[label]["color"],
                edgecolors="0.2",
                linewidths=0.4,
                alpha=0.85,
                label=label,
            )
        if len(ok) and ok["train_wall_s"].max() > 10 * max(ok["train_wall_s"].min(), 1e-12):
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
        ax.set_ylim(lo, hi)
        shown = [lab for lab in order if (ok["style_label"] == lab).any()]
        if shown:  # legend markers of one size: the area encodes memory, not the style
            from matplotlib.lines import Line2D

            handles = [
                Line2D(
                    [], [], ls="none", marker="o", markersize=6, color=looks[lab]["color"], mec="0.2", mew=0.4
                )
                for lab in shown
            ]
            ax.legend(
                handles,
                shown,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize=6,
                frameon=False,
                title="style",
            )
        _ref_lines(ax, refs)
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(f"final validation loss ({units})")
        ax.set_title(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']}): quality vs cost\n"
            f"every ok run; marker area ∝ saved-for-backward memory (largest {smax:.3g} MiB)"
            + ("\nlosses above the axis drawn on its top edge" if clipped else ""),
            fontsize=8,
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
