"""Resuming: a sweep SIGKILLed mid-run, rerun, equals an uninterrupted one; --force; incomplete folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbptt_bench import cli
from tbptt_bench.runs import store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

# The second run (williams_peng, an update every step) takes a while, so a kill after the first
# run completes lands in the middle of the sweep.
SPEC = """
[task]
name = "echo"
[model]
cell = "tanh"
hidden_sizes = [4]
[optimizer]
name = "adagrad"
lrs = [0.1]
[budget]
epochs = 1
batch = 4
row_len = 30
val_batch = 4
val_len = 40
eval_points = 10
warmup_updates = 1
[sweep]
styles = ["tf_style(5)", "williams_peng(5)", "random(0.3)", "full()"]
seeds = [0]
[presets.smoke]
[presets.quick]
row_len = 400
"""
TIMING_FIELDS = {"train_wall_s", "eval_wall_s", "updates_per_s", "timesteps_per_s", "peak_mem_bytes"}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "resume.toml"
    path.write_text(SPEC)
    return path


def _records(results: Path) -> dict[str, tuple[list[tuple], dict]]:
    """run_id -> (curve rows without wall times, summary without timing/memory fields)."""
    out = {}
    for run in store.iter_run_dirs(results):
        assert store.is_complete(run), run
        curve = [
            (r["split"], r["update"], r["timesteps"], r["loss"]) for r in store._read_curve(run / "curve.csv")
        ]
        summary = json.loads((run / "summary.json").read_text())
        out[run.name] = (curve, {k: v for k, v in summary.items() if k not in TIMING_FIELDS})
    return out


@pytest.fixture(scope="module")
def uninterrupted(spec_file, tmp_path_factory) -> dict:
    results = tmp_path_factory.mktemp("ref") / "results"
    assert cli.main(["sweep", str(spec_file), "--preset", "quick", "--results", str(results), "--quiet"]) == 0
    return _records(results)


@pytest.mark.slow  # two CLI processes with torch imports: ~40 s on a busy 2-core machine
def test_sigkill_mid_sweep_then_rerun_equals_an_uninterrupted_sweep(spec_file, uninterrupted, tmp_path):
    results = tmp_path / "results"
    argv = [
        sys.executable,
        "-m",
        "tbptt_bench",
        "sweep",
        str(spec_file),
        "--preset",
        "quick",
        "--results",
        str(results),
        "--quiet",
    ]
    with subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        deadline = time.monotonic() + 300
        while not list(results.rglob("summary.json")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no run completed in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)  # the orphaned worker notices its driver is gone within 0.2 s and exits
    complete_at_kill = len(list(results.rglob("summary.json")))
    assert 0 < complete_at_kill < len(uninterrupted)

    rerun = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    resumed = _records(results)
    assert resumed == uninterrupted  # every run exactly once, identical losses and summaries
    leftovers = [p.name for p in results.rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_force_replaces_runs_and_incomplete_folders_are_rerun(spec_file, uninterrupted, tmp_path):
    results = tmp_path / "results"
    argv = [
        "sweep",
        str(spec_file),
        "--preset",
        "quick",
        "--results",
        str(results),
        "--quiet",
        "--style",
        "tf_style(5)",
        "--style",
        "full()",
    ]
    assert cli.main(argv) == 0
    runs = sorted(store.iter_run_dirs(results))
    assert len(runs) == 2
    # 1. an incomplete folder (killed before its summary) is cleaned and rerun
    (runs[0] / "summary.json").unlink()
    (runs[0] / "stray.tmp").write_text("half a run")
    stamp = (runs[1] / "summary.json").stat().st_mtime_ns
    assert cli.main(argv) == 0
    assert store.is_complete(runs[0]) and not (runs[0] / "stray.tmp").exists()
    assert (runs[1] / "summary.json").stat().st_mtime_ns == stamp  # the complete one was skipped
    # 2. --force reruns complete runs, replacing each folder whole
    (runs[1] / "stray.tmp").write_text("from the old run")
    assert cli.main(argv + ["--force"]) == 0
    assert not (runs[1] / "stray.tmp").exists() and (runs[1] / "summary.json").stat().st_mtime_ns != stamp
    got = _records(results)
    assert got == {k: v for k, v in uninterrupted.items() if k in got}
    assert [p.name for p in results.rglob(".*")] == []


def test_clean_leftovers_removes_only_hidden_temp_folders(tmp_path):
    spec = load_spec(REPO / "tasks" / "echo.toml")
    runs = sweep.plan([spec], "smoke", "cpu-test", tmp_path)
    parent = runs[0].run_dir.parent
    for name in (".tmp-x-1", ".old-y-2", "keep-me", ".keep"):
        (parent / name).mkdir(parents=True)
    assert sweep.clean_leftovers(runs) == 2
    assert sorted(p.name for p in parent.iterdir()) == [".keep", "keep-me"]
