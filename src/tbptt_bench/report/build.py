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

The groups and hooks live in ``groups.py``, the page sections in ``sections.py``, the
hashes and stale-file cleanup in ``manifest.py``; their public names stay importable from here.

>>> import tempfile, pathlib
>>> paths = build_report(tempfile.mkdtemp(), figures=False, progress=False)
>>> [p.name for p in paths]
['REPORT.md', 'reproductions.md', 'index.md', 'manifest.json']
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BenchError
from ..runs import store
from .groups import GROUP_FIGURES, GROUP_TABLES, Group, PageContext, _discover, _matches
from .manifest import OWN_DIRS as OWN_DIRS  # moved out; still importable from here
from .manifest import _clean_stale, _code_hash, _group_hash, _rel, write_text_if_changed
from .sections import CONCURRENT_SECTIONS, REPORT_SECTIONS, _task_sections

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
T = TypeVar("T")


class ReportError(BenchError):
    """The report was asked for something that cannot be done (e.g. a missing results folder)."""


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
    results: Path,
    out: Path,
    todo: list[Group],
    figures: bool,
    jobs: int,
    disable: bool | None,
    meanwhile: Callable[[], T],
) -> T:
    """Render ``todo`` (biggest first, so two workers finish together), filling each group's fields,
    and return ``meanwhile()``: with worker processes it runs here while they render (the page's
    cross-sweep sections do not need the groups' outputs, only their hashes)."""
    if not todo:
        return meanwhile()  # nothing changed: no bar either
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
            return meanwhile()
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: a forked child of a process holding matplotlib/tqdm threads may deadlock
            with ProcessPoolExecutor(min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_render_group, *args[g.key]): g for g in todo}
                done = meanwhile()
                for fut in as_completed(futures):
                    g = futures[fut]
                    _fill(g, fut.result())
                    bar.set_postfix_str(g.key, refresh=False)
                    bar.update()
            return done
    finally:
        bar.close()


def _size(d: Path) -> int:
    """How much a run weighs in rendering: its files' bytes, or ~6 bytes a curve row when packed."""
    pack = store.pack_of(d)
    if pack is not None:
        start, stop = pack.bounds[d.name]
        return 6 * (stop - start)
    try:
        return sum(p.stat().st_size for p in d.iterdir() if p.is_file())
    except OSError:
        return 0


def _fill(g: Group, res: dict[str, Any]) -> None:
    g.files, g.skipped, g.runs = res["files"], [tuple(s) for s in res["skipped"]], res["runs"]


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
    written: list[Path] = []
    ctx = PageContext(results, out, groups, figures, written, code, old_code, old_cross)
    early = _render_all(
        results,
        out,
        todo,
        figures,
        jobs,
        True if progress is False else (None if progress is None else False),
        meanwhile=lambda: {s: s(ctx) for s in REPORT_SECTIONS if s in CONCURRENT_SECTIONS},
    )
    skipped = sorted(
        [(_rel(p, results), reason) for p, reason in pre_skipped] + [s for g in groups for s in g.skipped]
    )
    for rel, reason in skipped:
        log.warning("skipped run folder %s: %s", rel, reason)

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
    sections = [early[s] if s in early else s(ctx) for s in REPORT_SECTIONS]
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
