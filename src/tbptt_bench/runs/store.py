"""The results store: write one run's records atomically, load many runs as tidy DataFrames.

Layout (fixed by the project): ``<root>/<device_tag>/<sweep>/<run_id>/`` holding
``config.json``, ``env.json``, ``curve.parquet`` (``curve.csv`` in records written before it; see
``runs/curves.py``) and, written last, ``summary.json``.
``is_complete``: ``summary.json`` exists and parses (cheap). ``validate_record``: the one
definition of a valid record -- types and bounds of every field, the summary against the curve,
the folder name against the config's hash -- used by the sweep, the report, compare and
``load_runs`` alike (see docs/reliability.md). Torch-free.

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

import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .curves import (
    CURVE_COLUMNS,
    CURVE_COLUMNS_V2,
    CURVE_FILE,
    INT64_MAX,
    LEGACY_CURVE_FILE,
    MAX_SECONDS,
    compact_curve,
    curve_file,
    read_curve,
    write_curve,
)
from .record_io import StoreError, _cut, cut_text, write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = [
    "CONFIG_KEYS",
    "CURVES_COLUMNS",
    "CURVE_COLUMNS",
    "CURVE_FILE",
    "ENV_KEYS",
    "LEGACY_CURVE_FILE",
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
    "load_run",
    "load_runs",
    "read_curve",
    "remove_stale_claims",
    "validate_record",
    "write_bytes_atomic",
    "write_curve",
    "write_json_atomic",
    "write_run",
    "write_text_atomic",
]


# -- the schema (common brief) ----------------------------------------------------------------
CONFIG_KEYS = (
    "task",
    "task_params",
    "loss",
    "references",
    "style",
    "model",
    "optimizer",
    "clip",
    "budget",
    "seed",
    "sweep",
    "device",
)
ENV_KEYS = (
    "device_kind",
    "device_name",
    "torch_version",
    "cuda_version",
    "cudnn_version",
    "cpu_model",
    "cpu_threads",
    "python_version",
    "platform",
    "package_version",
    "git_commit",
    "git_dirty",
)
SUMMARY_KEYS = (
    "status",
    "error",
    "min_val_loss",
    "final_val_loss",
    "train_wall_s",
    "eval_wall_s",
    "warmup_updates",
    "updates",
    "timesteps",
    "updates_per_s",
    "timesteps_per_s",
    "peak_mem_bytes",
    "peak_mem_source",
    "saved_for_backward_peak_bytes",
    "clip_rate",
    "diverged_at_update",
    "engine_path",
)
#: Summary keys of the newer protocol: optional, so records written before it stay valid ("n/a").
SUMMARY_OPTIONAL_KEYS = (
    "forward_steps",
    "backprop_steps",
    "test_loss",
    "best_val_before_divergence",
    "failure_kind",
    "config_hash",
)
STATUSES = ("ok", "diverged", "failed")
#: Why a run failed: "infrastructure" (its worker was killed, ran out of memory or disk) is retried by
#: the next sweep; "deterministic" (an exception the run itself raises) only with ``--retry-failed``.
FAILURE_KINDS = ("infrastructure", "deterministic")
#: A run whose last validation loss is above this is a blow-up, not a result: the harness records
#: it "diverged" (the tasks' losses are O(1): CE <= log(vocabulary), MSE of targets in [0, 2];
#: e.g. a CE of 6.3e29 was recorded "ok"). Transients above it that training recovers from are fine.
BLOWUP_LOSS = 1e6
#: Rates (per second) above this are damage too: ~1e5 times the fastest GPU run measured here.
MAX_RATE = 1e15
#: Losses are computed in float32: a finite one beyond its largest value is damage (1e308 broke the
#: figures' axes).
MAX_LOSS = 3.4028234663852886e38
LOSSES = ("ce", "mse")
#: Folders under a results root that hold derived files, never runs.
NON_RUN_DIRS = frozenset({"tables", "figures", "benchmarks", "compare"})

#: Column -> pandas dtype of ``LoadedRuns.runs`` (the listed columns, then a few extras).
RUN_COLUMNS: dict[str, str] = {
    "run_id": "object",
    "device_tag": "object",
    "sweep": "object",
    "task": "object",
    "loss_kind": "object",
    "style_preset": "object",
    "style_label": "object",
    "style_spec": "object",
    "style_n": "Int64",
    "k1": "Int64",
    "k2": "Int64",
    "pi": "float64",
    "cell": "object",
    "hidden_size": "Int64",
    "optimizer": "object",
    "lr": "float64",
    "clip": "float64",
    "seed": "Int64",
    "device": "object",
    "device_name": "object",
    "status": "object",
    "min_val_loss": "float64",
    "final_val_loss": "float64",
    "train_wall_s": "float64",
    "eval_wall_s": "float64",
    "updates": "Int64",
    "timesteps": "Int64",
    "updates_per_s": "float64",
    "timesteps_per_s": "float64",
    "peak_mem_bytes": "Int64",
    "peak_mem_source": "object",
    "saved_for_backward_peak_bytes": "Int64",
    "clip_rate": "float64",
    "diverged_at_update": "Int64",
    "engine_path": "object",
    "ref_optimal": "float64",
    "ref_partial": "float64",
    "ref_no_memory": "float64",
    "torch_version": "object",
    "cuda_version": "object",
    "git_commit": "object",
    # extras (not in the fixed list; appended so the listed ones keep their order)
    "ref_optimal_note": "object",
    "ref_partial_note": "object",
    "ref_no_memory_note": "object",
    "warmup_updates": "Int64",
    "error": "object",
    "git_dirty": "object",
    "run_dir": "object",
    # the newer protocol's summary keys (None, shown "n/a", for records written before them)
    "failure_kind": "object",
    "forward_steps": "Int64",
    "backprop_steps": "Int64",
    "test_loss": "float64",
    "best_val_before_divergence": "float64",
    "config_hash": "object",
    # what the fair tables need to name a run's budget axis (config.json's budget; None when older)
    "expected_backprop_steps": "float64",
    "budget_mode": "object",
    "row_len": "Int64",
    "episode_len": "Int64",
}
CURVES_COLUMNS: dict[str, str] = {
    "run_id": "object",
    "device_tag": "object",
    "sweep": "object",
    "task": "object",
    "style_label": "object",
    "style_spec": "object",
    "lr": "float64",
    "seed": "Int64",
    "split": "object",
    "update": "int64",
    "timesteps": "int64",
    "backprop_steps": "Int64",  # cumulative; <NA> in curves written before the protocol counted it
    "train_wall_s": "float64",
    "loss": "float64",
}


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
def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StoreError(f"{path.name} is unreadable: {cut_text(str(e) or type(e).__name__, 200)}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{path.name} is not a JSON object")
    return obj


def is_complete(run_dir: str | os.PathLike) -> bool:
    """True iff ``run_dir/summary.json`` exists and parses as a JSON object."""
    try:
        _read_json(Path(run_dir) / "summary.json")
    except StoreError:
        return False
    return True


def iter_run_dirs(root: str | os.PathLike) -> Iterator[Path]:
    """Run folders under ``root`` (any folder holding config.json or summary.json), sorted.

    Does not descend into run folders, hidden/underscore folders (``_scratch``) or the derived
    folders ``tables``, ``figures``, ``benchmarks`` and ``compare``.
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
    yield from sorted(found)


# -- the one definition of a valid record ------------------------------------------------------
# Every reader (the sweep's plan, report, compare, load_runs) asks ``validate_record``; a record it
# finds problems with is skipped with one warning line and rerun by the next sweep.
_TEXT, _INT, _NUM, _BOOL, _VERSION = "text", "int", "num", "bool", "version"


class _Field:
    """One JSON field: its kind, whether null is allowed, and bounds (inclusive unless noted)."""

    def __init__(
        self,
        kind: str,
        null: bool = False,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        choices: Sequence[Any] | None = None,
    ):
        self.kind, self.null, self.lo, self.hi, self.lo_open, self.choices = (
            kind,
            null,
            lo,
            hi,
            lo_open,
            choices,
        )

    def problem(self, name: str, v: Any) -> str | None:
        if v is None:
            return None if self.null else f"{name} is null: it must be a {self.kind}"
        if self.choices is not None:
            return None if v in self.choices else f"{name}={_cut(v)} is not one of {list(self.choices)}"
        if self.kind == _TEXT:
            return None if isinstance(v, str) else f"{name}={_cut(v)} is not text"
        if self.kind == _VERSION:  # e.g. torch.backends.cudnn.version() is an int, others text
            ok = isinstance(v, str) or (
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX
            )
            return None if ok else f"{name}={_cut(v)} is not a version (text or integer >= 0)"
        if self.kind == _BOOL:
            return None if isinstance(v, bool) else f"{name}={_cut(v)} is not true/false"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{name}={_cut(v)} is not a number"
        if self.kind == _INT:
            if not isinstance(v, int):
                return f"{name}={_cut(v)} is not an integer"
            lo, hi = (0 if self.lo is None else self.lo), (INT64_MAX if self.hi is None else self.hi)
        else:
            if not math.isfinite(v):
                return f"{name}={v!r} is not a finite number"
            lo, hi = self.lo, self.hi
        if lo is not None and (v <= lo if self.lo_open else v < lo):
            return f"{name}={_cut(v)} is below its bound {'>' if self.lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"{name}={_cut(v)} is above its bound <= {hi}"
        return None


_CONFIG_SCHEMA: dict[str, _Field] = {
    "task": _Field(_TEXT),
    "loss": _Field(_TEXT, choices=LOSSES),
    "clip": _Field(_NUM, null=True, lo=0, lo_open=True),
    "seed": _Field(_INT),
    "sweep": _Field(_TEXT),
    "device": _Field(_TEXT),
    "style.preset": _Field(_TEXT),
    "style.label": _Field(_TEXT),
    "style.spec": _Field(_TEXT),
    "style.n": _Field(_INT, null=True, lo=1),
    "style.k1": _Field(_INT, null=True, lo=1),
    "style.k2": _Field(_INT, null=True, lo=1),
    "style.pi": _Field(_NUM, null=True, lo=0, lo_open=True, hi=1),
    "model.cell": _Field(_TEXT),
    "model.hidden_size": _Field(_INT, lo=1),
    "optimizer.name": _Field(_TEXT),
    "optimizer.lr": _Field(_NUM, lo=0, lo_open=True),
    "references.optimal": _Field(_NUM, null=True),
}
_ENV_SCHEMA: dict[str, _Field] = {k: _Field(_TEXT, null=True) for k in ENV_KEYS} | {
    "cpu_threads": _Field(_INT, null=True),
    "cudnn_version": _Field(_VERSION, null=True),
    "git_dirty": _Field(_BOOL, null=True),
}
_LOSS = _Field(_NUM, null=True, lo=-MAX_LOSS, hi=MAX_LOSS)
_SUMMARY_SCHEMA: dict[str, _Field] = {
    "status": _Field(_TEXT, choices=STATUSES),
    "error": _Field(_TEXT, null=True),
    "min_val_loss": _LOSS,
    "final_val_loss": _LOSS,
    "train_wall_s": _Field(_NUM, lo=0, hi=MAX_SECONDS),
    "eval_wall_s": _Field(_NUM, lo=0, hi=MAX_SECONDS),
    "warmup_updates": _Field(_INT),
    "updates": _Field(_INT),
    "timesteps": _Field(_INT),
    "updates_per_s": _Field(_NUM, null=True, lo=0, hi=MAX_RATE),
    "timesteps_per_s": _Field(_NUM, null=True, lo=0, hi=MAX_RATE),
    "peak_mem_bytes": _Field(_INT, null=True),
    "peak_mem_source": _Field(_TEXT, null=True),
    "saved_for_backward_peak_bytes": _Field(_INT, null=True),
    "clip_rate": _Field(_NUM, lo=0, hi=1),
    "diverged_at_update": _Field(_INT, null=True),
    "engine_path": _Field(_TEXT),
    # the newer protocol's keys: optional (absent in older records), checked when present
    "forward_steps": _Field(_INT, null=True),
    "backprop_steps": _Field(_INT, null=True),
    "test_loss": _LOSS,
    "best_val_before_divergence": _LOSS,
    "failure_kind": _Field(_TEXT, null=True, choices=(*FAILURE_KINDS, None)),
    "config_hash": _Field(_TEXT, null=True),
}


def _lookup(obj: Mapping, dotted: str) -> tuple[bool, Any]:
    cur: Any = obj
    for k in dotted.split("."):
        if not isinstance(cur, Mapping) or k not in cur:
            return False, None
        cur = cur[k]
    return True, cur


def _check_schema(obj: Mapping, schema: Mapping[str, _Field], what: str, optional=()) -> list[str]:
    problems = []
    for key, spec in schema.items():
        found, v = _lookup(obj, key)
        if not found:
            if key not in optional:
                problems.append(f"{what} is missing key {key!r}")
            continue
        p = spec.problem(f"{what} {key}", v)
        if p:
            problems.append(p)
    return problems


def _json_numbers(obj: Any, where: str) -> list[str]:
    """Free-form JSON (task_params, references, budget): integers within int64, floats finite."""
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in _json_numbers(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _json_numbers(v, f"{where}[{i}]")]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, int) and not -INT64_MAX - 1 <= obj <= INT64_MAX:
        return [f"{where}={_cut(obj)} is outside int64"]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [f"{where}={obj!r} is not a finite number"]
    return []


def expected_run_id(config: Mapping[str, Any]) -> str:
    """The run id ``config.json`` hashes to (``RunConfig.run_id``); ``StoreError`` if it cannot be built.

    A run folder whose name differs holds an edited config: it would be filed under another cell.
    The hash is recomputed from the config's own fields in ``RunConfig.to_dict``'s layout, budget
    as recorded, so records of an earlier protocol (another set of budget keys) check out too.
    """
    from .spec import style_slug

    try:
        if not isinstance(config["budget"], Mapping) or not isinstance(config["task_params"], Mapping):
            raise TypeError("budget and task_params must be objects")
        fields = {
            "task": config.get("task_source", config["task"]),
            "task_params": config["task_params"],
            "cell": config["model"]["cell"],
            "hidden_size": config["model"]["hidden_size"],
            "optimizer": config["optimizer"]["name"],
            "lr": config["optimizer"]["lr"],
            "clip": config["clip"],
            "style": config["style"]["spec"],
            "budget": config["budget"],
            "seed": config["seed"],
            "sweep": config["sweep"],
        }
        for key in ("task", "cell", "optimizer", "style", "sweep"):
            if not isinstance(fields[key], str):
                raise TypeError(f"{key} must be text")
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return (
            f"{style_slug(fields['task'])}-{style_slug(fields['style'])}-{fields['cell']}"
            f"{fields['hidden_size']}-lr{fields['lr']:g}-s{fields['seed']}-{digest}"
        )
    except (KeyError, TypeError, ValueError, OverflowError) as e:
        raise StoreError(f"config.json cannot give a run id ({type(e).__name__}: {_cut(str(e))})") from None


def classify_failure(error: str | None) -> str:
    """``failure_kind`` of a failed run from its error text (records written before the key existed).

    Killed workers, memory and disk exhaustion are the machine's doing ("infrastructure"); any
    other exception is the run's own ("deterministic").

    >>> classify_failure("worker process died (exit code -9)"), classify_failure("ValueError: bad")
    ('infrastructure', 'deterministic')
    """
    text = (error or "").lower()
    markers = (
        "worker process died",
        "worker was killed",
        "memoryerror",
        "out of memory",
        "outofmemoryerror",
        "no space left",
        "disk quota",
        "errno 28",
        "errno 122",
        "ray task failed",
    )
    return "infrastructure" if any(m in text for m in markers) else "deterministic"


def failure_kind_of(summary: Mapping[str, Any]) -> str | None:
    """A failed record's kind (its ``failure_kind``, else classified from its error); None if not failed."""
    if summary.get("status") != "failed":
        return None
    kind = summary.get("failure_kind")
    return kind if kind in FAILURE_KINDS else classify_failure(summary.get("error"))


def _consistency(run_dir: Path, config: dict, summary: dict, curve: list[dict]) -> list[str]:
    """Summary against curve, status against its fields, folder name against the config's hash."""
    problems = []
    status = summary.get("status")
    diverged = status == "diverged"
    name = curve_file(run_dir).name
    first = 2 if name == LEGACY_CURVE_FILE else 1  # a CSV's first row is line 2, under the header
    for i, row in enumerate(curve):
        if not math.isfinite(row["loss"]) and not diverged:
            problems.append(
                f"{name} row {i + first} loss={row['loss']!r} is not finite in a run with status {status!r}"
            )
            break
        if math.isfinite(row["loss"]) and abs(row["loss"]) > MAX_LOSS:
            problems.append(
                f"{name} row {i + first} loss={row['loss']!r} is beyond float32 (|loss| <= {MAX_LOSS:g})"
            )
            break
    train = [r for r in curve if r["split"] == "train"]
    updates = summary.get("updates")
    if isinstance(updates, int) and not isinstance(updates, bool):
        if len(train) != updates:
            problems.append(f"{name} has {len(train)} train rows but summary.json counts {updates} updates")
        elif train and train[-1]["update"] != updates:
            problems.append(
                f"{name}'s last train row is update {train[-1]['update']} but summary.json counts {updates}"
            )
    ts = summary.get("timesteps")
    if train and isinstance(ts, int) and train[-1]["timesteps"] != ts:
        problems.append(f"{name} ends at timestep {train[-1]['timesteps']} but summary.json says {ts}")
    val = [r["loss"] for r in curve if r["split"] == "val" and math.isfinite(r["loss"])]
    mv = summary.get("min_val_loss")
    if isinstance(mv, (int, float)) and not isinstance(mv, bool) and math.isfinite(mv):
        if not val or not math.isclose(mv, min(val), rel_tol=1e-9, abs_tol=1e-12):
            have = f"min {min(val)!r}" if val else "no finite validation loss"
            problems.append(f"summary.json min_val_loss={mv!r} disagrees with {name} ({have})")
    elif mv is None and val:
        problems.append(
            f"summary.json min_val_loss is null but {name} has validation losses (min {min(val)!r})"
        )
    at = summary.get("diverged_at_update")
    if diverged and at is None:
        problems.append("summary.json status 'diverged' has no diverged_at_update")
    if status == "ok" and at is not None:
        problems.append(f"summary.json status 'ok' has diverged_at_update={_cut(at)}")
    if status != "failed" and summary.get("failure_kind") is not None:
        problems.append(
            f"summary.json failure_kind={_cut(summary['failure_kind'])} in a run with status {status!r}"
        )
    try:
        want = expected_run_id(config)
    except StoreError as e:
        problems.append(str(e))
    else:
        if want != run_dir.name:
            problems.append(
                f"config.json hashes to run id {want}, not to its folder name {_cut(run_dir.name)} (edited?)"
            )
        ch = summary.get("config_hash")
        if ch is not None and isinstance(ch, str) and not want.endswith("-" + ch):
            problems.append(
                f"summary.json config_hash={_cut(ch)} is not the config's hash {want.rsplit('-', 1)[-1]}"
            )
    if run_dir.parent.name != config.get("sweep"):
        problems.append(
            f"config.json sweep={_cut(config.get('sweep'))} but the run sits in folder {_cut(run_dir.parent.name)}"
        )
    return problems


def _read_record(run_dir: Path) -> tuple[dict, dict, dict, list[dict], list[str]]:
    """The four files and every problem found in them (stops early only when a file is unreadable)."""
    if not (run_dir / "summary.json").exists():
        raise StoreError("incomplete: no summary.json")
    summary = _read_json(run_dir / "summary.json")
    config = _read_json(run_dir / "config.json")
    env = _read_json(run_dir / "env.json")
    problems: list[str] = []
    for obj, keys, what in ((config, CONFIG_KEYS, "config.json"), (env, ENV_KEYS, "env.json")):
        missing = [k for k in keys if k not in obj]
        if missing:
            problems.append(f"{what} is missing keys {missing}: required are {list(keys)}")
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    if missing:
        problems.append(f"summary.json is missing keys {missing}: required are {list(SUMMARY_KEYS)}")
    problems += _check_schema(config, _CONFIG_SCHEMA, "config.json")
    for key in ("task_params", "references", "budget"):
        if key in config and not isinstance(config[key], Mapping):
            problems.append(f"config.json {key}={_cut(config[key])} is not an object")
        elif key in config:
            problems += _json_numbers(config[key], f"config.json {key}")
    notes = config.get("reference_notes")
    if notes is not None and not (
        isinstance(notes, Mapping) and all(isinstance(v, str) for v in notes.values())
    ):
        problems.append(f"config.json reference_notes={_cut(notes)} is not an object of texts")
    problems += _check_schema(env, {k: f for k, f in _ENV_SCHEMA.items() if k in env}, "env.json")
    problems += _check_schema(
        summary,
        {k: f for k, f in _SUMMARY_SCHEMA.items() if k in summary or k not in SUMMARY_KEYS},
        "summary.json",
        optional=SUMMARY_OPTIONAL_KEYS,
    )
    curve = read_curve(run_dir)
    if not problems:  # consistency needs well-typed fields
        problems += _consistency(run_dir, config, summary, curve)
    return config, env, summary, curve, problems


def validate_record(run_dir: str | os.PathLike) -> list[str]:
    """Every reason ``run_dir`` is not a valid run record (an empty list when it is one).

    The one definition of a valid record, used by the sweep (which reruns invalid ones), the
    report, compare and ``load_runs`` (which skip them with one warning line each):

    - the four files parse; config.json, env.json and summary.json have every required key and
      each field its type (text is text, integers within int64 and >= 0 where counts, numbers
      finite and within bounds), the newer summary keys (``SUMMARY_OPTIONAL_KEYS``) only when present;
    - the curve (parquet, or CSV in older records) has one of the two layouts, whole rows, finite losses unless the run diverged;
    - the summary agrees with the curve (one train row per update, last timestep, min val loss)
      and with its status; the folder name is the run id the config hashes to.

    >>> import tempfile
    >>> validate_record(tempfile.mkdtemp())
    ['incomplete: no summary.json']
    """
    try:
        return _read_record(Path(run_dir))[4]
    except StoreError as e:
        return [str(e)]


def load_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict]]:
    """One valid run as (flat row with ``RUN_COLUMNS``, curve rows). Raises ``StoreError`` naming
    the first problem (``validate_record`` lists them all)."""
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


def check_run(run_dir: str | os.PathLike) -> str | None:
    """Why ``run_dir`` is not a valid run (its first problem; ``None`` when it is one).

    >>> import tempfile
    >>> check_run(tempfile.mkdtemp())
    'incomplete: no summary.json'
    """
    problems = validate_record(run_dir)
    if not problems:
        return None
    return problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


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
    rows, curves, skipped = [], [], []
    for run_dir in iter_run_dirs(root):
        try:
            row, curve = load_run(run_dir)
            _check_types(row, RUN_COLUMNS)
        except (StoreError, ValueError, TypeError) as e:
            skipped.append((run_dir, str(e)))
            continue
        rows.append(row)
        base = {k: row[k] for k in CURVES_COLUMNS if k not in CURVE_COLUMNS_V2}
        curves.extend({**base, **r} for r in curve)
    keys = ["device_tag", "sweep", "task", "run_id"]
    runs = _frame(rows, RUN_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    curves_df = _frame(curves, CURVES_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    return LoadedRuns(runs=runs, curves=curves_df, skipped=skipped)
