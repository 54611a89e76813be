"""``tbptt-bench compare DIR [DIR ...]``: the same runs on several devices, side by side.

Each DIR is a results root or a device folder; every (DIR, device_tag) found is a *source*; the
first source is the baseline. Runs are matched on (task, sweep, model, optimizer, style, lr) —
never on the device — and their seeds aggregated: timesteps/s as mean ± sd over the seeds that
finished ok. Speedup = timesteps/s ÷ the baseline's (the throughput ratio, so runs of different
lengths still compare), summarised per task as a geometric mean. A ``†`` marks configurations in
which some run trained for under 1 s (its timing is mostly start-up noise). Each source's torch,
CUDA, cuDNN and Python versions come from the runs' ``env.json``; memory columns name their
measure (``ru_maxrss`` = the CPU process's peak RSS, ``cuda_max_allocated`` = the allocator's peak).

pytest-benchmark JSON under ``DIR/benchmarks/`` (any depth) adds a benchmark table matched on
(test, style, size, implementation) across devices; the sizes may use different sequence lengths
per device (CPU "large" is T = 256, GPU T = 1,024), so the speedup is again a ratio of
timesteps/s. Only summary.json, config.json and env.json are read (no curves). Torch-free.

Writes ``compare.md``, ``compare.csv``, ``compare.png`` (when there is an overlap) and
``benchmarks.csv`` (when there are benchmark files) into ``out_dir``; files whose bytes would not
change are left alone. Returns the paths.

Reading and pairing the runs is in ``compare_runs.py``, the benchmark JSON in
``compare_benchmarks.py``; this module renders both (Markdown, CSV, the figure) and keeps
every name it had importable.

>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> [p.name for p in compare([d], tempfile.mkdtemp())]
['compare.md', 'compare.csv']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import BenchError
from .cells import csv_text, fmt_lr
from .compare_benchmarks import _bench_files, _bench_speedup, benchmark_timings  # noqa: F401
from .compare_runs import (  # noqa: F401  (every old name stays importable from here)
    ENV_KEYS,
    KEY,
    SHORT_RUN_S,
    Source,
    _finite,
    _mean,
    _ratio,
    _ratio_sd,
    _records,
    _sd,
    geometric_mean,
    log,
    run_timings,
)
from .markdown import md_table

__all__ = ["CompareError", "Source", "benchmark_timings", "compare", "run_timings"]

MiB = 1024.0 * 1024.0
DAGGER = "†"


class CompareError(BenchError):
    """compare was given folders it cannot use."""


def _fmt(x: float | None, spec: str, suffix: str = "") -> str:
    return "—" if x is None else format(x, spec) + suffix


def _key_sort(key: tuple) -> tuple:
    return tuple((v is None, 0 if v is None else (-v if k == "lr" else v)) for k, v in zip(KEY, key))


def _tps_text(e: dict) -> str:
    text = _fmt(e["timesteps_per_s"], ",.0f")
    if e["timesteps_per_s_sd"] is not None:
        text += f" ± {e['timesteps_per_s_sd']:,.0f}"
    return text + (f" ({e['runs']})" if e["runs"] > 1 else "") + (f" {DAGGER}" if e["short"] else "")


def _write(path: Path, text: str, written: list[Path]) -> None:
    from .build import write_text_if_changed

    write_text_if_changed(path, text)
    written.append(path)


# -- the command --------------------------------------------------------------------------------
def compare(
    dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *, warn: bool = True
) -> list[Path]:
    """Compare timings across devices; the first source (first DIR, first device) is the baseline.

    ``warn=False``: skipped run folders are logged at DEBUG (the report has already warned).
    """
    if not dirs:
        raise CompareError("dirs=[] is not allowed: give at least one results folder")
    folders = [Path(d) for d in dirs]
    for f in folders:
        if not f.is_dir():
            raise CompareError(f"dir={str(f)!r} is not a folder: give results folders (e.g. results/cpu-...)")
    out = Path(out_dir)
    sources, per_key = run_timings(folders, warn)
    shared = {k: v for k, v in per_key.items() if len(v) >= 2}
    base = sources[0] if sources else None
    written: list[Path] = []
    md = ["# Hardware comparison", ""]
    if sources:
        md += md_table(
            ["source", "folder", "device", "torch", "CUDA", "cuDNN", "Python"],
            [
                [
                    f"`{s.label}`" + (" (baseline)" if s == base else ""),
                    f"`{s.folder.as_posix()}`",
                    s.env_value("device_name") or "—",
                    s.env_value("torch_version") or "—",
                    s.env_value("cuda_version") or "—",
                    s.env_value("cudnn_version") or "—",
                    s.env_value("python_version") or "—",
                ]
                for s in sources
            ],
            "lllllll",
        ) + [""]
        md += [
            f"Speedup = timesteps/s ÷ the baseline's (`{base.label}`), same task, sweep, model, optimizer, "
            "style and lr; timesteps/s is the mean ± sd over the seeds that finished ok (seed count in "
            f"brackets when more than one). {DAGGER} = a run of this configuration trained for under "
            f"{SHORT_RUN_S:g} s, so its rate is mostly start-up cost. Peak memory is each device's own "
            "measure (named in the column): not comparable across devices; saved-for-backward is.",
            "",
        ]
    else:
        md += ["No runs found.", ""]
    others = [s for s in sources if s != base]
    # geometric mean per task
    geo_rows, geo_csv = [], []
    for task in sorted({k[0] for k in shared}):
        line = [task]
        for s in others:
            sp = [
                _ratio(e[s]["timesteps_per_s"], e[base]["timesteps_per_s"])
                for k, e in shared.items()
                if k[0] == task and s in e and base in e
            ]
            sp = [x for x in sp if x is not None]
            g = geometric_mean(sp)
            line.append(_fmt(g, ".2f", f"× ({len(sp)})") if g is not None else "—")
            if g is not None:
                geo_csv.append([task, s.label, f"{g:.4f}", len(sp)])
        geo_rows.append(line)
    if geo_rows and others:
        md += ["## Geometric-mean speedup", ""]
        md += [
            f"Per task, over the configurations both sources ran (count in brackets); baseline `{base.label}`.",
            "",
        ]
        md += md_table(["task", *[f"{s.label}" for s in others]], geo_rows, "l" + "r" * len(others)) + [""]
    rows_csv, table = [], []
    header = ["task", "sweep", "model", "lr", "style"]
    for s in sources:
        srcs = sorted({e[s]["peak_mem_source"] or "?" for e in shared.values() if s in e})
        header += [f"{s.label} timesteps/s", f"{s.label} peak MiB ({', '.join(srcs) or '—'})"]
        header += [] if s == base else [f"{s.label} speedup"]
    for key in sorted(shared, key=_key_sort):
        task, sweep, cell, hidden, opt, spec, lr = key
        entry = shared[key]
        any_src = next(iter(entry.values()))
        line = [task, sweep, f"{cell}{hidden} ({opt})", fmt_lr(lr), any_src["style_label"]]
        b = entry.get(base)
        for s in sources:
            e = entry.get(s)
            peak = e["peak_mem_bytes"] / MiB if e and e["peak_mem_bytes"] is not None else None
            speed = _ratio(e and e["timesteps_per_s"], b and b["timesteps_per_s"])
            sd = _ratio_sd(e, b) if e and b and s != base else None
            line += ["—" if e is None else _tps_text(e), _fmt(peak, ".3g")]
            if s != base:
                line.append(_fmt(speed, ".2f", "×") + (f" ± {sd:.2f}" if sd is not None else ""))
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
                        e["device_name"] or "",
                        e["runs"],
                        _fmt(e["timesteps_per_s"], ".3f").replace("—", ""),
                        _fmt(e["timesteps_per_s_sd"], ".3f").replace("—", ""),
                        _fmt(peak, ".3f").replace("—", ""),
                        e["peak_mem_source"] or "",
                        _fmt(e["saved_bytes"] and e["saved_bytes"] / MiB, ".4f").replace("—", ""),
                        _fmt(e["min_train_wall_s"], ".4f").replace("—", ""),
                        _fmt(speed, ".4f").replace("—", ""),
                    ]
                )
        table.append(line)
    if table:
        md += ["## Runs", ""] + md_table(header, table, "lllll" + "r" * (len(header) - 5)) + [""]
    else:
        md += ["No (task, sweep, model, style, lr) finished ok on two or more sources.", ""]
    names = [s.env_value("device_name") or "" for s in sources]
    devices, benches = benchmark_timings(folders, prefer=[n for n in names if n])
    bench_rows = []
    if benches:
        bhead = ["test", "style", "size", "impl"]
        for i, d in enumerate(devices):
            bhead += [f"{d} T", f"{d} median (ms)", f"{d} timesteps/s"] + ([f"{d} speedup"] if i else [])
        btable = []
        for key in sorted(benches):
            entry = benches[key]
            line = list(key)
            b0 = entry.get(devices[0])
            for i, d in enumerate(devices):
                e = entry.get(d)
                sp = _bench_speedup(e, b0) if e else None
                line += [
                    "—" if not e or e["T"] is None else str(e["T"]),
                    _fmt(e and e["median_s"] * 1e3, ".3f"),
                    _fmt(e and e["timesteps_per_s"], ",.0f"),
                ]
                line += [_fmt(sp, ".2f", "×")] if i else []
                if e:
                    bench_rows.append(
                        [
                            *key,
                            d,
                            e["name"],
                            "" if e["T"] is None else e["T"],
                            f"{e['median_s']:.9f}",
                            _fmt(e["timesteps_per_s"], ".3f").replace("—", ""),
                            _fmt(sp, ".4f").replace("—", ""),
                        ]
                    )
            btable.append(line)
        md += [
            "## pytest-benchmark",
            "",
            f"Baseline device: `{devices[0]}`. Matched on (test, style, size, impl); speedup = "
            "timesteps/s ÷ the baseline's (median time ratio where timesteps/s is missing). A size may "
            "use a different sequence length T per device, which the throughput ratio allows for.",
            "",
        ]
        md += md_table(bhead, btable, "llll" + "r" * (len(bhead) - 4)) + [""]
    _write(out / "compare.md", "\n".join(md), written)
    _write(
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
                "timesteps_per_s_sd",
                "peak_mem_MiB",
                "peak_mem_source",
                "saved_for_backward_MiB",
                "min_train_wall_s",
                "speedup_vs_baseline",
            ],
            rows_csv,
        ),
        written,
    )
    if bench_rows:
        _write(
            out / "benchmarks.csv",
            csv_text(
                [
                    "test",
                    "style",
                    "size",
                    "impl",
                    "device",
                    "name",
                    "T",
                    "median_s",
                    "timesteps_per_s",
                    "speedup_vs_baseline",
                ],
                bench_rows,
            ),
            written,
        )
    if table and others:
        written += _figure(sources, shared, out / "compare")
    return written


def _figure(sources: list[Source], shared: dict, stem: Path) -> list[Path]:
    """One panel per task: styles on y, speedup over the baseline on a log x axis, line at 1×,
    one colour per device, error bars from the seeds; hollow markers = some run under 1 s."""
    import numpy as np

    from . import figures as F

    base, others = sources[0], sources[1:]
    tasks = sorted({k[0] for k in shared})
    colors = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9"]
    with F._style():
        per_task = {t: sorted((k for k in shared if k[0] == t), key=_key_sort) for t in tasks}
        heights = [max(len(v), 1) for v in per_task.values()]
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.5, 1.2 + 0.26 * sum(heights) + 0.5 * len(tasks)), layout="constrained")
        axes = fig.subplots(len(tasks), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
        all_x: list[float] = []
        labelled: set[str] = set()
        for ax, task in zip(axes, tasks):
            keys = per_task[task]
            labels = [
                f"{next(iter(shared[k].values()))['style_label']}, lr {fmt_lr(k[6])}"
                + (f" ({k[1]})" if len({kk[1] for kk in keys}) > 1 else "")
                for k in keys
            ]
            y = np.arange(len(keys))
            for j, s in enumerate(others):
                off = (j - (len(others) - 1) / 2) * 0.25
                for i, k in enumerate(keys):
                    e, b = shared[k].get(s), shared[k].get(base)
                    sp = _ratio(e and e["timesteps_per_s"], b and b["timesteps_per_s"])
                    if sp is None or sp <= 0:
                        continue
                    sd = _ratio_sd(e, b) or 0.0
                    lo = max(sp - sd, sp * 0.05)
                    all_x += [lo, sp + sd]
                    short = e["short"] or b["short"]
                    label = None if s.label in labelled else s.label
                    labelled.add(s.label)
                    ax.errorbar(
                        [sp],
                        [y[i] + off],
                        xerr=[[sp - lo], [sd]],
                        fmt="o",
                        color=colors[j % len(colors)],
                        mfc="white" if short else colors[j % len(colors)],
                        markersize=5,
                        capsize=2,
                        label=label,
                    )
            ax.axvline(1.0, color="0.3", lw=1.0, ls="--")
            ax.set_yticks(y, labels)
            ax.set_ylim(len(keys) - 0.5, -0.5)
            ax.set_title(task, loc="left", fontsize=9, fontweight="bold")
            ax.tick_params(axis="y", labelsize=7)
        for ax in axes:
            ax.set_xscale("log")
            if all_x:
                ax.set_xlim(min(min(all_x), 1.0) / 1.3, max(max(all_x), 1.0) * 1.3)
            F._plain_log_ticks(ax.xaxis)
        axes[-1].set_xlabel(f"speedup over {base.label} (timesteps/s ratio, log scale; 1× dashed)")
        handles, names = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            names,
            loc="outside lower center",
            ncols=max(len(others), 1),
            fontsize=7,
            title=f"hollow marker: some run trained < {SHORT_RUN_S:g} s (mostly start-up cost)",
            title_fontsize=7,
        )
        fig.suptitle(f"Training throughput relative to {base.label}, per task and style")
    return F.save(fig, stem, formats=("png",))
