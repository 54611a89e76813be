"""Tables from loaded runs: r2rt-style quality tables, cost tables and a generated summary.

Input is the ``runs`` DataFrame of ``store.load_runs`` restricted to one (device_tag, sweep,
task). Output is text (Markdown, CSV) built with fixed formatting, so the same records always
give byte-identical files. Torch-free.

Quality cell = FINAL validation loss (``final_val_loss``: the mean of the last 3 scheduled
evaluations), mean ± sd (sample sd, ddof=1) over the seeds that finished "ok"; the minimum
validation loss is the secondary table. A cell whose runs trained fewer than ``STARVED_UPDATES``
updates is marked "(5 upd.)", is never bold and is never a reference (issue #12: a full-BPTT run
with 5 updates has not trained, so "× full" ratios against it say nothing). A configuration with no
ok seed shows where it diverged and the best loss it reached before.

Records written before the fair-comparison protocol carry no forward/backprop counts, no test loss
and a ``final_val_loss`` that is the last single evaluation: cells show "n/a" where a field is
missing and the tables say the records predate the protocol.

Cells, formatting and reference lines live in ``cells.py``, the generated sentences in
``summary.py``; their public names are importable from here too.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from .cells import (  # the cells' public names stay importable from here
    CSV_KEY,
    DASH,
    LOSS_UNITS,
    STARVED_UPDATES,
    STYLE_ORDER,
    Cell,
    MiB,
    ModelGroup,
    SeedRun,
    _csv_key,
    _csv_num,
    _f,
    _mean,
    _n_name,
    _ratio,
    _title,
    cell_text,
    compact,
    csv_text,
    fmt_lr,
    md_table,
    model_groups,
    plain,
    predates_protocol,
    protocol_note,
    references,
    sig3,
)
from .summary import summary_markdown

__all__ = [
    "LOSS_UNITS",
    "STARVED_UPDATES",
    "STYLE_ORDER",
    "Cell",
    "ModelGroup",
    "SeedRun",
    "cell_text",
    "compact",
    "cost_tables",
    "csv_text",
    "fmt_lr",
    "md_table",
    "model_groups",
    "plain",
    "predates_protocol",
    "protocol_note",
    "r2rt_min_tables",
    "r2rt_tables",
    "references",
    "summary_markdown",
]

# -- r2rt quality table -----------------------------------------------------------------------
R2RT_CSV = (
    *CSV_KEY,
    "style_preset",
    "style_label",
    "style_spec",
    "lr",
    "runs",
    "ok",
    "diverged",
    "failed",
    "final_val_loss_mean",
    "final_val_loss_sd",
    "final_excess_mean",
    "min_val_loss_mean",
    "min_val_loss_sd",
    "updates_mean",
    "backprop_steps_mean",
    "starved",
    "best_val_before_divergence",
    "diverged_at_update",
    "text",
    "min_text",
    "best_in_block",
)


def _best_value(cells: Iterable[Cell], metric: str) -> float | None:
    """The bold value of a block: best mean among cells that are not starved."""
    vals = [c.values if metric == "final" else c.min_values for c in cells if c.starved is None]
    return min((statistics.fmean(v) for v in vals if v), default=None)


def _style_costs(cells: Sequence[Cell], spec: str) -> tuple[str, str]:
    """(updates, backprop steps) of one style in a block: means over its ok runs at every lr."""
    ok = [s for c in cells if c.style_spec == spec for s in c.ok]
    return compact(_mean(s.updates for s in ok)), compact(_mean(s.backprop_steps for s in ok))


def _quality_markdown(runs: pd.DataFrame, metric: str, rows: list[list[Any]] | None) -> list[str]:
    """The r2rt blocks for one metric ("final" or "min"); appends CSV rows when ``rows`` is a list."""
    task, device, sweep, _ = _title(runs)
    md: list[str] = []
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        for n, cells in g.blocks():
            best = _best_value(cells, metric)
            md += [f"### {'Full BPTT' if n is None else _n_name(n)}", ""]
            table = []
            for spec in dict.fromkeys(c.style_spec for c in cells):
                label = next(c.style_label for c in cells if c.style_spec == spec)
                line = [label]
                for lr in g.lrs:
                    c = g.find(spec, lr)
                    text = DASH if c is None else cell_text(c, metric)
                    vals = () if c is None else (c.values if metric == "final" else c.min_values)
                    is_best = (
                        c is not None and c.starved is None and bool(vals) and statistics.fmean(vals) == best
                    )
                    line.append(f"**{text}**" if is_best else text)
                    if c is not None and rows is not None:
                        div = [s for s in c.seeds if s.status == "diverged"]
                        bests = [
                            s.best_before_divergence for s in div if s.best_before_divergence is not None
                        ]
                        ats = [s.diverged_at_update for s in div if s.diverged_at_update is not None]
                        mn_sd = (
                            statistics.fmean(c.min_values) if c.min_values else None,
                            statistics.stdev(c.min_values) if len(c.min_values) > 1 else None,
                        )
                        rows.append(
                            [
                                *_csv_key(device, sweep, task, g, n),
                                c.style_preset,
                                c.style_label,
                                c.style_spec,
                                fmt_lr(lr),
                                c.runs,
                                len(c.ok),
                                c.diverged,
                                c.failed,
                                _csv_num(c.mean),
                                _csv_num(c.sd),
                                _csv_num(_mean(c.excess)),
                                _csv_num(mn_sd[0]),
                                _csv_num(mn_sd[1]),
                                _csv_num(c.mean_of("updates"), 1),
                                _csv_num(c.mean_of("backprop_steps"), 1),
                                int(c.starved is not None),
                                _csv_num(min(bests) if bests else None),
                                min(ats) if ats else "",
                                text,
                                cell_text(c, "min"),
                                int(is_best),
                            ]
                        )
                table.append(line + list(_style_costs(cells, spec)))
            header = ["style"] + [f"lr {fmt_lr(lr)}" for lr in g.lrs] + ["updates", "backprop steps"]
            md += md_table(header, table, "l" + "r" * (len(g.lrs) + 2)) + [""]
    return md


def _references_md(runs: pd.DataFrame, units: str) -> list[str]:
    refs = references(runs)
    if not refs:
        return []
    md = [f"Reference lines ({units}):", ""]
    md += [f"- {name}: {value:.4g}" + (f" — {note}" if note else "") for name, value, note in refs]
    return md + [""]


def r2rt_tables(runs: pd.DataFrame) -> tuple[str, str]:
    """(Markdown, CSV) of the r2rt-layout quality tables (final validation loss) for one
    (device, sweep, task); the CSV also carries the minimum (the secondary metric) per cell."""
    task, device, sweep, units = _title(runs)
    md = [
        f"# {task}: final validation loss by style and learning rate",
        "",
        f"Device `{device}`, sweep `{sweep}`. Cell: final validation loss ({units}; the mean of the last "
        "3 scheduled evaluations), mean ± sd over seeds where several finished; columns = learning rate; "
        "updates and backprop steps = means per run over the style's ok runs. "
        f"\"(5 upd.)\" = trained fewer than {STARVED_UPDATES} updates: marked, never bold, never a "
        "reference. **bold** = best unmarked cell in its block. A diverged cell gives the update of the "
        "first divergence and the best validation loss reached before it. Secondary table (minimum "
        "validation loss): r2rt_min.md.",
        "",
        *protocol_note(runs),
    ]
    rows: list[list[Any]] = []
    md += _quality_markdown(runs, "final", rows)
    md += _references_md(runs, units)
    return "\n".join(md), csv_text(R2RT_CSV, rows)


def r2rt_min_tables(runs: pd.DataFrame) -> str:
    """Markdown of the secondary r2rt tables: minimum validation loss over the evaluations."""
    task, device, sweep, units = _title(runs)
    md = [
        f"# {task}: minimum validation loss by style and learning rate (secondary)",
        "",
        f"Device `{device}`, sweep `{sweep}`. Cell: minimum validation loss over the scheduled evaluations "
        f"({units}), mean ± sd over seeds. Secondary: a minimum over many noisy evaluations is biased low; "
        "the primary table (r2rt.md) uses the final loss. Marks and bold as there.",
        "",
        *protocol_note(runs),
    ]
    md += _quality_markdown(runs, "min", None)
    md += _references_md(runs, units)
    return "\n".join(md)


# -- cost table -------------------------------------------------------------------------------
COST_CSV = (
    *CSV_KEY,
    "style_label",
    "style_spec",
    "lr",
    "ok_runs",
    "updates",
    "starved",
    "backprop_steps",
    "expected_backprop_steps",
    "backprop_steps_vs_tf",
    "train_wall_s",
    "train_wall_vs_tf",
    "timesteps_per_s",
    "timesteps_per_s_vs_tf",
    "peak_mem_MiB",
    "peak_mem_vs_tf",
    "saved_for_backward_MiB",
    "saved_for_backward_vs_tf",
)


def _backprop_text(c: Cell) -> str:
    """Measured backprop steps; "(exp. X)" beside it where the record carries the expected count."""
    measured, expected = c.mean_of("backprop_steps"), c.mean_of("expected_backprop_steps")
    return compact(measured) + (f" (exp. {compact(expected)})" if expected is not None else "")


def cost_tables(runs: pd.DataFrame) -> tuple[str, str]:
    """(Markdown, CSV): per style and lr, updates, backprop steps, wall time, timesteps/s, memory,
    each as a ratio to TF-style(n) of the same block (same model and lr).

    Means over the seeds that finished "ok". The reference is TF-style(n), not full BPTT: full BPTT
    with one update per long row is often starved, and a ratio to a run that has not trained says
    nothing. A starved TF-style(n) is no reference either (its ratios are left empty).
    """
    task, device, sweep, _ = _title(runs)
    sources = sorted({str(s) for s in runs["peak_mem_source"].dropna()})
    md = [
        f"# {task}: training cost by style",
        "",
        f"Device `{device}`, sweep `{sweep}`. Means over seeds that finished ok; \"× TF\" = ratio to "
        "TF-style (n, n) of the same block, model and learning rate (none for the whole-sequence block, "
        f"none against a TF-style run with fewer than {STARVED_UPDATES} updates). \"(5 upd.)\" marks a "
        "run that trained fewer than that. Backprop steps: time steps the backward passes traversed, "
        "summed over the run (\"exp.\" = the expected count where the record carries it). Peak memory "
        f"source: {', '.join(sources) if sources else DASH}; saved-for-backward = peak bytes autograd held.",
        "",
        *protocol_note(runs),
    ]
    rows: list[list[Any]] = []
    header = [
        "n",
        "style",
        "lr",
        "updates",
        "backprop steps",
        "× TF",
        "train wall (s)",
        "× TF",
        "timesteps/s",
        "× TF",
        "peak mem (MiB)",
        "× TF",
        "saved for backward (MiB)",
        "× TF",
    ]
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        table, left_out = [], []
        blocks = g.blocks()
        blocks = [b for b in blocks if b[0] is None] + [b for b in blocks if b[0] is not None]
        for n, cells in blocks:
            for c in cells:
                if not c.ok and c.wall_s is None:
                    left_out.append(f"{c.style_label} at lr {fmt_lr(c.lr)} ({cell_text(c)})")
                    continue
                tf = g.tf(n, c.lr)
                if tf is not None and tf.starved is not None:
                    tf = None
                metrics: list[tuple[Callable[[Cell], float | None], float, str]] = [
                    (lambda x: x.mean_of("backprop_steps"), 1.0, ""),
                    (lambda x: x.wall_s, 1.0, ".3f"),
                    (lambda x: x.timesteps_per_s, 1.0, ",.0f"),
                    (lambda x: x.peak_mem_bytes, MiB, "MiB"),
                    (lambda x: x.saved_bytes, MiB, "MiB"),
                ]
                ups = c.mean_of("updates")
                starved = " (starved)" if c.starved is not None else ""
                cells_md = [compact(ups) + starved]
                cells_csv: list[str] = [_csv_num(ups, 1), str(int(c.starved is not None))]
                for i, (get, scale, spec) in enumerate(metrics):
                    v = get(c)
                    r = _ratio(v, get(tf) if tf is not None else None)
                    shown = None if v is None else v / scale
                    if i == 0:
                        text = _backprop_text(c)
                    elif spec == "MiB":  # memory: 3 significant figures, never "0.00"
                        text = sig3(shown)
                    else:
                        text = _f(shown, spec)
                    cells_md += [text, _f(r, ".2f") + ("×" if r is not None else "")]
                    cells_csv += [_csv_num(shown, 6 if spec == "MiB" else 3)]  # MiB: keep KiB-sized values
                    if i == 0:
                        cells_csv += [_csv_num(c.mean_of("expected_backprop_steps"), 1)]
                    cells_csv += [_csv_num(r, 4)]
                table.append(["T" if n is None else str(n), c.style_label, fmt_lr(c.lr)] + cells_md)
                rows.append(
                    [
                        *_csv_key(device, sweep, task, g, n),
                        c.style_label,
                        c.style_spec,
                        fmt_lr(c.lr),
                        len(c.ok),
                    ]
                    + cells_csv
                )
        md += md_table(header, table, "lll" + "r" * 11) + [""]
        if left_out:
            md += ["Left out (no ok seed): " + "; ".join(left_out) + ".", ""]
    return "\n".join(md), csv_text(COST_CSV, rows)
