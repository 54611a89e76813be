"""The cells every table is made of: one (style, lr) of a model group with its seeds' outcomes
(``SeedRun``, ``Cell``, ``ModelGroup``), the fixed number formatting, the task's reference lines,
and the Markdown/CSV writers. Torch-free; the tables, the fair comparisons, the summary and the
figures all read runs through these.

>>> cell_text(Cell.demo(values=[0.52, 0.532]))
'0.526 ± 0.008'
>>> cell_text(Cell.demo(values=[0.5], updates=5))
'0.500 (5 upd.)'
>>> cell_text(Cell.demo(values=[], diverged=1))
'diverged at upd. n/a, best n/a'
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .formatting import (  # noqa: F401 -- re-exported: tables, fair and summary import them from here
    DASH,
    NA,
    _csv_num,
    _f,
    _finite,
    _mean,
    _none_last,
    _ratio,
    compact,
    csv_text,
    fmt_lr,
    md_table,
    plain,
    sig3,
)

__all__ = [
    "AXES",
    "CSV_KEY",
    "DASH",
    "LOSS_UNITS",
    "NA",
    "REF_NAMES",
    "STARVED_UPDATES",
    "STYLE_ORDER",
    "SWEEP_MODES",
    "Cell",
    "ModelGroup",
    "SeedRun",
    "budget_mode",
    "cell_text",
    "compact",
    "csv_text",
    "fmt_lr",
    "md_table",
    "model_groups",
    "plain",
    "predates_protocol",
    "protocol_note",
    "references",
    "sig3",
]

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


def _title(runs: pd.DataFrame) -> tuple[str, str, str, str]:
    r = runs.iloc[0]
    return str(r["task"]), str(r["device_tag"]), str(r["sweep"]), LOSS_UNITS.get(str(r["loss_kind"]), "loss")


def _n_name(n: int | None) -> str:
    return "n = T (whole sequence)" if n is None else f"n = {n}"


#: The columns every table CSV starts with (the values: ``_csv_key``).
CSV_KEY = (
    "device_tag",
    "sweep",
    "task",
    "cell",
    "hidden_size",
    "optimizer",
    "clip",
    "n",
)


def _csv_key(device: str, sweep: str, task: str, g, n: int | None) -> list:
    """The columns every table CSV row starts with: where it ran and which model block."""
    clip = "" if g.clip is None else f"{g.clip:g}"
    return [device, sweep, task, g.cell, g.hidden_size, g.optimizer, clip, "" if n is None else n]
