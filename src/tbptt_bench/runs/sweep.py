"""Plan a sweep, skip what is already complete, and run the rest locally or on Ray.

``plan`` expands specs into runs and marks the complete ones (``run_problem``: every file whole); ``execute``
runs what is left. Local backend: every run in a fresh worker process forked from a forkserver
that has torch and the harness preloaded (so ``ru_maxrss`` is per run and a start costs tens of
milliseconds), one at a time or ``jobs`` at once. Ray backend: one Ray task per run on a fresh
worker (``max_calls=1``); the worker returns its records and this driver writes them, so workers
need no shared disk. Sweeps may share a results folder: a driver claims each run
(``store.claim_run``) before starting it, so no run trains twice at once or is written half by
two sweeps.

>>> from tbptt_bench.runs.spec import load_spec
>>> runs = plan([load_spec("tasks/echo.toml")], "smoke", "cpu-test", "/tmp/none")  # doctest: +SKIP
>>> summary = execute(runs, "/tmp/none", "cpu", jobs=2)                            # doctest: +SKIP

The driver never runs torch compute: it only builds task objects (to validate them) and forks.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from . import store
from .spec import RunConfig, Spec, SpecError, resolve

__all__ = [
    "BACKENDS",
    "BackendError",
    "PlannedRun",
    "SweepError",
    "clean_leftovers",
    "execute",
    "local_device_tag",
    "plan",
    "ray_device_tag",
]

BACKENDS: tuple[str, ...] = ("local", "ray")
RAY_MISSING = (
    'the ray backend needs Ray: pip install -e ".[ray]" (in a checkout) or pip install "tbptt-bench[ray]"'
)


class SweepError(ValueError):
    """A sweep that cannot start: bad specs, overrides or results folder."""


class BackendError(RuntimeError):
    """A backend that cannot run here (e.g. ray is not installed)."""


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    run_dir: Path
    state: str  # "complete" | "pending" | "incomplete" (a folder without summary, or unreadable: rerun)
    reason: str | None = None  # why an "incomplete" folder is not a usable run


# -- planning --------------------------------------------------------------------------------
def plan(
    specs: Sequence[Spec],
    preset: str,
    device_tag: str,
    results_root: str | Path,
    seeds_override: int | None = None,
    styles_override: Sequence[str] | None = None,
) -> list[PlannedRun]:
    """Every run of ``preset`` for ``specs`` with its folder and state; validates tasks and cells.

    ``seeds_override=N`` runs seeds 0..N-1; ``styles_override`` replaces every spec's styles.
    """
    from .harness import HarnessError, check_config, run_dir_for

    if seeds_override is not None and (isinstance(seeds_override, bool) or seeds_override < 1):
        raise SweepError(f"--seeds {seeds_override!r} is not allowed: use a positive number of seeds")
    seeds = range(seeds_override) if seeds_override is not None else None
    out: dict[str, PlannedRun] = {}
    checked: set[tuple] = set()
    for spec in specs:
        for cfg in resolve(spec, preset, seeds, styles_override):
            key = (cfg.task, repr(sorted(dict(cfg.task_params).items())), cfg.cell, cfg.optimizer)
            if key not in checked:
                try:
                    check_config(cfg)
                except HarnessError as e:
                    raise SpecError(f"{spec.path}: {e}") from None
                checked.add(key)
            run_dir = run_dir_for(results_root, device_tag, cfg)
            if cfg.run_id not in out:
                problem = run_problem(run_dir) if run_dir.exists() else None
                state = "pending" if not run_dir.exists() else ("incomplete" if problem else "complete")
                out[cfg.run_id] = PlannedRun(cfg, run_dir, state, problem)
    return list(out.values())


def run_problem(run_dir: Path) -> str | None:
    """Why a run folder must be rerun (None: it is complete): unreadable, off-schema, or cut short.

    Beyond the store's checks, a record the harness wrote has one train row per update, so a
    curve.csv cut exactly at a row boundary is caught too.
    """
    problem = store.check_run(run_dir)
    if problem is not None:
        return problem
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    with open(run_dir / "curve.csv", encoding="utf-8") as f:
        train_rows = sum(1 for line in f if line.startswith("train,"))
    if train_rows != summary["updates"]:
        return f"curve.csv has {train_rows} train rows but summary.json counts {summary['updates']} updates"
    return None


def clean_leftovers(runs: Iterable[PlannedRun]) -> int:
    """Remove hidden temp folders and lock files a killed sweep left beside these runs; return how many.

    A temp folder (``.tmp-<run>-<pid>``, ``.old-<run>-<pid>``) of a run another sweep holds
    right now is being written: it is left alone, and so is that sweep's lock.
    """
    n = 0
    for parent in {r.run_dir.parent for r in runs}:
        if not parent.is_dir():
            continue
        for p in parent.iterdir():
            if p.is_dir() and p.name.startswith((".tmp-", ".old-")):
                claim = store.claim_run(parent / p.name[5:].rsplit("-", 1)[0])
                if claim is None:
                    continue
                try:
                    shutil.rmtree(p, ignore_errors=True)
                finally:
                    claim.release()
                n += 1
        n += store.remove_stale_claims(parent)
    return n


def _take(run: PlannedRun, force: bool) -> store.Claim | str:
    """Claim a run for this driver, or say why not: "busy" (another sweep holds it) or "done".

    Under the claim the folder is looked at again: another sweep may have completed it since
    planning ("done"), or it is a broken folder to clear before the run starts again.
    """
    claim = store.claim_run(run.run_dir)
    if claim is None:
        return "busy"
    if run.run_dir.exists():
        if run_problem(run.run_dir) is not None:
            shutil.rmtree(run.run_dir)
        elif not force:
            claim.release()
            return "done"
    return claim


# -- running ---------------------------------------------------------------------------------
def execute(
    runs: Sequence[PlannedRun],
    results_root: str | Path,
    device: str,
    *,
    backend: str = "local",
    jobs: int = 1,
    threads: int | None = 1,
    force: bool = False,
    quiet: bool = False,
    address: str | None = None,
) -> Counter:
    """Run every run that is not complete (all of them with ``force``); return status counts.

    ``threads``: torch intra-op threads per run (None: torch's default). One is the default:
    small recurrent models are latency-bound, and on a busy 2-core machine two threads per run
    measured 15x slower than one. Counts have keys "ok", "diverged", "failed" and "skipped"
    (complete runs left alone).

    Sweeps may share a results folder: each run is claimed (``store.claim_run``) before it
    starts and released once its record is written, so a run trains once at a time; a run
    another sweep holds is retried until that sweep finishes it (then skipped) or dies.
    """
    if backend not in BACKENDS:
        raise SweepError(f"backend {backend!r} is not allowed: use one of {', '.join(BACKENDS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise SweepError(f"--jobs {jobs!r} is not allowed: use a positive integer")
    clean_leftovers(runs)
    todo = [r for r in runs if force or r.state != "complete"]
    counts: Counter = Counter(skipped=len(runs) - len(todo))
    if not todo:
        return counts
    if backend == "ray":
        counts.update(_run_ray(todo, Path(results_root), device, address, threads, quiet, force))
    else:
        counts.update(_run_local(todo, Path(results_root), device, jobs, threads, quiet, force))
    return counts


class _Queue:
    """The runs still to start: ``next()`` claims one, skips those another sweep completed and
    sets aside those it holds (offered again after ``RETRY_S``)."""

    RETRY_S = 0.2

    def __init__(self, todo: Sequence[PlannedRun], force: bool, on_skip):
        self.todo, self.busy = deque(todo), deque()
        self.force, self.on_skip = force, on_skip
        self.retry_at = 0.0

    def __bool__(self) -> bool:
        return bool(self.todo or self.busy)

    def next(self) -> tuple[PlannedRun, store.Claim] | None:
        if not self.todo and self.busy and time.monotonic() >= self.retry_at:
            self.todo, self.busy = self.busy, deque()
        while self.todo:
            run = self.todo.popleft()
            got = _take(run, self.force)
            if got == "busy":
                self.busy.append(run)
                self.retry_at = time.monotonic() + self.RETRY_S
            elif got == "done":
                self.on_skip(run)
            else:
                return run, got
        return None

    def wait_s(self, can_start: bool) -> float | None:
        """How long a driver that ``can_start`` a run may block on its workers (None: until one reports)."""
        return max(0.0, self.retry_at - time.monotonic()) if self.busy and can_start else None


def _bars(quiet: bool):
    """tqdm, shown only on a terminal and without --quiet."""
    from tqdm import tqdm

    return tqdm, quiet or not sys.stderr.isatty()


def _report_line(tqdm, quiet: bool, i: int, n: int, run_id: str, summary: dict | None) -> None:
    if quiet:
        return
    if summary is None:
        tqdm.write(f"[{i}/{n}] skipped  {run_id}  (another sweep completed it meanwhile)")
        return
    loss = summary.get("min_val_loss")
    loss_txt = f"min val {loss:.4f}" if isinstance(loss, float) else "no val loss"
    extra = f" ({summary['error']})" if summary.get("error") else ""
    train_s = summary.get("train_wall_s") or 0.0
    tqdm.write(f"[{i}/{n}] {summary['status']:8s} {run_id}  {loss_txt}  train {train_s:.2f} s{extra}")


# -- local backend: a fresh forked process per run ----------------------------------------------
# Imported once by the forkserver, so a fresh worker starts in ~50 ms. torch._dynamo matters:
# the first optimizer built imports it lazily, which cost several seconds per run.
_PRELOAD = [
    "torch",
    "torch._dynamo",
    "tbptt_bench.runs.harness",
    "tbptt_bench.engine.train",
    "tbptt_bench.models",
    "tbptt_bench.tasks",
]


def _watch_driver(pid: int) -> None:
    """Die with the driver: a worker whose sweep was killed must not finish and write later."""

    def loop() -> None:
        while True:
            time.sleep(0.2)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=loop, daemon=True, name="watch-driver").start()


def _child(
    conn, cfg: dict, results_root: str, device: str, threads: int | None, driver: int, report: bool
) -> None:
    _watch_driver(driver)
    from .harness import execute_run

    if threads:
        import torch

        torch.set_num_threads(threads)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if report and (now - last[0] > 0.1 or done == total):
            last[0] = now
            conn.send(("progress", done, total))

    try:
        summary = execute_run(RunConfig.from_dict(cfg), results_root, device, progress)
        conn.send(("done", summary))
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0]))
    finally:
        conn.close()


def _context():
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _run_local(
    todo: Sequence[PlannedRun],
    root: Path,
    device: str,
    jobs: int,
    threads: int | None,
    quiet: bool,
    force: bool = False,
) -> Counter:
    from . import envinfo
    from .harness import failed_record, run_dir_for, write_record

    tqdm, hidden = _bars(quiet)
    ctx = _context()
    counts: Counter = Counter()
    active: dict[Any, tuple[Any, PlannedRun, store.Claim]] = {}
    outer = tqdm(total=len(todo), desc="runs", unit="run", disable=hidden, dynamic_ncols=True)
    inner = tqdm(
        total=0,
        desc="updates",
        unit="upd",
        position=1,
        leave=False,
        disable=hidden or jobs > 1,
        dynamic_ncols=True,
    )
    done_n = 0

    def finished(run: PlannedRun, summary: dict | None) -> None:
        nonlocal done_n
        counts[summary["status"] if summary else "skipped"] += 1
        done_n += 1
        outer.update(1)
        _report_line(tqdm, quiet, done_n, len(todo), run.config.run_id, summary)

    queue = _Queue(todo, force, lambda run: finished(run, None))
    try:
        while queue or active:
            while len(active) < jobs and (got := queue.next()) is not None:
                run, claim = got
                parent, child = ctx.Pipe(duplex=False)
                p = ctx.Process(
                    target=_child,
                    args=(
                        child,
                        run.config.to_dict(),
                        str(root),
                        device,
                        threads,
                        os.getpid(),
                        jobs == 1 and not hidden,
                    ),
                    daemon=True,
                )
                p.start()
                child.close()
                active[parent] = (p, run, claim)
                inner.reset(total=0)
                inner.set_description_str(run.config.run_id[:48])
            if not active:  # every run left is held by another sweep: look again shortly
                time.sleep(queue.wait_s(True) or 0.0)
                continue
            for conn in wait(list(active), timeout=queue.wait_s(len(active) < jobs)):
                p, run, claim = active[conn]
                try:
                    msg = conn.recv()
                except EOFError:
                    msg = None
                if msg is not None and msg[0] == "progress":
                    if inner.total != msg[2]:
                        inner.reset(total=msg[2])
                    inner.n = msg[1]
                    inner.refresh()
                    continue
                del active[conn]
                conn.close()
                p.join()
                try:
                    if msg is None:  # the worker died (e.g. killed for memory): record it as failed
                        rec = failed_record(
                            run.config, device, f"worker process died (exit code {p.exitcode})"
                        )
                        write_record(run_dir_for(root, envinfo.device_tag(rec.env), run.config), rec)
                        summary = rec.summary
                    elif msg[0] == "error":  # the worker could not write its record
                        summary = failed_record(run.config, device, msg[1]).summary
                    else:
                        summary = msg[1]
                finally:
                    claim.release()
                finished(run, summary)
    finally:
        for p, _, claim in active.values():
            p.kill()
            p.join()
            claim.release()
        inner.close()
        outer.close()
    return counts


def local_device_tag(device: str) -> str:
    """The results folder name for runs on this machine's ``device``."""
    from . import envinfo

    return envinfo.device_tag({"device_kind": device, "device_name": envinfo.device_name(device)})


# -- Ray backend ------------------------------------------------------------------------------
def _ray():
    try:
        import ray
    except ImportError:
        raise BackendError(RAY_MISSING) from None
    return ray


def _ray_init(address: str | None) -> Any:
    ray = _ray()
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False, include_dashboard=False)
    return ray


def _ray_probe(device: str) -> str:
    from . import envinfo

    return local_device_tag(envinfo.resolve_device(device))


def ray_device_tag(device: str, address: str | None = None) -> str:
    """Ask one Ray worker (a GPU one for cuda) which device tag its runs will be filed under."""
    ray = _ray_init(address)
    if device == "cuda" and ray.cluster_resources().get("GPU", 0) < 1:
        from .envinfo import DeviceError

        raise DeviceError("device 'cuda' was asked for but the Ray cluster has no GPU; use --device cpu")
    probe = ray.remote(num_cpus=1, num_gpus=1 if device == "cuda" else 0, max_calls=1)(_ray_probe)
    return ray.get(probe.remote(device))


def _ray_task(cfg: dict, device: str, threads: int | None):
    from .harness import run_record

    if threads:
        import torch

        torch.set_num_threads(threads)
    return run_record(RunConfig.from_dict(cfg), device)


def _run_ray(
    todo: Sequence[PlannedRun],
    root: Path,
    device: str,
    address: str | None,
    threads: int | None,
    quiet: bool,
    force: bool = False,
) -> Counter:
    from . import envinfo
    from .harness import failed_record, run_dir_for, write_record

    ray = _ray_init(address)
    tqdm, hidden = _bars(quiet)
    task = ray.remote(num_cpus=1, num_gpus=1 if device == "cuda" else 0, max_calls=1)(_ray_task)
    # Enough tasks in flight to keep the cluster busy; each holds a claim (an open file) meanwhile.
    in_flight = max(4, min(512, 2 * int(ray.cluster_resources().get("CPU", 1))))
    counts: Counter = Counter()
    pending: dict[Any, tuple[PlannedRun, store.Claim]] = {}
    with tqdm(total=len(todo), desc="runs (ray)", unit="run", disable=hidden) as bar:

        def finished(run: PlannedRun, summary: dict | None) -> None:
            counts[summary["status"] if summary else "skipped"] += 1
            bar.update(1)
            _report_line(tqdm, quiet, sum(counts.values()), len(todo), run.config.run_id, summary)

        queue = _Queue(todo, force, lambda run: finished(run, None))
        try:
            while queue or pending:
                while len(pending) < in_flight and (got := queue.next()) is not None:
                    pending[task.remote(got[0].config.to_dict(), device, threads)] = got
                if not pending:
                    time.sleep(queue.wait_s(True) or 0.0)
                    continue
                ready, _ = ray.wait(
                    list(pending), num_returns=1, timeout=queue.wait_s(len(pending) < in_flight)
                )
                for ref in ready:
                    run, claim = pending.pop(ref)
                    try:
                        try:
                            rec = ray.get(ref)
                        except Exception as e:
                            msg = f"ray task failed: {type(e).__name__}: {e}".splitlines()[0]
                            rec = failed_record(run.config, device, msg)
                        write_record(run_dir_for(root, envinfo.device_tag(rec.env), run.config), rec)
                    finally:
                        claim.release()
                    finished(run, rec.summary)
        finally:
            for ref, (_, claim) in pending.items():
                ray.cancel(ref, force=True)
                claim.release()
    return counts
