"""The look every report figure shares: the rc settings and figure creation (``_style``,
``_new_figure``, built without pyplot), ``save`` with fixed metadata and hash salt (the same input
gives the same bytes), one hue per style family shaded by n (``family_styles``), the y range that
keeps the references and the bulk of the losses (``informative_ylim``), reference lines, outlier
marks, the style order and legend, and plain log ticks. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .cells import STYLE_ORDER

__all__ = [
    "FAMILY_COLORS",
    "FAMILY_NAMES",
    "RC",
    "family_styles",
    "informative_ylim",
    "log_y_wanted",
    "save",
    "set_loss_axis",
    "write_bytes_if_changed",
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
            data = buf.getvalue()
            write_bytes_if_changed(path, _palette_png(data) if ext == "png" else data)
            out.append(path)
    return out


def _palette_png(data: bytes) -> bytes:
    """The PNG with at most 256 colours, no dithering: a line plot uses a few dozen colours plus
    their anti-aliasing shades, and the palette file is about a third of the RGBA one (the
    committed figures went from 6.1 MB to about 2 MB). Deterministic, like the rest of ``save``."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        quantized = im.convert("RGB").quantize(
            256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE
        )
    buf = io.BytesIO()
    quantized.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


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


def log_y_wanted(values: Sequence[float], refs: Sequence[float] = (), decades: float = 2.0) -> bool:
    """Whether a loss axis should be logarithmic: the positive values and references span more
    than ``decades`` decades (influence balancing's truncated styles reach losses 10^4 times its
    optimum; on a linear axis every other point and line sits on the bottom edge)."""
    v = np.asarray([x for x in [*values, *refs] if np.isfinite(x) and x > 0], dtype=float)
    return len(v) > 1 and float(np.log10(v.max() / v.min())) > decades


def set_loss_axis(ax, values: Sequence[float], refs: Sequence[float] = ()) -> tuple[float, bool, bool]:
    """Set a loss axis's scale and limits; returns (high, clipped, log).

    Losses over more than two decades (``log_y_wanted``) get a log axis holding every value, with
    decade ticks beyond three decades (1-2-5 ticks crowd there); otherwise ``informative_ylim``'s
    linear range, whose clipped values the caller marks on the top edge (high = the axis's top).
    """
    if log_y_wanted(values, refs):
        shown = [v for v in [*values, *refs] if np.isfinite(v) and v > 0]
        ax.set_yscale("log")
        ax.set_ylim(min(shown) / 1.5, max(shown) * 1.5)
        _plain_log_ticks(ax.yaxis, subs=(1.0,) if max(shown) / min(shown) > 1e3 else (1.0, 2.0, 5.0))
        return float("inf"), False, True
    lo, hi, clipped = informative_ylim(values, refs)
    ax.set_ylim(lo, hi)
    return hi, clipped, False


def _ref_lines(ax, refs: Sequence[tuple[str, float, str | None]]) -> None:
    """Dashed reference lines, labelled at the right edge. Call after the y limits and scale are
    set: labels closer than 5% of the axis height are kept apart (the lower of a pair goes under its
    line; three or more close lines share one label above the highest), so no two overprint."""
    to_axes = ax.transScale + ax.transLimits  # data -> axes fraction, on a linear or log axis
    log = ax.get_yscale() == "log"
    # a line a log axis cannot show (copy's optimal 0) is left out, not labelled off the axis
    placed = sorted(
        (float(to_axes.transform((1.0, v))[1]), name, v) for name, v, _ in refs if v > 0 or not log
    )
    clusters: list[list[tuple[float, str, float]]] = []
    for item in placed:
        if clusters and item[0] - clusters[-1][-1][0] < 0.05:
            clusters[-1].append(item)
        else:
            clusters.append([item])
    for cluster in clusters:
        for _, _name, value in cluster:
            ax.axhline(value, ls="--", lw=0.8, color="0.35", zorder=1)
        if len(cluster) == 2:
            labels = [(cluster[0], "top", -2), (cluster[1], "bottom", 2)]
        else:
            text = " · ".join(f"{name} {value:.4g}" for _, name, value in reversed(cluster))
            labels = [((cluster[-1][0], text, None), "bottom", 2)]
        for (_, name, value), va, dy in labels:
            ax.annotate(
                name if value is None else f"{name} {value:.4g}",
                xy=(1.0, cluster[-1][2] if value is None else value),
                xycoords=("axes fraction", "data"),
                xytext=(-2, dy),
                textcoords="offset points",
                ha="right",
                va=va,
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


def _plain_log_ticks(axis, subs: Sequence[float] = (1.0, 2.0, 5.0)) -> None:
    """Log-scale tick labels as plain numbers ('20', '0.001'): readable, and no mathtext to parse."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(subs=tuple(subs)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
