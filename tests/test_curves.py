"""The curve file: parquet written and read back exactly (wall time to the microsecond), the older
CSV records still load and compact to parquet losslessly, and damage of either is named."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from tbptt_bench.runs import curves, store

FIXTURE = Path(__file__).parent / "fixtures" / "results"


def _rows(n: int, v2: bool = True) -> list[dict]:
    rows = []
    for i in range(1, n + 1):
        row = {"split": "train" if i % 7 else "val", "update": i, "timesteps": 5 * i}
        if v2:
            row["backprop_steps"] = 4 * i
        row |= {"train_wall_s": 0.001234567 * i, "loss": math.exp(-i / 50) + 1e-3 * math.sin(i)}
        rows.append(row)
    return rows


@pytest.mark.parametrize("v2", [True, False])
def test_parquet_round_trip_keeps_every_bit_but_sub_microsecond_time(tmp_path, v2):
    rows = _rows(300, v2) + [{**_rows(1, v2)[0], "loss": x} for x in (math.nan, math.inf, -math.inf)]
    curves.write_curve(tmp_path, rows)
    back = curves.read_curve(tmp_path)
    assert [{k: v for k, v in r.items() if k not in ("loss", "train_wall_s")} for r in back] == [
        {k: v for k, v in r.items() if k not in ("loss", "train_wall_s")} for r in rows
    ]
    for a, b in zip(back, rows):
        assert a["loss"] == b["loss"] or (math.isnan(a["loss"]) and math.isnan(b["loss"]))  # bit for bit
        assert a["train_wall_s"] == round(b["train_wall_s"] * 1e6) / 1e6
    assert list(back[0]) == list(curves.CURVE_COLUMNS_V2 if v2 else curves.CURVE_COLUMNS)


def test_an_empty_curve_round_trips(tmp_path):
    curves.write_curve(tmp_path, [])
    assert curves.read_curve(tmp_path) == []


def test_parquet_is_several_times_smaller_than_the_csv_it_replaces(tmp_path):
    src = next(FIXTURE.rglob("curve.csv"))
    run = tmp_path / src.parent.name
    shutil.copytree(src.parent, run)
    csv_bytes = (run / "curve.csv").stat().st_size
    assert curves.compact_curve(run)
    assert (run / "curve.parquet").stat().st_size < csv_bytes / 2


def test_old_csv_records_load_and_compact_to_parquet_losslessly(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "results", ignore=shutil.ignore_patterns("benchmarks"))
    root = tmp_path / "results"
    before = store.load_runs(root)  # the fixture holds a few damaged records on purpose
    damaged = {Path(p) for p, _ in before.skipped}
    assert len(before.runs) > 0
    compacted = 0
    for run in (r for r in store.iter_run_dirs(root) if r not in damaged):
        old = curves.read_curve(run)
        assert curves.curve_file(run).name == "curve.csv"
        assert curves.compact_curve(run)
        assert not (run / "curve.csv").exists() and store.validate_record(run) == []
        new = curves.read_curve(run)
        assert [(r["split"], r["update"], r["timesteps"], repr(r["loss"])) for r in new] == [
            (r["split"], r["update"], r["timesteps"], repr(r["loss"])) for r in old
        ]  # repr: nan == nan
        assert all(abs(a["train_wall_s"] - b["train_wall_s"]) <= 5e-7 for a, b in zip(new, old))
        assert not curves.compact_curve(run)  # nothing left to do
        compacted += 1
    after = store.load_runs(root)
    assert compacted == len(before.runs) and after.skipped == before.skipped
    assert after.runs["run_id"].tolist() == before.runs["run_id"].tolist()
    assert after.curves["loss"].equals(before.curves["loss"])


def test_a_damaged_csv_is_not_compacted(tmp_path):
    (tmp_path / "curve.csv").write_text("split,update\nval,1\n")
    with pytest.raises(store.StoreError, match="curve.csv header"):
        curves.compact_curve(tmp_path)
    assert (tmp_path / "curve.csv").exists() and not (tmp_path / "curve.parquet").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("split,update\nval,1\n", "curve.csv header"),
        ("split,update,timesteps,train_wall_s,loss\nval,x,1,1.0,1.0\n", "curve.csv line 2 has a non-number"),
        ("split,update,timesteps,train_wall_s,loss\nval,1,1,1.0,1.0", "truncated"),
        ("split,update,timesteps,train_wall_s,loss\ntest,1,1,1.0,1.0\n", "line 2 is malformed"),
        ("split,update,timesteps,train_wall_s,loss\nval,-1,1,1.0,1.0\n", "count outside"),
        ("split,update,timesteps,train_wall_s,loss\nval,1,1,-1.0,1.0\n", "is not a time"),
    ],
)
def test_damaged_csv_curves_are_named(tmp_path, text, message):
    (tmp_path / "curve.csv").write_text(text)
    with pytest.raises(store.StoreError, match=message):
        curves.read_curve(tmp_path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"split": "test"}, "split='test' is not allowed"),
        ({"train_wall_s": -1.0}, "is not a time"),
        ({"train_wall_s": math.nan}, "is not a time"),
        ({"extra": 1}, "exactly"),
    ],
)
def test_the_writer_refuses_rows_off_the_layout(tmp_path, row, message):
    with pytest.raises(store.StoreError, match=message):
        curves.write_curve(tmp_path, [{**_rows(1)[0], **row}])
    assert not (tmp_path / "curve.parquet").exists()


def test_parquet_is_preferred_when_both_files_exist(tmp_path):
    (tmp_path / "curve.csv").write_text("garbage")
    curves.write_curve(tmp_path, _rows(3))
    assert curves.curve_file(tmp_path).name == "curve.parquet" and len(curves.read_curve(tmp_path)) == 3


def test_compact_command_rewrites_valid_records_and_leaves_damaged_ones(tmp_path, capsys):
    from tbptt_bench.cli import main

    shutil.copytree(FIXTURE, tmp_path / "results", ignore=shutil.ignore_patterns("benchmarks"))
    root = tmp_path / "results"
    before = store.load_runs(root)
    assert main(["compact", str(root)]) == 0
    out, err = capsys.readouterr()
    n_ok = len(before.runs)
    assert f"{n_ok} curves rewritten as parquet" in out and f"{len(before.skipped)} damaged" in out
    assert err.count("left ") == len(before.skipped)
    after = store.load_runs(root)
    assert after.runs["run_id"].tolist() == before.runs["run_id"].tolist()
    assert sorted(p.parent for p in root.rglob("curve.csv")) == sorted(Path(p) for p, _ in before.skipped)
    assert "packed" in out and not list(root.rglob("curve.parquet"))  # the valid records are packed
    assert main(["compact", str(tmp_path / "nope")]) == 2
