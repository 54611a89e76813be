"""Run-record side of ``tbptt-bench compare``: each device's runs read and paired across devices.

Reads only summary.json, config.json and env.json of every valid run folder (no curves); runs are
matched on (task, sweep, model, optimizer, style, lr) — never on the device — and their seeds
aggregated over the runs that finished ok. Also the ratio arithmetic the comparison shares
(speedup, its sd from the seeds, the geometric mean). Torch-free; ``compare.py`` renders the result.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runs import store

__all__ = ["KEY", "SHORT_RUN_S", "Source", "geometric_mean", "run_timings"]

log = logging.getLogger("tbptt_bench.report.compare")  # compare's logger: its warnings keep their name
KEY = ("task", "sweep", "cell", "hidden_size", "optimizer", "style_spec", "lr")
#: A run that trained for less than this is marked †: its rate is dominated by start-up costs.
SHORT_RUN_S = 1.0


@dataclass(frozen=True)
class Source:
    """One device's runs from one of the given folders."""

    index: int  # position of its folder in the arguments
    folder: Path
    device_tag: str
    label: str
    env: tuple[tuple[str, Any], ...] = ()  # torch/CUDA/cuDNN/Python versions, device name

    def env_value(self, key: str) -> Any:
        return dict(self.env).get(key)


def _records(folder: Path, warn: bool = True) -> list[dict]:
    """One flat record per complete run under ``folder``: what compare needs, without curves."""
    out = []
    for d in store.iter_run_dirs(folder):
        problems = store.validate_record(d)  # the one definition of a valid record (docs/reliability.md)
        if problems:
            log.log(logging.WARNING if warn else logging.DEBUG, "skipped run folder %s: %s", d, problems[0])
            continue
        try:
            summary, config, env = (
                store.read_record_json(d, f) for f in ("summary.json", "config.json", "env.json")
            )
            out.append(
                {
                    "device_tag": d.parent.parent.name,
                    "task": str(config["task"]),
                    "sweep": str(config["sweep"]),
                    "cell": str(config["model"]["cell"]),
                    "hidden_size": int(config["model"]["hidden_size"]),
                    "optimizer": str(config["optimizer"]["name"]),
                    "style_spec": str(config["style"]["spec"]),
                    "style_label": str(config["style"]["label"]),
                    "lr": float(config["optimizer"]["lr"]),
                    "seed": config.get("seed"),
                    "status": summary["status"],
                    "timesteps_per_s": summary.get("timesteps_per_s"),
                    "train_wall_s": summary.get("train_wall_s"),
                    "peak_mem_bytes": summary.get("peak_mem_bytes"),
                    "peak_mem_source": summary.get("peak_mem_source"),
                    "saved_bytes": summary.get("saved_for_backward_peak_bytes"),
                    "env": env,
                }
            )
        except (store.StoreError, KeyError, TypeError) as e:
            reason = str(e)
            log.log(logging.WARNING if warn else logging.DEBUG, "skipped run folder %s: %s", d, reason)
    return out


def _finite(vs: Sequence[Any]) -> list[float]:
    out = []
    for v in vs:
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def _mean(vs: Sequence[Any]) -> float | None:
    xs = _finite(vs)
    return statistics.fmean(xs) if xs else None


def _sd(vs: Sequence[Any]) -> float | None:
    xs = _finite(vs)
    return statistics.stdev(xs) if len(xs) > 1 else None


ENV_KEYS = ("device_name", "torch_version", "cuda_version", "cudnn_version", "python_version", "cpu_model")


def run_timings(
    dirs: Sequence[Path], warn: bool = True
) -> tuple[list[Source], dict[tuple, dict[Source, dict]]]:
    """Sources in argument order and {key: {source: {tps, tps_sd, peak, runs, short, ...}}} (ok runs)."""
    loaded = [(i, Path(d), _records(Path(d), warn)) for i, d in enumerate(dirs)]
    tag_count: dict[str, int] = {}
    for _, _, recs in loaded:
        for tag in sorted({r["device_tag"] for r in recs}):
            tag_count[tag] = tag_count.get(tag, 0) + 1
    sources: list[Source] = []
    per_key: dict[tuple, dict[Source, dict]] = {}
    for i, folder, recs in loaded:
        for tag in sorted({r["device_tag"] for r in recs}):
            mine = [r for r in recs if r["device_tag"] == tag]
            env0 = mine[0]["env"]
            label = tag if tag_count[tag] == 1 else f"{tag} (dir {i + 1}: {folder.name or folder})"
            src = Source(i, folder, tag, label, tuple((k, env0.get(k)) for k in ENV_KEYS))
            sources.append(src)
            groups: dict[tuple, list[dict]] = {}
            for r in mine:
                if r["status"] == "ok":
                    groups.setdefault(tuple(r[k] for k in KEY), []).append(r)
            for key, rs in groups.items():
                rs.sort(key=lambda r: (r["seed"] is None, r["seed"] or 0))
                walls = _finite([r["train_wall_s"] for r in rs])
                per_key.setdefault(key, {})[src] = {
                    "runs": len(rs),
                    "style_label": rs[0]["style_label"],
                    "device_name": rs[0]["env"].get("device_name"),
                    "timesteps_per_s": _mean([r["timesteps_per_s"] for r in rs]),
                    "timesteps_per_s_sd": _sd([r["timesteps_per_s"] for r in rs]),
                    "peak_mem_bytes": _mean([r["peak_mem_bytes"] for r in rs]),
                    "peak_mem_source": rs[0]["peak_mem_source"],
                    "saved_bytes": _mean([r["saved_bytes"] for r in rs]),
                    "min_train_wall_s": min(walls) if walls else None,
                    "short": bool(walls) and min(walls) < SHORT_RUN_S,
                }
    return sources, per_key


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _ratio_sd(e: dict, base: dict) -> float | None:
    """sd of a/b from the seeds' sds (first-order error propagation); None with single seeds."""
    a, b = e["timesteps_per_s"], base["timesteps_per_s"]
    if not a or not b:
        return None
    ra, rb = (e["timesteps_per_s_sd"] or 0) / a, (base["timesteps_per_s_sd"] or 0) / b
    return None if ra == 0 and rb == 0 else (a / b) * math.hypot(ra, rb)


def geometric_mean(xs: Sequence[float]) -> float | None:
    """exp(mean(log x)) of the positive values; None when there are none.

    >>> round(geometric_mean([2.0, 8.0]), 6)
    4.0
    """
    ys = [math.log(x) for x in xs if x is not None and x > 0 and math.isfinite(x)]
    return math.exp(statistics.fmean(ys)) if ys else None
