"""Where a sweep's runs train: a fresh forked worker process per run, or one Ray task per run.

Local backend (``_run_local``): every run in a fresh worker process forked from a forkserver that
has torch and the harness preloaded (so ``ru_maxrss`` is per run and a start costs tens of
milliseconds), one at a time or ``jobs`` at once. Ray backend (``_run_ray``): one Ray task per
run on a fresh worker (``max_calls=1``); the worker returns its records and this driver writes
them, so workers need no shared disk. Both take their runs from ``planning._Queue`` (claimed) and
report one line per run; ``sweep.execute`` picks the backend.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import BenchError
from . import store
from .planning import PlannedRun, _Options, _Queue
from .spec import RunConfig

__all__ = ["RAY_MISSING", "BackendError", "local_device_tag", "ray_device_tag"]

RAY_MISSING = (
    'the ray backend needs Ray: pip install -e ".[ray]" (in a checkout) or pip install "tbptt-bench[ray]"'
)


class BackendError(BenchError, RuntimeError):
    """A backend that cannot run here (e.g. ray is not installed)."""


def _bars(quiet: bool):
    """tqdm, shown only on a terminal and without --quiet."""
    from tqdm import tqdm

    return tqdm, quiet or not sys.stderr.isatty()


def _report_line(
    tqdm, quiet: bool, i: int, n: int, run_id: str, summary: dict | None, note: str | None = None
) -> None:
    if note is not None:  # a run left out is said even with --quiet: the exit status is 1 for it
        tqdm.write(f"[{i}/{n}] not run  {run_id}  ({note.removeprefix('not run: ')})", file=sys.stderr)
        return
    if quiet:
        return
    if summary is None:
        tqdm.write(f"[{i}/{n}] skipped  {run_id}  (another sweep completed it meanwhile)")
        return
    loss = summary.get("final_val_loss")  # the protocol's primary metric (mean of the last 3 evaluations)
    loss_txt = f"final val {loss:.4f}" if isinstance(loss, float) else "no val loss"
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
    except Exception as e:  # the record could not be written (e.g. a full disk): say so, with errno
        conn.send(("error", f"{type(e).__name__}: {e}".splitlines()[0], getattr(e, "errno", None)))
    finally:
        conn.close()


#: errno values that mean "the disk is full": the sweep stops instead of failing every run left.
DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


def _died(exitcode: int | None) -> str:
    """A dead worker's exit, in words: a signal (SIGKILL is what the OOM killer sends) or a code."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"worker process died (killed by {name}, exit code {exitcode}; out of memory?)"
    return f"worker process died (exit code {exitcode})"


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
    opts: _Options = _Options(),  # noqa: B008 - a frozen dataclass (planning.py), so one shared default is safe
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

    def finished(run: PlannedRun, summary: dict | None, note: str | None = None) -> None:
        nonlocal done_n
        counts[summary["status"] if summary else ("not_run" if note else "skipped")] += 1
        done_n += 1
        outer.update(1)
        _report_line(tqdm, quiet, done_n, len(todo), run.config.run_id, summary, note)

    queue = _Queue(
        todo,
        opts,
        lambda run, note: finished(run, None, note),
        warn=lambda line: tqdm.write(line, file=sys.stderr),
    )
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
                    if msg is None:  # the worker died (killed, e.g. for memory): an infrastructure failure
                        rec = failed_record(run.config, device, _died(p.exitcode), "infrastructure")
                        write_record(run_dir_for(root, envinfo.device_tag(rec.env), run.config), rec)
                        summary = rec.summary
                    elif msg[0] == "error":  # the worker could not write its record
                        if msg[2] in DISK_FULL:  # every run left would fail the same way: stop here
                            raise OSError(msg[2], f"{os.strerror(msg[2])} (writing {run.config.run_id})")
                        summary = failed_record(run.config, device, msg[1], "infrastructure").summary
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
    opts: _Options = _Options(),  # noqa: B008 - a frozen dataclass (planning.py), so one shared default is safe
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

        def finished(run: PlannedRun, summary: dict | None, note: str | None = None) -> None:
            counts[summary["status"] if summary else ("not_run" if note else "skipped")] += 1
            bar.update(1)
            _report_line(tqdm, quiet, sum(counts.values()), len(todo), run.config.run_id, summary, note)

        queue = _Queue(todo, opts, lambda run, note: finished(run, None, note))
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
                            msg = store.cut_text(f"ray task failed: {type(e).__name__}: {e}".splitlines()[0])
                            rec = failed_record(run.config, device, msg, "infrastructure")
                        write_record(run_dir_for(root, envinfo.device_tag(rec.env), run.config), rec)
                    finally:
                        claim.release()
                    finished(run, rec.summary)
        finally:
            for ref, (_, claim) in pending.items():
                ray.cancel(ref, force=True)
                claim.release()
    return counts
