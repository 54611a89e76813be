"""The results store: atomic writes, write order, completeness, tolerant loading of the fixture."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tbptt_bench.runs import store
from tbptt_bench.styles import tf_style

FIXTURE = Path(__file__).parent / "fixtures" / "results"
CPU, GPU = "cpu-amd-epyc-7b13", "cuda-nvidia-h100-80gb-hbm3"

#: The runs columns fixed by the common brief, in order.
BRIEF_RUN_COLUMNS = [
    "run_id",
    "device_tag",
    "sweep",
    "task",
    "loss_kind",
    "style_preset",
    "style_label",
    "style_spec",
    "style_n",
    "k1",
    "k2",
    "pi",
    "cell",
    "hidden_size",
    "optimizer",
    "lr",
    "clip",
    "seed",
    "device",
    "device_name",
    "status",
    "min_val_loss",
    "final_val_loss",
    "train_wall_s",
    "eval_wall_s",
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
    "ref_optimal",
    "ref_partial",
    "ref_no_memory",
    "torch_version",
    "cuda_version",
    "git_commit",
]
BRIEF_CURVE_COLUMNS = [
    "run_id",
    "device_tag",
    "sweep",
    "task",
    "style_label",
    "style_spec",
    "lr",
    "seed",
    "split",
    "update",
    "timesteps",
    "backprop_steps",
    "train_wall_s",
    "loss",
]


def make_records(status: str = "diverged", seed: int = 3) -> tuple[dict, dict, list[dict], dict]:
    """A valid record: a run that diverged at its second update (NaN train loss, inf final loss)."""
    config = {
        "task": "echo",
        "task_params": {"lag": 3},
        "loss": "ce",
        "references": {"optimal": 0.45, "no_memory": 0.66},
        "reference_notes": {"optimal": "both lags"},
        "style": tf_style(5).to_dict(),
        "model": {"cell": "tanh", "hidden_size": 4},
        "optimizer": {"name": "adagrad", "lr": 0.1},
        "clip": 1.0,
        "budget": {
            "epochs": 1,
            "batch": 2,
            "row_len": 10,
            "val_batch": 2,
            "val_len": 5,
            "eval_points": 10,
            "warmup_updates": 1,
        },
        "seed": seed,
        "sweep": "smoke",
        "device": "cpu",
    }
    env = {k: None for k in store.ENV_KEYS} | {
        "device_name": "CPU X",
        "torch_version": "2.13.0",
        "git_commit": "abc",
        "git_dirty": True,
    }
    curve = [
        {
            "split": "train",
            "update": 1,
            "timesteps": 20,
            "backprop_steps": 80,
            "train_wall_s": 0.5,
            "loss": 0.7,
        },
        {
            "split": "val",
            "update": 1,
            "timesteps": 20,
            "backprop_steps": 80,
            "train_wall_s": 0.5,
            "loss": 0.65,
        },
        {
            "split": "train",
            "update": 2,
            "timesteps": 40,
            "backprop_steps": 160,
            "train_wall_s": 1.25,
            "loss": float("nan"),
        },
    ]
    summary = {k: None for k in store.SUMMARY_KEYS} | {
        "status": status,
        "min_val_loss": 0.65,
        "final_val_loss": float("inf"),
        "train_wall_s": 1.25,
        "eval_wall_s": 0.1,
        "warmup_updates": 1,
        "updates": 2,
        "timesteps": 40,
        "timesteps_per_s": 32.0,
        "peak_mem_bytes": 123456789,
        "peak_mem_source": "ru_maxrss",
        "clip_rate": 0.5,
        "diverged_at_update": 2 if status == "diverged" else None,
        "engine_path": "loop",
    }
    return config, env, curve, summary


def run_path(root: Path, records: tuple, tag: str = "cpu-x") -> Path:
    """Where a record belongs: ``<tag>/<sweep>/<the run id its config hashes to>``."""
    return root / tag / records[0]["sweep"] / store.expected_run_id(records[0])


def test_write_run_then_load_round_trips_exact_values(tmp_path):
    records = make_records()
    run = run_path(tmp_path, records)
    assert run.name.startswith("echo-tf_style-5-tanh4-lr0.1-s3-")
    store.write_run(run, *records)
    assert sorted(p.name for p in run.iterdir()) == [
        "config.json",
        "curve.parquet",
        "env.json",
        "summary.json",
    ]
    loaded = store.load_runs(tmp_path)
    assert loaded.skipped == []
    assert list(loaded.runs.columns)[: len(BRIEF_RUN_COLUMNS)] == BRIEF_RUN_COLUMNS
    row = loaded.runs.iloc[0]
    assert (row["run_id"], row["device_tag"], row["sweep"], row["task"]) == (
        run.name,
        "cpu-x",
        "smoke",
        "echo",
    )
    assert (row["style_preset"], row["style_spec"], row["style_n"], row["k1"], row["k2"]) == (
        "tf_style",
        "tf_style(5)",
        5,
        5,
        5,
    )
    assert (row["cell"], row["hidden_size"], row["optimizer"], row["lr"], row["clip"], row["seed"]) == (
        "tanh",
        4,
        "adagrad",
        0.1,
        1.0,
        3,
    )
    assert (
        row["peak_mem_bytes"] == 123456789
        and row["timesteps_per_s"] == 32.0
        and row["device_name"] == "CPU X"
    )
    assert math.isnan(row["final_val_loss"])  # inf is written as JSON null, read back as missing
    assert row["ref_optimal"] == 0.45 and row["ref_no_memory"] == 0.66 and math.isnan(row["ref_partial"])
    assert row["ref_optimal_note"] == "both lags" and row["ref_partial_note"] is None
    assert str(loaded.runs["hidden_size"].dtype) == "Int64" and str(loaded.runs["lr"].dtype) == "float64"
    assert list(loaded.curves.columns) == BRIEF_CURVE_COLUMNS
    assert loaded.curves["loss"].tolist()[:2] == [0.7, 0.65] and math.isnan(loaded.curves["loss"].iloc[2])
    assert loaded.curves["train_wall_s"].tolist() == [0.5, 0.5, 1.25]
    assert loaded.curves["split"].tolist() == ["train", "val", "train"]
    assert json.loads((run / "summary.json").read_text())["final_val_loss"] is None


def test_write_run_writes_summary_last(tmp_path, monkeypatch):
    order = []
    real = os.replace
    monkeypatch.setattr(store.os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    store.write_run(tmp_path / "run", *make_records())
    assert order == ["config.json", "env.json", "curve.parquet", "summary.json"]


def test_rewriting_a_run_never_looks_complete_midway(tmp_path, monkeypatch):
    run = run_path(tmp_path, make_records())
    store.write_run(run, *make_records())
    assert store.is_complete(run)

    def boom(path, data):
        raise OSError("disk full")

    monkeypatch.setattr(store, "write_bytes_atomic", boom)  # the disk fills while the curve is written
    with pytest.raises(OSError, match="disk full"):
        store.write_run(run, *make_records())
    assert not store.is_complete(run)  # the old summary went first
    assert [p for p, _ in store.load_runs(tmp_path).skipped] == [run]


@pytest.mark.parametrize(
    "part, key", [("config", "loss"), ("env", "git_commit"), ("summary", "peak_mem_source")]
)
def test_write_run_rejects_missing_keys_before_writing(tmp_path, part, key):
    config, env, curve, summary = make_records()
    {"config": config, "env": env, "summary": summary}[part].pop(key)
    with pytest.raises(store.StoreError, match=f"{part} is missing keys \\['{key}'\\]"):
        store.write_run(tmp_path / "run", config, env, curve, summary)
    assert not (tmp_path / "run").exists()


def test_write_run_rejects_bad_status_and_curve_rows(tmp_path):
    config, env, curve, summary = make_records(status="crashed")
    with pytest.raises(store.StoreError, match="status='crashed' is not allowed"):
        store.write_run(tmp_path / "a", config, env, curve, summary)
    config, env, curve, summary = make_records()
    curve[0]["extra"] = 1
    with pytest.raises(store.StoreError, match="curve row 0 has keys"):
        store.write_run(tmp_path / "b", config, env, curve, summary)


def test_write_text_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    store.write_text_atomic(path, "old")

    def fail(a, b):
        raise OSError("no")

    monkeypatch.setattr(store.os, "replace", fail)
    with pytest.raises(OSError):
        store.write_text_atomic(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]  # temp file cleaned up


def test_written_files_get_normal_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    store.write_text_atomic(tmp_path / "a.md", "x")
    assert (tmp_path / "a.md").stat().st_mode & 0o777 == 0o666 & ~umask


def test_json_takes_numpy_scalars_and_writes_non_finite_as_null(tmp_path):
    store.write_json_atomic(
        tmp_path / "s.json", {"a": np.float32("nan"), "b": np.int64(3), "c": [float("-inf"), 1.5]}
    )
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": 3, "c": [None, 1.5]}


def test_is_complete(tmp_path):
    assert not store.is_complete(tmp_path / "missing")
    (tmp_path / "summary.json").write_text("{bad")
    assert not store.is_complete(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    assert not store.is_complete(tmp_path)
    store.write_json_atomic(tmp_path / "summary.json", {"status": "ok"})
    assert store.is_complete(tmp_path)


def test_iter_run_dirs_ignores_derived_and_hidden_folders(tmp_path):
    for rel in [
        "cpu/smoke/b",
        "cpu/smoke/a",
        "tables/x",
        "figures/cpu/y",
        "benchmarks/z",
        "_scratch/cpu/s/r",
        "cpu/.tmp-run",
    ]:
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "config.json").write_text("{}")
    (tmp_path / "cpu" / "smoke" / "a" / "nested").mkdir()
    assert [p.relative_to(tmp_path).as_posix() for p in store.iter_run_dirs(tmp_path)] == [
        "cpu/smoke/a",
        "cpu/smoke/b",
    ]
    assert list(store.iter_run_dirs(tmp_path / "nope")) == []


def test_load_fixture_counts_order_and_skips():
    loaded = store.load_runs(FIXTURE)
    assert len(loaded.runs) == 22
    assert loaded.runs.groupby("device_tag").size().to_dict() == {CPU: 19, GPU: 3}
    keys = list(
        zip(loaded.runs["device_tag"], loaded.runs["sweep"], loaded.runs["task"], loaded.runs["run_id"])
    )
    assert keys == sorted(keys)
    assert loaded.runs["status"].value_counts().to_dict() == {"ok": 20, "diverged": 1, "failed": 1}
    skipped = {p.name.rsplit("-", 1)[0]: reason for p, reason in loaded.skipped}
    assert set(skipped) == {"echo-tf_style-4-tanh4-lr0.3-s0", "echo-williams_peng-4-tanh4-lr0.3-s0"}
    assert skipped["echo-tf_style-4-tanh4-lr0.3-s0"].startswith("summary.json is unreadable")
    assert skipped["echo-williams_peng-4-tanh4-lr0.3-s0"] == "incomplete: no summary.json"
    assert 0.3 not in set(loaded.runs["lr"])
    # every loaded curve belongs to a loaded run; val minimum equals the summary's min_val_loss
    # (a run id names the config, not the device: the same run on CPU and GPU shares it)
    val = loaded.curves[loaded.curves["split"] == "val"].groupby(["device_tag", "run_id"])["loss"].min()
    ok = loaded.runs[loaded.runs["status"] == "ok"].set_index(["device_tag", "run_id"])["min_val_loss"]
    assert {k: val[k] for k in ok.index} == ok.to_dict()
    assert set(loaded.curves["run_id"]) <= set(loaded.runs["run_id"])


def test_load_runs_is_deterministic():
    a, b = store.load_runs(FIXTURE), store.load_runs(FIXTURE)
    pd.testing.assert_frame_equal(a.runs, b.runs)
    pd.testing.assert_frame_equal(a.curves, b.curves)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (
            lambda r: (r / "curve.parquet").write_bytes(b"PAR1 not parquet PAR1"),
            "curve.parquet is unreadable",
        ),
        (lambda r: (r / "curve.parquet").unlink(), "curve.parquet is unreadable"),
        (lambda r: (r / "env.json").write_text("{}"), "env.json is missing keys"),
        (
            lambda r: _edit(r / "config.json", lambda c: c["model"].pop("hidden_size")),
            "missing key 'model.hidden_size'",
        ),
        (lambda r: _edit(r / "config.json", lambda c: c["model"].update(hidden_size="four")), "four"),
        (lambda r: _edit(r / "summary.json", lambda s: s.update(status="weird")), "status='weird'"),
    ],
)
def test_bad_run_folders_are_skipped_never_raised(tmp_path, damage, reason):
    good_rec, bad_rec = make_records(seed=1), make_records(seed=2)
    good, bad = run_path(tmp_path, good_rec), run_path(tmp_path, bad_rec)
    store.write_run(good, *good_rec)
    store.write_run(bad, *bad_rec)
    damage(bad)
    loaded = store.load_runs(tmp_path)
    assert loaded.runs["run_id"].tolist() == [good.name]
    assert len(loaded.skipped) == 1 and loaded.skipped[0][0] == bad
    assert reason in loaded.skipped[0][1]
    assert set(loaded.curves["run_id"]) == {good.name}


def _edit(path: Path, fn) -> None:
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def test_empty_root_gives_empty_frames_with_columns(tmp_path):
    shutil.copytree(FIXTURE / "benchmarks", tmp_path / "benchmarks")  # not runs
    loaded = store.load_runs(tmp_path)
    assert loaded.runs.empty and loaded.curves.empty and loaded.skipped == []
    assert list(loaded.runs.columns)[: len(BRIEF_RUN_COLUMNS)] == BRIEF_RUN_COLUMNS
    assert list(loaded.curves.columns) == BRIEF_CURVE_COLUMNS
