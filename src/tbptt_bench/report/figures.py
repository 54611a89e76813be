"""Figures for the report: learning curves, quality vs cost, truncation patterns, gradient norms.

Every ``*_figure`` function returns a ``matplotlib.figure.Figure`` built without pyplot (no global
backend or figure registry is touched; PNGs are drawn by Agg) so tests can inspect axes; ``save``
writes PNG and SVG with fixed metadata and hash salt, so the same input gives the same SVG bytes.
Torch-free.

This module draws the per-group figures from run records (learning curves, loss vs n, quality vs
cost). The shared look (rc style, ``save``, colours by style family, axis limits) lives in
``figure_style.py``, the figures from the styles alone (truncation patterns, gradient norms) in
``explainer_figures.py``; their names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .cells import LOSS_UNITS, STYLE_ORDER, model_groups, references
from .explainer_figures import gradient_norms_figure, linear_rnn_gradient_norms, truncation_patterns_figure
from .figure_style import (
    FAMILY_COLORS,
    FAMILY_NAMES,
    RC,
    _mark_outliers,
    _new_figure,
    _plain_log_ticks,
    _ref_lines,
    _style,
    _style_legend,
    _style_order,
    family_styles,
    informative_ylim,
    log_y_wanted,
    save,
    set_loss_axis,
)
from .figure_style import N_DASHES as N_DASHES  # moved out; still importable from here
from .figure_style import OTHER_COLORS as OTHER_COLORS
from .figure_style import write_bytes_if_changed as write_bytes_if_changed

__all__ = [
    "RC",
    "family_styles",
    "gradient_norms_figure",
    "informative_ylim",
    "learning_curves_figure",
    "linear_rnn_gradient_norms",
    "log_y_wanted",
    "loss_vs_n_figure",
    "quality_cost_figure",
    "save",
    "truncation_patterns_figure",
]

MiB = 1024.0 * 1024.0


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
            # every style's mean curve on every axis in one pass (one groupby per style and axis
            # was most of this figure's time)
            per_point = data.groupby(["style_label", "_k"], sort=True).agg(
                **{f"x_{x}": (x, "mean") for x, _, _ in panels},
                y=("loss", "mean"),
                lo=("loss", "min"),
                hi=("loss", "max"),
            )
            seeds = data.groupby("style_label")["run_id"].nunique()
            for ax, (x, xlabel, symlog) in zip(row, panels):
                for label in order:
                    if label not in seeds.index:
                        continue
                    agg = per_point.loc[label]
                    xs, ys = agg[f"x_{x}"].to_numpy(float), agg["y"].to_numpy(float)
                    look = looks[label]
                    ax.plot(xs, ys, color=look["color"], ls=look["ls"], marker="o", markersize=2.5, lw=1.3)
                    if seeds[label] > 1:
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
                ax.set_ylim(lo, hi)
                if symlog:  # counts are >= 0: no negative decades in the margin
                    ax.set_xscale("symlog", linthresh=1.0)
                    ax.set_xlim(left=0)
                _ref_lines(ax, refs)  # after the limits: its labels are spaced on the final axis
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


def spaced_ticks(ns: Sequence[float], lo: float, hi: float, min_gap: float = 0.045) -> list[float]:
    """The values of ``ns`` to label on a log axis from ``lo`` to ``hi``: in order, each at least
    ``min_gap`` of the axis width from the last one kept (the largest always kept), so labels such
    as 19, 20, 21 do not print over each other.

    >>> spaced_ticks([5, 9, 10, 11, 19, 20, 21], 5 / 1.35, 21 * 1.35)
    [5, 9, 10, 11, 19, 21]
    """
    import math

    width = math.log(hi / lo)
    kept: list[float] = []
    for n in sorted(set(ns)):
        if kept and math.log(n / kept[-1]) / width < min_gap:
            if n != max(ns):
                continue
            if len(kept) > 1:
                kept.pop()  # the largest wins the place over its close neighbour
        kept.append(n)
    return kept


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
            drawn: list[tuple[list[float], list[float], str]] = []  # (xs, ys, colour) per family
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
                drawn.append((xs, ys, fam_color.get(fam, "0.4")))
                # losses are >= 0: a wide sd (one seed far off) must not stretch the axis below 0
                values += [y + e for y, e in zip(ys, err)] + [max(y - e, 0.0) for y, e in zip(ys, err)]
            full = [c for c in g.cells if c.style_preset == "full" and c.mean is not None]
            handles = []
            # styles without a fixed n (adaptive TBPTT chooses its K while training) have no x:
            # each is a dotted level at its best learning rate, so it is never silently missing
            for fam in fam_order:
                levels = [c for c in g.cells if c.style_preset == fam and c.n is None and c.mean is not None]
                if not levels:
                    continue
                lv = min(levels, key=lambda c: (c.mean, -c.lr))
                color = fam_color.get(fam, "0.4")
                ax.axhline(lv.mean, color=color, ls=":", lw=1.6, zorder=2)
                values += [lv.mean]
                handles.append(
                    Line2D(
                        [],
                        [],
                        color=color,
                        ls=":",
                        lw=1.6,
                        label=f"{FAMILY_NAMES.get(fam, fam)} (no fixed n; best lr)",
                    )
                )
            if full:
                f = min(full, key=lambda c: (c.mean, -c.lr))
                ax.axhline(f.mean, color=FAMILY_COLORS["full"], lw=1.4, zorder=2)
                if f.sd:
                    ax.axhspan(f.mean - f.sd, f.mean + f.sd, color="0.5", alpha=0.15, lw=0)
                values += [f.mean + (f.sd or 0), max(f.mean - (f.sd or 0), 0.0)]
                handles.append(
                    Line2D(
                        [], [], color=FAMILY_COLORS["full"], lw=1.4, label="full BPTT (best lr, ± sd band)"
                    )
                )
            # losses over several decades (influence: truncated styles 10^4 x the optimum) get a
            # log axis showing every point; otherwise means above the range are ▲ on its top edge
            hi, clipped, log_y = set_loss_axis(ax, values, [v for _, v, _ in refs])
            if not log_y:
                for xs, ys, color in drawn if clipped else ():
                    _mark_outliers(ax, xs, ys, color, hi)
                if full and f.mean > hi:  # its level is off the axis: say where it is
                    ax.annotate(
                        f"▲ full BPTT {f.mean:.4g} (above the axis)",
                        xy=(0.01, 0.99),
                        xycoords="axes fraction",
                        ha="left",
                        va="top",
                        fontsize=7,
                        color=FAMILY_COLORS["full"],
                    )
            _ref_lines(ax, refs)
            if ns:
                ax.set_xscale("log")
                ax.set_xlim(min(ns) / 1.35, max(ns) * 1.35)
                ax.set_xticks(spaced_ticks(ns, min(ns) / 1.35, max(ns) * 1.35))
                from matplotlib.ticker import FuncFormatter, NullFormatter

                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("truncation length n (log scale; older random(pi) rows: 1/pi)")
            ax.set_ylabel(f"final validation loss ({units})")
            ax.set_title(f"{g.label}; log y axis" if log_y else g.label)
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
        hi, clipped, log_y = set_loss_axis(ax, ok["final_val_loss"].to_numpy(float), [v for _, v, _ in refs])
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
        _ref_lines(ax, refs)  # after the limits: its labels are spaced on the final axis
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
        ax.set_xlabel("training wall time (s)")
        ax.set_ylabel(f"final validation loss ({units})")
        ax.set_title(
            f"{r0['task']} — {r0['device_tag']} ({r0['sweep']}): quality vs cost\n"
            f"every ok run; marker area ∝ saved-for-backward memory (largest {smax:.3g} MiB)"
            + ("\nlosses above the axis drawn on its top edge" if clipped else "")
            + ("\nlog y axis: the losses span more than two decades" if log_y else ""),
            fontsize=8,
        )
    return fig
