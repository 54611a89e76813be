"""Sentences generated from a (device, sweep, task)'s runs: which style reaches which reference line,
the best style per n, paired differences to TF-style(n) with their bootstrap intervals — never
against a run too starved to have trained, always naming the budget axis. Torch-free."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from .cells import (
    AXES,
    STARVED_UPDATES,
    Cell,
    ModelGroup,
    _f,
    _n_name,
    _ratio,
    _title,
    budget_mode,
    fmt_lr,
    model_groups,
    protocol_note,
    references,
)

__all__ = ["summary_markdown"]


# -- generated summary ------------------------------------------------------------------------
def _best(cells: Iterable[Cell]) -> Cell | None:
    """The best cell (lowest mean final loss) among cells that are not starved."""
    scored = [c for c in cells if c.mean is not None and c.starved is None]
    return min(scored, key=lambda c: (c.mean, c.order, -c.lr)) if scored else None


def _best_per_style(g: ModelGroup) -> list[Cell]:
    out = [
        _best(c for c in g.cells if c.style_spec == spec)
        for spec in dict.fromkeys(c.style_spec for c in g.cells)
    ]
    return sorted((c for c in out if c is not None), key=lambda c: (c.mean, c.order))


def _starved_styles(g: ModelGroup) -> list[Cell]:
    """Styles whose every scored cell is starved: named in the summary, compared with nothing."""
    out = []
    for spec in dict.fromkeys(c.style_spec for c in g.cells):
        cells = [c for c in g.cells if c.style_spec == spec and c.mean is not None]
        if cells and all(c.starved is not None for c in cells):
            out.append(min(cells, key=lambda c: (c.mean, -c.lr)))
    return out


def _reach(v: float, refs: dict[str, float], tol: float) -> str:
    for name in sorted((n for n in refs if n != "no-memory"), key=lambda n: refs[n]):
        if v <= refs[name] + tol:
            return f"reaches the {name} line"
    nm = refs["no-memory"]
    if v < nm - tol:
        return "beats no-memory but reaches no lower line"
    return "stays at the no-memory line" if v <= nm + tol else "stays above the no-memory line"


def _at(c: Cell) -> str:
    return f"{c.style_label} ({_f(c.mean, '.3f')} at lr {fmt_lr(c.lr)})"


def _paired_sentence(cells: Sequence[Cell], n: int) -> list[str]:
    """'- n = 5, paired ...': each trained style's difference to TF-style(n) with its 95% interval."""
    from .fair_blocks import block_rows, delta_text  # the fair tables' numbers; imported when used

    rows = block_rows(cells, lambda s: s.final, lambda s: s.final, n)
    ref = next((r for r in rows if r.cell.style_preset == "tf_style" and r.cell.n == n), None)
    parts = []
    for r in rows:
        if r is ref or not r.delta:
            continue
        text, _, ci = delta_text(r.delta, False)
        if ci is None:  # the text already says "(1 seed)": no interval, no verdict
            parts.append(f"{r.cell.style_label} {text}")
            continue
        verdict = "better" if ci[1] < 0 else "worse" if ci[0] > 0 else "not separated"
        parts.append(f"{r.cell.style_label} {text} ({verdict})")
    if ref is None or not parts:
        return []
    return [
        f"- {_n_name(n)}, paired over seeds against {ref.cell.style_label} (final validation loss, each at "
        f"its best lr; mean difference [95% bootstrap interval]): {', '.join(parts)}."
    ]


def summary_markdown(runs: pd.DataFrame, tolerance: float = 0.05) -> str:
    """A few sentences written from the numbers, on the equal-data axis of this sweep: reference
    lines reached, best per n against TF-style(n), cost against TF-style(n).

    The metric is the final validation loss; each style's learning rate is its best on it. A style
    "reaches" a line when that loss (mean over ok seeds) is at most ``tolerance`` × (no-memory −
    optimal) above it. Starved runs (fewer than ``STARVED_UPDATES`` updates) are named once and
    never compared.
    """
    task, device, sweep, units = _title(runs)
    refs = {name: v for name, v, _ in references(runs)}
    statuses = runs["status"].value_counts()
    md = [
        f"# {task}: summary",
        "",
        f"Device `{device}`, sweep `{sweep}`: {len(runs)} runs ({int(statuses.get('ok', 0))} ok, "
        f"{int(statuses.get('diverged', 0))} diverged, {int(statuses.get('failed', 0))} failed). "
        f"Losses are {units}; every comparison below is at {AXES.get(budget_mode(sweep, runs), 'data')} on "
        "the final validation loss, each style at its best learning rate."
        + (" Reference lines: " + ", ".join(f"{n} {v:.4g}" for n, v in refs.items()) + "." if refs else ""),
        "",
        *protocol_note(runs),
    ]
    gap = refs["no-memory"] - refs["optimal"] if {"optimal", "no-memory"} <= set(refs) else None
    tol = tolerance * gap if gap is not None and gap > 0 else None
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        per_style = _best_per_style(g)
        starved = _starved_styles(g)
        if starved:
            md.append(
                f"- Not compared (fewer than {STARVED_UPDATES} updates, not trained): "
                + ", ".join(f"{c.style_label} ({c.starved:,} upd.)" for c in starved)
                + "."
            )
        if not per_style:
            md += [
                "No configuration finished ok." if not starved else "No other configuration to compare.",
                "",
            ]
            continue
        if tol is not None:
            md.append(
                f"- A style reaches a reference line when its final validation loss is within "
                f"{tolerance:.0%} of the no-memory−optimal gap ({tol:.3g}) above it."
            )
            outcome: dict[str, list[str]] = {}
            for c in per_style:
                outcome.setdefault(_reach(c.mean, refs, tol), []).append(_at(c))
            for what, names in outcome.items():
                md.append(f"- {what[0].upper()}{what[1:]}: {', '.join(names)}.")
        elif "optimal" in refs:
            md += [
                f"- Distance to the optimal line ({refs['optimal']:.3f}): "
                + ", ".join(f"{c.style_label} {c.mean - refs['optimal']:+.3f}" for c in per_style)
                + "."
            ]
        for n, cells in g.blocks():
            best = _best(cells)
            if n is None or best is None:
                continue
            line = f"- {_n_name(n)}: best is {_at(best)}"
            tf = _best(c for c in cells if c.style_preset == "tf_style")
            if tf is not None and tf.style_spec != best.style_spec:
                line += f"; {tf.style_label} reaches {tf.mean:.3f} ({tf.mean - best.mean:+.3f})"
            md.append(line + ".")
            md += _paired_sentence(cells, n)
        trunc = _best(c for c in g.cells if c.style_preset not in ("full", "tf_style") and c.n is not None)
        tf = g.tf(trunc.n, trunc.lr) if trunc is not None else None
        if trunc is not None and tf is not None and tf.mean is not None and tf.starved is None:
            parts = [
                (_ratio(trunc.mean_of("backprop_steps"), tf.mean_of("backprop_steps")), "backprop steps"),
                (_ratio(trunc.wall_s, tf.wall_s), "training wall time"),
                (_ratio(trunc.peak_mem_bytes, tf.peak_mem_bytes), "peak memory"),
            ]
            costs = ", ".join(f"{r:.2f}× its {what}" for r, what in parts if r is not None)
            md.append(
                f"- Best non-TF truncated style: {_at(trunc)}, against {tf.style_label}'s {tf.mean:.3f} at "
                f"the same lr ({trunc.mean - tf.mean:+.3f})" + (f"; it costs {costs}." if costs else ".")
            )
        elif trunc is not None:
            md.append(
                f"- Best non-TF truncated style: {_at(trunc)} (no trained TF-style run of its n at that lr)."
            )
        md.append("")
    return "\n".join(md)
