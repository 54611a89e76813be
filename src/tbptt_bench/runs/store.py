"""The results store: write one run's records atomically, load many runs as tidy DataFrames.

Layout (fixed by the project): ``<root>/<device_tag>/<sweep>/<run_id>/`` holding
``config.json``, ``env.json``, ``curve.csv`` and, written last, ``summary.json``.
A run is complete iff ``summary.json`` exists and parses. Torch-free.

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

import csv
import io
import json
import math
import os
import secrets
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import BenchError

__all__ = [
    "CONFIG_KEYS",
    "CURVES_COLUMNS",
    "CURVE_COLUMNS",
    "ENV_KEYS",
    "RUN_COLUMNS",
    "SUMMARY_KEYS",
    "SUMMARY_OPTIONAL_KEYS",
    "Claim",
    "LoadedRuns",
    "StoreError",
    "check_run",
    "claim_run",
    "is_complete",
    "iter_run_dirs",
    "load_run",
    "load_runs",
    "remove_stale_claims",
    "write_json_atomic",
    "write_run",
    "write_text_atomic",
]


class StoreError(BenchError):
    """Records that do not follow the results schema."""


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
#: Summary keys of the run protocol (docs/semantics.md, "Fair comparison"): every new record
#: writes them; records written before them load with None ("n/a" in the report).
SUMMARY_OPTIONAL_KEYS = (
    "forward_steps",
    "backprop_steps",
    "test_loss",
    "best_val_before_divergence",
    "failure_kind",
    "config_hash",
)
CURVE_COLUMNS = ("split", "update", "timesteps", "backprop_steps", "train_wall_s", "loss")
#: The curve.csv header before ``backprop_steps`` (still read; the column loads as missing).
LEGACY_CURVE_COLUMNS = ("split", "update", "timesteps", "train_wall_s", "loss")
STATUSES = ("ok", "diverged", "failed")
LOSSES = ("ce", "mse")
SPLITS = ("train", "val")
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
    # the fair-comparison protocol's fields (issue #12); None in records that predate it
    "forward_steps": "Int64",
    "backprop_steps": "Int64",
    "expected_backprop_steps": "float64",
    "test_loss": "float64",
    "best_val_before_divergence": "float64",
    "failure_kind": "object",
    "config_hash": "object",
    "budget_mode": "object",
    "row_len": "Int64",
    "episode_len": "Int64",
}
#: Summary keys of the fair-comparison protocol: optional, so older records still load.
PROTOCOL_SUMMARY_KEYS = (
    "forward_steps",
    "backprop_steps",
    "expected_backprop_steps",
    "test_loss",
    "best_val_before_divergence",
    "failure_kind",
    "config_hash",
)
#: Optional curve column (cumulative backprop steps); present in the curves frame only when some
#: loaded run has it, so frames of older records keep their columns.
CURVE_BACKPROP = "backprop_steps"
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
    "backprop_steps": "Int64",
    "train_wall_s": "float64",
    "loss": "float64",
}


# -- writing --------------------------------------------------------------------------------
def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats are written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same folder, fsync, ``os.replace``.

    Readers see the old file or the new one, never a half-written one. Creates parent folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _json_default(obj: Any) -> Any:
    """numpy/torch scalars (anything with ``.item()``) as plain numbers; non-finite as null."""
    if hasattr(obj, "item"):
        return _finite_or_none(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (non-finite floats become null)."""
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_text_atomic(path, text + "\n")


def _check_keys(obj: Any, keys: Sequence[str], what: str) -> None:
    if not isinstance(obj, Mapping):
        raise StoreError(f"{what}={type(obj).__name__} is not allowed: it must be a JSON object (dict)")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise StoreError(f"{what} is missing keys {missing}: required are {list(keys)}")


def _curve_header(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """CURVE_COLUMNS; rows without ``backprop_steps`` (written by the earlier protocol) keep the
    legacy header."""
    if rows and CURVE_BACKPROP not in rows[0]:
        return LEGACY_CURVE_COLUMNS
    return CURVE_COLUMNS


def _curve_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    header = _curve_header(rows)
    w.writerow(header)
    for i, row in enumerate(rows):
        if set(row) != set(header):
            raise StoreError(f"curve row {i} has keys {sorted(row)}: exactly {list(header)} are allowed")
        if row["split"] not in SPLITS:
            raise StoreError(f"curve row {i} split={row['split']!r} is not allowed: use one of {SPLITS}")
        w.writerow(
            [
                row["split"],
                int(row["update"]),
                int(row["timesteps"]),
                *([int(row[CURVE_BACKPROP])] if CURVE_BACKPROP in header else []),
                repr(float(row["train_wall_s"])),
                repr(float(row["loss"])),
            ]
        )
    return buf.getvalue()


def write_run(
    run_dir: str | os.PathLike,
    config: Mapping,
    env: Mapping,
    curve_rows: Sequence[Mapping[str, Any]],
    summary: Mapping,
) -> None:
    """Write one run: config.json, env.json, curve.csv, then summary.json last (each atomically).

    An existing summary.json is removed first, so a folder being rewritten never looks complete
    while it mixes two runs. Missing schema keys raise ``StoreError`` before anything is written.
    """
    _check_keys(config, CONFIG_KEYS, "config")
    _check_keys(env, ENV_KEYS, "env")
    _check_keys(summary, SUMMARY_KEYS, "summary")
    if summary["status"] not in STATUSES:
        raise StoreError(f"summary status={summary['status']!r} is not allowed: use one of {STATUSES}")
    curve_text = _curve_csv(curve_rows)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    write_json_atomic(run_dir / "config.json", config)
    write_json_atomic(run_dir / "env.json", env)
    write_text_atomic(run_dir / "curve.csv", curve_text)
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path.name} is unreadable: {e}") from None
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


def _read_curve(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"curve.csv is unreadable: {e}") from None
    if text and not text.endswith("\n"):  # every row ends in a newline: a cut inside the last row
        raise StoreError("curve.csv is truncated: its last row has no newline")  # can leave valid numbers
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) not in (CURVE_COLUMNS, LEGACY_CURVE_COLUMNS):
        raise StoreError(f"curve.csv header {header} is not {list(CURVE_COLUMNS)}")
    columns = tuple(header)
    rows = []
    for n, rec in enumerate(reader, start=2):
        if len(rec) != len(columns) or rec[0] not in SPLITS:
            raise StoreError(f"curve.csv line {n} is malformed: {rec}")
        v = dict(zip(columns, rec))
        try:
            rows.append(
                {
                    "split": v["split"],
                    "update": int(v["update"]),
                    "timesteps": int(v["timesteps"]),
                    "backprop_steps": int(v["backprop_steps"]) if "backprop_steps" in v else None,
                    "train_wall_s": float(v["train_wall_s"]),
                    "loss": float(v["loss"]),
                }
            )
        except ValueError:
            raise StoreError(f"curve.csv line {n} has a non-number: {rec}") from None
    return rows


def _get(obj: Mapping, *keys: str, what: str) -> Any:
    cur: Any = obj
    for k in keys:
        if not isinstance(cur, Mapping) or k not in cur:
            raise StoreError(f"{what} is missing key {'.'.join(keys)!r}")
        cur = cur[k]
    return cur


def load_run(run_dir: str | os.PathLike) -> tuple[dict, list[dict]]:
    """One complete run as (flat row with ``RUN_COLUMNS``, curve rows). Raises ``StoreError``."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists():
        raise StoreError("incomplete: no summary.json")
    summary = _read_json(run_dir / "summary.json")
    config = _read_json(run_dir / "config.json")
    env = _read_json(run_dir / "env.json")
    _check_keys(config, CONFIG_KEYS, "config.json")
    _check_keys(env, ENV_KEYS, "env.json")
    _check_keys(summary, SUMMARY_KEYS, "summary.json")
    if summary["status"] not in STATUSES:
        raise StoreError(f"summary.json status={summary['status']!r} is not one of {STATUSES}")
    if config["loss"] not in LOSSES:
        raise StoreError(f"config.json loss={config['loss']!r} is not one of {LOSSES}")
    curve = _read_curve(run_dir / "curve.csv")
    c = "config.json"
    refs = _get(config, "references", what=c)
    notes = config.get("reference_notes") or {}
    budget = config["budget"] if isinstance(config["budget"], Mapping) else {}
    row = {
        "run_id": run_dir.name,
        "device_tag": run_dir.parent.parent.name,
        "sweep": config["sweep"],
        "task": config["task"],
        "loss_kind": config["loss"],
        "style_preset": _get(config, "style", "preset", what=c),
        "style_label": _get(config, "style", "label", what=c),
        "style_spec": _get(config, "style", "spec", what=c),
        "style_n": _get(config, "style", "n", what=c),
        "k1": _get(config, "style", "k1", what=c),
        "k2": _get(config, "style", "k2", what=c),
        "pi": _get(config, "style", "pi", what=c),
        "cell": _get(config, "model", "cell", what=c),
        "hidden_size": _get(config, "model", "hidden_size", what=c),
        "optimizer": _get(config, "optimizer", "name", what=c),
        "lr": _get(config, "optimizer", "lr", what=c),
        "clip": config["clip"],
        "seed": config["seed"],
        "device": config["device"],
        "device_name": env["device_name"],
        **{k: summary[k] for k in SUMMARY_KEYS if k in RUN_COLUMNS},
        **{k: summary.get(k) for k in SUMMARY_OPTIONAL_KEYS},
        "ref_optimal": _get(refs, "optimal", what="config.json references"),
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
        **{k: summary.get(k) for k in PROTOCOL_SUMMARY_KEYS},
        **{k: budget.get(k) for k in ("row_len", "episode_len")},
        "budget_mode": budget.get("mode"),
    }
    return row, curve


def check_run(run_dir: str | os.PathLike) -> str | None:
    """Why ``run_dir`` is not a complete, readable run (``None`` when it is one).

    Stricter than ``is_complete``: every file must parse and follow the schema, as ``load_runs``
    needs. The sweep reruns folders with a reason; the report skips them with it.

    >>> import tempfile
    >>> check_run(tempfile.mkdtemp())
    'incomplete: no summary.json'
    """
    try:
        row, _ = load_run(run_dir)
        _check_types(row, RUN_COLUMNS)
    except (StoreError, ValueError, TypeError) as e:
        return str(e)
    return None


def _check_types(row: Mapping[str, Any], columns: Mapping[str, str]) -> None:
    """Numbers where the columns hold numbers (None allowed), so one bad run cannot spoil the frame."""
    for col, dtype in columns.items():
        v = row.get(col)
        if dtype == "object" or v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise StoreError(f"{col}={v!r} is not a number")
        if dtype in ("Int64", "int64") and isinstance(v, float) and not (math.isfinite(v) and v.is_integer()):
            raise StoreError(f"{col}={v!r} is not an integer")


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
        base = {k: row[k] for k in CURVES_COLUMNS if k not in CURVE_COLUMNS}
        curves.extend({**base, **r} for r in curve)
    keys = ["device_tag", "sweep", "task", "run_id"]
    runs = _frame(rows, RUN_COLUMNS).sort_values(keys, kind="stable").reset_index(drop=True)
    curve_cols = dict(CURVES_COLUMNS)
    if any(CURVE_BACKPROP in r for r in curves):
        curve_cols[CURVE_BACKPROP] = "Int64"
    curves_df = _frame(curves, curve_cols).sort_values(keys, kind="stable").reset_index(drop=True)
    return LoadedRuns(runs=runs, curves=curves_df, skipped=skipped)
