"""``tbptt-bench report [RESULTS_DIR]``: regenerate every table and figure from the run records.

Reads ``<results>/<device_tag>/<sweep>/<run_id>/``, groups runs by (device_tag, sweep, task) and
writes, under ``out_dir`` (default: the results folder):

    REPORT.md                                    the page to open: per task the summary, links to
                                                 the tables, loss vs n, learning curves and cost
                                                 figures; then the hardware comparison and the
                                                 benchmark ratios
    tables/<device>/<sweep>/<task>/r2rt.md|csv   quality table in r2rt's layout
    tables/<device>/<sweep>/<task>/cost.md|csv   wall time, timesteps/s, memory, × full BPTT
    tables/<device>/<sweep>/<task>/summary.md    sentences generated from the numbers
    tables/<device>/<sweep>/<task>/r2rt_min.md   secondary quality table (minimum validation loss)
    tables/<device>/<task>/fair.md|csv           the four fair comparisons, across the task's sweeps
    tables/reproductions.md                      published claims judged from the records
    figures/<device>/<sweep>/<task>/loss_vs_n|curves|quality_vs_cost.png
    figures/truncation_patterns.png|svg, figures/gradient_norms.png|svg
    compare/                                     when the records hold two or more devices
    tables/<device>/gradients/gradients.md, figures/<device>/gradients/<task>_bias|_depth.png
                                                 the gradient-quality study (report/gradients.py)
    tables/index.md                              every file above, plus the skipped run folders

The page is assembled from lists, so other parts of the report hook in by appending:
``GROUP_TABLES`` (per-group text files), ``GROUP_FIGURES`` (per-group figures) and
``REPORT_SECTIONS`` (whole-page sections after the tasks).

Speed: each group's inputs (its run files, plus the report's own source) are hashed; a group whose
hash matches ``tables/manifest.json`` and whose files are all there is not rendered again. Files
are rewritten only when their bytes change, and the same records give byte-identical files
(tables, PNGs and SVGs). Groups render in ``jobs`` worker processes. Files a previous report wrote
and this one did not (listed in the manifest) are removed. Incomplete or unreadable run folders
are left out with one warning line each (logger ``tbptt_bench.report.build``); a folder with no
runs says so. Only the report's own stale outputs under tables/ and figures/ are ever deleted.
Torch is never imported.

>>> import tempfile, pathlib
>>> paths = build_report(tempfile.mkdtemp(), figures=False, progress=False)
>>> [p.name for p in paths]
['REPORT.md', 'reproductions.md', 'index.md', 'manifest.json']
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..runs import store

__all__ = [
    "GROUP_FIGURES",
    "GROUP_TABLES",
    "REPORT_SECTIONS",
    "Group",
    "PageContext",
    "ReportError",
    "build_report",
]

log = logging.getLogger("tbptt_bench.report.build")


class ReportError(BenchError):
    """The report was asked for something that cannot be done (e.g. a missing results folder)."""


# -- hooks ---------------------------------------------------------------------------------------
def _r2rt(runs) -> dict[str, str]:
    from . import tables

    md, csv = tables.r2rt_tables(runs)
    return {"r2rt.md": md, "r2rt.csv": csv}


def _cost(runs) -> dict[str, str]:
    from . import tables

    md, csv = tables.cost_tables(runs)
    return {"cost.md": md, "cost.csv": csv}


def _r2rt_min(runs) -> dict[str, str]:
    from . import tables

    return {"r2rt_min.md": tables.r2rt_min_tables(runs)}


def _summary(runs) -> dict[str, str]:
    from . import tables

    return {"summary.md": tables.summary_markdown(runs)}


#: Per-group text files: each callable takes the group's ``runs`` frame and returns {name: text}.
#: REPORT.md links every ``.md`` file here except summary.md, whose sentences it shows inline.
GROUP_TABLES: list[Callable[[Any], dict[str, str]]] = [_r2rt, _r2rt_min, _cost, _summary]


def _loss_vs_n(runs, curves):
    from . import figures as F

    return F.loss_vs_n_figure(runs)


def _curves(runs, curves):
    from . import figures as F

    return F.learning_curves_figure(runs, curves)


def _quality_cost(runs, curves):
    from . import figures as F

    return F.quality_cost_figure(runs)


#: Per-group figures: (file stem, caption on the page, callable(runs, curves) -> Figure). ``curves``
#: holds the validation rows only (see ``_render_group``). Saved as PNG only: SVGs of every group
#: doubled the render time and the page shows PNGs.
GROUP_FIGURES: list[tuple[str, str, Callable[[Any, Any], Any]]] = [
    ("loss_vs_n", "loss vs truncation length n", _loss_vs_n),
    ("curves", "learning curves", _curves),
    ("quality_vs_cost", "cost: quality vs training time and memory", _quality_cost),
]


@dataclass
class Group:
    """One (device_tag, sweep, task) and what the report knows about it after this build."""

    device: str
    sweep: str
    task: str
    run_dirs: list[Path] = field(default_factory=list)
    hash: str = ""
    files: list[str] = field(default_factory=list)  # relative to out_dir
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path relative to results, reason)
    runs: int = 0

    @property
    def key(self) -> str:
        return f"{self.device}/{self.sweep}/{self.task}"

    @property
    def base(self) -> Path:
        return Path(self.device) / self.sweep / self.task


@dataclass
class PageContext:
    """What a REPORT.md section may use: folders, the groups, and a link maker relative to the page."""

    results: Path
    out: Path
    groups: list[Group]
    figures: bool
    written: list[Path]
    code: str = ""  # hash of the report's source now
    previous_code: str = ""  # and when the manifest was written
    previous_cross: dict = field(default_factory=dict)  # the manifest's cross-sweep entry, last build
    cross: dict = field(default_factory=dict)  # and this build's (hash and files)

    def link(self, path: Path) -> str:
        return _rel(path, self.out)


# -- helpers -------------------------------------------------------------------------------------
def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # different drives (Windows)
        return path.as_posix()


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it (mtime kept)."""
    data = text if text.endswith("\n") else text + "\n"
    try:
        if path.read_text(encoding="utf-8") == data:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    store.write_text_atomic(path, data)
    return True


def _code_hash() -> str:
    """The report's own source: a change to how things are drawn re-renders every group."""
    h = hashlib.blake2b(digest_size=16)
    here = Path(__file__).resolve().parent
    for p in sorted(here.glob("*.py")) + [here.parent / "runs" / "store.py"]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _group_hash(code: str, group: Group, figures: bool) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{code}|figures={figures}".encode())
    for d in sorted(group.run_dirs):
        h.update(b"\0" + d.name.encode())
        for f in sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(b"\1" + f.name.encode() + b"\1")
            h.update(f.read_bytes())
    return h.hexdigest()


def _discover(results: Path) -> tuple[dict[tuple[str, str, str], Group], list[tuple[Path, str]]]:
    """Groups of complete-looking run folders, and folders skipped before any group is known."""
    groups: dict[tuple[str, str, str], Group] = {}
    skipped: list[tuple[Path, str]] = []
    for d in store.iter_run_dirs(results):
        if not (d / "summary.json").exists():
            skipped.append((d, "incomplete: no summary.json"))
            continue
        try:
            config = json.loads((d / "config.json").read_text(encoding="utf-8"))
            sweep, task = str(config["sweep"]), str(config["task"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            skipped.append((d, f"config.json is unreadable: {e}"))
            continue
        key = (d.parent.parent.name, sweep, task)
        groups.setdefault(key, Group(*key)).run_dirs.append(d)
    return groups, skipped


def _matches(value: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(value == p or fnmatch.fnmatchcase(value, p) for p in patterns)


# -- rendering one group (in a worker process or in this one) -------------------------------------
def _render_group(
    results: Path, out: Path, device: str, sweep: str, task: str, run_dirs: list[Path], figures: bool
) -> dict[str, Any]:
    from .load import load_dirs

    loaded = load_dirs(run_dirs, splits=("val",))
    files: list[str] = []
    base = Path(device) / sweep / task
    runs = loaded.runs[loaded.runs["task"] == task] if len(loaded.runs) else loaded.runs
    if len(runs):
        for make in GROUP_TABLES:
            for name, body in make(runs).items():
                path = out / "tables" / base / name
                write_text_if_changed(path, body)
                files.append(_rel(path, out))
        if figures:
            from . import figures as F

            curves = loaded.curves
            for stem, _, make in GROUP_FIGURES:
                fig = make(runs, curves)
                for p in F.save(fig, out / "figures" / base / stem, formats=("png",)):
                    files.append(_rel(p, out))
    return {
        "files": files,
        "skipped": [(_rel(p, results), reason) for p, reason in loaded.skipped],
        "runs": len(runs),
    }


def _render_all(
    results: Path, out: Path, todo: list[Group], figures: bool, jobs: int, disable: bool | None
) -> None:
    """Render ``todo`` (biggest first, so two workers finish together); fills each group's fields."""
    if not todo:
        return  # nothing changed: no bar either
    from tqdm import tqdm

    todo = sorted(todo, key=lambda g: -sum(_size(d) for d in g.run_dirs))
    bar = tqdm(total=len(todo), desc="report", unit="group", file=sys.stderr, disable=disable)
    args = {g.key: (results, out, g.device, g.sweep, g.task, g.run_dirs, figures) for g in todo}
    try:
        if jobs <= 1 or len(todo) <= 1:
            for g in todo:
                bar.set_postfix_str(g.key, refresh=False)
                _fill(g, _render_group(*args[g.key]))
                bar.update()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: a forked child of a process holding matplotlib/tqdm threads may deadlock
            with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_render_group, *args[g.key]): g for g in todo}
                for fut in as_completed(futures):
                    g = futures[fut]
                    _fill(g, fut.result())
                    bar.set_postfix_str(g.key, refresh=False)
                    bar.update()
    finally:
        bar.close()


def _size(d: Path) -> int:
    try:
        return sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    except OSError:
        return 0


def _fill(g: Group, res: dict[str, Any]) -> None:
    g.files, g.skipped, g.runs = res["files"], [tuple(s) for s in res["skipped"]], res["runs"]


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
    # the fullest sweep first: it is the comparison; quick/smoke are sanity checks
    return ({"full": 0, "quick": 1, "smoke": 2}.get(g.sweep, 3), g.device, g.sweep)


def _hardware_section(ctx: PageContext) -> list[str]:
    devices = sorted({g.device for g in ctx.groups if g.runs})
    md = ["## Hardware comparison", ""]
    if len(devices) < 2:
        return md + [
            f"Only one device in these records ({', '.join(f'`{d}`' for d in devices) or 'none'}); "
            "`tbptt-bench compare DIR DIR` compares folders from several machines.",
            "",
        ]
    from .compare import compare

    out = ctx.out / "compare"
    paths = compare([ctx.results / d for d in devices], out, warn=False)
    ctx.written.extend(paths)
    md += [
        f"`tbptt-bench compare {' '.join(f'{ctx.results.name}/{d}' for d in devices)}` "
        f"(first folder = baseline). Full tables: [compare.md]({ctx.link(out / 'compare.md')}).",
        "",
    ]
    text = (out / "compare.md").read_text(encoding="utf-8")
    if "## Geometric-mean speedup" in text:
        part = text.split("## Geometric-mean speedup", 1)[1].split("\n## ", 1)[0]
        md += ["### Geometric-mean speedup per task", *part.strip().splitlines()[1:], ""]
    png = out / "compare.png"
    if png in paths:
        md += [f"![speedup per style, one panel per task]({ctx.link(png)})", ""]
    return md


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
        fresh = (
            prev.get("hash") == key
            and isinstance(files, list)
            and isinstance(lines, list)
            and all(isinstance(f, str) and (ctx.out / f).is_file() for f in files)
        )
        if not fresh:
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


# -- the command ---------------------------------------------------------------------------------
def build_report(
    results_dir: str | os.PathLike = "results",
    out_dir: str | os.PathLike | None = None,
    *,
    figures: bool = True,
    devices: Sequence[str] | None = None,
    sweeps: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    jobs: int = 1,
    progress: bool | None = None,
) -> list[Path]:
    """Write REPORT.md, the tables and (unless ``figures=False``) figures; returns the paths, in order.

    ``results_dir``: a results root. ``out_dir``: where REPORT.md, ``tables/`` and ``figures/`` go
    (default ``results_dir``). ``devices``/``sweeps``/``tasks``: names or glob patterns; groups
    outside them keep what the previous report wrote. ``jobs``: worker processes for the groups.
    ``progress``: the tqdm bar on stderr (None: only on a terminal). The first path is REPORT.md.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise ReportError(
            f"results_dir={str(results)!r} is not a folder: pass the results root, e.g. 'results'"
        )
    if jobs < 1:
        raise ReportError(f"jobs={jobs} is not allowed: use a positive integer")
    out = Path(out_dir) if out_dir is not None else results
    tdir = out / "tables"
    manifest_path = tdir / "manifest.json"
    try:
        old = json.loads(manifest_path.read_text(encoding="utf-8"))
        old_groups = old.get("groups", {}) if isinstance(old, dict) else {}
        old_code = str(old.get("code", "")) if isinstance(old, dict) else ""
        old_cross = old.get("cross", {}) if isinstance(old, dict) else {}
    except (OSError, ValueError):
        old_groups, old_code, old_cross = {}, "", {}
    found, pre_skipped = _discover(results)
    code = _code_hash()
    todo: list[Group] = []
    groups: list[Group] = []
    for key in sorted(found):
        g = found[key]
        prev = old_groups.get(g.key) if isinstance(old_groups.get(g.key), dict) else None
        selected = _matches(g.device, devices) and _matches(g.sweep, sweeps) and _matches(g.task, tasks)
        if not selected:
            if prev:  # not asked for: keep what the last report wrote for it
                g.hash, g.runs = prev.get("hash", ""), int(prev.get("runs", 0))
                g.files = [f for f in prev.get("files", []) if (out / f).is_file()]
                g.skipped = [tuple(s) for s in prev.get("skipped", [])]
                groups.append(g)
            continue
        g.hash = _group_hash(code, g, figures)
        if prev and prev.get("hash") == g.hash and all((out / f).is_file() for f in prev.get("files", [])):
            g.files, g.runs = list(prev["files"]), int(prev.get("runs", 0))
            g.skipped = [tuple(s) for s in prev.get("skipped", [])]
        else:
            todo.append(g)
        groups.append(g)
    _render_all(
        results,
        out,
        todo,
        figures,
        jobs,
        True if progress is False else (None if progress is None else False),
    )
    skipped = sorted(
        [(_rel(p, results), reason) for p, reason in pre_skipped] + [s for g in groups for s in g.skipped]
    )
    for rel, reason in skipped:
        log.warning("skipped run folder %s: %s", rel, reason)

    written: list[Path] = []
    ctx = PageContext(results, out, groups, figures, written, code, old_code, old_cross)
    n_runs = sum(g.runs for g in groups)
    if n_runs == 0:  # an empty or mistyped folder must not look like a successful report
        log.warning(
            "no runs found in %s%s",
            results,
            f" ({len(skipped)} run folders skipped as invalid)" if skipped else "",
        )
    page = [
        "# tbptt-bench report",
        "",
        f"Generated by `tbptt-bench report` from {n_runs} complete runs ({len(skipped)} run folders "
        f"skipped) on {len({g.device for g in groups if g.runs})} device(s). Every table: "
        f"[tables/index.md]({ctx.link(tdir / 'index.md')}). Losses: lower is better; dashed lines "
        "are the task's reference losses (optimal, partial, no-memory).",
        "",
    ]
    tasks_md = _task_sections(ctx)
    sections = [s(ctx) for s in REPORT_SECTIONS]
    contents = sorted({g.task for g in groups if g.runs})
    page += ["Tasks: " + " · ".join(f"[{t}](#{t})" for t in contents), ""] if contents else []
    page += tasks_md
    for lines in sections:
        page += lines
    report_md = out / "REPORT.md"
    write_text_if_changed(report_md, "\n".join(page).rstrip() + "\n")

    index = [
        "# Report index",
        "",
        f"Generated by `tbptt-bench report` from {n_runs} complete runs "
        f"({len(skipped)} run folders skipped). Paths are relative to this file. "
        f"The page to read: [REPORT.md]({_rel(report_md, tdir)}).",
        "",
    ]
    for g in groups:
        if not g.files:
            continue
        index += [f"## {g.task} — {g.device}, sweep {g.sweep}", ""]
        index += [f"- [{Path(f).name}]({_rel(out / f, tdir)})" for f in g.files]
        index.append("")
    extra = [p for p in written if p.parent != out]
    if extra:
        index += ["## Fair comparisons, reproductions, hardware comparison and explainer figures", ""]
        index += [f"- [{_rel(p, out)}]({_rel(p, tdir)})" for p in extra]
        index.append("")
    if skipped:
        index += ["## Skipped run folders", ""]
        index += [f"- `{rel}`: {reason}" for rel, reason in skipped]
        index.append("")
    write_text_if_changed(tdir / "index.md", "\n".join(index))

    group_files = [out / f for g in groups for f in g.files]
    all_written = [report_md, *group_files, *written, tdir / "index.md"]
    _clean_stale(out, manifest_path, all_written)
    manifest = {
        "code": code,
        "cross": ctx.cross,
        "files": sorted(_rel(p, out) for p in all_written),
        "groups": {
            g.key: {"hash": g.hash, "runs": g.runs, "files": g.files, "skipped": [list(s) for s in g.skipped]}
            for g in groups
        },
    }
    body = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False)
    write_text_if_changed(manifest_path, body)
    return [report_md, *group_files, *written, tdir / "index.md", manifest_path]


#: The only folders (under the output folder) whose files a report may delete: its own outputs.
OWN_DIRS = ("tables", "figures")


def _deletable(out: Path, rel: Any) -> Path | None:
    try:
        return _deletable_path(out, rel)
    except (OSError, ValueError):  # a name the file system refuses (too long, ...) names nothing to delete
        return None


def _deletable_path(out: Path, rel: Any) -> Path | None:
    """The file ``rel`` (a manifest entry) names, if the report may delete it; else None.

    Only a plain file inside ``<out>/tables`` or ``<out>/figures`` (checked on the real paths),
    reached through no symlink at any level, and in no run folder (one holding config.json or
    summary.json, e.g. a results root passed as the output folder). A tampered manifest can
    then name anything: nothing but the report's own stale outputs goes.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or len(parts) < 2 or parts[0] not in OWN_DIRS:
        return None
    path = out / rel
    cur = out
    for part in parts:  # no symlink on the way: the real file must be the one named
        cur = cur / part
        if cur.is_symlink():
            return None
    if not path.is_file():
        return None
    try:
        real, own = (
            path.resolve(strict=True),
            [(out / d).resolve(strict=True) for d in OWN_DIRS if (out / d).is_dir()],
        )
    except OSError:
        return None
    if not any(real.is_relative_to(d) for d in own):
        return None
    for parent in real.parents:  # never a file of a run record, wherever the folders sit
        if (parent / "config.json").is_file() or (parent / "summary.json").is_file():
            return None
        if parent in own:
            break
    if real.name in ("config.json", "env.json", "curve.csv", "curve.parquet", "summary.json"):
        return None
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except (OSError, ValueError):
        return False


def _clean_stale(out: Path, manifest: Path, written: list[Path]) -> None:
    """Remove files the previous report listed and this one did not write (then empty folders).

    Only what ``_deletable`` allows: the report's own outputs under tables/ and figures/.
    """
    if manifest.is_symlink():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(old, list):
        return
    keep = {_rel(p, out) for p in written}
    for rel in old:
        if not isinstance(rel, str) or rel in keep:
            continue
        path = _deletable(out, rel)
        if path is None:
            if _exists(out / rel):
                log.warning(
                    "kept %s: the manifest names it but it is not a report output", store.cut_text(rel, 200)
                )
            continue
        path.unlink()
        log.info("removed stale report file %s", rel)
        for parent in path.parents:
            if (
                parent in (out, out / "tables", out / "figures")
                or parent.is_symlink()
                or not parent.is_dir()
                or any(parent.iterdir())
            ):
                break
            parent.rmdir()
