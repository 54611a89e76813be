"""The report's units and hooks: a ``Group`` is one (device_tag, sweep, task) of run folders; a
``PageContext`` is what a whole-page section of REPORT.md receives; ``GROUP_TABLES`` and
``GROUP_FIGURES`` are the per-group text files and figures every group renders. Also the discovery
of the groups in a results folder and the ``--devices/--sweeps/--tasks`` pattern match. Torch-free.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runs import store
from .manifest import _rel

#: The fullest sweeps first (the comparisons, in the order of the budget axes), then the sanity checks.
SWEEP_ORDER = {"full": 0, "full-updates": 1, "full-episodic": 2, "quick": 3, "smoke": 4}

__all__ = ["GROUP_FIGURES", "GROUP_TABLES", "Group", "PageContext"]


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


def _discover(results: Path) -> tuple[dict[tuple[str, str, str], Group], list[tuple[Path, str]]]:
    """Groups of complete-looking run folders, and folders skipped before any group is known."""
    groups: dict[tuple[str, str, str], Group] = {}
    skipped: list[tuple[Path, str]] = []
    for d in store.iter_run_dirs(results):
        if not ((d / "summary.json").exists() or store.pack_of(d) is not None):
            skipped.append((d, "incomplete: no summary.json"))
            continue
        try:
            config = store.read_record_json(d, "config.json")
            sweep, task = str(config["sweep"]), str(config["task"])
        except (store.StoreError, KeyError, TypeError) as e:
            skipped.append((d, f"config.json is unreadable: {e}"))
            continue
        key = (d.parent.parent.name, sweep, task)
        groups.setdefault(key, Group(*key)).run_dirs.append(d)
    return groups, skipped


def _matches(value: str, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(value == p or fnmatch.fnmatchcase(value, p) for p in patterns)
