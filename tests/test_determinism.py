"""Determinism: the same config and seed give identical records on CPU, wherever they run.

"Identical" means every file of the run record except what measures the machine: curve.parquet
(split, update, timesteps, loss: bit for bit; the wall-time column differs), summary.json
without timing and memory fields, config.json whole, env.json without the thread count. The
plan covers the paths that could drift: random truncation (xi draws), stored history
(Williams–Peng on the manual Elman path), full BPTT, and a GRU task through autograd.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbptt_bench.runs import harness, store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
TIMING = {"train_wall_s", "eval_wall_s", "updates_per_s", "timesteps_per_s", "peak_mem_bytes"}
MACHINE = {"cpu_threads"}


def plan(root: Path, tag: str | None = None) -> list[sweep.PlannedRun]:
    specs = [load_spec(REPO / "tasks" / f"{t}.toml") for t in ("echo", "adding")]
    return sweep.plan(specs, "smoke", tag or sweep.local_device_tag("cpu"), root)


def records(root: Path) -> dict[str, dict]:
    out = {}
    for run in store.iter_run_dirs(root):
        assert sweep.run_problem(run) is None, run
        summary = json.loads((run / "summary.json").read_text())
        env = json.loads((run / "env.json").read_text())
        out[run.name] = {
            "curve": [(r["split"], r["update"], r["timesteps"], r["loss"]) for r in store.read_curve(run)],
            "summary": {k: v for k, v in summary.items() if k not in TIMING},
            "config": json.loads((run / "config.json").read_text()),
            "env": {k: v for k, v in env.items() if k not in MACHINE},
        }
    return out


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("first")
    runs = plan(root)
    assert sweep.execute(runs, root, "cpu", quiet=True) == {"ok": len(runs), "skipped": 0}
    got = records(root)
    assert sorted(got) == sorted(r.config.run_id for r in runs)
    styles = {rec["config"]["style"]["spec"] for rec in got.values()}
    assert {"random_depth(5)", "williams_peng(5)", "full()"} <= styles
    return got


def test_two_local_sweeps_give_identical_records(first, tmp_path):
    runs = plan(tmp_path)
    assert sweep.execute(runs, tmp_path, "cpu", jobs=2, quiet=True) == {"ok": len(runs), "skipped": 0}
    second = records(tmp_path)
    assert second == first
    # and the records are not trivially equal: the runs differ from one another
    assert len({json.dumps(r["curve"]) for r in first.values()}) == len(first)


def test_a_run_in_this_process_matches_its_worker_record(first):
    run = next(r for r in plan(Path("/nonexistent")) if r.config.style == "random_depth(5)")
    rec = harness.run_record(run.config, "cpu")
    mine = first[run.config.run_id]
    assert [(r["split"], r["update"], r["timesteps"], r["loss"]) for r in rec.curve] == mine["curve"]
    assert {k: v for k, v in rec.summary.items() if k not in TIMING} == mine["summary"]
    assert json.loads(json.dumps(rec.config)) == mine["config"]


def test_another_seed_changes_the_records(first, tmp_path):
    specs = [load_spec(REPO / "tasks" / "echo.toml")]
    runs = [
        r
        for r in sweep.plan(specs, "smoke", sweep.local_device_tag("cpu"), tmp_path, seeds_override=2)
        if r.config.seed == 1 and r.config.style == "random_depth(5)"
    ]
    assert sweep.execute(runs, tmp_path, "cpu", quiet=True)["ok"] == 1
    (other,) = records(tmp_path).values()
    seed0 = next(v for v in first.values() if v["config"]["style"]["spec"] == "random_depth(5)")
    assert other["curve"] != seed0["curve"]


@pytest.mark.ray
@pytest.mark.slow  # a local Ray instance and one fresh worker process per run: ~30 s on 2 cores
def test_the_ray_backend_gives_the_local_records(first, tmp_path):
    try:
        import ray
    except ImportError:
        pytest.skip("ray not installed: pip install -e .[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        runs = plan(tmp_path, sweep.ray_device_tag("cpu"))
        assert sweep.execute(runs, tmp_path, "cpu", backend="ray", quiet=True) == {
            "ok": len(runs),
            "skipped": 0,
        }
    finally:
        ray.shutdown()
    assert records(tmp_path) == first
