"""Faults: kills, damaged run files and full disks lose nothing complete and count nothing incomplete.

- A crash at every file-system step of writing a run (a forked writer ``os._exit``s right before
  its n-th rename/replace/fsync/unlink) leaves the old record or the new one, whole, never a mix.
- A sweep SIGKILLed at several points (slow: each needs a fresh CLI process) keeps every complete
  run, shows nothing half-written, and the next sweep finishes the rest with identical records.
- Run files truncated, filled with garbage or deleted: the loader and the report skip those
  folders with a reason, the next sweep says it reruns them and does, leaving good runs alone.
- A full disk (ENOSPC from a monkeypatched ``os.replace``, and a real 40 KiB tmpfs where mounting
  is allowed): the old record survives, the sweep stops with one error line and exit 2 without
  writing half a record (no "failed" record per remaining run), and a later sweep completes them.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbptt_bench import cli
from tbptt_bench.report import build as report
from tbptt_bench.runs import backends, harness, store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
FILES = ["config.json", "curve.parquet", "env.json", "summary.json"]
TIMING = {"train_wall_s", "eval_wall_s", "updates_per_s", "timesteps_per_s", "peak_mem_bytes"}
ECHO = REPO / "tasks" / "echo.toml"
SMOKE = ["sweep", "echo", "--preset", "smoke", "--quiet"]


def records(results: Path) -> dict[str, tuple]:
    """run_id -> (curve without wall times, summary without timing/memory, config, env minus nothing)."""
    out = {}
    for run in store.iter_run_dirs(results):
        assert sweep.run_problem(run) is None, run
        curve = [(r["split"], r["update"], r["timesteps"], r["loss"]) for r in store.read_curve(run)]
        summary = json.loads((run / "summary.json").read_text())
        out[run.name] = (
            curve,
            {k: v for k, v in summary.items() if k not in TIMING},
            json.loads((run / "config.json").read_text()),
        )
    return out


def main_quiet(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The echo smoke sweep, uninterrupted."""
    results = tmp_path_factory.mktemp("ref") / "results"
    assert main_quiet([*SMOKE, "--results", str(results)]) == 0
    return records(results)


# -- a crash at every step of writing one run ------------------------------------------------------
def _config():
    return sweep.plan([load_spec(ECHO)], "smoke", "cpu-x", "/nonexistent")[0].config


def _record(marker: float) -> harness.RunRecord:
    """A valid record (two updates, one evaluation) whose numbers all carry ``marker``."""
    cfg = _config()
    summary = {k: None for k in store.SUMMARY_KEYS} | {
        "status": "ok",
        "updates": 2,
        "timesteps": 10,
        "warmup_updates": 0,
        "min_val_loss": marker,
        "train_wall_s": 0.2,
        "eval_wall_s": marker,
        "clip_rate": 0.0,
        "engine_path": "loop",
    }
    curve = [
        {
            "split": "train",
            "update": u,
            "timesteps": 5 * u,
            "backprop_steps": 4 * (5 * u),
            "train_wall_s": 0.1,
            "loss": marker + u,
        }
        for u in (1, 2)
    ] + [
        {
            "split": "val",
            "update": 2,
            "timesteps": 10,
            "backprop_steps": 40,
            "train_wall_s": 0.2,
            "loss": marker,
        }
    ]
    env = {k: None for k in store.ENV_KEYS} | {"device_name": "cpu x"}
    return harness.RunRecord(
        config=harness.base_config(cfg, "cpu") | {"loss": "ce"}, env=env, curve=curve, summary=summary
    )


def _run_dir(root: Path) -> Path:
    """The folder ``_record`` belongs in: its name is the run id its config hashes to."""
    return root / "cpu-x" / "smoke" / _config().run_id


STEPS = ("replace", "rename", "fsync", "unlink", "rmdir")


def _write_and_die_at(run_dir: Path, rec: harness.RunRecord, n: int) -> None:
    """In a forked child: write ``rec``, dying (like SIGKILL, no clean-up) before file-system call n."""
    calls = [0]
    for name in STEPS:
        real = getattr(os, name)

        def step(*a, _real=real, **k):
            calls[0] += 1
            if calls[0] == n:
                os._exit(137)
            return _real(*a, **k)

        setattr(os, name, step)
    harness.write_record(run_dir, rec)
    os._exit(3)  # finished: the writer makes fewer than n calls


def _files(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in FILES}


@pytest.mark.parametrize("old_run", [False, True], ids=["new-folder", "replacing-a-run"])
def test_a_crash_at_every_step_of_writing_leaves_the_old_or_the_new_record(tmp_path, old_run):
    old, new = _record(1.0), _record(2.0)
    ref_old, ref_new = _run_dir(tmp_path / "ref-old"), _run_dir(tmp_path / "ref-new")
    harness.write_record(ref_old, old)
    harness.write_record(ref_new, new)
    wanted = {"old": _files(ref_old), "new": _files(ref_new)}
    ctx = mp.get_context("fork")
    n, outcomes = 0, []
    while True:
        n += 1
        root = tmp_path / f"crash{n}"
        run_dir = _run_dir(root)
        if old_run:
            harness.write_record(run_dir, old)
        p = ctx.Process(target=_write_and_die_at, args=(run_dir, new, n))
        p.start()
        p.join()
        if p.exitcode == 3:  # the writer finished before its n-th call: every step was covered
            break
        assert p.exitcode == 137, p.exitcode
        # What a reader sees: no run, or exactly one whole record, never a mix of two runs.
        visible = list(store.iter_run_dirs(root))
        if visible:
            assert visible == [run_dir] and sweep.run_problem(run_dir) is None
            seen = _files(run_dir)
            assert seen in (wanted["old"], wanted["new"]), f"crash at call {n}: a mixed record"
            outcomes.append("new" if seen == wanted["new"] else "old")
            assert p.exitcode == 137 or outcomes[-1] == "new"
        elif old_run:
            # only between setting the old run aside and moving the new one in; both are whole
            hidden = {h.name.split("-")[0]: _files(h) for h in run_dir.parent.glob(f".*-{run_dir.name}-*")}
            assert hidden == {".old": wanted["old"], ".tmp": wanted["new"]}, f"crash at call {n}"
            outcomes.append("swap")
        else:
            outcomes.append("none")
        loaded = store.load_runs(root)
        assert loaded.skipped == [] and len(loaded.runs) == len(visible)
        # the next sweep clears what the crash left (temp folders, temp files) and nothing else
        sweep.clean_leftovers([sweep.PlannedRun(None, run_dir, "complete")])
        assert [p.name for p in root.rglob(".*")] == []
        assert list(store.iter_run_dirs(root)) == visible
    assert n > 10  # every fsync/replace of four files, the renames, the clean-ups
    assert set(outcomes) == ({"old", "swap", "new"} if old_run else {"none"})


# -- SIGKILL of a whole sweep (CLI process) at several points ------------------------------------
def _first(pattern: str, root: Path, proc: subprocess.Popen, deadline: float) -> None:
    while not list(root.glob(pattern)):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"no {pattern} in time"
        time.sleep(0.005)


@pytest.mark.slow  # a fresh CLI process per point (torch imports: ~10 s each on 2 cores)
@pytest.mark.parametrize("point", ["claim+0.5s", "claim+1.5s", "first-summary"])
def test_sigkill_at_several_points_then_the_next_sweep_repairs(reference, tmp_path, point):
    results = tmp_path / "results"
    argv = [sys.executable, "-m", "tbptt_bench", *SMOKE, "--results", str(results)]
    with subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        deadline = time.monotonic() + 300
        if point == "first-summary":
            _first("*/smoke/*/summary.json", results, proc, deadline)
        else:
            _first("*/smoke/.lock-*", results, proc, deadline)
            time.sleep(float(point.split("+")[1][:-1]))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)  # an orphaned worker notices its driver is gone within 0.2 s and exits
    # Nothing half-written is visible: every run folder present is whole and on schema.
    seen = records(results) if results.exists() else {}
    assert set(seen) < set(reference)
    assert all(seen[k][:2] == reference[k][:2] for k in seen)
    loaded = store.load_runs(results) if results.exists() else None
    assert loaded is None or loaded.skipped == []
    # The next sweep trains exactly the rest, and ends with the uninterrupted sweep's records.
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("summary.json")}
    assert main_quiet([*SMOKE, "--results", str(results)]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert {k: v[:2] for k, v in records(results).items()} == {k: v[:2] for k, v in reference.items()}
    assert [p.name for p in results.rglob(".*")] == []


# -- damaged run files ---------------------------------------------------------------------------
def _cut_mid_file(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-3])  # a torn write: the footer is gone


def _cut_at_row(p: Path) -> None:
    rows = store.read_curve(p.parent)
    store.write_curve(p.parent, rows[:-2])  # two whole rows gone: a valid file that lost rows


DAMAGE = {
    "summary truncated": ("summary.json", lambda p: p.write_bytes(p.read_bytes()[:40])),
    "summary garbage": ("summary.json", lambda p: p.write_bytes(os.urandom(64))),
    "summary off-schema": ("summary.json", lambda p: p.write_text('{"status": "ok"}')),
    "config garbage": ("config.json", lambda p: p.write_bytes(b"\x00\xff" * 30)),
    "env deleted": ("env.json", lambda p: p.unlink()),
    "curve cut mid-file": ("curve.parquet", _cut_mid_file),
    "curve cut at a row": ("curve.parquet", _cut_at_row),
    "curve garbage": ("curve.parquet", lambda p: p.write_bytes(b"PAR1" + os.urandom(64) + b"PAR1")),
}


def test_damaged_runs_are_skipped_with_a_reason_then_rerun(reference, tmp_path, capsys, caplog):
    results = tmp_path / "results"
    assert main_quiet([*SMOKE, "--seeds", "3", "--results", str(results)]) == 0
    runs = sorted(store.iter_run_dirs(results))
    assert len(runs) == 12 and len(DAMAGE) < len(runs)
    damaged = dict(zip(DAMAGE, runs))
    for name, run in damaged.items():
        file, damage = DAMAGE[name]
        damage(run / file)
    intact = [r for r in runs if r not in damaged.values()]
    stamps = {r: (r / "summary.json").stat().st_mtime_ns for r in intact}
    # 1. Loader and report: every damaged folder is skipped with a reason (the row-boundary cut
    #    too: the loader and the sweep share one definition of a valid record), and the report says which.
    loaded = store.load_runs(results)
    skipped = {Path(p).name: reason for p, reason in loaded.skipped}
    visible_damage = damaged
    assert "train rows" in skipped[damaged["curve cut at a row"].name]
    assert sorted(skipped) == sorted(r.name for r in visible_damage.values())
    assert "unreadable" in skipped[damaged["curve cut mid-file"].name]
    assert sorted(loaded.runs["run_id"]) == sorted(r.name for r in runs if r.name not in skipped)
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.build"):
        report.build_report(results, figures=False)
    warned = [r.getMessage() for r in caplog.records if r.name == "tbptt_bench.report.build"]
    assert len(warned) == len(visible_damage) and all(m.startswith("skipped run folder ") for m in warned)
    index = (results / "tables" / "index.md").read_text()
    assert f"({len(visible_damage)} run folders skipped)" in index
    assert all(f"`{r.relative_to(results).as_posix()}`" in index for r in visible_damage.values())
    # 2. The plan marks every damaged folder for a rerun, saying why; the intact ones are complete.
    capsys.readouterr()
    assert main_quiet([*SMOKE, "--seeds", "3", "--results", str(results), "--dry-run"]) == 0
    plan = capsys.readouterr().out.splitlines()
    for run in damaged.values():
        line = next(line for line in plan if line.split()[2] == str(run))
        assert line.startswith("train incomplete") and line.endswith(")"), line
    assert sum(line.startswith("skip  complete") for line in plan) == len(intact)
    # 3. The next sweep says what it reruns, reruns exactly those, and leaves the rest alone.
    assert cli.main(["sweep", "echo", "--preset", "smoke", "--seeds", "3", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert sorted(
        line.split()[2] for line in out.splitlines() if line.startswith("tbptt-bench: rerunning ")
    ) == sorted(str(r) for r in damaged.values())
    assert f"done: ok {len(damaged)}, diverged 0, failed 0, skipped {len(intact)}" in out
    assert {r: (r / "summary.json").stat().st_mtime_ns for r in intact} == stamps
    repaired = records(results)
    assert len(repaired) == 12 and {k: v[:2] for k, v in repaired.items() if k in reference} == {
        k: v[:2] for k, v in reference.items()
    }
    assert [p.name for p in results.rglob(".*")] == []


# -- a full disk ---------------------------------------------------------------------------------
def _enospc_at(n: int):
    calls = [0]
    real = os.replace

    def replace(a, b):
        calls[0] += 1
        if calls[0] >= n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(b))
        return real(a, b)

    return replace


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_enospc_while_replacing_a_run_keeps_the_old_one(tmp_path, monkeypatch, n):
    run_dir = _run_dir(tmp_path)
    harness.write_record(run_dir, _record(1.0))
    before = _files(run_dir)
    monkeypatch.setattr(os, "replace", _enospc_at(n))  # the n-th of the four file writes fails
    with pytest.raises(OSError, match="No space left on device"):
        harness.write_record(run_dir, _record(2.0))
    monkeypatch.undo()
    assert _files(run_dir) == before and sweep.run_problem(run_dir) is None
    assert [p.name for p in tmp_path.rglob(".*")] == []  # the half-written copy was removed


def test_a_sweep_on_a_full_disk_stops_with_one_line_and_a_later_sweep_completes_it(
    reference, tmp_path, monkeypatch, capsys
):
    """A full disk is the machine's state, not a run's result: the sweep stops at the first run that
    cannot be written (exit 2, one error line), instead of a failed record per remaining run."""
    import torch._dynamo  # noqa: F401 - imported once here, not lazily in every forked worker

    results = tmp_path / "results"
    # workers forked from this process inherit the full disk (the forkserver would not)
    monkeypatch.setattr(backends, "_context", lambda: mp.get_context("fork"))
    monkeypatch.setattr(os, "replace", _enospc_at(1))
    monkeypatch.setenv("TBPTT_BENCH_MACHINE", "test-box")  # no generic-CPU warning line; restored after
    status = cli.main(["sweep", "echo", "--preset", "smoke", "--results", str(results)])
    out, err = capsys.readouterr()
    monkeypatch.undo()
    assert status == 2, out + err
    assert err.startswith("tbptt-bench: error: [Errno 28] No space left on device") and err.count("\n") == 1
    assert "failed   " not in out  # no run is recorded as failed for it
    assert list(store.iter_run_dirs(results)) == []  # nothing half-written counts as a run
    assert [p.name for p in results.rglob(".*")] == []
    # space again: the next sweep completes every run
    assert main_quiet([*SMOKE, "--results", str(results)]) == 0
    assert {k: v[:2] for k, v in records(results).items()} == {k: v[:2] for k, v in reference.items()}


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 40 KiB file system (room for two 16 KiB smoke runs), where this process may mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux and root: the monkeypatched ENOSPC tests cover this")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40k", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({proc.stderr.strip()}): the monkeypatched ENOSPC tests cover this"
        )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_real_full_disk_keeps_complete_runs_and_the_rerun_completes_the_rest(
    reference, tiny_tmpfs, capsys, monkeypatch
):
    monkeypatch.setenv("TBPTT_BENCH_MACHINE", "test-box")  # no generic-CPU warning line; restored after
    results = tiny_tmpfs / "results"
    status = cli.main(["sweep", "echo", "--preset", "smoke", "--results", str(results)])
    out, err = capsys.readouterr()
    complete = records(results) if results.exists() else {}
    assert status == 2 and err.count("\n") == 1 and "No space left on device" in err, out + err
    assert 0 < len(complete) < len(reference)  # the disk filled part-way through the sweep
    assert all(complete[k][:2] == reference[k][:2] for k in complete)
    assert store.load_runs(results).skipped == []
    subprocess.run(["mount", "-o", "remount,size=4m", str(tiny_tmpfs)], check=True)
    assert main_quiet([*SMOKE, "--results", str(results)]) == 0
    assert {k: v[:2] for k, v in records(results).items()} == {k: v[:2] for k, v in reference.items()}
    assert [p.name for p in results.rglob(".*")] == []


def test_the_report_on_a_full_disk_is_a_one_line_error_and_keeps_the_old_tables(
    reference, tmp_path, monkeypatch, capsys
):
    results = tmp_path / "results"
    assert main_quiet([*SMOKE, "--results", str(results)]) == 0
    report.build_report(results, figures=False)
    before = {p: p.read_bytes() for p in (results / "tables").rglob("*") if p.is_file()}
    monkeypatch.setattr(os, "replace", _enospc_at(1))
    capsys.readouterr()
    assert main_quiet(["report", str(results)]) == 2
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert (
        err.startswith("tbptt-bench: error: [Errno 28] No space left on device") and err.count("\n") == 1
    ), err
    assert {p: p.read_bytes() for p in (results / "tables").rglob("*") if p.is_file()} == before
    assert [p.name for p in results.rglob(".*")] == []


# -- a finite blow-up is a divergence, not a result (issue #16, doubtful case) ---------------------
def test_a_run_ending_in_a_finite_blow_up_is_recorded_diverged_and_printed_short(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import tbptt_bench.engine.train as engine

    def train(model, x, y, style, optimizer, *, callback=None, **k):
        for t, loss in ((5, 0.7), (10, 3e7), (15, 0.6)):  # a finite transient above the bound: fine
            callback(SimpleNamespace(t=t, loss=loss, clipped=False, forward_steps=5, backprop_steps=5))
        return SimpleNamespace(path="loop")

    monkeypatch.setattr(engine, "train_stream", train)
    monkeypatch.setattr(harness, "_saved_bytes_probe", lambda *a, **k: None)
    cfg = _config()
    for final, status in ((0.5, "ok"), (6.3e29, "diverged")):  # a CE of 6.3e29 at the end: no result
        monkeypatch.setattr(engine, "evaluate_stream", lambda *a, final=final, **k: (final, None))
        rec = harness.run_record(cfg, "cpu")
        assert rec.summary["status"] == status, rec.summary
        run_dir = tmp_path / status / "smoke" / cfg.run_id
        harness.write_record(run_dir, rec)
        assert sweep.run_problem(run_dir) is None  # a valid record either way
    assert rec.summary["diverged_at_update"] == rec.summary["updates"] == 3 * cfg.budget.epochs
    monkeypatch.undo()
    from tbptt_bench.report import tables

    assert tables._f(6.3e29, ".3f") == "6.3e+29" and tables._csv_num(6.3e29) == "6.3e+29"
    assert tables._f(0.4567, ".3f") == "0.457"
