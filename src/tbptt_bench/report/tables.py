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

>>> cell_text(Cell.demo(values=[0.52, 0.532]))
'0.526 ± 0.008'
>>> cell_text(Cell.demo(values=[0.5], updates=5))
'0.500 (5 upd.)'
>>> cell_text(Cell.demo(values=[], diverged=1))
'diverged at upd. n/a, best n/a'
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

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

#: What the loss numbers are, per config "loss".
LOSS_UNITS = {"ce": "cross-entropy, nats", "mse": "mean squared error"}
#: Row order inside an r2rt block (docs/semantics.md's presets; anything else after them).
STYLE_ORDER = {
    "tf_style": 0,
    "williams_peng": 1,
    "overlapping": 2,
    "one_step": 3,
    "random_depth": 4,
    "artbp": 5,
    "adaptive": 6,
    "random": 7,
    "tbptt": 8,
    "full": 9,
}
#: A run with fewer updates than this has not trained (docs/semantics.md, "Fair comparison"): it is marked,
#: never bold, never a reference. 100 is far below any task's quick preset for truncated styles
#: and above what full BPTT gets on a few long rows (r2rt's setting gives it 5).
STARVED_UPDATES = 100
REF_NAMES = (("optimal", "optimal"), ("partial", "partial"), ("no_memory", "no-memory"))
MiB, KiB = 1024.0 * 1024.0, 1024.0
DASH = "—"
NA = "n/a"


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


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def fmt_lr(lr: float) -> str:
    """Learning rate as written in headers: ``fmt_lr(0.0003) == '0.0003'``."""
    return f"{lr:g}" if lr >= 1e-4 else f"{lr:.1e}"


def compact(x: float | None) -> str:
    """Counts with 3 significant digits: ``compact(250) == '250'``, ``compact(12500) == '12.5k'``."""
    if x is None:
        return NA
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.0f}"


def _f(x: float | None, spec: str) -> str:
    if x is not None and spec.endswith("f") and abs(x) >= 1e6:  # a blow-up: 3 significant digits, not 30
        return format(x, ".3g")
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
    if x is not None and abs(x) >= 1e6:
        return f"{x:.{digits}g}"
    return "" if x is None else f"{x:.{digits}f}"


def _col(rec: dict, key: str) -> Any:
    """A record's field, None when the column is missing (records or a store that predate it)."""
    return plain(rec.get(key))


#: Budget mode by preset name, for records that do not say (``config.budget.mode``).
SWEEP_MODES = {"full-updates": "updates", "full-episodic": "episodic"}
AXES = {
    "data": "equal data (every style sees the sweep's timesteps)",
    "updates": "equal updates (every style makes the same number of updates)",
    "episodic": "episodic sequences (state reset between sequences; full BPTT one update per sequence)",
}


def budget_mode(sweep: str, runs: pd.DataFrame) -> str:
    """A sweep's budget mode: the records' ``budget_mode``, else by preset name, else "data"."""
    if "budget_mode" in runs.columns:
        modes = sorted({str(m) for m in runs["budget_mode"].dropna()})
        if modes:
            return modes[0]
    return SWEEP_MODES.get(sweep, "data")


def predates_protocol(runs: pd.DataFrame) -> bool:
    """True when no run carries the fair-comparison counts (``backprop_steps``): old records."""
    return "backprop_steps" not in runs.columns or not runs["backprop_steps"].notna().any()


def protocol_note(runs: pd.DataFrame) -> list[str]:
    """The one paragraph a table built from pre-protocol records carries (empty list otherwise)."""
    if not predates_protocol(runs):
        return []
    return [
        "These records predate the fair-comparison protocol (docs/semantics.md, \"Fair comparison\"): "
        "they carry no forward/backprop step counts and no test loss (shown as n/a), and their "
        "\"final\" validation loss is the last single evaluation, not the mean of the last 3 scheduled ones.",
        "",
    ]


@dataclass(frozen=True)
class SeedRun:
    """One run's numbers that the tables use; None where the record does not carry the field."""

    seed: int | None
    status: str
    final: float | None
    minimum: float | None
    test: float | None = None
    ref_optimal: float | None = None
    updates: int | None = None
    timesteps: int | None = None
    backprop_steps: int | None = None
    forward_steps: int | None = None
    expected_backprop_steps: float | None = None
    best_before_divergence: float | None = None
    diverged_at_update: int | None = None
    row_len: int | None = None
    episode_len: int | None = None
    budget_mode: str | None = None
    run_id: str = ""

    @classmethod
    def from_record(cls, r: dict) -> SeedRun:
        def num(key: str) -> Any:
            v = _col(r, key)
            return v if _finite(v) else None

        return cls(
            seed=_col(r, "seed"),
            status=str(r["status"]),
            final=num("final_val_loss"),
            minimum=num("min_val_loss"),
            test=num("test_loss"),
            ref_optimal=num("ref_optimal"),
            updates=num("updates"),
            timesteps=num("timesteps"),
            backprop_steps=num("backprop_steps"),
            forward_steps=num("forward_steps"),
            expected_backprop_steps=num("expected_backprop_steps"),
            best_before_divergence=num("best_val_before_divergence"),
            diverged_at_update=num("diverged_at_update"),
            row_len=num("row_len"),
            episode_len=num("episode_len"),
            budget_mode=_col(r, "budget_mode"),
            run_id=str(r.get("run_id", "")),
        )


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
    seeds: tuple[SeedRun, ...]
    wall_s: float | None = None
    timesteps_per_s: float | None = None
    peak_mem_bytes: float | None = None
    saved_bytes: float | None = None

    @property
    def runs(self) -> int:
        return len(self.seeds)

    @property
    def diverged(self) -> int:
        return sum(s.status == "diverged" for s in self.seeds)

    @property
    def failed(self) -> int:
        return sum(s.status == "failed" for s in self.seeds)

    @property
    def ok(self) -> tuple[SeedRun, ...]:
        return tuple(s for s in self.seeds if s.status == "ok")

    @property
    def values(self) -> tuple[float, ...]:
        """Final validation loss of each ok seed (the primary metric)."""
        return tuple(s.final for s in self.ok if s.final is not None)

    @property
    def min_values(self) -> tuple[float, ...]:
        return tuple(s.minimum for s in self.ok if s.minimum is not None)

    @property
    def excess(self) -> tuple[float, ...]:
        """Final loss minus each seed's own optimal line (paired per seed)."""
        return tuple(
            s.final - s.ref_optimal for s in self.ok if s.final is not None and s.ref_optimal is not None
        )

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def starved(self) -> int | None:
        """The fewest updates of an ok run when under ``STARVED_UPDATES`` (the cell is marked), else None."""
        ups = [s.updates for s in self.ok if s.updates is not None]
        return min(ups) if ups and min(ups) < STARVED_UPDATES else None

    def mean_of(self, attr: str) -> float | None:
        """Mean of a SeedRun field over the ok seeds that carry it."""
        return _mean(getattr(s, attr) for s in self.ok)

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
    def demo(
        cls,
        values: Sequence[float],
        diverged: int = 0,
        failed: int = 0,
        updates: int | None = 1000,
        spec: tuple[str, str, str, int | None] = ("tf_style(4)", "TF-style (4, 4)", "tf_style", 4),
        lr: float = 0.1,
    ) -> Cell:
        """A cell for examples and tests: ok seeds 0.. with these final (= minimum) losses."""
        seeds = [SeedRun(i, "ok", v, v, updates=updates) for i, v in enumerate(values)]
        seeds += [SeedRun(len(seeds) + i, "diverged", None, None) for i in range(diverged)]
        seeds += [SeedRun(len(seeds) + i, "failed", None, None) for i in range(failed)]
        k = spec[3]
        return cls(spec[0], spec[1], spec[2], k, k, k, None, lr, tuple(seeds))


def _diverged_text(c: Cell) -> str:
    """'diverged at upd. 120, best 0.612': first divergence over seeds, best loss reached before it."""
    div = [s for s in c.seeds if s.status == "diverged"]
    at = [s.diverged_at_update for s in div if s.diverged_at_update is not None]
    best = [s.best_before_divergence for s in div if s.best_before_divergence is not None]
    where = f"{min(at):,}" if at else NA
    # a finite blow-up (e.g. 2.9e16 before the first inf) prints in 3 significant digits, not 17
    best_text = (f"{min(best):.3f}" if abs(min(best)) < 1e4 else f"{min(best):.3g}") if best else NA
    return f"diverged at upd. {where}, best {best_text}"


def cell_text(c: Cell, metric: str = "final") -> str:
    """Fixed formatting: '0.515', '0.526 ± 0.008', '0.460 (5 upd.)', '0.600 (1/2 diverged)',
    'diverged at upd. 120, best 0.612', 'failed'. ``metric``: "final" (primary) or "min"."""
    values = c.values if metric == "final" else c.min_values
    if not values:
        if c.runs == 0:
            return DASH
        if c.diverged:
            return _diverged_text(c)
        return "failed" if c.failed else NA
    text = _f(statistics.fmean(values), ".3f")
    if len(values) > 1:
        text += f" ± {_f(statistics.stdev(values), '.3f')}"
    notes = [f"{c.starved:,} upd."] if c.starved is not None else []
    notes += [f"{k}/{c.runs} {word}" for k, word in ((c.diverged, "diverged"), (c.failed, "failed")) if k]
    return text + (f" ({', '.join(notes)})" if notes else "")


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

    def tf(self, n: int | None, lr: float) -> Cell | None:
        """TF-style(n) of block n at this lr: the reference of every cost ratio (None for n = T)."""
        if n is None:
            return None
        return next((c for c in self.cells if c.style_preset == "tf_style" and c.n == n and c.lr == lr), None)


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
            seeds=tuple(SeedRun.from_record(r) for r in rs),
            wall_s=_mean(r["train_wall_s"] for r in ok),
            timesteps_per_s=_mean(r["timesteps_per_s"] for r in ok),
            peak_mem_bytes=_mean(r["peak_mem_bytes"] for r in ok),
            saved_bytes=_mean(r["saved_for_backward_peak_bytes"] for r in ok),
        )
        groups.setdefault(key[:4], []).append(cell)
    return [ModelGroup(*k, cells=tuple(v)) for k, v in groups.items()]


def references(runs: pd.DataFrame) -> list[tuple[str, float, str | None]]:
    """(name, value, note) of the task's reference lines, read from the runs' own records.

    Lines computed on the validation stream (language, influence) differ by seed: then the value
    is the mean over the seeds' records and the note lists each seed's line, so a table never
    shows one seed's line as every seed's. The note text comes from the first run (by run_id).
    """
    if runs.empty:
        return []
    ordered = runs.sort_values("run_id", kind="stable")
    first = ordered.iloc[0]
    out = []
    for key, name in REF_NAMES:
        per_seed: dict[int, float] = {}
        for seed, v in zip(ordered["seed"], ordered[f"ref_{key}"]):
            v = plain(v)
            if v is not None and plain(seed) is not None:
                per_seed.setdefault(int(seed), float(v))
        if not per_seed:
            continue
        note = plain(first[f"ref_{key}_note"])
        values = list(per_seed.values())
        if max(values) - min(values) > 1e-12 * max(1.0, abs(max(values))):
            seeds = "; ".join(f"seed {s}: {v:.4g}" for s, v in sorted(per_seed.items()))
            note = f"{note + ' — ' if note else ''}mean over seeds ({seeds})"
        out.append((name, sum(values) / len(values), note))
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


def _csv_key(device: str, sweep: str, task: str, g, n: int | None) -> list:
    """The columns every table CSV row starts with: where it ran and which model block."""
    clip = "" if g.clip is None else f"{g.clip:g}"
    return [device, sweep, task, g.cell, g.hidden_size, g.optimizer, clip, "" if n is None else n]


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


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


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
    from .fair import block_rows, delta_text  # fair builds on this module; imported when used

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
