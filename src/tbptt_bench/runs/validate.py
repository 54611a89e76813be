"""The one definition of a valid run record: read its four files and list every problem in them.

``validate_record`` checks each field's type and bounds (``schema.py``), the summary against the
curve, the status against its fields, and the folder name against the config's hash;
``check_run`` gives the first problem in one line, ``expected_run_id`` the folder name a
config hashes to, ``classify_failure``/``failure_kind_of`` why a failed run failed. Used by the
sweep, the report, compare and ``load_runs`` alike (see docs/reliability.md). Torch-free.

>>> import tempfile
>>> check_run(tempfile.mkdtemp())
'incomplete: no summary.json'
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .curves import LEGACY_CURVE_FILE, curve_file, read_curve_frame
from .packs import PACK_FILE, Pack, pack_of
from .record_io import StoreError, _cut, cut_text
from .schema import (
    _CONFIG_SCHEMA,
    _ENV_SCHEMA,
    _SUMMARY_SCHEMA,
    CONFIG_KEYS,
    ENV_KEYS,
    FAILURE_KINDS,
    MAX_LOSS,
    SUMMARY_KEYS,
    SUMMARY_OPTIONAL_KEYS,
    _check_schema,
    _json_numbers,
)

__all__ = [
    "check_run",
    "classify_failure",
    "expected_run_id",
    "failure_kind_of",
    "read_record_json",
    "record_exists",
    "validate_record",
]


# -- the one definition of a valid record ------------------------------------------------------
# Every reader (the sweep's plan, report, compare, load_runs) asks ``validate_record``; a record it
# finds problems with is skipped with one warning line and rerun by the next sweep.
def _read_json(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"{path.name} is unreadable: {cut_text(str(e) or type(e).__name__, 200)}") from None
    return _parse_json(text, path.name)


def _parse_json(text: str, name: str) -> dict:
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise StoreError(f"{name} is unreadable: {cut_text(str(e) or type(e).__name__, 200)}") from None
    if not isinstance(obj, dict):
        raise StoreError(f"{name} is not a JSON object")
    return obj


def read_record_json(run_dir: str | os.PathLike, name: str) -> dict:
    """One JSON file of a record (``config.json``, ``env.json``, ``summary.json``), from its
    folder or from its sweep's pack; ``StoreError`` when missing or unreadable."""
    run_dir = Path(run_dir)
    pack = pack_of(run_dir)
    if pack is not None:
        return _parse_json(pack.texts[run_dir.name][name], name)
    if not (run_dir / name).exists():
        raise StoreError(f"incomplete: no {name}")
    return _read_json(run_dir / name)


def record_exists(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` is a folder or a packed run (anything the sweep must look at first)."""
    return Path(run_dir).exists() or pack_of(run_dir) is not None


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


def _consistency(
    run_dir: Path, config: dict, summary: dict, curve: pd.DataFrame, name: str | None = None
) -> list[str]:
    """Summary against curve, status against its fields, folder name against the config's hash.
    ``name``: what problem lines call the curve (default: the folder's curve file)."""
    problems = []
    status = summary.get("status")
    diverged = status == "diverged"
    name = name or curve_file(run_dir).name
    first = 2 if name == LEGACY_CURVE_FILE else 1  # a CSV's first row is line 2, under the header
    loss = curve["loss"].to_numpy(dtype=float)
    finite = np.isfinite(loss)
    bad = ~finite if not diverged else np.zeros(len(loss), dtype=bool)
    huge = finite & (np.abs(np.where(finite, loss, 0.0)) > MAX_LOSS)
    first_bad = int(np.argmax(bad | huge)) if (bad | huge).any() else None
    if first_bad is not None:
        v = float(loss[first_bad])
        if bad[first_bad]:
            problems.append(
                f"{name} row {first_bad + first} loss={v!r} is not finite in a run with status {status!r}"
            )
        else:
            problems.append(
                f"{name} row {first_bad + first} loss={v!r} is beyond float32 (|loss| <= {MAX_LOSS:g})"
            )
    is_train = (curve["split"] == "train").to_numpy()
    train = curve[is_train]
    n_train = len(train)
    updates = summary.get("updates")
    if isinstance(updates, int) and not isinstance(updates, bool):
        if n_train != updates:
            problems.append(f"{name} has {n_train} train rows but summary.json counts {updates} updates")
        elif n_train and int(train["update"].iloc[-1]) != updates:
            problems.append(
                f"{name}'s last train row is update {int(train['update'].iloc[-1])} but summary.json counts {updates}"
            )
    ts = summary.get("timesteps")
    if n_train and isinstance(ts, int) and int(train["timesteps"].iloc[-1]) != ts:
        problems.append(
            f"{name} ends at timestep {int(train['timesteps'].iloc[-1])} but summary.json says {ts}"
        )
    val = loss[~is_train & finite]
    lowest = float(val.min()) if len(val) else None
    mv = summary.get("min_val_loss")
    if isinstance(mv, (int, float)) and not isinstance(mv, bool) and math.isfinite(mv):
        if lowest is None or not math.isclose(mv, lowest, rel_tol=1e-9, abs_tol=1e-12):
            have = f"min {lowest!r}" if lowest is not None else "no finite validation loss"
            problems.append(f"summary.json min_val_loss={mv!r} disagrees with {name} ({have})")
    elif mv is None and lowest is not None:
        problems.append(
            f"summary.json min_val_loss is null but {name} has validation losses (min {lowest!r})"
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


def _read_record(run_dir: Path) -> tuple[dict, dict, dict, pd.DataFrame, list[str]]:
    """The four files and every problem found in them (stops early only when a file is unreadable).

    A packed run is checked once per process (the pack keeps the result while its file is
    unchanged): a report walks every run several times.
    """
    pack = pack_of(run_dir)
    if pack is None:
        return _check_record(run_dir, None)
    if run_dir not in pack.checked:
        pack.checked[run_dir] = _check_record(run_dir, pack)
    return pack.checked[run_dir]


def _check_record(run_dir: Path, pack: Pack | None) -> tuple[dict, dict, dict, pd.DataFrame, list[str]]:
    """``_read_record`` for a folder (``pack`` None) or for a run of ``pack``."""
    if pack is not None:
        texts = pack.texts[run_dir.name]
        summary, config, env = (_parse_json(texts[f], f) for f in ("summary.json", "config.json", "env.json"))
    else:
        summary, config, env = (
            read_record_json(run_dir, f) for f in ("summary.json", "config.json", "env.json")
        )
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
    curve = pack.curve(run_dir.name) if pack is not None else read_curve_frame(run_dir)
    if not problems:  # consistency needs well-typed fields
        name = f"{PACK_FILE} run {run_dir.name}" if pack is not None else None
        problems += _consistency(run_dir, config, summary, curve, name)
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
