"""One run: build the task, streams, model and optimizer from a ``RunConfig``, train, measure, record.

``run_record(config, device)`` trains and returns the four records of the results schema
(config, env, curve rows, summary) without touching the disk, so a Ray worker can send them back
to the driver; ``execute_run(config, results_root, device)`` also writes them (``write_record``:
a temp folder swapped into place, so a folder never looks complete while it mixes two runs).
The plan of a run lives in ``runs/run_plan.py``; ``base_config``, the summary and ``write_record``
in ``runs/records.py`` (all re-exported here).

>>> from tbptt_bench.runs.spec import Budget, RunConfig
>>> cfg = RunConfig(task="echo", task_params={}, cell="tanh", hidden_size=4, optimizer="adagrad",
...                 lr=0.1, clip=None, style="tf_style(5)", seed=0, sweep="smoke",
...                 budget=Budget(epochs=1, batch=4, row_len=40, val_batch=4, val_len=40,
...                               eval_points=10, warmup_updates=1))
>>> rec = run_record(cfg, "cpu")                               # doctest: +SKIP
>>> rec.summary["status"], rec.summary["updates"], rec.summary["backprop_steps"]  # doctest: +SKIP
('ok', 8, 160)

The protocol (docs/semantics.md, "Fair comparison"):

- **What trains.** ``plan_run`` turns the budget mode into segments, each a stretch of stream
  trained from a fresh state: data = ``epochs`` streams of ``row_len`` steps; updates = one stream
  of U * k1 steps (ARTBP: U * n, its mean segment), or U fresh rows for a style whose k1 is the
  whole row (full BPTT, r2rt's random(pi); adaptive TBPTT, whose K is chosen in training); episodic = the
  ``epochs`` streams cut into ``episode_len`` sequences. ``config.json``'s ``protocol`` says which.
- **When it is measured.** One validation schedule per task: ``eval_points`` points
  round(linspace(0, total, eval_points)) on the run's budget axis (timesteps per row for data and
  episodic, updates for updates), identical for every style and including 0. The parameters
  evaluated at point tau are those after the last update at or before tau: right after each
  update the engine's callback evaluates every point up to the next update. Validation uses a
  held-out stream, state carried along it (reset per episode in episodic mode), no gradient.
- **What is reported.** ``final_val_loss`` = mean of the last 3 scheduled evaluations (the
  primary metric); ``min_val_loss`` (secondary); ``test_loss`` on a separate test stream (seed
  + ``TEST_SEED_OFFSET``) evaluated once at the end; for a diverged run
  ``best_val_before_divergence``. Counts: ``updates``, ``timesteps`` (steps per row),
  ``forward_steps`` and ``backprop_steps`` (summed over rows, from the engine's update records);
  curve rows carry the cumulative ``backprop_steps``.

Timing (seconds): the device is synchronized before every clock read; ``train_wall_s`` counts
only time inside ``engine.train_stream`` minus evaluation (``eval_wall_s``); the rates skip the
first ``warmup_updates`` updates. Memory (bytes): CUDA's ``max_memory_allocated`` since a per-run
reset, else ``ru_maxrss`` of the process (the sweep gives every CPU run a fresh process).
``saved_for_backward_peak_bytes`` comes from a separate, untimed probe pass of the engine with
``measure_memory=True`` (its hooks would slow the timed pass).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchError
from ..styles import Style, parse_style
from . import envinfo, store

# What the harness uses, plus re-exports (noqa: F401): the plan and the record helpers lived here
# before run_plan.py and records.py were split out, and callers and tests use them as ``harness.X``.
from .records import (  # noqa: F401
    RunRecord,
    _failure_kind,
    _rss_bytes,
    _summary,
    base_config,
    failed_record,
    run_dir_for,
    write_record,
)
from .run_plan import RunPlan, Segment, eval_schedule, plan_run
from .spec import OPTIMIZERS, Budget, RunConfig, style_slug  # noqa: F401

__all__ = [
    "TEST_SEED_OFFSET",
    "HarnessError",
    "RunPlan",
    "RunRecord",
    "Segment",
    "base_config",
    "check_config",
    "eval_schedule",
    "execute_run",
    "failed_record",
    "plan_run",
    "run_dir_for",
    "run_record",
    "write_record",
]

Progress = Callable[[int, int], None]  # (updates done, updates planned)

#: The test stream is the task's held-out stream of seed + this offset: drawn like validation,
#: never seen by training or by model selection (no sweep seed comes near it).
TEST_SEED_OFFSET = 1_000_000


class HarnessError(BenchError):
    """A run config that cannot be built (unknown task or cell, or a cell the task does not allow)."""


class _Diverged(Exception):
    """A non-finite loss, or a run that ends with its validation loss beyond ``store.BLOWUP_LOSS``."""

    def __init__(self, update: int):
        super().__init__(f"non-finite or blown-up loss at update {update}")
        self.update = update


def check_config(config: RunConfig) -> Any:
    """Build the task (cheap, no streams) and check the cell; return the task. ``HarnessError`` if bad."""
    from ..models import MODELS
    from ..tasks import make_task

    try:
        task = make_task(config.task, **dict(config.task_params))
    except BenchError as e:
        raise HarnessError(str(e)) from None
    if config.cell not in MODELS:
        raise HarnessError(f"cell {config.cell!r} is not allowed: known cells are {', '.join(MODELS)}")
    required = getattr(task, "required_cell", None)
    if required is not None and config.cell != required:
        raise HarnessError(
            f"cell {config.cell!r} is not allowed for task {config.task!r}: it needs cell {required!r}"
        )
    fixed = getattr(task, "fixed_hidden_size", None)
    if fixed is not None and config.hidden_size != fixed:
        raise HarnessError(
            f"hidden size {config.hidden_size} is not allowed for task {config.task!r}: "
            f"its {required} cell needs hidden size {fixed}"
        )
    if config.optimizer not in OPTIMIZERS:
        raise HarnessError(
            f"optimizer {config.optimizer!r} is not allowed: use one of {', '.join(OPTIMIZERS)}"
        )
    parse_style(config.style)
    return task


def _clock(device: str) -> float:
    """Seconds, read after the device has finished its queued work."""
    envinfo.synchronize(device)
    return time.perf_counter()


# -- 1. building a run ------------------------------------------------------------------------
@dataclass
class _Run:
    """Everything built once per run from its config and seed (the loop state lives in ``_Loop``)."""

    config: RunConfig
    device: str
    task: Any
    style: Style
    plan: RunPlan
    model: Any
    optimizer: Any
    xi_gen: Any  #: random truncation's draws, from their own seed so they never shift the model's
    val: tuple[Any, Any]  #: validation (x, y) on the device, episodes as rows in episodic mode
    test: tuple[Any, Any]  #: the test stream, same shape as ``val``
    _cache: tuple[int, Any] | None = None  #: (epoch, (x, y)): episodes of one epoch share a stream

    def segment_stream(self, seg: Segment) -> tuple[Any, Any]:
        """(x, y) of one segment on the device."""
        if self._cache is None or self._cache[0] != seg.epoch:
            s = self.task.make_train(self.config.seed, seg.epoch, self.config.budget.batch, seg.stream_len)
            self._cache = (seg.epoch, (s.x.to(self.device), s.y.to(self.device)))
        x, y = self._cache[1]
        return x[seg.start : seg.start + seg.length], y[seg.start : seg.start + seg.length]


def _episodes(stream: Any, budget: Budget, device: str) -> tuple[Any, Any]:
    """A held-out stream as the model is trained on it: episodic mode resets the state every
    ``episode_len`` steps, so the stream's episodes become rows ((T/L)*B rows of L steps)."""
    x, y = stream.x.to(device), stream.y.to(device)
    if budget.mode != "episodic":
        return x, y
    n = budget.episode_len

    def cut(t):
        return t.reshape(t.shape[0] // n, n, *t.shape[1:]).transpose(0, 1).reshape(n, -1, *t.shape[2:])

    return cut(x), cut(y)


def _build(config: RunConfig, device: str, cfg_out: dict[str, Any]) -> _Run:
    """Seed everything from the config's seed; build task, plan, held-out streams, model, optimizer."""
    import torch

    from ..models import make_model

    torch.manual_seed(config.seed)
    random.seed(config.seed)
    task = check_config(config)
    b, style = config.budget, parse_style(config.style)
    plan = plan_run(b, style)
    val = task.make_validation(config.seed, b.val_batch, b.val_len)
    test = task.make_validation(config.seed + TEST_SEED_OFFSET, b.val_batch, b.val_len)
    cfg_out["loss"] = task.loss
    cfg_out["references"] = {k: float(v) for k, v in task.references(val).items()}
    cfg_out["reference_notes"] = dict(getattr(task, "reference_notes", {}))
    cfg_out["protocol"] = plan.describe()
    model = make_model(
        config.cell,
        task.input_size,
        config.hidden_size,
        task.output_size,
        generator=torch.Generator().manual_seed(config.seed),
        **task.model_kwargs(),
    ).to(device)
    opt_cls = getattr(torch.optim, OPTIMIZERS[config.optimizer])
    # On CUDA, Adam(W) keeps its step count on the device (same arithmetic), so the engine may
    # replay whole updates as CUDA graphs (graphed_elman).
    capturable = device == "cuda" and opt_cls in (torch.optim.Adam, torch.optim.AdamW)
    optimizer = opt_cls(model.parameters(), lr=config.lr, **({"capturable": True} if capturable else {}))
    return _Run(
        config=config,
        device=device,
        task=task,
        style=style,
        plan=plan,
        model=model,
        optimizer=optimizer,
        xi_gen=torch.Generator().manual_seed(config.seed + 1_000_003),
        val=_episodes(val, b, device),
        test=_episodes(test, b, device),
    )


def _saved_bytes_probe(run: _Run) -> int | None:
    """Peak bytes saved for backward, from an untimed pass on a copy of the model.

    The peak is reached once a whole window is live, so a fixed (k1, k2) needs only a prefix of
    2 (k1 + k2) steps of the first segment; styles over the whole segment need all of it.
    """
    import torch

    from ..engine.train import train_stream

    seg = run.plan.segments[0]
    x, y = run.segment_stream(seg)
    k1, k2 = run.style.k1, run.style.k2
    steps = seg.length if k1 is None or k2 is None else min(seg.length, 2 * (k1 + k2))
    probe = copy.deepcopy(run.model)
    res = train_stream(
        probe,
        x[:steps],
        y[:steps],
        run.style,
        torch.optim.SGD(probe.parameters(), lr=0.0),
        loss=run.task.loss,
        clip=run.config.clip,
        generator=torch.Generator().manual_seed(run.config.seed),
        measure_memory=True,
    )
    return res.saved_bytes_peak


# -- 2. the training loop ---------------------------------------------------------------------
@dataclass
class _Loop:
    """The loop's state. Counts are run totals so far; ``timesteps`` are steps per row, the
    engine's ``forward_steps``/``backprop_steps`` are summed over the rows."""

    updates: int = 0
    timesteps: int = 0
    forward_steps: int = 0
    backprop_steps: int = 0
    clipped: int = 0
    train_s: float = 0.0  #: pure training time (evaluation and bookkeeping excluded)
    eval_s: float = 0.0
    stretch_start: float = 0.0  #: clock at the start of the current stretch of pure training
    warm: tuple[float, int] | None = None  #: (train_s, timesteps) when the warm-up updates ended
    next_point: int = 0  #: index of the next schedule point to evaluate
    val: list[float] = field(default_factory=list)  #: validation loss at each schedule point so far
    curve: list[dict[str, Any]] = field(default_factory=list)
    saved: int | None = None
    path: str | None = None


def _row(loop: _Loop, split: str, timesteps: int, loss: float) -> dict[str, Any]:
    return {
        "split": split,
        "update": loop.updates,
        "timesteps": timesteps,
        "backprop_steps": loop.backprop_steps,
        "train_wall_s": loop.train_s,
        "loss": loss,
    }


def _timed_eval(run: _Run, loop: _Loop, data: tuple[Any, Any]) -> float:
    """Mean loss over a held-out stream (state carried, no gradient), timed apart from training."""
    from ..engine.train import evaluate_stream

    t0 = _clock(run.device)
    loss, _ = evaluate_stream(run.model, data[0], data[1], run.task.loss)
    loop.eval_s += _clock(run.device) - t0
    return loss


def _evaluate_until(run: _Run, loop: _Loop, limit: float) -> None:
    """Evaluate every schedule point before ``limit`` (the next update's position).

    Called before training and right after each update: the current parameters are then the
    ones after the last update at or before each such point, so one evaluation serves them all.
    """
    plan = run.plan
    if loop.next_point >= len(plan.schedule) or plan.schedule[loop.next_point] >= limit:
        return
    loss = _timed_eval(run, loop, run.val)
    while loop.next_point < len(plan.schedule) and plan.schedule[loop.next_point] < limit:
        point = plan.schedule[loop.next_point]
        loop.val.append(loss)
        loop.curve.append(_row(loop, "val", point if plan.axis == "timesteps" else loop.timesteps, loss))
        loop.next_point += 1
    if not math.isfinite(loss):
        raise _Diverged(loop.updates)


def _random_schedule(style: Style) -> bool:
    """Styles whose update times are drawn or chosen during training (not known to the plan)."""
    from ..styles import ARTBP, AdaptiveTBPTT

    return isinstance(style, (ARTBP, AdaptiveTBPTT))


def _on_update(run: _Run, loop: _Loop, seg: Segment, rec: Any, progress: Progress | None) -> None:
    """The engine's callback after every update (raising stops the run)."""
    loop.train_s += _clock(run.device) - loop.stretch_start  # stop the training clock first
    loop.updates += 1
    loop.timesteps = seg.offset + rec.t
    loop.forward_steps += rec.forward_steps
    loop.backprop_steps += rec.backprop_steps
    loop.clipped += bool(rec.clipped)
    loop.curve.append(_row(loop, "train", loop.timesteps, rec.loss))
    positions = run.plan.update_positions
    here = loop.timesteps if run.plan.axis == "timesteps" else loop.updates
    if _random_schedule(run.style):
        # ARTBP and adaptive TBPTT draw or choose their update times while training, so no plan
        # knows them: each schedule point up to here is evaluated now, with the parameters after
        # the first update at or after it (at most one segment later than the rule for fixed
        # schedules; docs/semantics.md, "Fair comparison").
        if not math.isfinite(rec.loss):
            raise _Diverged(loop.updates)
        if loop.updates == run.config.budget.warmup_updates:
            loop.warm = (loop.train_s, loop.timesteps)
        _evaluate_until(run, loop, here + 1)
        if progress is not None:
            progress(min(loop.updates, len(positions)), len(positions))
        loop.stretch_start = _clock(run.device)
        return
    if loop.updates > len(positions) or positions[loop.updates - 1] != here:  # the plan is the truth
        raise RuntimeError(f"update {loop.updates} at {here} is not in the run's plan")
    if not math.isfinite(rec.loss):
        raise _Diverged(loop.updates)
    if loop.updates == run.config.budget.warmup_updates:
        loop.warm = (loop.train_s, loop.timesteps)
    # These parameters hold until the next update: evaluate the schedule points before it.
    _evaluate_until(run, loop, positions[loop.updates] if loop.updates < len(positions) else math.inf)
    if progress is not None:
        progress(loop.updates, len(positions))
    loop.stretch_start = _clock(run.device)


def _train(run: _Run, loop: _Loop, progress: Progress | None) -> None:
    """Train segment by segment, each from a fresh state, evaluating on the schedule."""
    from ..engine.train import train_stream

    first = 1 if _random_schedule(run.style) else run.plan.update_positions[0]
    _evaluate_until(run, loop, first)  # the untrained model, at point 0
    for seg in run.plan.segments:
        x, y = run.segment_stream(seg)
        loop.stretch_start = _clock(run.device)
        result = train_stream(
            run.model,
            x,
            y,
            run.style,
            run.optimizer,
            loss=run.task.loss,
            clip=run.config.clip,
            generator=run.xi_gen,
            h0=None,  # a segment starts from a fresh state (module doc, "What trains")
            callback=lambda rec, seg=seg: _on_update(run, loop, seg, rec, progress),
        )
        loop.train_s += _clock(run.device) - loop.stretch_start
        loop.path = result.path
    if _random_schedule(run.style):  # fewer updates than planned leave the last points: the end
        _evaluate_until(run, loop, math.inf)


# -- 3. one run, start to end -----------------------------------------------------------------
def run_record(config: RunConfig, device: str, progress: Progress | None = None) -> RunRecord:
    """Train one run on ``device`` ("cpu"|"cuda"|"mps") and return its records (nothing written).

    Never raises for a failing run: divergence gives status "diverged", any exception "failed".
    """
    import torch

    env = envinfo.collect(device)
    cfg_out = base_config(config, device)
    loop = _Loop()
    status, error, kind, diverged_at, test_loss = "ok", None, None, None, None
    try:
        run = _build(config, device, cfg_out)  # 1. everything from the config and its seed
        loop.saved = _saved_bytes_probe(run)  # an untimed pass on a copy: hooks slow the timed one
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _train(run, loop, progress)  # 2. train, validating on the schedule
        # A run that ends blown up (e.g. a CE of 6.3e29) is no result to rank: "diverged". A finite
        # transient that training recovers from (clipping) stays "ok": only the end counts.
        if loop.val and abs(loop.val[-1]) > store.BLOWUP_LOSS:
            raise _Diverged(loop.updates)
        test_loss = _timed_eval(run, loop, run.test)  # 3. the test stream, once, at the very end
    except _Diverged as d:
        status, diverged_at = "diverged", d.update
    except Exception as e:
        status, error = "failed", store.cut_text(f"{type(e).__name__}: {e}".splitlines()[0], 400)
        kind = _failure_kind(e)
        if device == "cuda":
            torch.cuda.empty_cache()
    summary = _summary(loop, config, device, status, error, diverged_at)
    summary.update(test_loss=test_loss, failure_kind=kind)
    return RunRecord(config=cfg_out, env=env, curve=loop.curve, summary=summary)


def execute_run(
    config: RunConfig, results_root: str | Path, device: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Train one run, write its records under ``results_root`` and return its summary."""
    record = run_record(config, device, progress)
    write_record(run_dir_for(results_root, envinfo.device_tag(record.env), config), record)
    return record.summary
