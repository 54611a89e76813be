"""Packed sweeps: a finished sweep's records in one parquet file instead of a folder per run.

A sweep writes one folder per run (config.json, env.json, summary.json, curve.parquet): right for
a sweep that is running (every run lands on its own, atomically) and wrong for committing three
full sweeps (about 3,000 folders of four small files: ~5 KB of JSON a run, mostly repeated, and
a 4 KB disk block per file). ``tbptt-bench compact`` packs every valid record of a sweep folder
into ``<sweep>/records.parquet`` and removes the folders it packed:

    run_id, config, env, summary, split, update, timesteps, backprop_steps, train_wall_us, loss

one row per curve row, runs contiguous and sorted by run id. The three JSON texts are kept
verbatim on each run's first row (null on the others; parquet stores nulls in bits), so
``unpack_sweep`` writes the folders back byte for byte (JSON) and bit for bit (curve rows).
``backprop_steps`` is null for runs whose curve predates it.

Readers see a packed run at the path its folder would have, ``<sweep>/<run_id>``, which does not
exist on disk: ``iter_run_dirs`` lists it, ``record_texts`` and ``packed_curve`` read it, so
validation, loading, the report and the sweep's resume treat both forms alike. A folder that
holds a complete record wins over the pack (a rerun with ``--force`` writes one); the next
``compact`` packs it in place of the old copy. A new pack is written beside the old one and
renamed over it, so a kill at any point leaves the old pack or the new one, never a mix, and the
folders are removed only after the new pack is in place. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .curves import (
    checked_curve_frame,
    curve_columns,
    parquet_options,
    read_curve_frame,
    rows_of,
    write_curve,
)
from .record_io import StoreError, cut_text, write_bytes_atomic, write_text_atomic

__all__ = [
    "PACK_FILE",
    "RECORD_FILES",
    "Pack",
    "open_pack",
    "pack_of",
    "pack_sweep",
    "packed_run_dirs",
    "unpack_sweep",
]

PACK_FILE = "records.parquet"
#: The JSON files of a record, in the pack's column order (column name = file stem).
RECORD_FILES = ("config.json", "env.json", "summary.json")
_TEXTS = tuple(f.removesuffix(".json") for f in RECORD_FILES)
_CURVE_ON_DISK = ("split", "update", "timesteps", "backprop_steps", "train_wall_us", "loss")
PACK_COLUMNS = ("run_id", *_TEXTS, *_CURVE_ON_DISK)
_ROWS_PER_GROUP = 1 << 20


@dataclass(frozen=True)
class Pack:
    """One sweep's packed records: texts by run id and every curve row, checked when read."""

    path: Path
    texts: dict[str, dict[str, str]]  # run_id -> {"config.json": text, ...}
    bounds: dict[str, tuple[int, int]]  # run_id -> its rows [start, stop) in ``curves``
    curves: pd.DataFrame  # CURVE_COLUMNS_V2; backprop_steps -1 where a run predates it
    digest: str  # of the file's bytes: the report re-renders a sweep's groups when it changes
    checked: dict = field(default_factory=dict)  # run path -> validate's reading of it, kept

    def curve(self, run_id: str) -> pd.DataFrame:
        """The run's checked curve frame, as ``read_curve_frame`` gives it for a folder."""
        start, stop = self.bounds[run_id]
        frame = self.curves.iloc[start:stop].reset_index(drop=True)
        steps = frame["backprop_steps"].to_numpy()
        if len(steps) and (steps == -1).all():  # written before backprop steps were counted
            return frame.drop(columns="backprop_steps")
        if (steps == -1).any():
            raise StoreError(f"{PACK_FILE} run {run_id}: backprop_steps is null on some rows only")
        return frame


_CACHE: dict[Path, tuple[tuple[int, int], Pack | StoreError]] = {}
#: Packs kept read at once: a report walks every sweep of a results folder several times.
_CACHED_PACKS = 8


def open_pack(sweep_dir: str | os.PathLike) -> Pack | None:
    """The pack in ``sweep_dir`` (None if it has none); ``StoreError`` if it is damaged.

    Read once per process and kept while the file's size and mtime stay the same.
    """
    path = Path(sweep_dir) / PACK_FILE
    try:
        st = path.stat()
    except OSError:
        return None
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _CACHE.get(path)
    if cached is None or cached[0] != stamp:
        try:
            found: Pack | StoreError = _read(path)
        except StoreError as e:
            found = e
        _CACHE.pop(path, None)
        while len(_CACHE) >= _CACHED_PACKS:  # the oldest goes: a full sweep is ~200 MB in memory
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[path] = (stamp, found)
        cached = _CACHE[path]
    if isinstance(cached[1], StoreError):
        raise cached[1]
    return cached[1]


def _read(path: Path) -> Pack:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        data = path.read_bytes()
        table = pq.read_table(io.BytesIO(data), read_dictionary=["run_id"])
        if tuple(table.column_names) != PACK_COLUMNS:
            raise StoreError(
                f"{PACK_FILE} columns {cut_text(str(table.column_names), 200)} are not {list(PACK_COLUMNS)}"
            )
        for col in ("run_id", *_TEXTS, "split"):
            kind = table.schema.field(col).type
            if str(getattr(kind, "value_type", kind)) != "string":
                raise StoreError(f"{PACK_FILE} column {col} is {kind}: it must be text")
        ids = table.column("run_id").combine_chunks()
        if ids.null_count:
            raise StoreError(f"{PACK_FILE} column run_id has {ids.null_count} nulls")
        codes, names = ids.indices.to_numpy(), ids.dictionary.to_pylist()
        first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, int)
        run_ids = [names[i] for i in codes[first]]
        if len(set(run_ids)) != len(run_ids):
            raise StoreError(f"{PACK_FILE}: the rows of a run are not together")
        texts: dict[str, dict[str, str]] = {r: {} for r in run_ids}
        for name, col in zip(RECORD_FILES, _TEXTS):
            column = table.column(col)
            valid = np.flatnonzero(pc.is_valid(column).to_numpy(zero_copy_only=False))
            if len(valid) != len(first) or (valid != first).any():
                raise StoreError(f"{PACK_FILE} column {col} is not set on exactly each run's first row")
            for run_id, text in zip(run_ids, column.take(valid).to_pylist()):
                texts[run_id][name] = text
        # a run without curve rows (a failed run) keeps its texts on one row whose curve is null
        rows = pc.is_valid(table.column("split")).to_numpy(zero_copy_only=False)
        for col in _CURVE_ON_DISK:
            nulls = pc.is_null(table.column(col)).to_numpy(zero_copy_only=False)
            if ((nulls & rows).any() and col != "backprop_steps") or (~nulls & ~rows).any():
                i = int(np.argmax((nulls & rows) | (~nulls & ~rows)))
                raise StoreError(
                    f"{PACK_FILE} row {i + 1}: column {col} is null where split is not, or set where it is"
                )
        cols = curve_columns(table.filter(rows), _CURVE_ON_DISK, PACK_FILE, nullable=("backprop_steps",))
    except StoreError:
        raise
    except Exception as e:  # pyarrow raises many kinds for damaged bytes
        raise StoreError(f"{PACK_FILE} is unreadable: {cut_text(str(e) or type(e).__name__, 200)}") from None
    stops = np.r_[first[1:], len(codes)]
    lengths = np.add.reduceat(rows.astype(np.int64), first) if len(first) else np.zeros(0, np.int64)
    if ((lengths == 0) & (stops - first != 1)).any():
        raise StoreError(f"{PACK_FILE}: a run without curve rows must have exactly one row")
    ends = np.cumsum(lengths)
    bounds = {r: (int(e - n), int(e)) for r, n, e in zip(run_ids, lengths, ends)}
    return Pack(path, texts, bounds, _checked(cols), hashlib.blake2b(data, digest_size=16).hexdigest())


def _checked(cols: dict) -> pd.DataFrame:
    """The pack's curve rows checked like a run's curve (null backprop steps read as -1)."""
    steps = cols["backprop_steps"]
    checked = checked_curve_frame({**cols, "backprop_steps": np.where(steps == -1, 0, steps)}, PACK_FILE)
    checked["backprop_steps"] = steps
    return checked


def pack_of(run_dir: str | os.PathLike) -> Pack | None:
    """The pack that holds ``run_dir``'s record, when its folder does not hold a complete one."""
    run_dir = Path(run_dir)
    if (run_dir / "summary.json").exists():
        return None
    try:
        pack = open_pack(run_dir.parent)
    except StoreError:
        return None
    return pack if pack is not None and run_dir.name in pack.texts else None


def packed_run_dirs(sweep_dir: Path) -> list[Path]:
    """The run paths of ``sweep_dir``'s pack (empty when it has none or it is damaged)."""
    try:
        pack = open_pack(sweep_dir)
    except StoreError:
        return []
    return [] if pack is None else [sweep_dir / run_id for run_id in pack.texts]


# -- writing --------------------------------------------------------------------------------
def pack_sweep(sweep_dir: str | os.PathLike) -> tuple[int, list[tuple[Path, str]]]:
    """Pack every valid record of ``sweep_dir`` (its folders and its current pack) into one file,
    then remove the folders packed. Returns (runs in the pack, [(folder left, why)]).

    Folders that are not valid records (incomplete, damaged) stay for the sweep to rerun.
    """
    from .store import claim_run  # both read packs: imported here, not at the top
    from .validate import validate_record

    sweep_dir = Path(sweep_dir)
    pack = open_pack(sweep_dir)  # a damaged pack raises: it is never replaced by a smaller one
    records: dict[str, tuple[dict[str, str], pd.DataFrame]] = {}
    if pack is not None:
        records = {run_id: (texts, pack.curve(run_id)) for run_id, texts in pack.texts.items()}
    folders, left = [], []
    for d in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        if not ((d / "config.json").is_file() or (d / "summary.json").is_file()):
            continue
        problems = validate_record(d)
        if problems:
            left.append((d, problems[0]))
            continue
        claim = claim_run(d)
        if claim is None:  # a sweep is writing it right now
            left.append((d, "a running sweep holds it"))
            continue
        claim.release()
        texts = {f: (d / f).read_text(encoding="utf-8") for f in RECORD_FILES}
        records[d.name] = (texts, read_curve_frame(d))
        folders.append(d)
    if not folders and pack is not None:
        return len(records), left
    write_bytes_atomic(sweep_dir / PACK_FILE, _pack_bytes(records))
    for d in folders:
        _remove_record(d)
    return len(records), left


def _pack_bytes(records: dict[str, tuple[dict[str, str], pd.DataFrame]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_ids = sorted(records)
    frames = [records[r][1] for r in run_ids]
    n_rows = np.array([len(f) for f in frames], dtype=np.int64)
    lengths = np.maximum(n_rows, 1)  # a run without curve rows (a failed run) keeps one row for its texts
    firsts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    is_row = np.ones(int(lengths.sum()), dtype=bool)
    is_row[firsts[n_rows == 0]] = False
    kept = [f for f in frames if len(f)]

    def column(values: list[np.ndarray], dtype: Any, missing: Any = None) -> Any:
        out = np.zeros(len(is_row), dtype=dtype)
        out[is_row] = np.concatenate(values) if values else np.zeros(0, dtype)
        mask = ~is_row if missing is None else ~is_row | (out == missing)
        return pa.array(out, mask=mask)

    data: dict[str, Any] = {
        "run_id": pa.array(np.repeat(np.array(run_ids, dtype=object), lengths), pa.string())
    }
    for name, col in zip(RECORD_FILES, _TEXTS):
        values = np.full(len(is_row), None, dtype=object)
        values[firsts] = [records[r][0][name] for r in run_ids]
        data[col] = pa.array(values, pa.string())
    split = np.full(len(is_row), None, dtype=object)
    split[is_row] = np.concatenate([f["split"].to_numpy(dtype=object) for f in kept]) if kept else []
    data["split"] = pa.array(split, pa.string())
    for c in ("update", "timesteps"):
        data[c] = column([f[c].to_numpy(dtype=np.int64) for f in kept], np.int64)
    # null for runs whose curve predates backprop_steps (counts are never negative)
    steps = [
        f["backprop_steps"].to_numpy(np.int64) if "backprop_steps" in f else np.full(len(f), -1) for f in kept
    ]
    data["backprop_steps"] = column(steps, np.int64, missing=-1)
    wall = [np.round(f["train_wall_s"].to_numpy(np.float64) * 1_000_000).astype(np.int64) for f in kept]
    data["train_wall_us"] = column(wall, np.int64)
    data["loss"] = column([f["loss"].to_numpy(np.float64) for f in kept], np.float64)  # NaN stays NaN
    buf = io.BytesIO()
    pq.write_table(
        pa.table(data),
        buf,
        row_group_size=_ROWS_PER_GROUP,
        # one page per column chunk: zstd then sees a thousand JSON texts at once (113 KB for a
        # full sweep's, against 2.4 MB with the default 20,000-row pages and their min/max texts)
        **({"max_rows_per_page": _ROWS_PER_GROUP} if _has_page_rows(pq) else {}),
        data_page_size=1 << 30,
        write_statistics=[c for c in data if c not in _TEXTS],
        **parquet_options(list(data)),
    )
    return buf.getvalue()


def _has_page_rows(pq: Any) -> bool:
    """pyarrow's writer takes ``max_rows_per_page`` (newer releases; older ones write bigger packs)."""
    import inspect

    return "max_rows_per_page" in inspect.signature(pq.write_table).parameters


def _remove_record(run_dir: Path) -> None:
    """Remove a packed run's folder: summary first, so a kill leaves it incomplete, never half valid."""
    (run_dir / "summary.json").unlink(missing_ok=True)
    for p in run_dir.iterdir():
        if p.is_file():
            p.unlink()
    try:
        run_dir.rmdir()
    except OSError:  # something else in it (a lock, a user's file): the folder stays, incomplete
        pass


def unpack_sweep(sweep_dir: str | os.PathLike) -> int:
    """Write every packed run of ``sweep_dir`` back as a folder (JSON verbatim, curve rows
    exact; summary.json last, as the harness writes), then remove the pack. Folders that
    already hold a complete record are kept as they are. Returns how many were written."""
    sweep_dir = Path(sweep_dir)
    pack = open_pack(sweep_dir)
    if pack is None:
        return 0
    n = 0
    for run_id, texts in pack.texts.items():
        run_dir = sweep_dir / run_id
        if (run_dir / "summary.json").exists():
            continue
        run_dir.mkdir(exist_ok=True)
        for name in RECORD_FILES[:2]:
            write_text_atomic(run_dir / name, texts[name])
        write_curve(run_dir, rows_of(pack.curve(run_id)))
        write_text_atomic(run_dir / "summary.json", texts["summary.json"])
        n += 1
    (sweep_dir / PACK_FILE).unlink()
    return n
