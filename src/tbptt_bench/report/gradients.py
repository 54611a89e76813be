"""The gradient-quality study in the report: tables and figures from its records alone (no torch).

Reads ``<results>/<device_tag>/gradients/gradients.json`` (written by ``tbptt-bench gradients``,
``tbptt_bench.analysis.study``) and renders, per device:

    tables/<device>/gradients/gradients.md          per task: cost, cosine, bias, spread per style
    figures/<device>/gradients/<task>_bias.png|svg  relative bias and relative std vs n (log axes)
    figures/<device>/gradients/<task>_depth.png|svg gradient contribution vs backprop depth

>>> rows = [dict(task="t", checkpoint=c, family="tf_style", n=2, style="tf_style(2)", label="TF-style (2, 2)",
...              cos=0.9, cos_of_mean=0.9, rel_bias=0.1, rel_std=0.0, se_rel_bias=0.0, cost=1.5, draws=1,
...              spectral_radius=0.5) for c in (0.0, 1.0)]
>>> md = gradients_markdown(dict(meta=dict(tasks=[dict(task="t", cell="tanh", hidden_size=4, loss="mse",
...     optimizer="sgd", lr=0.1)], sizes=dict(window=8, batch=2, draws=10, updates=5), train_style="tf_style(10)",
...     seconds=1.0, size="smoke"), styles=rows, depth=[]))
>>> "| TF-style (2, 2) | 2 | 1.50 | 0.900 | 0.100 | 0 | 0.900 | 0.100 | 0 |" in md
True
"""

from __future__ import annotations

import json
import math
from pathlib import Path

__all__ = ["bias_figure", "depth_figure", "find_studies", "gradients_markdown", "load_study"]

#: Row order of the families (the n-block ones first, as in the r2rt tables).
FAMILY_ORDER = ("tf_style", "williams_peng", "overlapping", "one_step", "random_depth", "artbp", "random_full",
                "adaptive")  # fmt: skip
FAMILY_NAMES = {
    "tf_style": "TF-style (n, n)",
    "williams_peng": "Williams–Peng (1, n)",
    "overlapping": "Overlapping (n/2, n)",
    "one_step": "One-step (n, 1)",
    "random_depth": "Random depth n (cap 4n)",
    "artbp": "ARTBP n",
    "random_full": "Random, full-BPTT form (E[depth] n)",
    "adaptive": "Adaptive (delta)",
}


def find_studies(results: Path) -> list[tuple[str, Path]]:
    """(device_tag, records file) for every study under a results root, sorted."""
    return sorted((p.parent.parent.name, p) for p in Path(results).glob("*/gradients/gradients.json"))


def load_study(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or data.get("meta", {}).get("kind", "gradient_study") != "gradient_study":
        raise ValueError(f"{path} is not a gradient-study record")
    return data


def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == 0:
        return "0"
    return f"{v:.{digits}f}" if abs(v) >= 10**-digits else f"{v:.1e}"


def _order(rows: list[dict]) -> list[str]:
    keys = {}
    for r in rows:
        fam = FAMILY_ORDER.index(r["family"]) if r["family"] in FAMILY_ORDER else len(FAMILY_ORDER)
        keys[r["style"]] = (r["n"] is None, r["n"] or 0, fam, r["style"])
    return sorted(keys, key=keys.get)


def gradients_markdown(data: dict) -> str:
    meta, rows, depth = data["meta"], data["styles"], data.get("depth", [])
    sz = meta["sizes"]
    out = [
        "# Gradient quality per style",
        "",
        "Each style's gradient of a fixed burned-in window's mean loss, with the parameters held fixed, "
        f"against the exact (full-BPTT) gradient g*. Window: {sz['window']} steps × {sz['batch']} rows; "
        f"parameters from a short {meta['train_style']} training ({sz['updates']} updates) at 0, 10, 50 and "
        f"100 % of it. Random styles: {sz['draws']} draws. Study size `{meta['size']}`, "
        f"{meta['seconds']:.0f} s. Generated from `gradients.json` by `tbptt-bench report`.",
        "",
        "Columns: **cost** = backprop steps per loss step (steps of each update's window its losses reach, "
        "over T·B); **cos** = cosine of one update's gradient to g* (random: mean over draws); "
        "**bias** = ‖E[g] − g*‖ / ‖g*‖ (random: of the mean over draws ± its standard error std/√draws; "
        "a bias within about 2 se of 0 is noise); **std** = √E‖g − E[g]‖² / ‖g*‖ (0 for deterministic styles).",
        "",
    ]
    for t in meta["tasks"]:
        task = t["task"]
        trs = [r for r in rows if r["task"] == task]
        cps = sorted({r["checkpoint"] for r in trs})
        first, last = cps[0], cps[-1]
        by = {(r["style"], r["checkpoint"]): r for r in trs}
        out += [
            f"## {task}",
            "",
            f"{t['cell']} cell, {t['hidden_size']} hidden units, loss {t['loss']}, {t['optimizer']} lr {t['lr']:g}.",
            "",
            f"| style | n | cost | cos @{first:.0%} | bias @{first:.0%} | std @{first:.0%} "
            f"| cos @{last:.0%} | bias @{last:.0%} | std @{last:.0%} |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for st in _order(trs):
            a, b = by.get((st, first)), by.get((st, last))
            r0 = a or b
            label = r0["label"] + (f" → K={b['K']}" if b and b.get("K") else "")
            cells = [label, "—" if r0["n"] is None else str(r0["n"]), _num((b or a)["cost"], 2)]
            for r in (a, b):
                cells += ["n/a"] * 3 if r is None else [_num(r["cos"]), _bias(r), _num(r["rel_std"])]
            out.append("| " + " | ".join(cells) + " |")
        out += ["", f"Relative bias over training ({', '.join(f'{c:.0%}' for c in cps)}):", ""]
        out += ["| style | " + " | ".join(f"{c:.0%}" for c in cps) + " |", "|---|" + "---|" * len(cps)]
        for st in _order(trs):
            r0 = next(r for r in trs if r["style"] == st)
            out.append(
                f"| {r0['label']} | " + " | ".join(_bias(by[(st, c)]) if (st, c) in by else "n/a"
                                                   for c in cps) + " |"
            )  # fmt: skip
        drs = [d for d in depth if d["task"] == task]
        if drs:
            rho = {d["checkpoint"]: d["spectral_radius"] for d in drs}
            out += [
                "",
                "Spectral radius of W_hh: "
                + ", ".join(f"{c:.0%}: {_num(rho[c])}" for c in sorted(rho))
                + ". Depth at which the contribution to g* first falls below 1 % of ‖g*‖: "
                + ", ".join(f"{c:.0%}: {_first_below(drs, c, 0.01)}" for c in sorted(rho))
                + ".",
            ]
        out.append("")
    return "\n".join(out)


def _bias(r: dict) -> str:
    """Relative bias; for random styles with its standard error (the mean of the draws is noisy)."""
    se = r.get("se_rel_bias") or 0.0
    return _num(r["rel_bias"]) + (f" ± {_num(se)}" if se > 0 else "")


def _first_below(drs: list[dict], cp: float, level: float) -> str:
    ds = sorted((d for d in drs if d["checkpoint"] == cp), key=lambda d: d["depth"])
    for d in ds:
        if d["contrib"] < level:
            return str(d["depth"])
    return f"> {ds[-1]['depth']}" if ds else "n/a"


def bias_figure(data: dict, task: str):
    """Relative bias and relative std vs n (log axes), one line per family; solid: the last
    checkpoint, dotted: the first (initial parameters)."""
    from matplotlib.ticker import NullFormatter

    from .figures import _new_figure, _style

    rows = [r for r in data["styles"] if r["task"] == task and r["n"] is not None]
    cps = sorted({r["checkpoint"] for r in rows})
    with _style():
        fig, axes = _new_figure(1, 2, 3.6, 3.0)
        colors = {}
        for ax, key, title in ((axes[0, 0], "rel_bias", "relative bias ‖E[g] − g*‖/‖g*‖"),
                               (axes[0, 1], "rel_std", "relative std √E‖g − E[g]‖²/‖g*‖")):  # fmt: skip
            for fam in FAMILY_ORDER:
                for cp, ls in ((cps[-1], "-"), (cps[0], ":")):
                    pts = sorted(
                        (r["n"], r[key]) for r in rows if r["family"] == fam and r["checkpoint"] == cp
                    )
                    pts = [(n, v) for n, v in pts if v and v > 0]
                    if not pts:
                        continue
                    line = ax.plot(*zip(*pts), ls, marker="o", markersize=3, lw=1.2, color=colors.get(fam),
                                   label=FAMILY_NAMES.get(fam, fam) if ls == "-" and key == "rel_bias" else None)[0]  # fmt: skip
                    colors.setdefault(fam, line.get_color())
            ax.set_xscale("log", base=2)
            ns = sorted({r["n"] for r in rows})
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.set_xlabel("truncation length n")
            ax.set_title(title, fontsize=8)
        fig.legend(loc="outside right center", fontsize=6, frameon=False)
        fig.suptitle(f"{task}: gradient bias and spread vs n (solid {cps[-1]:.0%}, dotted {cps[0]:.0%} of training)",
                     fontsize=9)  # fmt: skip
    return fig


def _log_ticks(axis) -> None:
    """Log ticks labelled as plain numbers ('0.01', '1e-06'): no mathtext, any range (call after
    plotting: narrow ranges get 1-2-5 ticks, wide ones decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = axis.axes.get_ylim() if axis is axis.axes.yaxis else axis.axes.get_xlim()
    few = lo > 0 and math.log10(hi / lo) <= 3  # a narrow range: label 1, 2, 5 of each decade
    axis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0) if few else (1.0,), numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def depth_figure(data: dict, task: str):
    """Contribution of each backprop depth d to the exact gradient, ‖G(d) − G(d−1)‖/‖g*‖, and the
    last loss's state gradient ‖dl_T/dh_{T−d+1}‖, per checkpoint (legend: W_hh's spectral radius)."""
    from .figures import _new_figure, _style

    drs = [d for d in data.get("depth", []) if d["task"] == task]
    with _style():
        fig, axes = _new_figure(1, 2, 3.6, 3.0)
        for cp in sorted({d["checkpoint"] for d in drs}):
            ds = sorted((d for d in drs if d["checkpoint"] == cp), key=lambda d: d["depth"])
            rho = ds[0]["spectral_radius"] if ds else None
            lab = f"{cp:.0%}" + ("" if rho is None else f", ρ(W_hh)={rho:.2f}")
            for ax, key in ((axes[0, 0], "contrib"), (axes[0, 1], "state_grad")):
                pts = [(d["depth"], d[key]) for d in ds if d[key] and d[key] > 0]
                if pts:
                    ax.plot(
                        *zip(*pts), marker="o", markersize=2, lw=1.0, label=lab if key == "contrib" else None
                    )
        for ax, title in ((axes[0, 0], "depth-d contribution ‖G(d) − G(d−1)‖ / ‖g*‖"),
                          (axes[0, 1], "state gradient ‖dl_T / dh_{T−d+1}‖")):  # fmt: skip
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
            ax.set_xlabel("backprop depth d (steps)")
            ax.set_title(title, fontsize=8)
        if drs:
            fig.legend(
                title="checkpoint", loc="outside right center", fontsize=6, title_fontsize=6, frameon=False
            )
        fig.suptitle(f"{task}: how far back the exact gradient comes from", fontsize=9)
    return fig
