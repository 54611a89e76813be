"""The results store: write one run's records atomically, load many runs as tidy DataFrames.

Layout (fixed by the project): ``<root>/<device_tag>/<sweep>/<run_id>/`` holding
``config.json``, ``env.json``, ``curve.parquet`` (``curve.csv`` in records written before it; see
``runs/curves.py``) and, written last, ``summary.json``.
``is_complete``: ``summary.json`` exists and parses (cheap). ``validate_record`` (in
``runs/validate.py``, the schema it checks in ``runs/schema.py``; both re-exported here): the one
definition of a valid record -- types and bounds of every field, the summary against the curve,
the folder name against the config's hash -- used by the sweep, the report, compare and
``load_runs`` alike (see docs/reliability.md). This module writes records (``write_run``), claims
run folders (``claim_run``) and finds and loads them (``iter_run_dirs``, ``load_runs``). Torch-free.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> run = root / "cpu-x" / "smoke" / "echo-full-tanh4-lr0.1-s0-000000000000"
>>> is_complete(run)
False
>>> write_json_atomic(run / "summary.json", {"status": "ok"})
>>> is_complete(run)
True
>>> [p.name for p in iter_run_dirs(root)]
['echo-full-tanh4-lr0.1-s0-000000000000']
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .curves import (
    CURVE_COLUMNS,
    CURVE_COLUMNS_V2,
    CURVE_FILE,
    INT64_MAX,
    LEGACY_CURVE_FILE,
    MAX_SECONDS,  # noqa: F401  (re-exported)
    compact_curve,
    curve_file,
    read_curve,
    write_curve,
)
from .packs import PACK_FILE, pack_of, pack_sweep, packed_run_dirs, unpack_sweep
from .record_io import StoreError, _cut, cut_text, write_bytes_atomic, write_json_atomic, write_text_atomic

# Re-exported (noqa: F401): the schema and the checks lived here before schema.py and validate.py
# were split out, and callers and tests still use them as ``store.X``.
from .schema import (  # noqa: F401
    _BOOL,
    _CONFIG_SCHEMA,
    _ENV_SCHEMA,
    _INT,
    _LOSS,
    _NUM,
    _SUMMARY_SCHEMA,
    _TEXT,
    _VERSION,
    BLOWUP_LOSS,
    CONFIG_KEYS,
    CURVES_COLUMNS,
    ENV_KEYS,
    FAILURE_KINDS,
    LOSSES,
    MAX_LOSS,
    MAX_RATE,
    RUN_COLUMNS,
    STATUSES,
    SUMMARY_KEYS,
    SUMMARY_OPTIONAL_KEYS,
    _check_schema,
    _Field,
    _json_numbers,
    _lookup,
)
from .validate import (  # noqa: F401
    _consistency,
    _read_json,
    _read_record,
    check_run,
    classify_failure,
    expected_run_id,
    failure_kind_of,
    read_record_json,
    record_exists,
    validate_record,
)

__all__ = [
    "CONFIG_KEYS",
    "CURVES_COLUMNS",
    "CURVE_COLUMNS",
    "CURVE_FILE",
    "ENV_KEYS",
    "LEGACY_CURVE_FILE",
    "PACK_FILE",
    "RUN_COLUMNS",
    "SUMMARY_KEYS",
    "Claim",
    "LoadedRuns",
    "StoreError",
    "check_run",
    "claim_run",
    "classify_failure",
    "compact_curve",
    "curve_file",
    "cut_text",
    "expected_run_id",
    "is_complete",
    "iter_run_dirs",
    "load_folders",
    "load_run",
    "load_runs",
    "pack_of",
    "pack_sweep",
    "read_curve",
    "read_record_json",
    "record_exists",
    "remove_stale_claims",
    "unpack_sweep",
    "validate_record",
    "write_bytes_atomic",
    "write_curve",
    "write_json_atomic",
    "write_run",
    "write_text_atomic",
]


#: Folders under a results root that hold derived files, never runs.
NON_RUN_DIRS = frozenset({"tables", "figures", "benchmarks", "compare"})


# -- writing --------------------------------------------------------------------------------
def _check_keys(obj: Any, keys: Sequence[str], what: str) -> None:
    if not isinstance(obj, Mapping):
        raise StoreError(f"{what}={type(obj).__name__} is not allowed: it must be a JSON object (dict)")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise StoreError(f"{what} is missing keys {missing}: required are {list(keys)}")


def write_run(
    run_dir: str | os.PathLike,
    config: Mapping,
    env: Mapping,
    curve_rows: Sequence[Mapping[str, Any]],
    summary: Mapping,
) -> None:
    """Write one run: config.json, env.json, curve.parquet, then summary.json last (each atomically).

    An existing summary.json is removed first, so a folder being rewritten never looks complete
    while it mixes two runs. Missing schema keys raise ``StoreError`` before anything is written.
    """
    _check_keys(config, CONFIG_KEYS, "config")
    _check_keys(env, ENV_KEYS, "env")
    _check_keys(summary, SUMMARY_KEYS, "summary")
    if summary["status"] not in STATUSES:
        raise StoreError(f"summary status={summary['status']!r} is not allowed: use one of {STATUSES}")
    from .curves import curve_parquet

    curve_bytes = curve_parquet(curve_rows)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    write_json_atomic(run_dir / "config.json", config)
    write_json_atomic(run_dir / "env.json", env)
    write_bytes_atomic(run_dir / CURVE_FILE, curve_bytes)
    (run_dir / LEGACY_CURVE_FILE).unlink(missing_ok=True)  # a rerun of an old record: one curve only
    write_json_atomic(run_dir / "summary.json", summary)


# -- claiming: one writer per run folder ------------------------------------------------------
if sys.platform != "win32":
    import fcntl
else:  # pragma: no cover - no advisory locks: claims always succeed
    fcntl = None  # type: ignore[assignment]

CLAIM_PREFIX = ".lock-"


@dataclass
class Claim:
    """An exclusive claim on one run folder: an ``flock`` on ``.lock-<run>`` beside it.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a claim is never stale
    for long; ``release`` removes the lock file.
    """

    path: Path
    fd: int | None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()  # while still holding the lock: a waiter then retries on a fresh file
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def _lock(path: Path) -> int | None:
    """An fd holding ``flock(path)``, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # the previous holder may have removed the file after we opened it: lock a fresh one
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                try:  # the holder's pid, so a waiting sweep can say who holds the run
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                except OSError:  # a full disk must not stop the claim itself
                    pass
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def claim_run(run_dir: str | os.PathLike) -> Claim | None:
    """Claim ``run_dir`` for this process (creating its parent), or ``None`` if another holds it.

    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "smoke" / "echo-run"
    >>> c = claim_run(run)
    >>> c is not None, claim_run(run)    # a second claim fails while the first is held
    (True, None)
    >>> c.release(); c2 = claim_run(run); c2 is not None
    True
    >>> c2.release()
    """
    run_dir = Path(run_dir)
    path = run_dir.parent / f"{CLAIM_PREFIX}{run_dir.name}"
    if fcntl is None:
        return Claim(path, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _lock(path)
    return None if fd is None else Claim(path, fd)


def remove_stale_claims(folder: str | os.PathLike) -> int:
    """Remove lock files in ``folder`` whose holder is gone (e.g. a SIGKILLed sweep); return how many."""
    n = 0
    if fcntl is None or not Path(folder).is_dir():
        return 0
    for p in Path(folder).iterdir():
        if p.name.startswith(CLAIM_PREFIX) and p.is_file():
            fd = _lock(p)
            if fd is not None:
                Claim(p, fd).release()
                n += 1
    return n


# -- reading --------------------------------------------------------------------------------
def is_complete(run_dir: str | os.PathLike) -> bool:
    """True iff the run's summary.json (in its folder or its sweep's pack) parses as a JSON object."""
    try:
        read_record_json(run_dir, "summary.json")
    except StoreError:
        return False
    return True


def iter_run_dirs(root: str | os.PathLike) -> Iterator[Path]:
    """Run folders under ``root`` (any folder holding config.json or summary.json), sorted, and
    the runs of every sweep pack (``<sweep>/records.parquet``) at the paths their folders would have.

    Does not descend into run folders, hidden/underscore folders (``_scratch``) or the derived
    folders ``tables``, ``figures``, ``benchmarks`` and ``compare``. A damaged pack lists no runs
    (``compact`` names it).
    """
    root = Path(root)
    if not root.is_dir():
        return
    stack = [root]
    found: list[Path] = []
    while stack:
        d = stack.pop()
        if (d / "config.json").is_file() or (d / "summary.json").is_file():
            found.append(d)
            continue
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir())
        except OSError:
            continue
        stack.extend(c for c in children if not c.name.startswith((".", "_")) and c.name not in NON_RUN_DIRS)
        if (d / PACK_FILE).is_file():
            found.extend(packed_run_dirs(d))
    yield from sorted(set(found))


# -- loading --------------------------------------------------------------------------------
def load_run(run_dir: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """One valid run as (flat row with ``RUN_COLUMNS``, its curve frame). Raises ``StoreError``
    naming the first problem (``validate_record`` lists them all)."""
    run_dir = Path(run_dir)
    config, env, summary, curve, problems = _read_record(run_dir)
    if problems:
        raise StoreError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    refs = config["references"]
    notes = config.get("reference_notes") or {}
    style, model, opt = config["style"], config["model"], config["optimizer"]
    row = {
        "run_id": run_dir.name,
        "device_tag": run_dir.parent.parent.name,
        "sweep": config["sweep"],
        "task": config["task"],
        "loss_kind": config["loss"],
        "style_preset": style["preset"],
        "style_label": style["label"],
        "style_spec": style["spec"],
        "style_n": style["n"],
        "k1": style["k1"],
        "k2": style["k2"],
        "pi": style["pi"],
        "cell": model["cell"],
        "hidden_size": model["hidden_size"],
        "optimizer": opt["name"],
        "lr": opt["lr"],
        "clip": config["clip"],
        "seed": config["seed"],
        "device": config["device"],
        "device_name": env["device_name"],
        **{k: summary[k] for k in SUMMARY_KEYS if k in RUN_COLUMNS},
        "ref_optimal": refs["optimal"],
        "ref_partial": refs.get("partial"),
        "ref_no_memory": refs.get("no_memory"),
        "torch_version": env["torch_version"],
        "cuda_version": env["cuda_version"],
        "git_commit": env["git_commit"],
        "ref_optimal_note": notes.get("optimal"),
        "ref_partial_note": notes.get("partial"),
        "ref_no_memory_note": notes.get("no_memory"),
        "warmup_updates": summary["warmup_updates"],
        "error": summary["error"],
        "git_dirty": env["git_dirty"],
        "run_dir": str(run_dir),
    }
    row.update({k: summary.get(k) for k in SUMMARY_OPTIONAL_KEYS if k in RUN_COLUMNS})
    if "failure_kind" in RUN_COLUMNS:
        row["failure_kind"] = failure_kind_of(summary)
    budget = config["budget"] if isinstance(config.get("budget"), Mapping) else {}
    row.update(
        expected_backprop_steps=summary.get("expected_backprop_steps"),
        budget_mode=budget.get("mode"),
        row_len=budget.get("row_len"),
        episode_len=budget.get("episode_len"),
    )
    return row, curve


def _check_types(row: Mapping[str, Any], columns: Mapping[str, str]) -> None:
    """Numbers where the columns hold numbers (None allowed), so one bad run cannot spoil the frame."""
    for col, dtype in columns.items():
        v = row.get(col)
        if dtype == "object" or v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise StoreError(f"{col}={_cut(v)} is not a number")
        if dtype in ("Int64", "int64") and isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise StoreError(f"{col}={_cut(v)} is not an integer")
        if dtype in ("Int64", "int64") and not -INT64_MAX - 1 <= v <= INT64_MAX:
            raise StoreError(f"{col}={_cut(v)} is outside int64")


def _frame(rows: list[dict], columns: Mapping[str, str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    for col, dtype in columns.items():
        if dtype == "object":
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        else:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(dtype)
    return df


@dataclass(frozen=True)
class LoadedRuns:
    """``runs``: one row per complete run; ``curves``: long format; ``skipped``: [(path, reason)]."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_runs(root: str | os.PathLike) -> LoadedRuns:
    """Load every run folder under ``root``; bad folders go to ``skipped``, never raise.

    Rows are sorted by (device_tag, sweep, task, run_id); curves keep each run's row order.

    >>> import secrets
    >>> import tempfile
    >>> loaded = load_runs(tempfile.mkdtemp())
    >>> len(loaded.runs), list(loaded.curves.columns)[:3], loaded.skipped
    (0, ['run_id', 'device_tag', 'sweep'], [])
    """
    return load_folders(iter_run_dirs(root))


def load_folders(run_dirs: Iterable[str | os.PathLike], splits: Iterable[str] | None = None) -> LoadedRuns:
    """``load_runs`` for an explicit list of run folders; ``splits`` keeps only those curve rows
    (the report draws validation curves: training rows are most of a long run's curve)."""
    rows, curves, skipped = [], [], []
    keep = None if splits is None else list(splits)
    for run_dir in sorted(Path(d) for d in run_dirs):
        try:
            row, curve = load_run(run_dir)
            _check_types(row, RUN_COLUMNS)
        except (StoreError, ValueError, TypeError) as e:
            skipped.append((run_dir, str(e)))
            continue
        rows.append(row)
        curves.append(curve if keep is None else curve[curve["split"].isin(keep)])
    keys = ["device_tag", "sweep", "task", "run_id"]
    runs = _frame(rows, RUN_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    curves_df = _curves_frame(rows, curves).sort_values(keys, kind="stable").reset_index(drop=True)
    return LoadedRuns(runs=runs, curves=curves_df, skipped=skipped)


def _curves_frame(rows: list[dict], curves: list[pd.DataFrame]) -> pd.DataFrame:
    """Every run's curve in long format, with its run's key columns repeated on each row.

    Built column by column with explicit dtypes (no per-row dicts, no string inference): a full
    sweep's curves are millions of rows.
    """
    body = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=list(CURVE_COLUMNS_V2))
    run_of_row = np.repeat(np.arange(len(rows)), [len(c) for c in curves])
    data: dict[str, pd.Series] = {}
    for col, dtype in CURVES_COLUMNS.items():
        if col in CURVE_COLUMNS_V2:
            values = body[col] if col in body else pd.Series([None] * len(body), dtype=object)
        else:
            per_run = np.empty(len(rows), dtype=object)
            per_run[:] = [row[col] for row in rows]
            values = pd.Series(per_run[run_of_row], dtype=object)
        if dtype == "object":
            data[col] = pd.Series(values.to_numpy(dtype=object), dtype=object)
        else:
            data[col] = pd.Series(pd.to_numeric(values, errors="raise").astype(dtype).array)
    return pd.DataFrame(data, columns=list(CURVES_COLUMNS))
