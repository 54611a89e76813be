"""One run: build the task, streams, model and optimizer from a ``RunConfig``, train, measure, record.

``run_record(config, device)`` trains and returns the four records of the results schema
(config, env, curve rows, summary) without touching the disk, so a Ray worker can send them back
to the driver; ``execute_run(config, results_root, device)`` also writes them (``write_record``:
a temp folder swapped into place, so a folder never looks complete while it mixes two runs).

>>> from tbptt_bench.runs.spec import Budget, RunConfig
>>> cfg = RunConfig(task="echo", task_params={}, cell="tanh", hidden_size=4, optimizer="adagrad",
...                 lr=0.1, clip=None, style="tf_style(5)", seed=0, sweep="smoke",
...                 budget=Budget(epochs=1, batch=4, row_len=40, val_batch=4, val_len=40,
...                               eval_every_updates=4, warmup_updates=1))
>>> rec = run_record(cfg, "cpu")                               # doctest: +SKIP
>>> rec.summary["status"], rec.summary["updates"]              # doctest: +SKIP
('ok', 8)

Timing (seconds): the device is synchronized before every clock read; ``train_wall_s`` counts
only time inside ``engine.train_stream`` minus evaluation (``eval_wall_s``); the rates skip the
first ``warmup_updates`` updates. Memory (bytes): CUDA's ``max_memory_allocated`` since a per-run
reset, else ``ru_maxrss`` of the process (the sweep gives every CPU run a fresh process).
``saved_for_backward_peak_bytes`` comes from a separate, untimed probe pass of the engine with
``measure_memory=True`` (its hooks would slow the timed pass).
"""

from __future__ import annotations

import copy
import errno
import math
import os
import random
import resource
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..styles import parse_style
from . import envinfo, store
from .spec import OPTIMIZERS, RunConfig

__all__ = [
    "HarnessError",
    "RunRecord",
    "base_config",
    "check_config",
    "execute_run",
    "failed_record",
    "run_dir_for",
    "run_record",
    "write_record",
]

Progress = Callable[[int, int], None]  # (updates done, updates planned)


class HarnessError(ValueError):
    """A run config that cannot be built (unknown task or cell, or a cell the task does not allow)."""


@dataclass(frozen=True)
class RunRecord:
    """What one run produced, in the results schema (see the common brief)."""

    config: dict[str, Any]
    env: dict[str, Any]
    curve: list[dict[str, Any]]
    summary: dict[str, Any]


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
    except ValueError as e:
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


def _rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


def _saved_bytes_probe(model, stream, style, config: RunConfig, loss: str) -> int | None:
    """Peak bytes saved for backward, from an untimed pass on a copy of the model.

    The peak is reached once a whole window is live, so a fixed (k1, k2) needs only a prefix of
    2 (k1 + k2) steps; styles over the whole sequence need the whole row.
    """
    import torch

    from ..engine.train import train_stream

    k1, k2 = style.k1, style.k2
    steps = config.budget.row_len if k1 is None or k2 is None else min(config.budget.row_len, 2 * (k1 + k2))
    probe = copy.deepcopy(model)
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    res = train_stream(
        probe,
        stream.x[:steps],
        stream.y[:steps],
        style,
        opt,
        loss=loss,
        clip=config.clip,
        generator=gen,
        measure_memory=True,
    )
    return res.saved_bytes_peak


def base_config(config: RunConfig, device: str) -> dict[str, Any]:
    """``config.json`` as far as it is known without building the task (references come later)."""
    try:
        from ..tasks import TASKS

        loss = getattr(TASKS.get(config.task), "loss", None)
    except ImportError:
        loss = None
    return {
        "task": config.task,
        "task_params": config.to_dict()["task_params"],
        "loss": loss,
        "references": {"optimal": None},
        "reference_notes": {},
        "style": parse_style(config.style).to_dict(),
        "model": {"cell": config.cell, "hidden_size": config.hidden_size},
        "optimizer": {"name": config.optimizer, "lr": config.lr},
        "clip": config.clip,
        "budget": config.budget.to_dict(),
        "seed": config.seed,
        "sweep": config.sweep,
        "device": device,
    }


def failed_record(
    config: RunConfig, device: str, error: str, failure_kind: str = "infrastructure"
) -> RunRecord:
    """The record of a run whose worker died before reporting (written by the sweep driver).

    ``failure_kind``: "infrastructure" (killed, out of memory or disk: the next sweep retries it)
    or "deterministic" (the run's own exception: retried only with ``--retry-failed``).
    """
    summary = {k: None for k in store.SUMMARY_KEYS}
    summary.update(
        status="failed",
        error=error,
        failure_kind=failure_kind,
        config_hash=config.config_hash,
        train_wall_s=0.0,
        eval_wall_s=0.0,
        warmup_updates=0,
        updates=0,
        timesteps=0,
        peak_mem_source="cuda_max_allocated" if device == "cuda" else "ru_maxrss",
        clip_rate=0.0,
        engine_path="none",
    )
    return RunRecord(
        config=base_config(config, device), env=envinfo.collect(device), curve=[], summary=summary
    )


def run_record(config: RunConfig, device: str, progress: Progress | None = None) -> RunRecord:
    """Train one run on ``device`` ("cpu"|"cuda"|"mps") and return its records (nothing written).

    Never raises for a failing run: divergence gives status "diverged", any exception "failed".
    """
    import torch

    from ..engine.train import evaluate_stream, train_stream
    from ..models import make_model

    env = envinfo.collect(device)
    b = config.budget
    style = parse_style(config.style)
    curve: list[dict[str, Any]] = []
    cfg_out = base_config(config, device)
    st = {
        "updates": 0,
        "timesteps": 0,
        "train_s": 0.0,
        "eval_s": 0.0,
        "clipped": 0,
        "warm": None,
        "val": [],
        "saved": None,
        "path": None,
    }
    status, error, diverged_at, failure_kind = "ok", None, None, None
    try:
        # 1. Seed everything from the config's seed; build the task, streams and model on CPU.
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        task = check_config(config)
        cfg_out["loss"] = task.loss
        val = task.make_validation(config.seed, b.val_batch, b.val_len)
        cfg_out["references"] = {k: float(v) for k, v in task.references(val).items()}
        cfg_out["reference_notes"] = dict(getattr(task, "reference_notes", {}))
        vx, vy = val.x.to(device), val.y.to(device)
        model = make_model(
            config.cell,
            task.input_size,
            config.hidden_size,
            task.output_size,
            generator=torch.Generator().manual_seed(config.seed),
            **task.model_kwargs(),
        ).to(device)
        opt_cls = getattr(torch.optim, OPTIMIZERS[config.optimizer])
        # On CUDA, Adam(W) keeps its step count on the device (same arithmetic), so the engine
        # may replay whole updates as CUDA graphs (graphed_elman).
        capturable = (
            {"capturable": True}
            if device == "cuda" and opt_cls in (torch.optim.Adam, torch.optim.AdamW)
            else {}
        )
        optimizer = opt_cls(model.parameters(), lr=config.lr, **capturable)
        xi_gen = torch.Generator().manual_seed(config.seed + 1_000_003)  # random truncation's draws
        per_epoch = len(style.update_times(b.row_len))
        planned = b.epochs * per_epoch

        first = task.make_train(config.seed, 0, b.batch, b.row_len)
        st["saved"] = _saved_bytes_probe(model, _to(first, device), style, config, task.loss)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()

        def evaluate() -> None:
            t0 = _clock(device)
            loss, _ = evaluate_stream(model, vx, vy, task.loss)
            st["eval_s"] += _clock(device) - t0
            st["val"].append(loss)
            curve.append(
                {
                    "split": "val",
                    "update": st["updates"],
                    "timesteps": st["timesteps"],
                    "train_wall_s": st["train_s"],
                    "loss": loss,
                }
            )
            if not math.isfinite(loss):
                raise _Diverged(st["updates"])

        # 2. Train epoch by epoch on fresh streams, state reset each epoch (h0=None).
        for epoch in range(b.epochs):
            stream = _to(
                first if epoch == 0 else task.make_train(config.seed, epoch, b.batch, b.row_len), device
            )
            offset = epoch * b.row_len
            seg = [_clock(device)]  # start of the current stretch of pure training time

            def on_update(rec, offset=offset, seg=seg) -> None:
                now = _clock(device)
                st["train_s"] += now - seg[0]
                st["updates"] += 1
                st["timesteps"] = offset + rec.t
                st["clipped"] += bool(rec.clipped)
                curve.append(
                    {
                        "split": "train",
                        "update": st["updates"],
                        "timesteps": st["timesteps"],
                        "train_wall_s": st["train_s"],
                        "loss": rec.loss,
                    }
                )
                if not math.isfinite(rec.loss):
                    raise _Diverged(st["updates"])
                if st["updates"] == b.warmup_updates:
                    st["warm"] = (st["train_s"], st["timesteps"])
                if st["updates"] % b.eval_every_updates == 0:
                    evaluate()  # 3. evaluation time is kept out of train_wall_s
                if progress is not None:
                    progress(st["updates"], planned)
                seg[0] = _clock(device)

            result = train_stream(
                model,
                stream.x,
                stream.y,
                style,
                optimizer,
                loss=task.loss,
                clip=config.clip,
                generator=xi_gen,
                h0=None,
                callback=on_update,
            )
            st["train_s"] += _clock(device) - seg[0]
            st["path"] = result.path
        # 4. A last evaluation at the end, unless the last update was just evaluated.
        if not curve or curve[-1]["split"] != "val":
            evaluate()
        # A run that ends blown up (e.g. a CE of 6.3e29) is no result to rank: "diverged". A finite
        # transient that training recovers from (clipping) stays "ok": only the end counts.
        if abs(st["val"][-1]) > store.BLOWUP_LOSS:
            raise _Diverged(st["updates"])
    except _Diverged as d:
        status, diverged_at = "diverged", d.update
    except Exception as e:
        status, error = "failed", store.cut_text(f"{type(e).__name__}: {e}".splitlines()[0], 400)
        failure_kind = _failure_kind(e)
        if device == "cuda":
            torch.cuda.empty_cache()

    summary = _summary(st, config, device, status, error, diverged_at)
    summary["failure_kind"] = failure_kind
    summary["config_hash"] = config.config_hash
    return RunRecord(config=cfg_out, env=env, curve=curve, summary=summary)


def _failure_kind(e: BaseException) -> str:
    """ "infrastructure" for exhaustion of the machine (memory, disk): the next sweep retries the run;
    "deterministic" for the run's own exceptions (same config, same error): kept."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "infrastructure"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "infrastructure"
    return store.classify_failure(f"{type(e).__name__}: {e}")


def _to(stream: Any, device: str) -> Any:
    return type(stream)(x=stream.x.to(device), y=stream.y.to(device)) if device != "cpu" else stream


def _summary(
    st: dict, config: RunConfig, device: str, status: str, error: str | None, diverged_at: int | None
) -> dict[str, Any]:
    import torch

    finite = [v for v in st["val"] if math.isfinite(v)]
    updates, train_s = st["updates"], st["train_s"]
    warm_n, (warm_s, warm_ts) = (
        (config.budget.warmup_updates, st["warm"])
        if st["warm"] is not None and updates > config.budget.warmup_updates
        else (0, (0.0, 0))
    )
    span = train_s - warm_s
    on_cuda = device == "cuda" and torch.cuda.is_available()
    return {
        "status": status,
        "error": error,
        "min_val_loss": min(finite) if finite else None,
        "final_val_loss": st["val"][-1] if st["val"] and math.isfinite(st["val"][-1]) else None,
        "train_wall_s": train_s,
        "eval_wall_s": st["eval_s"],
        "warmup_updates": warm_n,
        "updates": updates,
        "timesteps": st["timesteps"],
        "updates_per_s": (updates - warm_n) / span if span > 0 and updates > warm_n else None,
        "timesteps_per_s": (st["timesteps"] - warm_ts) / span if span > 0 and updates > warm_n else None,
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated()) if on_cuda else _rss_bytes(),
        "peak_mem_source": "cuda_max_allocated" if on_cuda else "ru_maxrss",
        "saved_for_backward_peak_bytes": st["saved"],
        "clip_rate": st["clipped"] / updates if updates else 0.0,
        "diverged_at_update": diverged_at,
        "engine_path": st["path"] or "none",
    }


def run_dir_for(results_root: str | Path, device_tag: str, config: RunConfig) -> Path:
    """``<results>/<device_tag>/<sweep>/<run_id>``."""
    return Path(results_root) / device_tag / config.sweep / config.run_id


def write_record(run_dir: str | Path, record: RunRecord) -> None:
    """Write a run into a hidden temp folder, then swap it into ``run_dir`` (replacing an old one).

    A crash leaves either the old run, the new run, or no run folder (plus hidden leftovers the
    store ignores and the sweep cleans) -- never a complete-looking folder mixing two runs.
    """
    run_dir = Path(run_dir)
    tmp = run_dir.parent / f".tmp-{run_dir.name}-{os.getpid()}"
    old = run_dir.parent / f".old-{run_dir.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        store.write_run(tmp, record.config, record.env, record.curve, record.summary)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: give the space back, keep any old run
        raise
    while True:
        try:
            os.rename(tmp, run_dir)
            break
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        # A run folder is in the way (the old run, or one another writer just put there): set it
        # aside and try again; a writer racing us cannot make us lose our record or mix the two.
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.rename(run_dir, old)
        except FileNotFoundError:
            pass
    shutil.rmtree(old, ignore_errors=True)


def execute_run(
    config: RunConfig, results_root: str | Path, device: str, progress: Progress | None = None
) -> dict[str, Any]:
    """Train one run, write its records under ``results_root`` and return its summary."""
    record = run_record(config, device, progress)
    write_record(run_dir_for(results_root, envinfo.device_tag(record.env), config), record)
    return record.summary
