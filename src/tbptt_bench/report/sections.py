"""The sections of REPORT.md: per task its groups (summary, table links, figures), then the
whole-page sections of ``REPORT_SECTIONS``: the cross-sweep tables (fair comparisons and
reproductions, cached in the manifest), the gradient-quality study, the hardware comparison, the
benchmark ratios and the explainer figures. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

from ..runs import store
from .groups import GROUP_FIGURES, SWEEP_ORDER, Group, PageContext
from .manifest import _rel, write_text_if_changed

__all__ = ["REPORT_SECTIONS"]

log = logging.getLogger("tbptt_bench.report.build")  # the report's one logger (see build.py)


# -- the page ------------------------------------------------------------------------------------
def _demote(md: str, levels: int) -> list[str]:
    """Markdown lines with headings pushed down ``levels`` and the first heading dropped."""
    lines = md.strip().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return [("#" * levels + line) if line.startswith("#") else line for line in lines]


def _task_sections(ctx: PageContext) -> list[str]:
    md: list[str] = []
    by_task: dict[str, list[Group]] = {}
    for g in ctx.groups:
        if g.runs:
            by_task.setdefault(g.task, []).append(g)
    for task in sorted(by_task):
        md += [f"## {task}", ""]
        for g in sorted(by_task[task], key=_group_order):
            md += [f"### {task} — `{g.device}`, sweep `{g.sweep}` ({g.runs} runs)", ""]
            tdir = ctx.out / "tables" / g.base
            summary = tdir / "summary.md"
            if summary.is_file():
                for line in _demote(summary.read_text(encoding="utf-8"), 2):
                    if line.startswith("Device `"):  # the heading above already names them
                        line = re.sub(r"^Device `[^`]*`, sweep `[^`]*`: ", "", line)
                        line = line[:1].upper() + line[1:]
                    md.append(line)
                md.append("")
            links = [
                f"[{Path(f).stem}]({f})"
                for f in g.files
                if f.startswith("tables/") and f.endswith(".md") and not f.endswith("summary.md")
            ]
            csvs = [
                f"[{Path(f).name}]({f})" for f in g.files if f.startswith("tables/") and f.endswith(".csv")
            ]
            if links:
                md += [
                    "Tables: " + " · ".join(links) + (" (CSV: " + ", ".join(csvs) + ")" if csvs else ""),
                    "",
                ]
            for stem, caption, _ in GROUP_FIGURES:
                rel = (Path("figures") / g.base / f"{stem}.png").as_posix()
                if rel in g.files:
                    md += [f"![{task} {g.device} {g.sweep}: {caption}]({rel})", ""]
    return md


def _group_order(g: Group) -> tuple:
    # the full sweeps first (equal data, updates, episodic): the comparisons; quick/smoke are sanity checks
    return (SWEEP_ORDER.get(g.sweep, len(SWEEP_ORDER)), g.device, g.sweep)


def _cache_hit(entry: object, key: str, out: Path) -> bool:
    """Whether a section's manifest entry ({hash, files, md}) is still good: same input hash, and
    every file it wrote is still there (a malformed entry is a miss, never an error)."""
    if not isinstance(entry, dict):
        return False
    files, lines = entry.get("files", []), entry.get("md", [])
    return (
        entry.get("hash") == key
        and isinstance(files, list)
        and isinstance(lines, list)
        and all(isinstance(f, str) and (out / f).is_file() for f in files)
    )


def _hardware_section(ctx: PageContext) -> list[str]:
    """`tbptt-bench compare` over every device folder, summarised. Compare reads and validates every
    record again (most of a cached report's time with the full sweeps committed), so its output is
    reused while the report's code, every group's inputs and the benchmark JSON are unchanged
    (cached in the manifest like the cross-sweep tables)."""
    devices = sorted({g.device for g in ctx.groups if g.runs})
    md = ["## Hardware comparison", ""]
    if len(devices) < 2:
        return md + [
            f"Only one device in these records ({', '.join(f'`{d}`' for d in devices) or 'none'}); "
            "`tbptt-bench compare DIR DIR` compares folders from several machines.",
            "",
        ]
    from .compare import compare
    from .compare_benchmarks import _bench_files

    folders = [ctx.results / d for d in devices]
    benches = sorted({b for f in folders for b in _bench_files(f)})
    try:
        bench_hashes = [(_rel(b, ctx.results), hashlib.sha256(b.read_bytes()).hexdigest()) for b in benches]
    except OSError:
        bench_hashes = None  # unreadable now: compare again (it reports what it cannot read)
    key = hashlib.sha256(
        json.dumps(
            [ctx.code, str(ctx.figures), devices, sorted((g.key, g.hash) for g in ctx.groups), bench_hashes]
        ).encode()
    ).hexdigest()
    cache = ctx.previous_cross.get("hardware", {}) if isinstance(ctx.previous_cross, dict) else {}
    files, lines = cache.get("files", []), cache.get("md", [])
    if bench_hashes is None or not files or not _cache_hit(cache, key, ctx.out):
        out = ctx.out / "compare"
        paths = compare(folders, out, warn=False)
        files = [_rel(p, ctx.out) for p in paths]
        lines = [
            f"`tbptt-bench compare {' '.join(f'{ctx.results.name}/{d}' for d in devices)}` "
            f"(first folder = baseline). Full tables: [compare.md]({ctx.link(out / 'compare.md')}).",
            "",
        ]
        text = (out / "compare.md").read_text(encoding="utf-8")
        if "## Geometric-mean speedup" in text:
            part = text.split("## Geometric-mean speedup", 1)[1].split("\n## ", 1)[0]
            lines += ["### Geometric-mean speedup per task", *part.strip().splitlines()[1:], ""]
        png = out / "compare.png"
        if png in paths:
            lines += [f"![speedup per style, one panel per task]({ctx.link(png)})", ""]
    ctx.cross["hardware"] = {"hash": key, "files": files, "md": lines}
    ctx.written.extend(ctx.out / f for f in files)
    return md + lines


def _benchmark_section(ctx: PageContext) -> list[str]:
    ratios = sorted((ctx.results / "benchmarks").glob("*ratios*.md"))
    if not ratios:
        return []
    md = ["## Benchmark ratios", "", "pytest-benchmark summaries kept with the records:", ""]
    md += [f"- [{p.name}]({ctx.link(p)})" for p in ratios]
    cmp = ctx.out / "compare" / "compare.md"
    if cmp.is_file() and "## pytest-benchmark" in cmp.read_text(encoding="utf-8"):
        md += [
            "",
            f"The same benchmarks paired across devices (speedup = timesteps/s ratio): "
            f"[compare.md, section pytest-benchmark]({ctx.link(cmp)}#pytest-benchmark).",
        ]
    return [*md, ""]


def _explainer_figures(ctx: PageContext) -> list[str]:
    if not ctx.figures:
        return []
    md = ["## Figures from the styles alone (no run data)", ""]
    for stem, caption in (
        ("truncation_patterns", "which states each loss's gradient reaches, per style"),
        ("gradient_norms", "vanishing and exploding gradients in a linear RNN"),
    ):
        paths = [ctx.out / "figures" / f"{stem}.{ext}" for ext in ("png", "svg")]
        # they depend on the code alone: draw them again only when the report's source changed
        if ctx.code != ctx.previous_code or not all(p.is_file() for p in paths):
            from . import figures as F

            make = F.truncation_patterns_figure if stem == "truncation_patterns" else F.gradient_norms_figure
            paths = F.save(make(), ctx.out / "figures" / stem)
        ctx.written.extend(paths)
        md += [f"![{caption}]({ctx.link(paths[0])})", ""]
    return md


def _cross_sweep_tables(ctx: PageContext) -> list[str]:
    """The tables that read every sweep of a task at once: the four fair comparisons per (device,
    task) and the reproductions page. They need all records (curves too, for equal compute), so
    they are rebuilt only when some group's inputs or the report's code changed."""
    from . import gradients as G

    tdir = ctx.out / "tables"
    studies = {}  # device -> the gradient study's file: the vanishing-gradient claim reads it
    for device, path in G.find_studies(ctx.results):
        try:
            studies[device] = (path, hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            continue
    key = hashlib.sha256(
        json.dumps(
            [
                ctx.code,
                sorted((g.key, g.hash) for g in ctx.groups),
                sorted((d, h) for d, (_, h) in studies.items()),
            ]
        ).encode()
    ).hexdigest()
    prev = ctx.previous_cross if isinstance(ctx.previous_cross, dict) else {}
    files = [f for f in prev.get("files", []) if isinstance(f, str)]
    if prev.get("hash") != key or not files or not all((ctx.out / f).is_file() for f in files):
        from . import fair, reproductions

        loaded = store.load_runs(ctx.results)
        written = {}
        for (device, task), bodies in fair.fair_files(loaded.runs, loaded.curves):
            for name, body in bodies.items():
                written[tdir / device / task / name] = body
        depth_rows = {}
        for device, (path, _) in studies.items():
            try:
                depth_rows[device] = G.load_study(path)["depth"]
            except (ValueError, OSError, KeyError, TypeError) as e:
                log.warning("skipped gradient study %s: %s", _rel(path, ctx.results), e)
        written[tdir / "reproductions.md"] = reproductions.reproductions_markdown(loaded.runs, depth_rows)
        for path, body in written.items():
            write_text_if_changed(path, body)
        files = [_rel(p, ctx.out) for p in written]
    ctx.cross.update(hash=key, files=files)
    ctx.written.extend(ctx.out / f for f in files)
    md = ["## Fair comparisons and reproductions", ""]
    md += [
        "Each task's styles on a stated budget axis (equal data, equal updates, episodic, equal "
        "compute), across its sweeps; then the published claims this suite reproduces, each with "
        "its rule and verdict.",
        "",
    ]
    md += [f"- [{f}]({f})" for f in files if f.endswith(".md")]
    return md + [""]


def _gradient_section(ctx: PageContext) -> list[str]:
    """The gradient-quality study (report/gradients.py): per device that has one, its tables and two
    figures per task, drawn from the study's records alone. Redrawn only when a study's records or
    the report's code changed (cached in the manifest like the cross-sweep tables)."""
    from . import gradients as G

    md: list[str] = []
    cache = ctx.previous_cross.get("gradients", {}) if isinstance(ctx.previous_cross, dict) else {}
    ctx.cross.setdefault("gradients", {})
    for device, path in G.find_studies(ctx.results):
        try:
            key = hashlib.sha256((ctx.code + str(ctx.figures)).encode() + path.read_bytes()).hexdigest()
        except OSError as e:
            log.warning("skipped gradient study %s: %s", _rel(path, ctx.results), e)
            continue
        prev = cache.get(device) if isinstance(cache.get(device), dict) else {}
        files, lines = prev.get("files", []), prev.get("md", [])
        if not _cache_hit(prev, key, ctx.out):
            try:
                files, lines = _render_gradient_study(ctx, device, G.load_study(path))
            except (ValueError, OSError) as e:
                log.warning("skipped gradient study %s: %s", _rel(path, ctx.results), e)
                continue
        ctx.cross["gradients"][device] = {"hash": key, "files": files, "md": lines}
        ctx.written.extend(ctx.out / f for f in files)
        md += lines
    return md


def _render_gradient_study(ctx: PageContext, device: str, data: dict) -> tuple[list[str], list[str]]:
    """Write one device's gradients.md and figures; return (files relative to out, page lines)."""
    from . import gradients as G

    base = Path(device) / "gradients"
    table = ctx.out / "tables" / base / "gradients.md"
    write_text_if_changed(table, G.gradients_markdown(data))
    written = [table]
    md = [f"## Gradient quality — `{device}`", "", f"Tables: [gradients.md]({ctx.link(table)})", ""]
    if ctx.figures:
        from . import figures as F

        for t in data["meta"]["tasks"]:
            for stem, make, caption in (
                (f"{t['task']}_bias", G.bias_figure, "relative bias and spread vs n"),
                (f"{t['task']}_depth", G.depth_figure, "gradient contribution vs depth"),
            ):
                paths = F.save(make(data, t["task"]), ctx.out / "figures" / base / stem)
                written.extend(paths)
                md += [f"![{t['task']}: {caption}]({ctx.link(paths[0])})", ""]
    return [_rel(p, ctx.out) for p in written], md


#: Whole-page sections after the per-task ones: callable(PageContext) -> Markdown lines. A section
#: that writes files appends them to ``ctx.written`` (so the manifest keeps them).
REPORT_SECTIONS: list[Callable[[PageContext], list[str]]] = [
    _cross_sweep_tables,
    _gradient_section,
    _hardware_section,
    _benchmark_section,
    _explainer_figures,
]
#: Sections that read only the groups' keys and hashes, never what rendering them wrote: they run
#: while worker processes render the groups (the two slowest parts of a report from scratch).
CONCURRENT_SECTIONS = frozenset({_cross_sweep_tables, _gradient_section})
