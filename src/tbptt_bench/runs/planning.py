"""Which runs a sweep trains, and taking them one at a time: the plan, folder states, memory, the queue.

``plan`` expands specs into runs and marks the complete ones (``run_problem``: every file
whole; ``rerun_reason``: why a folder trains again), after estimating every run's memory
(``estimate_run_bytes``) so a run too big for the machine is refused before anything trains.
``clean_leftovers`` removes what a killed sweep left; ``_Queue`` hands the backends (``backends.py``)
the next run to start, claimed (``store.claim_run``) so no run trains twice at once.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BenchError
from . import store
from .spec import RunConfig, Spec, SpecError, resolve

__all__ = [
    "LOCK_TIMEOUT_S",
    "LOCK_WARN_S",
    "MemoryEstimate",
    "PlannedRun",
    "SweepError",
    "clean_leftovers",
    "estimate_run_bytes",
    "machine_memory_bytes",
    "plan",
    "rerun_reason",
    "run_problem",
]


class SweepError(BenchError):
    """A sweep that cannot start: bad specs, overrides or results folder."""


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
            if store.record_exists(run_dir):  # a folder, or a run packed in the sweep's records.parquet
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
        summary = store.read_record_json(run_dir, "summary.json")
    except store.StoreError as e:  # changed since it was checked: rerun it
        return str(e)
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
    if store.record_exists(run.run_dir):
        if rerun_reason(run.run_dir, retry_failed) is not None and run.run_dir.exists():
            try:  # a bad packed record has no folder to clear: the new folder will shadow it
                shutil.rmtree(run.run_dir)
            except OSError as e:
                claim.release()
                return f"unremovable: cannot clear the damaged folder ({e.strerror or e})"
        elif not force:
            claim.release()
            return "done"
    return claim


# -- taking runs one at a time --------------------------------------------------------------
#: After this long waiting on a run another process holds, the sweep says so (once per run).
LOCK_WARN_S = 10.0
#: ... and after this long it leaves that run out (counted "not_run"), unless told otherwise.
LOCK_TIMEOUT_S = 600.0


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
