"""Fair comparisons (issue #12): one table per budget axis, per task and device, across sweeps.

The rule of docs/semantics.md: styles are compared only on a stated budget axis.
Four comparisons, each its own section of ``fair.md`` (and rows of ``fair.csv``):

1. **Equal data**: the data-budget sweep (``budget.mode = "data"``; the fullest of full/quick/smoke):
   every style sees the same timesteps.
2. **Equal updates**: the ``full-updates`` sweep: every style makes the same number of updates; full
   BPTT gets them on shorter rows, episodically (the table says where, from each run's row length).
3. **Episodic**: the ``full-episodic`` sweep: sequences of a stated length with the state reset
   between them; full BPTT makes one update per sequence.
4. **Equal compute**: no extra training: each run's validation curve is read at a common budget of
   backprop steps by linear interpolation (``stats.interpolate``); the budget is the smallest final
   backprop-step count among the block's styles (or ``compute_budget`` when given).

In every table each style's learning rate is chosen on validation (the final validation loss; on
the equal-compute axis the validation loss at the budget), preferring learning rates at which no
seed diverged or failed; the reported metric is the test loss where the records carry it (else the
final validation loss, and the table says so). A block is one truncation length n: its styles plus
full BPTT. Each row gives its paired difference to TF-style(n) of the same block — per seed, style
minus TF-style(n), each at its chosen learning rate — as the mean over seeds with a 95% percentile
bootstrap interval (``stats.bootstrap_ci``: 2,000 resamples, RNG seed 0). A run with fewer than
``tables.STARVED_UPDATES`` updates is marked, gets no difference and is never the reference.

Which sweep each comparison reads, the learning-rate choice and the paired differences are
computed in ``fair_blocks.py`` (their names stay importable from here); this module renders the
tables.

Torch-free; the same records give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import stats
from .cells import (  # noqa: F401  (the cells' names fair had stay importable from it)
    CSV_KEY,
    DASH,
    NA,
    STARVED_UPDATES,
    Cell,
    ModelGroup,
    SeedRun,
    budget_mode,
    compact,
    csv_text,
    fmt_lr,
    md_table,
    model_groups,
    plain,
    predates_protocol,
    protocol_note,
)
from .fair_blocks import (  # noqa: F401  (every old name stays importable from here)
    COMPARISONS,
    DATA_SWEEP_PREFERENCE,
    Comparison,
    Row,
    _blocks,
    _curves_by_run,
    _seed_values,
    block_rows,
    choose_lr,
    delta_text,
    pick_sweeps,
)

__all__ = ["COMPARISONS", "FAIR_CSV", "Comparison", "fair_files", "fair_tables", "pick_sweeps"]

FAIR_CSV = (
    "comparison",
    *CSV_KEY,
    "style_preset",
    "style_label",
    "style_spec",
    "lr",
    "seeds_ok",
    "seeds",
    "updates_mean",
    "backprop_steps_mean",
    "starved",
    "row_len",
    "episode_len",
    "val_mean",
    "val_sd",
    "metric",
    "metric_mean",
    "metric_sd",
    "excess_over_optimal_mean",
    "delta_vs_tf_mean",
    "delta_ci_low",
    "delta_ci_high",
    "pairs",
    "budget_backprop_steps",
)


def _ms(values: Sequence[float]) -> str:
    m, sd = stats.mean_sd(values)
    if m is None:
        return NA
    return f"{m:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


# -- the four sections ---------------------------------------------------------------------------
def _n_title(n: int | None) -> str:
    return "full BPTT only" if n is None else f"n = {n}"


@dataclass
class _Out:
    md: list[str]
    rows: list[list[Any]]


def _section(
    comp: Comparison,
    sweep: str,
    runs: pd.DataFrame,
    curves: pd.DataFrame,
    out: _Out,
    compute_budget: float | None,
) -> None:
    task, device = str(runs["task"].iloc[0]), str(runs["device_tag"].iloc[0])
    has_test = "test_loss" in runs.columns and runs["test_loss"].notna().any()
    metric_name = "test" if has_test and comp.key != "compute" else "val"
    by_run = _curves_by_run(curves) if comp.key == "compute" else {}
    if comp.key == "compute" and not by_run:
        out.md += [
            f"n/a: the curves of sweep `{sweep}` carry no backprop_steps (records that predate the "
            "protocol), so no equal-compute reading is possible.",
            "",
        ]
        return
    metric_words = {
        "test": "test loss (held-out stream, evaluated once at the end)",
        "val": "final validation loss (no test loss in these records)"
        if comp.key != "compute"
        else "validation loss at the budget",
    }[metric_name]
    out.md += [
        f"Sweep `{sweep}`. Learning rate per style chosen on validation; reported: {metric_words}; "
        "Δ = paired difference to TF-style(n) of the block, mean over seeds [95% bootstrap interval].",
        "",
    ]
    for g in model_groups(runs):
        for n, cells in _blocks(g):
            budget_line = ""
            if comp.key == "compute":
                # per style, its smallest final count over lrs and seeds; starved styles (not trained)
                # do not set the budget, since they are never a reference
                finals: dict[str, float] = {}
                trained: set[str] = set()
                for c in cells:
                    for s in c.ok:
                        if s.run_id in by_run:
                            last = by_run[s.run_id][0][-1]
                            finals[c.style_label] = min(finals.get(c.style_label, last), last)
                            if c.starved is None:
                                trained.add(c.style_label)
                if not finals:
                    continue
                pool = trained or set(finals)
                smallest = min(pool, key=lambda k: (finals[k], k))
                budget = compute_budget if compute_budget is not None else finals[smallest]
                budget_line = f"Budget: {compact(budget)} backprop steps " + (
                    "(stated)."
                    if compute_budget is not None
                    else f"(the smallest final count among the block's trained styles: {smallest})."
                )
                budget_line += " Updates and backprop steps in the table are run totals."

                def at_budget(s: SeedRun, b: float = budget) -> float | None:
                    xy = by_run.get(s.run_id)
                    return None if xy is None else stats.interpolate(xy[0], xy[1], b)

                select = report = at_budget
            else:
                budget = None

                def select(s: SeedRun) -> float | None:
                    return s.final

                def report(s: SeedRun) -> float | None:
                    return s.test if metric_name == "test" else s.final

            rows = block_rows(cells, select, report, n)
            if not rows:
                continue
            ref = next((r for r in rows if r.cell.style_preset == "tf_style" and r.cell.n == n), None)
            ref_name = ref.cell.style_label if ref is not None else f"TF-style ({n}, {n})"
            out.md += [f"### {g.label} — {_n_title(n)}", ""]
            if budget_line:
                out.md += [budget_line, ""]
            notes = _block_notes(comp, rows, ref, n)
            unread = [
                lab
                for lab in dict.fromkeys(c.style_label for c in cells)
                if lab not in {r.cell.style_label for r in rows}
            ]
            if unread:
                why = "no curve reaches the budget" if comp.key == "compute" else "no seed finished ok"
                notes = [f"Not in the table ({why}): {', '.join(unread)}.", *(notes or [""])]
            header = ["style", "lr", "seeds", "updates", "backprop steps"]
            if comp.key == "updates":
                header.append("row length")
            if comp.key == "episodic":
                header.append("episode")
            header += (
                ["val at budget"]
                if comp.key == "compute"
                else ["final val"] + (["test"] if metric_name == "test" else [])
            )
            header += ["− optimal", f"Δ {metric_name} vs {ref_name}"]
            table = []
            for r in rows:
                c = r.cell
                ups = c.mean_of("updates")
                rl = sorted({s.row_len for s in c.ok if s.row_len is not None})
                el = sorted({s.episode_len for s in c.ok if s.episode_len is not None})
                excess = [
                    r.metric[s.seed] - s.ref_optimal
                    for s in c.ok
                    if s.seed in r.metric and s.ref_optimal is not None
                ]
                dtext, dmean, ci = delta_text(r.delta, r.starved is not None)
                if r is ref and r.delta is not None:
                    dtext = "(reference)"
                line = [
                    c.style_label,
                    fmt_lr(c.lr),
                    f"{len(c.ok)}/{c.runs}",
                    compact(ups) + (" (starved)" if c.starved is not None else ""),
                    compact(c.mean_of("backprop_steps")),
                ]
                if comp.key == "updates":
                    line.append(", ".join(f"{x:,}" for x in rl) or NA)
                if comp.key == "episodic":
                    line.append(", ".join(f"{x:,}" for x in el) or NA)
                vals = [r.val[s] for s in sorted(r.val)]
                mets = [r.metric[s] for s in sorted(r.metric)]
                line.append(_ms(vals))
                if metric_name == "test" and comp.key != "compute":
                    line.append(_ms(mets))
                m_ex, _ = stats.mean_sd(excess)
                line += [NA if m_ex is None else f"{m_ex:+.3f}", dtext]
                table.append(line)
                vm, vsd = stats.mean_sd(vals)
                mm, msd = stats.mean_sd(mets)
                out.rows.append(
                    [
                        comp.key,
                        device,
                        sweep,
                        task,
                        g.cell,
                        g.hidden_size,
                        g.optimizer,
                        "" if g.clip is None else f"{g.clip:g}",
                        "" if n is None else n,
                        c.style_preset,
                        c.style_label,
                        c.style_spec,
                        fmt_lr(c.lr),
                        len(c.ok),
                        c.runs,
                        _num(ups, 1),
                        _num(c.mean_of("backprop_steps"), 1),
                        int(c.starved is not None),
                        " ".join(str(x) for x in rl),
                        " ".join(str(x) for x in el),
                        _num(vm),
                        _num(vsd),
                        metric_name,
                        _num(mm),
                        _num(msd),
                        _num(m_ex),
                        _num(dmean),
                        _num(ci[0] if ci else None),
                        _num(ci[1] if ci else None),
                        len(r.delta or {}),
                        _num(budget, 1),
                    ]
                )
            out.md += md_table(header, table, "l" + "r" * (len(header) - 1)) + [""]
            out.md += notes


def _num(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _block_notes(comp: Comparison, rows: list[Row], ref: Row | None, n: int | None) -> list[str]:
    """Lines under a block's table: missing/starved reference, and where full BPTT ran episodically."""
    notes = []
    if n is not None and ref is None:
        notes.append(f"No TF-style ({n}, {n}) run in this block: no paired differences.")
    elif ref is not None and ref.starved is not None:
        notes.append(
            f"{ref.cell.style_label} trained only {ref.starved:,} updates (< {STARVED_UPDATES}): "
            "not a reference, no paired differences."
        )
    starved = [r.cell.style_label for r in rows if r.starved is not None and r is not ref]
    if starved:
        notes.append(f"Starved (< {STARVED_UPDATES} updates; no difference shown): {', '.join(starved)}.")
    if comp.key == "updates":
        made = {r.cell.style_label: r.cell.mean_of("updates") for r in rows}
        counts = sorted(round(v) for v in made.values() if v)
        usual = counts[len(counts) // 2] if counts else None  # the median style's count: the sweep's U
        off = [
            f"{label} ({v:,.0f})" for label, v in made.items() if usual and v and abs(v - usual) > usual / 4
        ]
        if off:
            notes.append(
                f"Not at equal updates (most styles made {usual:,}): {', '.join(off)}; their Δ "
                "compares unequal numbers of updates (adaptive TBPTT chooses its window while training)."
            )
        lens = {r.cell.style_preset: {s.row_len for s in r.cell.ok if s.row_len} for r in rows}
        full = sorted(lens.get("full", set()))
        others = sorted({x for p, v in lens.items() if p != "full" for x in v})
        if full and others and max(full) < max(others):
            notes.append(
                f"Full BPTT ran episodically on rows of {', '.join(f'{x:,}' for x in full)} steps (state "
                f"reset per row) to make the same number of updates; the other styles on rows of "
                f"{', '.join(f'{x:,}' for x in others)}."
            )
    return notes + ([""] if notes else [])


def fair_tables(
    runs: pd.DataFrame, curves: pd.DataFrame | None = None, compute_budget: float | None = None
) -> tuple[str, str]:
    """(Markdown, CSV) of the four fair comparisons for one (device, task) over all its sweeps.

    ``runs``/``curves``: ``load_runs`` frames restricted to one device and task (any sweeps).
    ``compute_budget``: the equal-compute budget in backprop steps (default: per block, the smallest
    final count among its styles). A comparison whose sweep is missing gets one line saying so.
    """
    task, device = str(runs["task"].iloc[0]), str(runs["device_tag"].iloc[0])
    sweeps = pick_sweeps(runs)
    md = [
        f"# {task}: fair comparisons on device `{device}`",
        "",
        "Styles are compared only on a stated budget axis (docs/semantics.md, \"Fair comparison\"). "
        "Each block holds the styles of one truncation length n plus full BPTT. Each style's learning "
        "rate is chosen on validation (final validation loss; at equal compute the validation loss at "
        "the budget), preferring learning rates where no seed diverged or failed. \"− optimal\" = the "
        "reported loss minus each seed's own optimal line, averaged. Δ = per seed, the style minus "
        "TF-style(n) of the same block (each at its chosen lr), mean over the seeds both have "
        f"[95% percentile bootstrap interval, {stats.BOOTSTRAP_RESAMPLES:,} resamples, RNG seed "
        f"{stats.BOOTSTRAP_SEED}]; negative = better than TF-style(n). \"(5 upd.)\" = fewer than "
        f"{STARVED_UPDATES} updates: not trained, no Δ, never the reference.",
        "",
        *protocol_note(runs),
    ]
    out = _Out(md, [])
    for i, comp in enumerate(COMPARISONS, start=1):
        sweep = sweeps[comp.key]
        out.md += [f"## {i}. {comp.title}: {comp.axis}", ""]
        if sweep is None:
            out.md += [
                f"Not available: no `{comp.sweep_name}` sweep (budget mode \"{comp.key}\") for {task} on "
                f"`{device}`.",
                "",
            ]
            continue
        sel = runs[runs["sweep"] == sweep]
        sel_curves = None
        if curves is not None and len(curves):
            sel_curves = curves[curves["sweep"] == sweep]
        if not predates_protocol(runs):  # mixed records: say which sweep is old, where it is read
            out.md += protocol_note(sel)
        _section(comp, sweep, sel, sel_curves, out, compute_budget)
    return "\n".join(out.md), csv_text(FAIR_CSV, out.rows)


def fair_files(runs: pd.DataFrame, curves: pd.DataFrame) -> list[tuple[tuple[str, str], dict[str, str]]]:
    """The report's hook: ((device, task), {file name: text}) for every device and task in ``runs``."""
    if not len(runs):
        return []
    out = []
    for (device, task), group in runs.groupby(["device_tag", "task"], sort=True):
        sel = curves[(curves["device_tag"] == device) & (curves["task"] == task)] if len(curves) else curves
        md, csv_body = fair_tables(group, sel)
        out.append(((str(device), str(task)), {"fair.md": md, "fair.csv": csv_body}))
    return out
