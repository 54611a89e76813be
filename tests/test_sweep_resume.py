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
from tbptt_bench.runs import backends, planning, store, sweep
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
        curve = [(r["split"], r["update"], r["timesteps"], r["loss"]) for r in store.read_curve(run)]
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


# -- a killed worker is not a result: failure_kind (issue #16, class 3) ------------------------------
def _fork_workers(monkeypatch) -> None:
    """Workers forked from this process, so a monkeypatched harness reaches them (forkserver would not)."""
    import multiprocessing as mp

    import torch._dynamo  # noqa: F401 - imported once here, not in every forked worker

    monkeypatch.setattr(backends, "_context", lambda: mp.get_context("fork"))


def _summaries(results: Path) -> dict[str, dict]:
    return {r.name: json.loads((r / "summary.json").read_text()) for r in store.iter_run_dirs(results)}


def test_a_worker_sigkilled_mid_run_is_an_infrastructure_failure_the_next_sweep_retrains(
    spec_file, uninterrupted, tmp_path, monkeypatch
):
    from tbptt_bench.runs import harness

    results = tmp_path / "results"
    tag = sweep.local_device_tag("cpu")
    spec = load_spec(spec_file)
    _fork_workers(monkeypatch)
    real = harness.execute_run

    def killed_mid_run(config, root, device, progress=None):
        def progress_then_die(done: int, total: int) -> None:
            if done == min(3, total):  # mid-run: after some updates, before any record is written
                os.kill(os.getpid(), signal.SIGKILL)
            if progress is not None:
                progress(done, total)

        return real(config, root, device, progress_then_die)

    monkeypatch.setattr(harness, "execute_run", killed_mid_run)
    counts = sweep.execute(sweep.plan([spec], "quick", tag, results), results, "cpu", quiet=True)
    monkeypatch.undo()
    assert counts == {"failed": 4, "skipped": 0}
    for summary in _summaries(results).values():
        assert summary["status"] == "failed" and summary["failure_kind"] == "infrastructure"
        assert "SIGKILL" in summary["error"]
    assert store.load_runs(results).skipped == []  # a valid record of a failed run ...
    plan = sweep.plan([spec], "quick", tag, results)
    assert {r.state for r in plan} == {"retry"}  # ... that the next sweep trains again
    assert all(r.reason.startswith("failed (infrastructure)") for r in plan)
    assert sweep.execute(plan, results, "cpu", quiet=True) == {"ok": 4, "skipped": 0}
    assert _records(results) == uninterrupted  # the same records as a sweep never killed


def test_a_deterministic_failure_is_kept_unless_retry_failed(spec_file, tmp_path, monkeypatch):
    import tbptt_bench.engine.train as engine

    results = tmp_path / "results"
    tag = sweep.local_device_tag("cpu")
    spec = load_spec(spec_file)
    _fork_workers(monkeypatch)

    def boom(*a, **k):
        raise ValueError("the model rejects this input")

    monkeypatch.setattr(engine, "train_stream", boom)
    plan = sweep.plan([spec], "smoke", tag, results, styles_override=["tf_style(5)"])
    assert sweep.execute(plan, results, "cpu", quiet=True) == {"failed": 1, "skipped": 0}
    monkeypatch.undo()
    (summary,) = _summaries(results).values()
    assert summary["failure_kind"] == "deterministic" and summary["error"].startswith("ValueError")
    assert [r.state for r in sweep.plan([spec], "smoke", tag, results, styles_override=["tf_style(5)"])] == [
        "complete"
    ]
    again = sweep.plan([spec], "smoke", tag, results, styles_override=["tf_style(5)"], retry_failed=True)
    assert [r.state for r in again] == ["retry"] and "deterministic" in again[0].reason
    assert sweep.execute(again, results, "cpu", quiet=True, retry_failed=True) == {"ok": 1, "skipped": 0}


def test_failed_records_of_the_earlier_protocol_are_classified_from_their_error():
    assert store.failure_kind_of({"status": "failed", "error": "worker process died (exit code -9)"}) == (
        "infrastructure"
    )
    assert store.failure_kind_of(
        {"status": "failed", "error": "OSError: [Errno 28] No space left on device"}
    ) == ("infrastructure")
    assert (
        store.failure_kind_of({"status": "failed", "error": "RuntimeError: shape mismatch"})
        == "deterministic"
    )
    assert store.failure_kind_of({"status": "ok", "error": None}) is None


def test_a_damaged_folder_that_cannot_be_removed_is_left_out_and_the_sweep_goes_on(
    spec_file, tmp_path, monkeypatch, capsys
):
    results = tmp_path / "results"
    tag = sweep.local_device_tag("cpu")
    spec = load_spec(spec_file)
    styles = ["tf_style(5)", "full()"]
    stuck = sweep.plan([spec], "smoke", tag, results, styles_override=styles)[0].run_dir
    stuck.mkdir(parents=True)
    (stuck / "summary.json").write_text("{garbage")
    real = planning.shutil.rmtree

    def rmtree(path, *a, **k):
        if Path(path) == stuck:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(planning.shutil, "rmtree", rmtree)
    plan = sweep.plan([spec], "smoke", tag, results, styles_override=styles)
    assert [r.state for r in plan] == ["incomplete", "pending"]
    counts = sweep.execute(plan, results, "cpu", quiet=True)
    err = capsys.readouterr().err
    assert counts == {"ok": 1, "not_run": 1, "skipped": 0}
    assert "not run" in err and "Permission denied" in err and err.count(stuck.name) == 1
    assert (stuck / "summary.json").read_text() == "{garbage"  # left as it was
