"""A run's learning curve on disk: ``curve.parquet`` (written), ``curve.csv`` (read, older records).

One row per update (split "train") and per scheduled evaluation (split "val"), with the counts
reached so far and the training wall time (evaluation excluded) when the row was taken:

    split, update, timesteps, [backprop_steps,] train_wall_s, loss

``backprop_steps`` is absent from curves written before the protocol counted it.

Why parquet: the full preset holds about 3.6 million rows per budget axis; as CSV they are
~50 bytes a row (150+ MB for one sweep), as zstd-compressed parquet with delta-coded counts and
byte-stream-split losses under 6 bytes (docs/results.md). Nothing is rounded except the wall
time, which is stored in whole microseconds (``train_wall_us``): finer digits of a Python loop's
clock are noise. Losses stay float64, bit for bit.

``read_curve(run_dir)`` reads whichever file the record has, checking every row (types, splits,
counts in [0, 2**63 - 1], times in [0, 1e9] s) and raising ``StoreError`` naming the first bad one;
``compact_curve`` rewrites an old CSV curve as parquet. Torch-free.

>>> import tempfile, pathlib
>>> run = pathlib.Path(tempfile.mkdtemp())
>>> rows = [{"split": "train", "update": 1, "timesteps": 5, "backprop_steps": 5,
...          "train_wall_s": 0.0123456, "loss": 0.69314718055994529}]
>>> write_curve(run, rows)
>>> curve_file(run).name, read_curve(run) == [{**rows[0], "train_wall_s": 0.012346}]
('curve.parquet', True)
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .record_io import StoreError, _cut, cut_text, write_bytes_atomic

__all__ = [
    "CURVE_COLUMNS",
    "CURVE_COLUMNS_V2",
    "CURVE_FILE",
    "LEGACY_CURVE_FILE",
    "compact_curve",
    "curve_file",
    "read_curve",
    "read_curve_frame",
    "rows_of",
    "write_curve",
]

CURVE_FILE = "curve.parquet"
#: Records written before parquet keep their CSV curve; both load.
LEGACY_CURVE_FILE = "curve.csv"
CURVE_COLUMNS = ("split", "update", "timesteps", "train_wall_s", "loss")
#: The newer curve layout: cumulative ``backprop_steps`` right after ``timesteps``.
CURVE_COLUMNS_V2 = ("split", "update", "timesteps", "backprop_steps", "train_wall_s", "loss")
SPLITS = ("train", "val")
INT64_MAX = 2**63 - 1
#: Wall times above this (31 years) are damage, not measurements (and break the figures' axes).
MAX_SECONDS = 1e9
_COUNTS = ("update", "timesteps", "backprop_steps")
#: On disk the wall time is an integer number of microseconds.
_WALL_ON_DISK = "train_wall_us"
_US = 1_000_000


def curve_file(run_dir: str | os.PathLike) -> Path:
    """The record's curve: ``curve.parquet``, or ``curve.csv`` in a record written before it."""
    run_dir = Path(run_dir)
    new, old = run_dir / CURVE_FILE, run_dir / LEGACY_CURVE_FILE
    return old if not new.exists() and old.exists() else new


def read_curve_frame(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The run's checked curve as a DataFrame with ``CURVE_COLUMNS`` or ``CURVE_COLUMNS_V2``."""
    path = curve_file(run_dir)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    rows = _read_csv(path)
    with_bp = bool(rows) and "backprop_steps" in rows[0]
    return _frame_of_rows(rows, CURVE_COLUMNS_V2 if with_bp else CURVE_COLUMNS)


def read_curve(run_dir: str | os.PathLike) -> list[dict]:
    """Every row of the run's curve as a dict of plain Python numbers (``read_curve_frame``'s rows)."""
    return rows_of(read_curve_frame(run_dir))


def rows_of(frame: pd.DataFrame) -> list[dict]:
    """A curve frame's rows as dicts of plain Python values."""
    columns = list(frame.columns)
    return [dict(zip(columns, values)) for values in zip(*(frame[c].tolist() for c in columns))]


def _checked(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The layout of rows about to be written (the newer one when they carry backprop_steps)."""
    columns = CURVE_COLUMNS if rows and "backprop_steps" not in rows[0] else CURVE_COLUMNS_V2
    for i, row in enumerate(rows):
        if set(row) != set(columns):
            raise StoreError(f"curve row {i} has keys {sorted(row)}: exactly {list(columns)} are allowed")
        if row["split"] not in SPLITS:
            raise StoreError(f"curve row {i} split={row['split']!r} is not allowed: use one of {SPLITS}")
        wall = float(row["train_wall_s"])
        if not 0.0 <= wall <= MAX_SECONDS:
            raise StoreError(f"curve row {i} train_wall_s={wall!r} is not a time in [0, {MAX_SECONDS:g}] s")
    return columns


def curve_parquet(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """The bytes of ``curve.parquet`` for ``rows`` (see the module doc for the encoding)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = _checked(rows)
    data: dict[str, Any] = {"split": pa.array([r["split"] for r in rows], pa.string())}
    for c in _COUNTS:
        if c in columns:
            data[c] = pa.array([int(r[c]) for r in rows], pa.int64())
    data[_WALL_ON_DISK] = pa.array([round(float(r["train_wall_s"]) * _US) for r in rows], pa.int64())
    data["loss"] = pa.array([float(r["loss"]) for r in rows], pa.float64())
    buf = io.BytesIO()
    pq.write_table(pa.table(data), buf, **parquet_options(data))
    return buf.getvalue()


def parquet_options(names: Sequence[str]) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` options for curve columns ``names`` (also packs' texts)."""
    return dict(
        compression="zstd",
        compression_level=19,
        use_dictionary=[c for c in ("split", "run_id") if c in names],
        # counts and cumulative times rise steadily: deltas are a few bits; float bytes split by
        # position compress about 1.7x better than whole floats.
        column_encoding={
            **{c: "DELTA_BINARY_PACKED" for c in (*_COUNTS, _WALL_ON_DISK) if c in names},
            **({"loss": "BYTE_STREAM_SPLIT"} if "loss" in names else {}),
        },
    )


def write_curve(run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write ``run_dir/curve.parquet`` atomically."""
    write_bytes_atomic(Path(run_dir) / CURVE_FILE, curve_parquet(rows))


def compact_curve(run_dir: str | os.PathLike) -> bool:
    """Rewrite an old record's ``curve.csv`` as ``curve.parquet``; True if it did.

    The CSV is checked first (a damaged one raises ``StoreError`` and stays); the parquet file is
    written atomically before the CSV is removed, and readers prefer it, so a kill at any point
    leaves a valid record.
    """
    run_dir = Path(run_dir)
    old = run_dir / LEGACY_CURVE_FILE
    if not old.exists():
        return False
    if not (run_dir / CURVE_FILE).exists():
        write_curve(run_dir, _read_csv(old))
    old.unlink()
    return True


def _check_row(row: dict, where: str, shown: Any) -> None:
    counts = [row[c] for c in _COUNTS if c in row]
    if min(counts) < 0 or max(counts) > INT64_MAX:
        raise StoreError(f"{where} has a count outside [0, 2**63-1]: {_cut(shown)}")
    wall = row["train_wall_s"]
    if not 0.0 <= wall <= MAX_SECONDS:  # NaN fails too
        raise StoreError(f"{where} train_wall_s={wall!r} is not a time in [0, {MAX_SECONDS:g}] s")


def _read_parquet(path: Path) -> pd.DataFrame:
    """The checked curve as columns (vectorised: a full sweep holds millions of rows)."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        names = tuple(table.column_names)
        layout = tuple(_WALL_ON_DISK if c == "train_wall_s" else c for c in CURVE_COLUMNS)
        layout_v2 = tuple(_WALL_ON_DISK if c == "train_wall_s" else c for c in CURVE_COLUMNS_V2)
        if names not in (layout, layout_v2):
            raise StoreError(f"{path.name} columns {_cut(list(names))} are not {list(layout_v2)}")
        cols = curve_columns(table, names, path.name)
    except StoreError:
        raise
    except Exception as e:  # pyarrow raises many kinds for damaged bytes
        raise StoreError(f"{path.name} is unreadable: {cut_text(str(e) or type(e).__name__, 200)}") from None
    return checked_curve_frame(cols, path.name)


def curve_columns(table: Any, names: Sequence[str], where: str, nullable: Sequence[str] = ()) -> dict:
    """The on-disk curve columns ``names`` of a pyarrow table as numpy arrays, types checked
    (``nullable`` columns may hold nulls, read as -1)."""
    import pyarrow as pa

    want = {c: pa.int64() for c in (*_COUNTS, _WALL_ON_DISK)} | {"split": pa.string(), "loss": pa.float64()}
    cols = {}
    for c in names:
        column = table.column(c)
        if table.schema.field(c).type != want[c] or (column.null_count and c not in nullable):
            raise StoreError(
                f"{where} column {c} is {table.schema.field(c).type} with "
                f"{column.null_count} nulls: it must be {want[c]} without nulls"
            )
        cols[c] = column.fill_null(-1).to_numpy() if column.null_count else column.to_numpy()
    return cols


def checked_curve_frame(cols: dict, where: str) -> pd.DataFrame:
    """Curve columns as read from parquet (``train_wall_us``) -> the checked curve frame.

    Raises ``StoreError`` naming the first bad row (split, negative count, wall time out of range).
    """
    names = tuple(cols)
    split = cols["split"].astype(object)
    wall = cols.pop(_WALL_ON_DISK) / _US
    bad_split = ~np.isin(split, SPLITS)
    bad_count = np.zeros(len(split), dtype=bool)
    for c in _COUNTS:
        if c in cols:
            bad_count |= cols[c] < 0
    bad_wall = ~((wall >= 0.0) & (wall <= MAX_SECONDS))
    for bad, what in ((bad_split, "split"), (bad_count, "count"), (bad_wall, "wall")):
        if bad.any():
            i = int(np.argmax(bad))
            shown = [cols[c][i] if c in cols else wall[i] for c in names if c != "split"]
            at = f"{where} row {i + 1}"
            if what == "split":
                raise StoreError(f"{at} split={_cut(split[i])} is not one of {SPLITS}")
            if what == "count":
                raise StoreError(f"{at} has a count outside [0, 2**63-1]: {_cut([split[i], *shown])}")
            raise StoreError(f"{at} train_wall_s={wall[i]!r} is not a time in [0, {MAX_SECONDS:g}] s")
    columns = CURVE_COLUMNS_V2 if "backprop_steps" in cols else CURVE_COLUMNS
    # object, not pandas' inferred string dtype: inferring it costs more than reading the file
    data = {**cols, "split": pd.Series(split, dtype=object), "train_wall_s": wall}
    return pd.DataFrame({c: data[c] for c in columns})


def _frame_of_rows(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for c in columns:
        frame[c] = frame[c].astype(object if c == "split" else "int64" if c in _COUNTS else "float64")
    return frame


def _read_csv(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"{path.name} is unreadable: {e}") from None
    if text and not text.endswith("\n"):  # every row ends in a newline: a cut inside the last row
        raise StoreError(f"{path.name} is truncated: its last row has no newline")  # can leave valid numbers
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) not in (CURVE_COLUMNS, CURVE_COLUMNS_V2):
        raise StoreError(f"{path.name} header {_cut(header)} is not {list(CURVE_COLUMNS)}")
    columns = tuple(header)
    ints = [c in _COUNTS for c in columns]
    rows = []
    for n, rec in enumerate(reader, start=2):
        if len(rec) != len(columns) or rec[0] not in SPLITS:
            raise StoreError(f"{path.name} line {n} is malformed: {_cut(rec)}")
        try:
            row = {
                c: (int(v) if is_int else float(v)) for c, v, is_int in zip(columns[1:], rec[1:], ints[1:])
            }
        except ValueError:
            raise StoreError(f"{path.name} line {n} has a non-number: {_cut(rec)}") from None
        row = {"split": rec[0], **row}
        _check_row(row, f"{path.name} line {n}", rec)
        rows.append(row)
    return rows
