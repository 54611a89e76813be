"""What one run leaves behind: its ``RunRecord``, the summary, and writing the record into its folder.

``base_config`` is ``config.json`` as far as it is known before the run is built;
``failed_record`` the record of a run whose worker died; ``_summary`` builds ``summary.json`` from
the training loop's state (``harness._Loop``) and ``_failure_kind`` classifies a run's exception;
``write_record`` writes a run into a hidden temp folder and swaps it into ``run_dir_for`` (so a
folder never looks complete while it mixes two runs). Torch is imported only to read memory.
"""

from __future__ import annotations

import errno
import math
import os
import resource
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BenchError
from ..styles import parse_style
from . import envinfo, store
from .spec import RunConfig, style_slug

if TYPE_CHECKING:  # only for annotations: harness.py imports this module
    from .harness import _Loop

__all__ = ["RunRecord", "base_config", "failed_record", "run_dir_for", "write_record"]


@dataclass(frozen=True)
class RunRecord:
    """What one run produced, in the results schema (see the common brief)."""

    config: dict[str, Any]
    env: dict[str, Any]
    curve: list[dict[str, Any]]
    summary: dict[str, Any]


def _rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # macOS reports bytes, Linux KiB


def base_config(config: RunConfig, device: str) -> dict[str, Any]:
    """``config.json`` as far as it is known without building the task (references and the
    ``protocol`` come when the run is built)."""
    try:
        from ..tasks import task_class

        loss = getattr(task_class(config.task), "loss", None)
    except (ImportError, BenchError):
        loss = None
    return {
        # Folder-safe: the report names folders by it ("pkg.mod:Class" -> "pkg.mod-class").
        "task": style_slug(config.task),
        "task_source": config.task,  # the name the spec gave, importable if it has a ':'
        "task_params": config.to_dict()["task_params"],
        "loss": loss,
        "references": {"optimal": None},
        "reference_notes": {},
        "style": parse_style(config.style).to_dict(),
        "model": {"cell": config.cell, "hidden_size": config.hidden_size},
        "optimizer": {"name": config.optimizer, "lr": config.lr},
        "clip": config.clip,
        "budget": config.budget.to_dict(),
        "protocol": None,
        "seed": config.seed,
        "sweep": config.sweep,
        "device": device,
        "config_hash": config.config_hash,
    }


def failed_record(
    config: RunConfig, device: str, error: str, failure_kind: str = "infrastructure"
) -> RunRecord:
    """The record of a run whose worker died before reporting (written by the sweep driver).

    ``failure_kind``: "infrastructure" (killed, out of memory or disk: the next sweep retries it)
    or "deterministic" (the run's own exception: retried only with ``--retry-failed``).
    """
    summary = {k: None for k in (*store.SUMMARY_KEYS, *store.SUMMARY_OPTIONAL_KEYS)}
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
        forward_steps=0,
        backprop_steps=0,
        peak_mem_source="cuda_max_allocated" if device == "cuda" else "ru_maxrss",
        clip_rate=0.0,
        engine_path="none",
    )
    return RunRecord(
        config=base_config(config, device), env=envinfo.collect(device), curve=[], summary=summary
    )


def _failure_kind(e: BaseException) -> str:
    """ "infrastructure" for exhaustion of the machine (memory, disk): the next sweep retries the run;
    "deterministic" for the run's own exceptions (same config, same error): kept."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return "infrastructure"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "infrastructure"
    return store.classify_failure(f"{type(e).__name__}: {e}")


def _summary(
    loop: _Loop, config: RunConfig, device: str, status: str, error: str | None, diverged_at: int | None
) -> dict[str, Any]:
    import torch

    finite = [v for v in loop.val if math.isfinite(v)]
    last = loop.val[-3:]  # the primary metric: the mean of the last 3 scheduled evaluations
    final = sum(last) / len(last) if status == "ok" and last and all(map(math.isfinite, last)) else None
    updates, train_s = loop.updates, loop.train_s
    warmed = loop.warm is not None and updates > config.budget.warmup_updates
    warm_n, (warm_s, warm_ts) = (config.budget.warmup_updates, loop.warm) if warmed else (0, (0.0, 0))
    span = train_s - warm_s
    rated = span > 0 and updates > warm_n
    on_cuda = device == "cuda" and torch.cuda.is_available()
    return {
        "status": status,
        "error": error,
        "final_val_loss": final,
        "min_val_loss": min(finite) if finite else None,
        "best_val_before_divergence": (min(finite) if finite else None) if status == "diverged" else None,
        "test_loss": None,
        "train_wall_s": train_s,
        "eval_wall_s": loop.eval_s,
        "warmup_updates": warm_n,
        "updates": updates,
        "timesteps": loop.timesteps,
        "forward_steps": loop.forward_steps,
        "backprop_steps": loop.backprop_steps,
        "updates_per_s": (updates - warm_n) / span if rated else None,
        "timesteps_per_s": (loop.timesteps - warm_ts) / span if rated else None,
        "peak_mem_bytes": int(torch.cuda.max_memory_allocated()) if on_cuda else _rss_bytes(),
        "peak_mem_source": "cuda_max_allocated" if on_cuda else "ru_maxrss",
        "saved_for_backward_peak_bytes": loop.saved,
        "clip_rate": loop.clipped / updates if updates else 0.0,
        "diverged_at_update": diverged_at,
        "failure_kind": None,
        "engine_path": loop.path or "none",
        "config_hash": config.config_hash,
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
