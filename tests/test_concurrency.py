"""Concurrency: sweeps sharing one results folder train every run exactly once and tear nothing.

Each run is claimed (``store.claim_run``: an flock on ``.lock-<run>`` beside its folder) before
it starts and released after its record is written; a sweep that finds a run claimed retries
it until the holder completes it (then skips it) or dies (then trains it). These tests race two
sweep drivers (threads here; two CLI processes started at the same instant, slow), a Ray sweep
against a local one (slow), a sweep against claims held by this test and by a killed process, and
writers of one run folder, then check the folder: every run complete once, every file whole, no
temp folders or lock files left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tbptt_bench.runs import harness, planning, store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\[\d+/\d+\] (ok|diverged|failed|skipped)\s+(\S+)")

# Imports everything first, then waits for the go file, so both sweeps plan at the same moment.
STARTER = """
import os, sys, time
from tbptt_bench import cli  # noqa: F401 - the slow imports happen before the start line
from tbptt_bench.runs import harness, sweep  # noqa: F401
go = sys.argv[1]
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(cli.main(sys.argv[2:]))
"""


def planned_ids(tasks: list[str], seeds: int, styles: list[str] | None = None) -> list[str]:
    specs = [load_spec(REPO / "tasks" / f"{t}.toml") for t in tasks]
    return sorted(r.config.run_id for r in sweep.plan(specs, "smoke", "cpu-x", "/nonexistent", seeds, styles))


def trained_by(stdout: str) -> Counter:
    """run_id -> how often this sweep trained it (its per-run lines; "skipped" lines excluded)."""
    return Counter(
        m.group(2) for line in stdout.splitlines() if (m := LINE.match(line)) and m.group(1) != "skipped"
    )


def assert_folder_whole(results: Path, expected_ids: list[str]) -> None:
    """Every planned run complete once, every file whole and on schema, nothing hidden left over."""
    loaded = store.load_runs(results)
    assert loaded.skipped == []
    assert sorted(loaded.runs["run_id"]) == expected_ids
    assert set(loaded.runs["status"]) == {"ok"}
    for run_dir in store.iter_run_dirs(results):
        assert sweep.run_problem(run_dir) is None, run_dir
        assert sorted(p.name for p in run_dir.iterdir()) == [
            "config.json",
            "curve.parquet",
            "env.json",
            "summary.json",
        ]
    assert [p.name for p in results.rglob(".*")] == []  # no .tmp-/.old- folders, no .lock- files


def test_two_sweep_drivers_at_once_train_every_run_exactly_once(tmp_path):
    """Two drivers in one process (threads: cheap to start together), each forking its workers."""
    specs = [load_spec(REPO / "tasks" / f"{t}.toml") for t in ("echo", "adding")]
    tag = sweep.local_device_tag("cpu")
    plans = [sweep.plan(specs, "smoke", tag, tmp_path, seeds_override=2) for _ in range(2)]
    assert all(r.state == "pending" for p in plans for r in p)
    counts: list = [None, None]
    start = threading.Barrier(2)

    def drive(i: int) -> None:
        start.wait()
        counts[i] = sweep.execute(plans[i], tmp_path, "cpu", quiet=True)

    threads = [threading.Thread(target=drive, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    n = len(plans[0])
    assert counts[0]["ok"] + counts[1]["ok"] == n  # every run trained once in all
    assert counts[0]["skipped"] + counts[1]["skipped"] == n  # and skipped by the other driver
    assert not counts[0]["failed"] and not counts[1]["failed"]
    assert_folder_whole(tmp_path, sorted(r.config.run_id for r in plans[0]))


@pytest.mark.slow  # two CLI processes, each importing torch twice (driver, forkserver): ~30 s on 2 cores
def test_two_cli_sweeps_at_once_train_every_run_exactly_once(tmp_path):
    results, go = tmp_path / "results", tmp_path / "go"
    argv = ["sweep", "echo", "adding", "--preset", "smoke", "--seeds", "2", "--results", str(results)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(go), *argv],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    time.sleep(3.0)  # both import torch and the package, then wait on the go file
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    expected = planned_ids(["echo", "adding"], 2)
    counts = [trained_by(out) for out, _ in outs]
    assert sorted((counts[0] + counts[1]).elements()) == expected  # every run trained once, by one sweep
    assert sum(counts[0].values()) and sum(counts[1].values()), outs  # and the two really overlapped
    assert_folder_whole(results, expected)


def test_a_claimed_run_waits_for_its_holder_then_is_skipped_or_taken_over(tmp_path):
    spec, tag = load_spec(REPO / "tasks" / "echo.toml"), sweep.local_device_tag("cpu")
    first, third = sweep.plan([spec], "smoke", tag, tmp_path, styles_override=["tf_style(5)", "random(0.2)"])
    (second,) = sweep.plan([spec], "quick", tag, tmp_path, styles_override=["williams_peng(5)"])  # ~1.5 s
    runs = [first, second, third]
    # 1. This test holds run 1 ("another sweep is training it"); the holder's temp folder exists.
    held = store.claim_run(first.run_dir)
    assert held is not None and store.claim_run(first.run_dir) is None
    tmp = first.run_dir.parent / f".tmp-{first.run_dir.name}-{os.getpid()}"
    tmp.mkdir()
    # 2. Another process holds run 3, then dies without finishing it (SIGKILL: no clean-up at all).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from tbptt_bench.runs import store;"
            f"c = store.claim_run({str(third.run_dir)!r}); print(c is not None, flush=True);"
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    result: dict = {}
    worker = threading.Thread(
        target=lambda: result.update(counts=sweep.execute(runs, tmp_path, "cpu", quiet=True))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 120
        lock = second.run_dir.parent / f".lock-{second.run_dir.name}"
        while not lock.exists():
            assert worker.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.01)
        wall, cpu = time.monotonic(), time.process_time()
        while not store.is_complete(second.run_dir):
            assert worker.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.05)
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        # while its one worker trains, a driver waiting to retry a held run sleeps (no busy loop)
        assert cpu < 0.4, (cpu, wall)
        time.sleep(0.6)  # several retry rounds: the held runs must not start
        assert not first.run_dir.exists() and not third.run_dir.exists()
        assert tmp.is_dir()  # a live holder's temp folder is not "cleaned up" under it
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        # 3. The holder of run 1 finishes it and lets go: the sweep must not train it again.
        mine = harness.run_record(first.config, "cpu")
        tmp.rmdir()
        harness.write_record(first.run_dir, mine)
        stamp = (first.run_dir / "summary.json").stat().st_mtime_ns
        held.release()
        worker.join(120)
    finally:
        held.release()
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()
        worker.join(120)
    assert not worker.is_alive()
    assert result["counts"] == {"ok": 2, "skipped": 1}  # runs 2 and 3 trained here, run 1 skipped
    assert (first.run_dir / "summary.json").stat().st_mtime_ns == stamp
    assert all(sweep.run_problem(r.run_dir) is None for r in runs)
    assert [p.name for p in tmp_path.rglob(".*")] == []  # the dead holder's lock file is gone too


def test_concurrent_writers_of_one_run_leave_one_whole_record(tmp_path, monkeypatch):
    """write_record racing itself (e.g. an orphaned worker and its replacement): one whole run."""
    cfg = load_spec(REPO / "tasks" / "echo.toml")
    run = sweep.plan([cfg], "smoke", sweep.local_device_tag("cpu"), tmp_path)[0]
    rec = harness.run_record(run.config, "cpu")
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                harness.write_record(
                    run.run_dir,
                    harness.RunRecord(
                        rec.config, rec.env, rec.curve, {**rec.summary, "eval_wall_s": float(i)}
                    ),
                )
        except BaseException as e:
            errors.append(e)

    # threads share a pid, and so a temp folder name: give each its own by faking the pid
    ids: dict[int, int] = {}
    monkeypatch.setattr(os, "getpid", lambda: ids.setdefault(threading.get_ident(), 10_000_000 + len(ids)))
    threads = [threading.Thread(target=write, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert errors == []
    assert sweep.run_problem(run.run_dir) is None
    assert sorted(p.name for p in run.run_dir.parent.iterdir()) == [run.run_dir.name]


@pytest.mark.ray
@pytest.mark.slow  # a local Ray instance (fresh worker per run) racing a CLI process: ~50 s on 2 cores
def test_ray_sweep_and_local_sweep_share_a_folder(tmp_path):
    try:
        import ray
    except ImportError:
        pytest.skip("ray not installed: pip install -e .[ray]")
    results, go = tmp_path / "results", tmp_path / "go"
    styles = ["tf_style(5)", "williams_peng(5)", "random(0.2)", "full()"]
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)  # three workers at once
    try:
        tag = sweep.ray_device_tag("cpu")
        runs = sweep.plan([load_spec(REPO / "tasks" / "echo.toml")], "smoke", tag, results, 2, styles)
        argv = ["sweep", "echo", "--preset", "smoke", "--seeds", "2", "--results", str(results)]
        for s in styles:
            argv += ["--style", s]
        local = subprocess.Popen(
            [sys.executable, "-c", STARTER, str(go), *argv],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(2.0)
        go.write_text("go")
        counts = sweep.execute(runs, results, "cpu", backend="ray", quiet=True)
        out, err = local.communicate(timeout=300)
    finally:
        ray.shutdown()
    assert local.returncode == 0, out + err
    by_local = trained_by(out)
    expected = sorted(r.config.run_id for r in runs)
    assert max(by_local.values(), default=1) == 1 and set(by_local) <= set(expected)
    assert counts["ok"] == len(expected) - len(by_local)  # Ray trained exactly the rest
    assert counts["ok"] + counts["skipped"] == len(expected) and counts["ok"] >= 1
    assert_folder_whole(results, expected)


def test_a_run_held_by_a_stopped_process_is_said_then_left_out_after_the_timeout(
    tmp_path, monkeypatch, capsys
):
    """Issue #16: a sweep waited forever, silently, on a lock held by a SIGSTOPped process."""
    spec, tag = load_spec(REPO / "tasks" / "echo.toml"), sweep.local_device_tag("cpu")
    (run,) = sweep.plan([spec], "smoke", tag, tmp_path, styles_override=["tf_style(5)"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from tbptt_bench.runs import store;"
            f"c = store.claim_run({str(run.run_dir)!r}); print(c is not None, flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "True"
        os.kill(holder.pid, signal.SIGSTOP)
        monkeypatch.setattr(planning, "LOCK_WARN_S", 0.3)  # read by planning._Queue
        counts = sweep.execute([run], tmp_path, "cpu", quiet=True, lock_timeout_s=1.5)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    err = capsys.readouterr().err
    assert counts == {"not_run": 1, "skipped": 0}
    (warning,) = [line for line in err.splitlines() if line.startswith("tbptt-bench: waiting for ")]
    assert f"process {holder.pid}, which is STOPPED" in warning and "giving up after 1.5 s" in warning
    assert "not run" in err and "held by" in err
    assert not run.run_dir.exists()
