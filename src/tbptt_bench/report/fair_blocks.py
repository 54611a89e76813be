"""The numbers behind the fair comparisons (issue #12), for ``fair.py`` to render.

Which sweep each of the four comparisons reads (``pick_sweeps``); the blocks of a table (one
truncation length n plus full BPTT); each style's learning rate chosen on validation
(``choose_lr``) and its per-seed paired difference to TF-style(n) of the block (``block_rows``,
``delta_text`` with its bootstrap interval); each run's validation curve against backprop steps
for the equal-compute reading. Torch-free.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from . import stats
from .cells import DASH, NA, Cell, ModelGroup, SeedRun, budget_mode, plain

__all__ = [
    "COMPARISONS",
    "DATA_SWEEP_PREFERENCE",
    "Comparison",
    "Row",
    "block_rows",
    "choose_lr",
    "delta_text",
    "pick_sweeps",
]


@dataclass(frozen=True)
class Comparison:
    key: str  # "data" | "updates" | "episodic" | "compute"
    title: str
    sweep_name: str  # the preset that produces it, for the missing-sweep line
    axis: str  # one line: what is held equal


COMPARISONS = (
    Comparison("data", "Equal data", "full", "every style trains on the same timesteps (the data budget)."),
    Comparison(
        "updates",
        "Equal updates",
        "full-updates",
        "every style makes the same number of updates; full BPTT gets them on shorter rows, episodically.",
    ),
    Comparison(
        "episodic",
        "Episodic",
        "full-episodic",
        "sequences of a stated length, state reset between them; full BPTT makes one update per sequence.",
    ),
    Comparison(
        "compute",
        "Equal compute",
        "full",
        "every style's validation curve read at the same number of backprop steps (linear interpolation "
        "between scheduled evaluations; no extra training).",
    ),
)
#: Which data-budget sweep the equal-data and equal-compute tables use when several exist.
DATA_SWEEP_PREFERENCE = ("full", "quick", "smoke")


def pick_sweeps(runs: pd.DataFrame) -> dict[str, str | None]:
    """comparison key -> the sweep it reads (None when missing), for one (device, task).

    >>> pick_sweeps(pd.DataFrame({"sweep": ["quick", "smoke", "full-updates"]}))
    {'data': 'quick', 'updates': 'full-updates', 'episodic': None, 'compute': 'quick'}
    """
    by_mode: dict[str, list[str]] = {}
    for sweep in sorted({str(s) for s in runs["sweep"]}):
        by_mode.setdefault(budget_mode(sweep, runs[runs["sweep"] == sweep]), []).append(sweep)

    def first(mode: str, preferred: Sequence[str]) -> str | None:
        found = by_mode.get(mode, [])
        return next((s for s in preferred if s in found), found[0] if found else None)

    data = first("data", DATA_SWEEP_PREFERENCE)
    return {
        "data": data,
        "updates": first("updates", ("full-updates",)),
        "episodic": first("episodic", ("full-episodic",)),
        "compute": data,
    }


# -- one block's rows --------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One style of one block at its chosen learning rate."""

    cell: Cell
    val: dict[int, float]  # seed -> selection value (validation)
    metric: dict[int, float]  # seed -> reported value (test, or the validation value)
    delta: dict[int, float] | None  # seed -> metric minus TF-style(n)'s (None: no reference)

    @property
    def starved(self) -> int | None:
        return self.cell.starved


def _seed_values(cell: Cell, get: Callable[[SeedRun], float | None]) -> dict[int, float]:
    out = {}
    for s in cell.ok:
        v = get(s)
        if v is not None and s.seed is not None:
            out[int(s.seed)] = v
    return out


def choose_lr(cells: Sequence[Cell], select: Callable[[SeedRun], float | None]) -> Cell | None:
    """The cell (learning rate) of one style chosen on validation.

    Order: not starved, then no diverged/failed seed, then the lowest mean selection value, then the
    larger lr. Cells with no selection value are never chosen.
    """
    scored = []
    for c in cells:
        vals = list(_seed_values(c, select).values())
        if vals:
            bad = c.diverged + c.failed > 0
            scored.append(((c.starved is not None, bad, statistics.fmean(vals), -c.lr), c))
    return min(scored, key=lambda t: t[0])[1] if scored else None


def block_rows(
    cells: Sequence[Cell],
    select: Callable[[SeedRun], float | None],
    report: Callable[[SeedRun], float | None],
    n: int | None,
) -> list[Row]:
    """Rows of one block: each style at its chosen lr, with its paired difference to TF-style(n)."""
    rows = []
    for spec in dict.fromkeys(c.style_spec for c in cells):
        chosen = choose_lr([c for c in cells if c.style_spec == spec], select)
        if chosen is not None:
            rows.append(Row(chosen, _seed_values(chosen, select), _seed_values(chosen, report), None))
    ref = next((r for r in rows if r.cell.style_preset == "tf_style" and r.cell.n == n), None)
    if ref is None or ref.starved is not None:
        return rows
    out = []
    for r in rows:
        if r.starved is None:
            common = sorted(set(r.metric) & set(ref.metric))
            r = Row(r.cell, r.val, r.metric, {s: r.metric[s] - ref.metric[s] for s in common})
        out.append(r)
    return out


def delta_text(delta: dict[int, float] | None, starved: bool) -> tuple[str, float | None, tuple | None]:
    """('+0.012 [-0.003, +0.027]', mean, interval) of a paired difference over seeds."""
    if starved:
        return f"{DASH} (starved)", None, None
    if not delta:
        return NA, None, None
    d = [delta[s] for s in sorted(delta)]
    mean = statistics.fmean(d)
    ci = stats.bootstrap_ci(d)
    if ci is None:
        return f"{mean:+.3f} (1 seed)", mean, None
    return f"{mean:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]", mean, ci


def _blocks(g: ModelGroup) -> list[tuple[int | None, list[Cell]]]:
    """Blocks of a fair table: each truncation length n with full BPTT added; full alone if no n."""
    blocks = g.blocks()
    full = [c for n, cells in blocks if n is None for c in cells]
    with_n = [(n, cells + full) for n, cells in blocks if n is not None]
    return with_n or ([(None, full)] if full else [])


def _curves_by_run(curves: pd.DataFrame) -> dict[str, tuple[list[float], list[float]]]:
    """run_id -> (cumulative backprop steps, validation loss) of its scheduled evaluations."""
    if curves is None or "backprop_steps" not in curves.columns:
        return {}
    val = curves[(curves["split"] == "val") & curves["backprop_steps"].notna()]
    out = {}
    for rid, c in val.groupby("run_id", sort=True):
        c = c.sort_values(["timesteps", "backprop_steps"], kind="stable")
        out[str(rid)] = (
            [float(plain(x)) for x in c["backprop_steps"]],
            [float(plain(x)) if plain(x) is not None else float("nan") for x in c["loss"]],
        )
    return out
