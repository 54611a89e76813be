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

This module is the entry point (``plan``, ``execute``); planning, the memory estimate and the
queue of claimed runs live in ``runs/planning.py``, the two backends in ``runs/backends.py``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from . import store

# What ``execute`` uses, plus re-exports (noqa: F401): these names lived here before planning.py and
# backends.py were split out, and callers and tests still use them as ``sweep.X``.
from .backends import (  # noqa: F401
    _PRELOAD,
    DISK_FULL,
    RAY_MISSING,
    BackendError,
    _bars,
    _child,
    _context,
    _died,
    _ray,
    _ray_init,
    _ray_probe,
    _ray_task,
    _report_line,
    _run_local,
    _run_ray,
    _watch_driver,
    local_device_tag,
    ray_device_tag,
)
from .planning import (  # noqa: F401
    LOCK_TIMEOUT_S,
    LOCK_WARN_S,
    MemoryEstimate,
    PlannedRun,
    SweepError,
    _gib,
    _holder,
    _Options,
    _Queue,
    _take,
    clean_leftovers,
    estimate_run_bytes,
    machine_memory_bytes,
    plan,
    rerun_reason,
    run_problem,
)
from .spec import RunConfig, Spec, SpecError, resolve  # noqa: F401

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
    retry_failed: bool = False,
    lock_timeout_s: float | None = LOCK_TIMEOUT_S,
) -> Counter:
    """Run every run that is not complete (all of them with ``force``); return status counts.

    ``threads``: torch intra-op threads per run (None: torch's default). One is the default:
    small recurrent models are latency-bound, and on a busy 2-core machine two threads per run
    measured 15x slower than one. Counts have keys "ok", "diverged", "failed", "skipped"
    (complete runs left alone) and, when some run could not be started, "not_run" (a damaged
    folder that cannot be removed, or a run another process held past ``lock_timeout_s``).

    Sweeps may share a results folder: each run is claimed (``store.claim_run``) before it
    starts and released once its record is written, so a run trains once at a time; a run
    another sweep holds is retried until that sweep finishes it (then skipped) or dies. A wait
    longer than ``LOCK_WARN_S`` is reported once per run (with the holder's pid and whether it is
    stopped). A full disk stops the sweep: ``OSError`` (ENOSPC) is raised after every worker is
    stopped, so nothing half-written is left and the CLI prints one line.
    """
    if backend not in BACKENDS:
        raise SweepError(f"backend {backend!r} is not allowed: use one of {', '.join(BACKENDS)}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise SweepError(f"--jobs {store._cut(jobs)} is not allowed: use an integer from 1 to {MAX_JOBS}")
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS
    ):
        raise SweepError(
            f"--threads {store._cut(threads)} is not allowed: use an integer from 1 to {MAX_THREADS}"
        )
    if address and backend != "ray":
        raise SweepError(f"--address {store._cut(address)} is not allowed without --backend ray")
    clean_leftovers(runs)
    todo = [r for r in runs if force or r.state != "complete"]
    counts: Counter = Counter(skipped=len(runs) - len(todo))
    if not todo:
        return counts
    opts = _Options(force, retry_failed, lock_timeout_s)
    if backend == "ray":
        counts.update(_run_ray(todo, Path(results_root), device, address, threads, quiet, opts))
    else:
        counts.update(_run_local(todo, Path(results_root), device, jobs, threads, quiet, opts))
    return counts


#: Upper bounds of --jobs and --threads: far above any machine this runs on, far below a typo.
MAX_JOBS = 1024
MAX_THREADS = 1024
