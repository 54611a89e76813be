"""Tables from loaded runs: r2rt-style quality tables, cost tables and a generated summary.

Input is the ``runs`` DataFrame of ``store.load_runs`` restricted to one (device_tag, sweep,
task). Output is text (Markdown, CSV) built with fixed formatting, so the same records always
give byte-identical files. Torch-free.

Quality cell = minimum validation loss over the budget, mean ± sd (sample sd, ddof=1) over the
seeds that finished "ok"; a configuration with no ok seed shows "diverged" or "failed".

>>> cell_text(Cell.demo(values=[0.52, 0.532]))
'0.526 ± 0.008'
>>> cell_text(Cell.demo(values=[], diverged=1))
'diverged'
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = [
    "LOSS_UNITS",
    "STYLE_ORDER",
    "Cell",
    "ModelGroup",
    "cell_text",
    "cost_tables",
    "csv_text",
    "fmt_lr",
    "md_table",
    "model_groups",
    "plain",
    "r2rt_tables",
    "references",
    "summary_markdown",
]

#: What the loss numbers are, per config "loss".
LOSS_UNITS = {"ce": "cross-entropy, nats", "mse": "mean squared error"}
#: Row order inside an r2rt block (SPEC.md's presets; anything else after them).
STYLE_ORDER = {
    "tf_style": 0,
    "williams_peng": 1,
    "overlapping": 2,
    "one_step": 3,
    "random": 4,
    "tbptt": 5,
    "full": 6,
}
REF_NAMES = (("optimal", "optimal"), ("partial", "partial"), ("no_memory", "no-memory"))
MiB, KiB = 1024.0 * 1024.0, 1024.0
DASH = "—"


def plain(x: Any) -> Any:
    """pandas/numpy scalar -> plain Python, missing -> None."""
    if x is None or x is pd.NA or x is pd.NaT:
        return None
    if hasattr(x, "item"):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _none_last(key: tuple) -> tuple:
    """Sort key for tuples that may hold None: None sorts after every value of the same slot."""
    return tuple((v is None, 0 if v is None else v) for v in key)


def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(vs) if vs else None


def fmt_lr(lr: float) -> str:
    """Learning rate as written in headers: ``fmt_lr(0.0003) == '0.0003'``."""
    return f"{lr:g}" if lr >= 1e-4 else f"{lr:.1e}"


def _f(x: float | None, spec: str) -> str:
    return DASH if x is None else format(x, spec)


def sig3(x: float | None) -> str:
    """Three significant figures without exponents: ``sig3(0.125) == '0.125'``, ``sig3(110.4) == '110'``."""
    if x is None:
        return DASH
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    return f"{round(x, decimals):,.{decimals}f}"


def _csv_num(x: float | None, digits: int = 6) -> str:
    return "" if x is None else f"{x:.{digits}f}"


@dataclass(frozen=True)
class Cell:
    """One (style, lr) of one model group, aggregated over seeds. Costs are means over ok runs."""

    style_spec: str
    style_label: str
    style_preset: str
    n: int | None
    k1: int | None
    k2: int | None
    pi: float | None
    lr: float
    runs: int
    diverged: int
    failed: int
    values: tuple[float, ...]  # min val loss of each ok seed (finite only)
    wall_s: float | None = None
    timesteps_per_s: float | None = None
    peak_mem_bytes: float | None = None
    saved_bytes: float | None = None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def order(self) -> tuple:
        return (
            STYLE_ORDER.get(self.style_preset, 9),
            self.k1 or 0,
            self.k2 or 0,
            self.pi or 0.0,
            self.style_spec,
        )

    @classmethod
    def demo(cls, values: Sequence[float], diverged: int = 0, failed: int = 0) -> Cell:
        """A cell for examples and tests."""
        return cls(
            "tf_style(4)",
            "TF-style (4, 4)",
            "tf_style",
            4,
            4,
            4,
            None,
            0.1,
            len(values) + diverged + failed,
            diverged,
            failed,
            tuple(values),
        )


def cell_text(c: Cell) -> str:
    """Fixed formatting: '0.515', '0.526 ± 0.008', '0.600 (1/2 diverged)', 'diverged', 'failed'."""
    if not c.values:
        if c.runs == 0:
            return DASH
        return "diverged" if c.diverged else ("failed" if c.failed else "n/a")
    text = f"{c.mean:.3f}" + (f" ± {c.sd:.3f}" if c.sd is not None else "")
    bad = [f"{k}/{c.runs} {word}" for k, word in ((c.diverged, "diverged"), (c.failed, "failed")) if k]
    return text + (f" ({', '.join(bad)})" if bad else "")


@dataclass(frozen=True)
class ModelGroup:
    """All cells sharing model, optimizer and clipping (one r2rt table)."""

    cell: str
    hidden_size: int
    optimizer: str
    clip: float | None
    cells: tuple[Cell, ...] = field(default=())

    @property
    def label(self) -> str:
        clip = f", clip {self.clip:g}" if self.clip is not None else ""
        return f"{self.cell}, hidden {self.hidden_size} ({self.optimizer}{clip})"

    @property
    def lrs(self) -> list[float]:
        """Learning rates, descending like r2rt."""
        return sorted({c.lr for c in self.cells}, reverse=True)

    def blocks(self) -> list[tuple[int | None, list[Cell]]]:
        """Cells per truncation length n (ascending), the whole-sequence block (n None) last."""
        ns = sorted({c.n for c in self.cells}, key=lambda n: (n is None, n or 0))
        return [(n, sorted((c for c in self.cells if c.n == n), key=lambda c: (c.order, -c.lr))) for n in ns]

    def find(self, spec: str, lr: float) -> Cell | None:
        return next((c for c in self.cells if c.style_spec == spec and c.lr == lr), None)

    def full(self, lr: float) -> Cell | None:
        return next((c for c in self.cells if c.style_preset == "full" and c.lr == lr), None)


def model_groups(runs: pd.DataFrame) -> list[ModelGroup]:
    """Aggregate runs (one device, sweep, task) into model groups of cells, deterministically."""
    recs = [{k: plain(v) for k, v in r.items()} for r in runs.to_dict("records")]
    by_cell: dict[tuple, list[dict]] = {}
    for r in recs:
        key = (r["cell"], r["hidden_size"], r["optimizer"], r["clip"], r["style_spec"], r["lr"])
        by_cell.setdefault(key, []).append(r)
    groups: dict[tuple, list[Cell]] = {}
    for key in sorted(by_cell, key=_none_last):
        rs = sorted(by_cell[key], key=lambda r: (r["seed"] or 0, r["run_id"]))
        ok = [r for r in rs if r["status"] == "ok"]
        r0 = rs[0]
        cell = Cell(
            style_spec=r0["style_spec"],
            style_label=r0["style_label"],
            style_preset=r0["style_preset"],
            n=r0["style_n"],
            k1=r0["k1"],
            k2=r0["k2"],
            pi=r0["pi"],
            lr=r0["lr"],
            runs=len(rs),
            diverged=sum(r["status"] == "diverged" for r in rs),
            failed=sum(r["status"] == "failed" for r in rs),
            values=tuple(r["min_val_loss"] for r in ok if r["min_val_loss"] is not None),
            wall_s=_mean(r["train_wall_s"] for r in ok),
            timesteps_per_s=_mean(r["timesteps_per_s"] for r in ok),
            peak_mem_bytes=_mean(r["peak_mem_bytes"] for r in ok),
            saved_bytes=_mean(r["saved_for_backward_peak_bytes"] for r in ok),
        )
        groups.setdefault(key[:4], []).append(cell)
    return [ModelGroup(*k, cells=tuple(v)) for k, v in groups.items()]


def references(runs: pd.DataFrame) -> list[tuple[str, float, str | None]]:
    """(name, value, note) of the task's reference lines, from the first run (sorted by run_id)."""
    if runs.empty:
        return []
    r = runs.sort_values("run_id", kind="stable").iloc[0]
    out = []
    for key, name in REF_NAMES:
        v = plain(r[f"ref_{key}"])
        if v is not None:
            out.append((name, float(v), plain(r[f"ref_{key}_note"])))
    return out


# -- Markdown / CSV helpers ---------------------------------------------------------------------
def md_table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """A pipe table; ``align`` has one of l/r per column."""
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _title(runs: pd.DataFrame) -> tuple[str, str, str, str]:
    r = runs.iloc[0]
    return str(r["task"]), str(r["device_tag"]), str(r["sweep"]), LOSS_UNITS.get(str(r["loss_kind"]), "loss")


def _n_name(n: int | None) -> str:
    return "n = T (whole sequence)" if n is None else f"n = {n}"


# -- r2rt quality table -----------------------------------------------------------------------
R2RT_CSV = (
    "device_tag",
    "sweep",
    "task",
    "cell",
    "hidden_size",
    "optimizer",
    "clip",
    "n",
    "style_preset",
    "style_label",
    "style_spec",
    "lr",
    "runs",
    "ok",
    "diverged",
    "failed",
    "min_val_loss_mean",
    "min_val_loss_sd",
    "text",
    "best_in_block",
)


def r2rt_tables(runs: pd.DataFrame) -> tuple[str, str]:
    """(Markdown, CSV) of the r2rt-layout quality tables for one (device, sweep, task)."""
    task, device, sweep, units = _title(runs)
    md = [
        f"# {task}: minimum validation loss by style and learning rate",
        "",
        f"Device `{device}`, sweep `{sweep}`. Cell: minimum validation loss over the budget ({units}); "
        "mean ± sd over seeds where several finished; **bold** = best in its block; "
        "columns = learning rate; \"diverged\"/\"failed\" = no seed finished.",
        "",
    ]
    rows: list[list[Any]] = []
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        for n, cells in g.blocks():
            best = min((c.mean for c in cells if c.mean is not None), default=None)
            md += [f"### {'Full BPTT' if n is None else _n_name(n)}", ""]
            table = []
            for spec in dict.fromkeys(c.style_spec for c in cells):
                label = next(c.style_label for c in cells if c.style_spec == spec)
                line = [label]
                for lr in g.lrs:
                    c = g.find(spec, lr)
                    text = DASH if c is None else cell_text(c)
                    is_best = c is not None and best is not None and c.mean == best
                    line.append(f"**{text}**" if is_best else text)
                    if c is not None:
                        rows.append(
                            [
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
                                fmt_lr(lr),
                                c.runs,
                                len(c.values),
                                c.diverged,
                                c.failed,
                                _csv_num(c.mean),
                                _csv_num(c.sd),
                                text,
                                int(is_best),
                            ]
                        )
                table.append(line)
            md += md_table(
                ["style"] + [f"lr {fmt_lr(lr)}" for lr in g.lrs], table, "l" + "r" * len(g.lrs)
            ) + [""]
    refs = references(runs)
    if refs:
        md += [f"Reference lines ({units}):", ""]
        md += [f"- {name}: {value:.4g}" + (f" — {note}" if note else "") for name, value, note in refs]
        md.append("")
    return "\n".join(md), csv_text(R2RT_CSV, rows)


# -- cost table -------------------------------------------------------------------------------
COST_CSV = (
    "device_tag",
    "sweep",
    "task",
    "cell",
    "hidden_size",
    "optimizer",
    "clip",
    "n",
    "style_label",
    "style_spec",
    "lr",
    "ok_runs",
    "train_wall_s",
    "train_wall_vs_full",
    "timesteps_per_s",
    "timesteps_per_s_vs_full",
    "peak_mem_MiB",
    "peak_mem_vs_full",
    "saved_for_backward_KiB",
    "saved_for_backward_vs_full",
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def cost_tables(runs: pd.DataFrame) -> tuple[str, str]:
    """(Markdown, CSV): per style and lr, wall time, timesteps/s, peak and saved memory, × full BPTT.

    Means over the seeds that finished "ok"; the ratio is to full BPTT at the same lr and model.
    """
    task, device, sweep, _ = _title(runs)
    sources = sorted({str(s) for s in runs["peak_mem_source"].dropna()})
    md = [
        f"# {task}: training cost by style",
        "",
        f"Device `{device}`, sweep `{sweep}`. Means over seeds that finished ok; \"× full\" = ratio to "
        "full BPTT with the same model and learning rate. Peak memory source: "
        f"{', '.join(sources) if sources else DASH}; saved-for-backward = peak bytes autograd held.",
        "",
    ]
    rows: list[list[Any]] = []
    header = [
        "n",
        "style",
        "lr",
        "train wall (s)",
        "× full",
        "timesteps/s",
        "× full",
        "peak mem (MiB)",
        "× full",
        "saved for backward (MiB)",
        "× full",
    ]
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        table, left_out = [], []
        blocks = g.blocks()
        blocks = [b for b in blocks if b[0] is None] + [b for b in blocks if b[0] is not None]
        for n, cells in blocks:
            for c in cells:
                if not c.values and c.wall_s is None:
                    left_out.append(f"{c.style_label} at lr {fmt_lr(c.lr)} ({cell_text(c)})")
                    continue
                f = g.full(c.lr)
                metrics = [
                    (c.wall_s, f and f.wall_s, 1.0),
                    (c.timesteps_per_s, f and f.timesteps_per_s, 1.0),
                    (c.peak_mem_bytes, f and f.peak_mem_bytes, MiB),
                    (c.saved_bytes, f and f.saved_bytes, KiB),
                ]
                cells_md, cells_csv = [], []
                for (v, ref, scale), spec in zip(metrics, (".3f", ",.0f", "MiB", "MiB")):
                    r, shown = _ratio(v, ref), None if v is None else v / scale
                    text = sig3(None if v is None else v / MiB) if spec == "MiB" else _f(shown, spec)
                    cells_md += [text, _f(r, ".2f") + ("×" if r is not None else "")]
                    cells_csv += [_csv_num(shown, 3), _csv_num(r, 4)]
                table.append(["T" if n is None else str(n), c.style_label, fmt_lr(c.lr)] + cells_md)
                rows.append(
                    [
                        device,
                        sweep,
                        task,
                        g.cell,
                        g.hidden_size,
                        g.optimizer,
                        "" if g.clip is None else f"{g.clip:g}",
                        "" if n is None else n,
                        c.style_label,
                        c.style_spec,
                        fmt_lr(c.lr),
                        len(c.values),
                    ]
                    + cells_csv
                )
        md += md_table(header, table, "lllrrrrrrrr") + [""]
        if left_out:
            md += ["Left out (no ok seed): " + "; ".join(left_out) + ".", ""]
    return "\n".join(md), csv_text(COST_CSV, rows)


# -- generated summary ------------------------------------------------------------------------
def _best(cells: Iterable[Cell]) -> Cell | None:
    scored = [c for c in cells if c.mean is not None]
    return min(scored, key=lambda c: (c.mean, c.order, -c.lr)) if scored else None


def _best_per_style(g: ModelGroup) -> list[Cell]:
    out = [
        _best(c for c in g.cells if c.style_spec == spec)
        for spec in dict.fromkeys(c.style_spec for c in g.cells)
    ]
    return sorted((c for c in out if c is not None), key=lambda c: (c.mean, c.order))


def _reach(v: float, refs: dict[str, float], tol: float) -> str:
    for name in sorted((n for n in refs if n != "no-memory"), key=lambda n: refs[n]):
        if v <= refs[name] + tol:
            return f"reaches the {name} line"
    nm = refs["no-memory"]
    if v < nm - tol:
        return "beats no-memory but reaches no lower line"
    return "stays at the no-memory line" if v <= nm + tol else "stays above the no-memory line"


def _at(c: Cell) -> str:
    return f"{c.style_label} ({c.mean:.3f} at lr {fmt_lr(c.lr)})"


def summary_markdown(runs: pd.DataFrame, tolerance: float = 0.05) -> str:
    """A few sentences written from the numbers: reference lines reached, best per n, cost vs full.

    A style "reaches" a line when its best cell (over learning rates; mean over ok seeds) is at most
    ``tolerance`` × (no-memory − optimal) above it.
    """
    task, device, sweep, units = _title(runs)
    refs = {name: v for name, v, _ in references(runs)}
    statuses = runs["status"].value_counts()
    md = [
        f"# {task}: summary",
        "",
        f"Device `{device}`, sweep `{sweep}`: {len(runs)} runs ({int(statuses.get('ok', 0))} ok, "
        f"{int(statuses.get('diverged', 0))} diverged, {int(statuses.get('failed', 0))} failed). "
        f"Losses are {units}."
        + (" Reference lines: " + ", ".join(f"{n} {v:.4g}" for n, v in refs.items()) + "." if refs else ""),
        "",
    ]
    gap = refs["no-memory"] - refs["optimal"] if {"optimal", "no-memory"} <= set(refs) else None
    tol = tolerance * gap if gap is not None and gap > 0 else None
    for g in model_groups(runs):
        md += [f"## {g.label}", ""]
        per_style = _best_per_style(g)
        if not per_style:
            md += ["No configuration finished ok.", ""]
            continue
        if tol is not None:
            md.append(
                f"- A style reaches a reference line when its best minimum validation loss is within "
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
        trunc = _best(c for c in g.cells if c.style_preset != "full")
        full = g.full(trunc.lr) if trunc is not None else None
        if trunc is not None and full is not None and full.mean is not None:
            parts = [
                (_ratio(trunc.wall_s, full.wall_s), "training wall time"),
                (_ratio(trunc.timesteps_per_s, full.timesteps_per_s), "timesteps/s"),
                (_ratio(trunc.peak_mem_bytes, full.peak_mem_bytes), "peak memory"),
            ]
            costs = ", ".join(f"{r:.2f}× its {what}" for r, what in parts if r is not None)
            md.append(
                f"- Best truncated style: {_at(trunc)}, against full BPTT's {full.mean:.3f} at the same lr"
                + (f"; it costs {costs}." if costs else ".")
            )
        elif trunc is not None:
            md.append(f"- Best truncated style: {_at(trunc)} (no full BPTT run at that lr to compare cost).")
        md.append("")
    return "\n".join(md)
