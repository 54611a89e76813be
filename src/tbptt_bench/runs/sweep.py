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

import errno
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import BenchError
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


class SweepError(BenchError):
    """A sweep that cannot start: bad specs, overrides or results folder."""


class BackendError(BenchError, RuntimeError):
    """A backend that cannot run here (e.g. ray is not installed)."""


@dataclass(frozen=True)
class PlannedRun:
    config: RunConfig
    run_dir: Path
    state: str  # "complete" | "pending" | "incomplete" (not a valid record: rerun) | "retry" (a failed run to rerun)
    reason: str | None = None  # why an "incomplete" or "retry" folder trains again


# -- planning --------------------------------------------------------------------------------
def plan(
    specs: Sequence[Spec],
    preset: str,
    device_tag: str,
    results_root: str | Path,
    seeds_override: int | None = None,
    styles_override: Sequence[str] | None = None,
    retry_failed: bool = False,
    memory_limit_bytes: int | None = None,
) -> list[PlannedRun]:
    """Every run of ``preset`` for ``specs`` with its folder and state; validates tasks and cells.

    ``seeds_override=N`` runs seeds 0..N-1; ``styles_override`` replaces every spec's styles.
    ``retry_failed``: rerun failed runs of the "deterministic" kind too (infrastructure failures
    are always rerun). Every run's memory is estimated (``estimate_run_bytes``) before anything
    trains: a run above ``memory_limit_bytes`` (default: this machine's RAM) is refused with
    ``SweepError`` naming the estimate.
    """
    from .harness import HarnessError, check_config, run_dir_for

    if seeds_override is not None and (isinstance(seeds_override, bool) or seeds_override < 1):
        raise SweepError(f"--seeds {seeds_override!r} is not allowed: use a positive number of seeds")
    limit = memory_limit_bytes if memory_limit_bytes is not None else machine_memory_bytes()
    seeds = range(seeds_override) if seeds_override is not None else None
    out: dict[str, PlannedRun] = {}
    tasks: dict[tuple, Any] = {}
    for spec in specs:
        for cfg in resolve(spec, preset, seeds, styles_override):
            key = (cfg.task, repr(sorted(dict(cfg.task_params).items())), cfg.cell, cfg.optimizer)
            if key not in tasks:
                try:
                    tasks[key] = check_config(cfg)
                except HarnessError as e:
                    raise SpecError(f"{spec.path}: {e}") from None
            if cfg.run_id in out:
                continue
            need = estimate_run_bytes(cfg, tasks[key])
            if limit is not None and need.total > limit:
                raise SweepError(
                    f"{spec.path}: run {cfg.run_id} is not allowed: it needs about {_gib(need.total)} "
                    f"by estimate ({need}) but the limit is {_gib(limit)} (this machine's memory); "
                    "lower budget.row_len, batch or hidden_sizes"
                )
            run_dir = run_dir_for(results_root, device_tag, cfg)
            state, reason = ("pending", None)
            if run_dir.exists():
                reason = rerun_reason(run_dir, retry_failed)
                problem = run_problem(run_dir)
                state = "complete" if reason is None else ("incomplete" if problem else "retry")
            out[cfg.run_id] = PlannedRun(cfg, run_dir, state, reason)
    return list(out.values())


def run_problem(run_dir: Path) -> str | None:
    """Why a run folder is not a valid record (None: it is one): ``store.check_run``, the one
    definition shared with the report, compare and ``load_runs``."""
    return store.check_run(run_dir)


def rerun_reason(run_dir: Path, retry_failed: bool = False) -> str | None:
    """Why the sweep trains ``run_dir`` again (None: it stays): an invalid record, a failed run
    whose worker was killed or ran out of memory or disk ("infrastructure"), or with
    ``retry_failed`` any failed run."""
    problem = run_problem(run_dir)
    if problem is not None:
        return problem
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # changed since it was checked: rerun it
        return f"summary.json is unreadable: {e}"
    kind = store.failure_kind_of(summary)
    if kind == "infrastructure" or (kind is not None and retry_failed):
        return f"failed ({kind}): {store.cut_text(str(summary.get('error')), 200)}"
    return None


# -- what a run needs, estimated before anything trains ------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one run needs at least, by part (an estimate from the spec: the order of magnitude)."""

    streams: int  # the training stream (the first is kept for the probe) and the validation stream
    activations: int  # the graph autograd keeps over one backward window
    bookkeeping: int  # the plan of updates, and the curve rows kept in memory until the end
    parameters: int = 0  # weights, gradients and two optimizer buffers (a 1e9-word vocabulary ...)

    @property
    def total(self) -> int:
        return self.streams + self.activations + self.bookkeeping + self.parameters

    def __str__(self) -> str:
        return (
            f"streams {_gib(self.streams)}, activations {_gib(self.activations)}, "
            f"parameters {_gib(self.parameters)}, update plan and curve {_gib(self.bookkeeping)}"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


def estimate_run_bytes(cfg: RunConfig, task: Any) -> MemoryEstimate:
    """A lower-bound estimate of one run's memory, from its config and the (cheap) task object.

    float32 streams of ``batch x row_len x (inputs + outputs)`` (two: the first epoch's is kept),
    the validation stream, about 8 hidden-sized float32 tensors per step of the longest backward
    window, the weights with their gradients and two optimizer buffers, and ~200 bytes of Python
    per planned update (update list, curve row).
    """
    from ..styles import parse_style

    b = cfg.budget
    style = parse_style(cfg.style)
    width = int(getattr(task, "input_size", 1)) + int(getattr(task, "output_size", 1))
    streams = 4 * width * (2 * b.batch * b.row_len + b.val_batch * b.val_len)
    k1 = style.k1 or b.row_len
    k2 = style.k2 or b.row_len
    window = min(b.row_len, k1 + k2)
    activations = 4 * 8 * cfg.hidden_size * b.batch * max(window, 1) + 4 * 8 * cfg.hidden_size * b.val_batch
    per_epoch = -(-b.row_len // k1)
    bookkeeping = 200 * per_epoch * (b.epochs + 1)
    n_in, n_out, h = (
        int(getattr(task, "input_size", 1)),
        int(getattr(task, "output_size", 1)),
        cfg.hidden_size,
    )
    parameters = 4 * 4 * (n_in * h + h * h + h * n_out + 2 * h + n_out)
    return MemoryEstimate(streams, activations, bookkeeping, parameters)


def machine_memory_bytes() -> int | None:
    """Physical memory of this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
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


def _take(run: PlannedRun, force: bool, retry_failed: bool = False) -> store.Claim | str:
    """Claim a run for this driver, or say why not: "busy" (another sweep holds it), "done", or
    "unremovable: ..." (a damaged folder this process cannot clear: that run is left out, the
    sweep goes on).

    Under the claim the folder is looked at again: another sweep may have completed it since
    planning ("done"), or it is a broken (or retryable failed) folder to clear before the run
    starts again.
    """
    claim = store.claim_run(run.run_dir)
    if claim is None:
        return "busy"
    if run.run_dir.exists():
        if rerun_reason(run.run_dir, retry_failed) is not None:
            try:
                shutil.rmtree(run.run_dir)
            except OSError as e:
                claim.release()
                return f"unremovable: cannot clear the damaged folder ({e.strerror or e})"
        elif not force:
            claim.release()
            return "done"
    return claim


# -- running ---------------------------------------------------------------------------------
#: After this long waiting on a run another process holds, the sweep says so (once per run).
LOCK_WARN_S = 10.0
#: ... and after this long it leaves that run out (counted "not_run"), unless told otherwise.
LOCK_TIMEOUT_S = 600.0


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


@dataclass(frozen=True)
class _Options:
    force: bool = False
    retry_failed: bool = False
    lock_timeout_s: float | None = LOCK_TIMEOUT_S


def _holder(run: PlannedRun) -> str:
    """Who holds a run's lock, in words (pid and state from the lock file and /proc)."""
    lock = run.run_dir.parent / f"{store.CLAIM_PREFIX}{run.run_dir.name}"
    try:
        pid = int(lock.read_text(encoding="utf-8").split()[0])
    except (OSError, ValueError, IndexError):
        return "another process"
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return f"process {pid}"
    if state in ("T", "t"):
        return f"process {pid}, which is STOPPED (resume it with `kill -CONT {pid}` or end it)"
    return f"process {pid}"


class _Queue:
    """The runs still to start: ``next()`` claims one, skips those another sweep completed and
    sets aside those it holds (offered again after ``RETRY_S``)."""

    RETRY_S = 0.2

    def __init__(self, todo: Sequence[PlannedRun], opts: _Options, on_skip, warn=None):
        self.todo, self.busy = deque(todo), deque()
        self.opts, self.on_skip = opts, on_skip
        self.warn = warn or (lambda line: print(line, file=sys.stderr, flush=True))
        self.retry_at = 0.0
        self.busy_since: dict[str, float] = {}
        self.warned: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.todo or self.busy)

    def next(self) -> tuple[PlannedRun, store.Claim] | None:
        if not self.todo and self.busy and time.monotonic() >= self.retry_at:
            self.todo, self.busy = self.busy, deque()
        while self.todo:
            run = self.todo.popleft()
            got = _take(run, self.opts.force, self.opts.retry_failed)
            if got == "busy":
                now = time.monotonic()
                since = self.busy_since.setdefault(run.config.run_id, now)
                timeout = self.opts.lock_timeout_s
                if timeout is not None and now - since >= timeout:
                    self.on_skip(run, f"not run: held by {_holder(run)} for over {timeout:g} s")
                    continue
                if now - since >= LOCK_WARN_S and run.config.run_id not in self.warned:
                    self.warned.add(run.config.run_id)
                    self.warn(
                        f"tbptt-bench: waiting for {run.config.run_id}: held by {_holder(run)}"
                        + (f"; giving up after {timeout:g} s" if timeout is not None else "")
                    )
                self.busy.append(run)
                self.retry_at = now + self.RETRY_S
            elif got == "done":
                self.on_skip(run, None)
            elif isinstance(got, str):
                self.on_skip(run, f"not run: {got}")
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
    opts: _Options = _Options(),
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
    opts: _Options = _Options(),
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
