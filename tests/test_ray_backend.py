"""The Ray backend on a local instance: runs as Ray tasks, records written by the driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbptt_bench.runs import harness, store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def ray_local():
    try:
        import ray
    except ImportError:
        pytest.skip("ray not installed: pip install -e .[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_smoke_sweep_on_ray_matches_local_runs(ray_local, tmp_path):
    spec = load_spec(REPO / "tasks" / "echo.toml")
    tag = sweep.ray_device_tag("cpu")
    assert tag == sweep.local_device_tag("cpu")
    runs = sweep.plan([spec], "smoke", tag, tmp_path, styles_override=["tf_style(5)", "random(0.2)"])
    assert [r.state for r in runs] == ["pending", "pending"]

    counts = sweep.execute(runs, tmp_path, "cpu", backend="ray", quiet=True)
    assert counts == {"ok": 2, "skipped": 0}
    loaded = store.load_runs(tmp_path)
    assert loaded.skipped == [] and sorted(loaded.runs["run_id"]) == sorted(r.config.run_id for r in runs)
    for r in runs:
        assert store.is_complete(r.run_dir)
        curve = store.read_curve(r.run_dir)
        local = harness.run_record(r.config, "cpu")  # same config and seed, run here in-process
        assert [row["loss"] for row in curve] == [row["loss"] for row in local.curve]
        summary = json.loads((r.run_dir / "summary.json").read_text())
        assert summary["peak_mem_source"] == "ru_maxrss" and summary["status"] == "ok"

    again = sweep.plan([spec], "smoke", tag, tmp_path, styles_override=["tf_style(5)", "random(0.2)"])
    assert [r.state for r in again] == ["complete", "complete"]
    assert sweep.execute(again, tmp_path, "cpu", backend="ray", quiet=True) == {"skipped": 2}
