"""``tbptt-bench compare DIR_A DIR_B ...``: hardware timings side by side.

Each DIR is a results root (or a device folder inside one). Every (DIR, device_tag) found is a
*source*; the first source is the baseline. For each (task, sweep, model, optimizer, style, lr)
that finished ok on at least two sources: timesteps/s and peak memory per source, and the speedup
(timesteps/s ÷ the baseline's). pytest-benchmark JSON under ``DIR/benchmarks/`` (any depth) adds
a benchmark table (median time, timesteps/s and speedup per device). Torch-free.

Writes ``compare.md``, ``compare.csv``, ``compare.png|svg`` (when there is an overlap) and
``benchmarks.csv`` (when there are benchmark files) into ``out_dir``; returns the paths.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> [p.name for p in compare([d], tempfile.mkdtemp())]
['compare.md', 'compare.csv']
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..runs import store
from .tables import csv_text, fmt_lr, md_table, plain

__all__ = ["CompareError", "Source", "benchmark_timings", "compare", "run_timings"]

log = logging.getLogger("tbptt_bench.report.compare")
MiB = 1024.0 * 1024.0
KEY = ("task", "sweep", "cell", "hidden_size", "optimizer", "style_spec", "lr")


class CompareError(BenchError):
    """compare was given folders it cannot use."""


@dataclass(frozen=True)
class Source:
    """One device's runs from one of the given folders."""

    index: int  # position of its folder in the arguments
    folder: Path
    device_tag: str
    label: str


def _mean(vs: Sequence[Any]) -> float | None:
    xs = [float(v) for v in vs if v is not None and math.isfinite(float(v))]
    return statistics.fmean(xs) if xs else None


def run_timings(dirs: Sequence[Path]) -> tuple[list[Source], dict[tuple, dict[Source, dict]]]:
    """Sources in argument order and {key: {source: {tps, peak, runs, style_label, ...}}} over ok runs."""
    sources: list[Source] = []
    per_key: dict[tuple, dict[Source, dict]] = {}
    loaded = [(i, Path(d), store.load_runs(d)) for i, d in enumerate(dirs)]
    tag_count: dict[str, int] = {}
    for _, _, lr in loaded:
        for tag in sorted(set(lr.runs["device_tag"])):
            tag_count[tag] = tag_count.get(tag, 0) + 1
    for i, folder, lr in loaded:
        for path, reason in lr.skipped:
            log.warning("skipped run folder %s: %s", path, reason)
        ok = lr.runs[lr.runs["status"] == "ok"]
        for tag in sorted(set(lr.runs["device_tag"])):
            label = tag if tag_count[tag] == 1 else f"{tag} (dir {i + 1}: {folder.name or folder})"
            src = Source(i, folder, tag, label)
            sources.append(src)
            groups: dict[tuple, list[dict]] = {}
            for rec in ok[ok["device_tag"] == tag].to_dict("records"):
                rec = {k: plain(v) for k, v in rec.items()}
                groups.setdefault(tuple(rec[k] for k in KEY), []).append(rec)
            for key, recs in groups.items():
                per_key.setdefault(key, {})[src] = {
                    "runs": len(recs),
                    "style_label": recs[0]["style_label"],
                    "device_name": recs[0]["device_name"],
                    "timesteps_per_s": _mean([r["timesteps_per_s"] for r in recs]),
                    "peak_mem_bytes": _mean([r["peak_mem_bytes"] for r in recs]),
                    "peak_mem_source": recs[0]["peak_mem_source"],
                }
    return sources, per_key


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "—" if x is None else format(x, spec) + suffix


def _key_sort(key: tuple) -> tuple:
    return tuple((v is None, 0 if v is None else (-v if k == "lr" else v)) for k, v in zip(KEY, key))


# -- pytest-benchmark JSON ----------------------------------------------------------------------
def _bench_files(folder: Path) -> list[Path]:
    """JSON under FOLDER/benchmarks/ (any depth); for a device folder without one, its parent's."""
    if folder.name == "benchmarks":
        root = folder
    elif (folder / "benchmarks").is_dir() or not (folder.parent / "benchmarks").is_dir():
        root = folder / "benchmarks"
    else:
        root = folder.parent / "benchmarks"
    return sorted(root.rglob("*.json")) if root.is_dir() else []


def benchmark_timings(
    dirs: Sequence[Path], prefer: Sequence[str] = ()
) -> tuple[list[str], dict[tuple, dict[str, dict]]]:
    """Devices and {(group, style, impl): {device: {name, median_s, timesteps_per_s, file}}}.

    Devices named in ``prefer`` (e.g. the sources' device names, in argument order) come first, the
    rest in order of appearance. Each file is read once; later files (by path) win on repeats.
    """
    seen: list[str] = []
    table: dict[tuple, dict[str, dict]] = {}
    files = list(dict.fromkeys(p.resolve() for folder in dirs for p in _bench_files(Path(folder))))
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and "benchmarks" not in doc and "machine_info" not in doc:
                continue  # another JSON kept beside them (e.g. a probe report)
            machine, benches = doc.get("machine_info") or {}, doc["benchmarks"]
            for b in benches:
                extra, params = b.get("extra_info") or {}, b.get("params") or {}
                cpu = (
                    (machine.get("cpu") or {}).get("brand_raw")
                    if isinstance(machine.get("cpu"), dict)
                    else None
                )
                device = str(
                    extra.get("device_name")
                    or machine.get("device_name")
                    or extra.get("device")
                    or cpu
                    or path.parent.name
                )
                key = (
                    str(b.get("group") or ""),
                    str(extra.get("style") or params.get("style") or b["name"]),
                    str(extra.get("impl") or params.get("impl") or ""),
                )
                if device not in seen:
                    seen.append(device)
                table.setdefault(key, {})[device] = {
                    "name": b["name"],
                    "median_s": float(b["stats"]["median"]),
                    "timesteps_per_s": None
                    if extra.get("timesteps_per_s") is None
                    else float(extra["timesteps_per_s"]),
                    "file": path,
                }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("skipped benchmark file %s: %s", path, e)
    devices = [d for d in dict.fromkeys(prefer) if d in seen] + [d for d in seen if d not in prefer]
    return devices, table


def _bench_speedup(row: dict, base: dict | None) -> float | None:
    if base is None:
        return None
    if row["timesteps_per_s"] is not None and base["timesteps_per_s"] is not None:
        return _ratio(row["timesteps_per_s"], base["timesteps_per_s"])
    return _ratio(base["median_s"], row["median_s"])


# -- the command --------------------------------------------------------------------------------
def compare(dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> list[Path]:
    """Compare timings across devices; the first source (first DIR, first device) is the baseline."""
    if not dirs:
        raise CompareError("dirs=[] is not allowed: give at least one results folder")
    folders = [Path(d) for d in dirs]
    for f in folders:
        if not f.is_dir():
            raise CompareError(f"dir={str(f)!r} is not a folder: give results folders (e.g. results/cpu-...)")
    out = Path(out_dir)
    sources, per_key = run_timings(folders)
    shared = {k: v for k, v in per_key.items() if len(v) >= 2}
    base = sources[0] if sources else None
    written: list[Path] = []
    md = [
        "# Hardware comparison",
        "",
        "Sources (folder → device tag): "
        + ("; ".join(f"`{s.label}` from `{s.folder.as_posix()}`" for s in sources) or "none")
        + ".",
        f"Baseline: `{base.label}`. Speedup = timesteps/s ÷ the baseline's, same task, sweep, model, "
        "optimizer, style and lr; means over seeds that finished ok."
        if base
        else "No runs found.",
        "",
    ]
    rows_csv, table = [], []
    header = ["task", "sweep", "model", "lr", "style"]
    for s in sources:
        header += [f"{s.label} timesteps/s", f"{s.label} peak MiB"] + (
            [] if s == base else [f"{s.label} speedup"]
        )
    for key in sorted(shared, key=_key_sort):
        task, sweep, cell, hidden, opt, spec, lr = key
        entry = shared[key]
        any_src = next(iter(entry.values()))
        line = [task, sweep, f"{cell}{hidden} ({opt})", fmt_lr(lr), any_src["style_label"]]
        base_tps = entry[base]["timesteps_per_s"] if base in entry else None
        for s in sources:
            e = entry.get(s)
            tps = e["timesteps_per_s"] if e else None
            peak = e["peak_mem_bytes"] / MiB if e and e["peak_mem_bytes"] is not None else None
            speed = _ratio(tps, base_tps)
            line += [_fmt(tps, ",.0f"), _fmt(peak, ".1f")] + ([] if s == base else [_fmt(speed, ".2f", "×")])
            if e:
                rows_csv.append(
                    [
                        task,
                        sweep,
                        cell,
                        hidden,
                        opt,
                        e["style_label"],
                        spec,
                        fmt_lr(lr),
                        s.label,
                        s.device_tag,
                        e["device_name"],
                        e["runs"],
                        _fmt(tps, ".3f", ""),
                        _fmt(peak, ".3f"),
                        e["peak_mem_source"] or "",
                        _fmt(speed, ".4f"),
                    ]
                )
        table.append(line)
    if table:
        md += ["## Runs", ""] + md_table(header, table, "lllll" + "r" * (len(header) - 5)) + [""]
    else:
        md += ["No (task, sweep, model, style, lr) finished ok on two or more sources.", ""]
    names = [next((e[s]["device_name"] for e in per_key.values() if s in e), "") for s in sources]
    devices, benches = benchmark_timings(folders, prefer=[n for n in names if n])
    bench_rows = []
    if benches:
        bhead = ["group", "style", "impl"]
        for i, d in enumerate(devices):
            bhead += [f"{d} median (ms)", f"{d} timesteps/s"] + ([f"{d} speedup"] if i else [])
        btable = []
        for key in sorted(benches):
            entry = benches[key]
            line = list(key)
            b0 = entry.get(devices[0])
            for i, d in enumerate(devices):
                e = entry.get(d)
                sp = _bench_speedup(e, b0) if e else None
                line += [_fmt(e and e["median_s"] * 1e3, ".3f"), _fmt(e and e["timesteps_per_s"], ",.0f")]
                line += [_fmt(sp, ".2f", "×")] if i else []
                if e:
                    bench_rows.append(
                        [
                            *key,
                            d,
                            e["name"],
                            f"{e['median_s']:.9f}",
                            _fmt(e["timesteps_per_s"], ".3f").replace("—", ""),
                            _fmt(sp, ".4f").replace("—", ""),
                        ]
                    )
            btable.append(line)
        md += [
            "## pytest-benchmark",
            "",
            f"Baseline device: `{devices[0]}`. Speedup = timesteps/s ÷ the "
            "baseline's (median time ratio where timesteps/s is missing).",
            "",
        ]
        md += md_table(bhead, btable, "lll" + "r" * (len(bhead) - 3)) + [""]
    store.write_text_atomic(out / "compare.md", "\n".join(md))
    written.append(out / "compare.md")
    store.write_text_atomic(
        out / "compare.csv",
        csv_text(
            [
                "task",
                "sweep",
                "cell",
                "hidden_size",
                "optimizer",
                "style_label",
                "style_spec",
                "lr",
                "source",
                "device_tag",
                "device_name",
                "ok_runs",
                "timesteps_per_s",
                "peak_mem_MiB",
                "peak_mem_source",
                "speedup_vs_baseline",
            ],
            [[("" if v == "—" else v) for v in r] for r in rows_csv],
        ),
    )
    written.append(out / "compare.csv")
    if bench_rows:
        store.write_text_atomic(
            out / "benchmarks.csv",
            csv_text(
                [
                    "group",
                    "style",
                    "impl",
                    "device",
                    "name",
                    "median_s",
                    "timesteps_per_s",
                    "speedup_vs_baseline",
                ],
                bench_rows,
            ),
        )
        written.append(out / "benchmarks.csv")
    if table:
        written += _figure(sources, shared, out / "compare")
    return written


def _figure(sources: list[Source], shared: dict, stem: Path) -> list[Path]:
    import pandas as pd
    import seaborn as sns

    from . import figures as F

    rows = []
    for key in sorted(shared, key=_key_sort):
        task, sweep, cell, hidden, opt, spec, lr = key
        for s in sources:
            e = shared[key].get(s)
            if e and e["timesteps_per_s"] is not None:
                rows.append(
                    {
                        "config": f"{task}: {e['style_label']}\n{cell}{hidden}, lr {fmt_lr(lr)}",
                        "device": s.label,
                        "timesteps/s": e["timesteps_per_s"],
                    }
                )
    data = pd.DataFrame(rows)
    with F._style():
        fig, axes = F._new_figure(1, 1, max(6.5, 1.3 * data["config"].nunique() + 3.5), 4.0)
        ax = axes[0][0]
        sns.barplot(
            data=data,
            x="config",
            y="timesteps/s",
            hue="device",
            hue_order=[s.label for s in sources],
            palette="colorblind",
            ax=ax,
            errorbar=None,
        )
        ax.set_yscale("log")
        F._plain_log_ticks(ax.yaxis)
        ax.set_xlabel("task: style, model and learning rate")
        ax.set_ylabel("timesteps/s (log scale, higher is better)")
        ax.set_title(f"Training throughput by device (baseline {sources[0].label})")
        ax.tick_params(axis="x", labelsize=7)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return F.save(fig, stem)
