"""What a run record holds: the required keys of each file, statuses, bounds and each field's type.

The schema of ``config.json``, ``env.json`` and ``summary.json`` (``CONFIG_KEYS``, ``ENV_KEYS``,
``SUMMARY_KEYS`` and the optional ``SUMMARY_OPTIONAL_KEYS``), the columns of the frames
``load_runs`` returns, and the per-field types and bounds (``_Field``) that ``validate.py``
checks every record against. Pure data and pure checks: no files are read here. Torch-free.

>>> _SUMMARY_SCHEMA["clip_rate"].problem("clip_rate", 1.5)
'clip_rate=1.5 is above its bound <= 1'
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .curves import INT64_MAX, MAX_SECONDS
from .record_io import _cut

__all__ = [
    "BLOWUP_LOSS",
    "CONFIG_KEYS",
    "CURVES_COLUMNS",
    "ENV_KEYS",
    "FAILURE_KINDS",
    "LOSSES",
    "MAX_LOSS",
    "MAX_RATE",
    "RUN_COLUMNS",
    "STATUSES",
    "SUMMARY_KEYS",
    "SUMMARY_OPTIONAL_KEYS",
]


# -- the schema (common brief) ----------------------------------------------------------------
CONFIG_KEYS = (
    "task",
    "task_params",
    "loss",
    "references",
    "style",
    "model",
    "optimizer",
    "clip",
    "budget",
    "seed",
    "sweep",
    "device",
)
ENV_KEYS = (
    "device_kind",
    "device_name",
    "torch_version",
    "cuda_version",
    "cudnn_version",
    "cpu_model",
    "cpu_threads",
    "python_version",
    "platform",
    "package_version",
    "git_commit",
    "git_dirty",
)
SUMMARY_KEYS = (
    "status",
    "error",
    "min_val_loss",
    "final_val_loss",
    "train_wall_s",
    "eval_wall_s",
    "warmup_updates",
    "updates",
    "timesteps",
    "updates_per_s",
    "timesteps_per_s",
    "peak_mem_bytes",
    "peak_mem_source",
    "saved_for_backward_peak_bytes",
    "clip_rate",
    "diverged_at_update",
    "engine_path",
)
#: Summary keys of the newer protocol: optional, so records written before it stay valid ("n/a").
SUMMARY_OPTIONAL_KEYS = (
    "forward_steps",
    "backprop_steps",
    "test_loss",
    "best_val_before_divergence",
    "failure_kind",
    "config_hash",
)
STATUSES = ("ok", "diverged", "failed")
#: Why a run failed: "infrastructure" (its worker was killed, ran out of memory or disk) is retried by
#: the next sweep; "deterministic" (an exception the run itself raises) only with ``--retry-failed``.
FAILURE_KINDS = ("infrastructure", "deterministic")
#: A run whose last validation loss is above this is a blow-up, not a result: the harness records
#: it "diverged" (the tasks' losses are O(1): CE <= log(vocabulary), MSE of targets in [0, 2];
#: e.g. a CE of 6.3e29 was recorded "ok"). Transients above it that training recovers from are fine.
BLOWUP_LOSS = 1e6
#: Rates (per second) above this are damage too: ~1e5 times the fastest GPU run measured here.
MAX_RATE = 1e15
#: Losses are computed in float32: a finite one beyond its largest value is damage (1e308 broke the
#: figures' axes).
MAX_LOSS = 3.4028234663852886e38
LOSSES = ("ce", "mse")

#: Column -> pandas dtype of ``LoadedRuns.runs`` (the listed columns, then a few extras).
RUN_COLUMNS: dict[str, str] = {
    "run_id": "object",
    "device_tag": "object",
    "sweep": "object",
    "task": "object",
    "loss_kind": "object",
    "style_preset": "object",
    "style_label": "object",
    "style_spec": "object",
    "style_n": "Int64",
    "k1": "Int64",
    "k2": "Int64",
    "pi": "float64",
    "cell": "object",
    "hidden_size": "Int64",
    "optimizer": "object",
    "lr": "float64",
    "clip": "float64",
    "seed": "Int64",
    "device": "object",
    "device_name": "object",
    "status": "object",
    "min_val_loss": "float64",
    "final_val_loss": "float64",
    "train_wall_s": "float64",
    "eval_wall_s": "float64",
    "updates": "Int64",
    "timesteps": "Int64",
    "updates_per_s": "float64",
    "timesteps_per_s": "float64",
    "peak_mem_bytes": "Int64",
    "peak_mem_source": "object",
    "saved_for_backward_peak_bytes": "Int64",
    "clip_rate": "float64",
    "diverged_at_update": "Int64",
    "engine_path": "object",
    "ref_optimal": "float64",
    "ref_partial": "float64",
    "ref_no_memory": "float64",
    "torch_version": "object",
    "cuda_version": "object",
    "git_commit": "object",
    # extras (not in the fixed list; appended so the listed ones keep their order)
    "ref_optimal_note": "object",
    "ref_partial_note": "object",
    "ref_no_memory_note": "object",
    "warmup_updates": "Int64",
    "error": "object",
    "git_dirty": "object",
    "run_dir": "object",
    # the newer protocol's summary keys (None, shown "n/a", for records written before them)
    "failure_kind": "object",
    "forward_steps": "Int64",
    "backprop_steps": "Int64",
    "test_loss": "float64",
    "best_val_before_divergence": "float64",
    "config_hash": "object",
    # what the fair tables need to name a run's budget axis (config.json's budget; None when older)
    "expected_backprop_steps": "float64",
    "budget_mode": "object",
    "row_len": "Int64",
    "episode_len": "Int64",
}
CURVES_COLUMNS: dict[str, str] = {
    "run_id": "object",
    "device_tag": "object",
    "sweep": "object",
    "task": "object",
    "style_label": "object",
    "style_spec": "object",
    "lr": "float64",
    "seed": "Int64",
    "split": "object",
    "update": "int64",
    "timesteps": "int64",
    "backprop_steps": "Int64",  # cumulative; <NA> in curves written before the protocol counted it
    "train_wall_s": "float64",
    "loss": "float64",
}


# -- each field's type and bounds (validate.py checks records against these) ------------------
_TEXT, _INT, _NUM, _BOOL, _VERSION = "text", "int", "num", "bool", "version"


class _Field:
    """One JSON field: its kind, whether null is allowed, and bounds (inclusive unless noted)."""

    def __init__(
        self,
        kind: str,
        null: bool = False,
        lo: float | None = None,
        hi: float | None = None,
        lo_open: bool = False,
        choices: Sequence[Any] | None = None,
    ):
        self.kind, self.null, self.lo, self.hi, self.lo_open, self.choices = (
            kind,
            null,
            lo,
            hi,
            lo_open,
            choices,
        )

    def problem(self, name: str, v: Any) -> str | None:
        if v is None:
            return None if self.null else f"{name} is null: it must be a {self.kind}"
        if self.choices is not None:
            return None if v in self.choices else f"{name}={_cut(v)} is not one of {list(self.choices)}"
        if self.kind == _TEXT:
            return None if isinstance(v, str) else f"{name}={_cut(v)} is not text"
        if self.kind == _VERSION:  # e.g. torch.backends.cudnn.version() is an int, others text
            ok = isinstance(v, str) or (
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= INT64_MAX
            )
            return None if ok else f"{name}={_cut(v)} is not a version (text or integer >= 0)"
        if self.kind == _BOOL:
            return None if isinstance(v, bool) else f"{name}={_cut(v)} is not true/false"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{name}={_cut(v)} is not a number"
        if self.kind == _INT:
            if not isinstance(v, int):
                return f"{name}={_cut(v)} is not an integer"
            lo, hi = (0 if self.lo is None else self.lo), (INT64_MAX if self.hi is None else self.hi)
        else:
            if not math.isfinite(v):
                return f"{name}={v!r} is not a finite number"
            lo, hi = self.lo, self.hi
        if lo is not None and (v <= lo if self.lo_open else v < lo):
            return f"{name}={_cut(v)} is below its bound {'>' if self.lo_open else '>='} {lo}"
        if hi is not None and v > hi:
            return f"{name}={_cut(v)} is above its bound <= {hi}"
        return None


_CONFIG_SCHEMA: dict[str, _Field] = {
    "task": _Field(_TEXT),
    "loss": _Field(_TEXT, choices=LOSSES),
    "clip": _Field(_NUM, null=True, lo=0, lo_open=True),
    "seed": _Field(_INT),
    "sweep": _Field(_TEXT),
    "device": _Field(_TEXT),
    "style.preset": _Field(_TEXT),
    "style.label": _Field(_TEXT),
    "style.spec": _Field(_TEXT),
    "style.n": _Field(_INT, null=True, lo=1),
    "style.k1": _Field(_INT, null=True, lo=1),
    "style.k2": _Field(_INT, null=True, lo=1),
    "style.pi": _Field(_NUM, null=True, lo=0, lo_open=True, hi=1),
    "model.cell": _Field(_TEXT),
    "model.hidden_size": _Field(_INT, lo=1),
    "optimizer.name": _Field(_TEXT),
    "optimizer.lr": _Field(_NUM, lo=0, lo_open=True),
    "references.optimal": _Field(_NUM, null=True),
}
_ENV_SCHEMA: dict[str, _Field] = {k: _Field(_TEXT, null=True) for k in ENV_KEYS} | {
    "cpu_threads": _Field(_INT, null=True),
    "cudnn_version": _Field(_VERSION, null=True),
    "git_dirty": _Field(_BOOL, null=True),
}
_LOSS = _Field(_NUM, null=True, lo=-MAX_LOSS, hi=MAX_LOSS)
_SUMMARY_SCHEMA: dict[str, _Field] = {
    "status": _Field(_TEXT, choices=STATUSES),
    "error": _Field(_TEXT, null=True),
    "min_val_loss": _LOSS,
    "final_val_loss": _LOSS,
    "train_wall_s": _Field(_NUM, lo=0, hi=MAX_SECONDS),
    "eval_wall_s": _Field(_NUM, lo=0, hi=MAX_SECONDS),
    "warmup_updates": _Field(_INT),
    "updates": _Field(_INT),
    "timesteps": _Field(_INT),
    "updates_per_s": _Field(_NUM, null=True, lo=0, hi=MAX_RATE),
    "timesteps_per_s": _Field(_NUM, null=True, lo=0, hi=MAX_RATE),
    "peak_mem_bytes": _Field(_INT, null=True),
    "peak_mem_source": _Field(_TEXT, null=True),
    "saved_for_backward_peak_bytes": _Field(_INT, null=True),
    "clip_rate": _Field(_NUM, lo=0, hi=1),
    "diverged_at_update": _Field(_INT, null=True),
    "engine_path": _Field(_TEXT),
    # the newer protocol's keys: optional (absent in older records), checked when present
    "forward_steps": _Field(_INT, null=True),
    "backprop_steps": _Field(_INT, null=True),
    "test_loss": _LOSS,
    "best_val_before_divergence": _LOSS,
    "failure_kind": _Field(_TEXT, null=True, choices=(*FAILURE_KINDS, None)),
    "config_hash": _Field(_TEXT, null=True),
}


def _lookup(obj: Mapping, dotted: str) -> tuple[bool, Any]:
    cur: Any = obj
    for k in dotted.split("."):
        if not isinstance(cur, Mapping) or k not in cur:
            return False, None
        cur = cur[k]
    return True, cur


def _check_schema(obj: Mapping, schema: Mapping[str, _Field], what: str, optional=()) -> list[str]:
    problems = []
    for key, spec in schema.items():
        found, v = _lookup(obj, key)
        if not found:
            if key not in optional:
                problems.append(f"{what} is missing key {key!r}")
            continue
        p = spec.problem(f"{what} {key}", v)
        if p:
            problems.append(p)
    return problems


def _json_numbers(obj: Any, where: str) -> list[str]:
    """Free-form JSON (task_params, references, budget): integers within int64, floats finite."""
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in _json_numbers(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _json_numbers(v, f"{where}[{i}]")]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, int) and not -INT64_MAX - 1 <= obj <= INT64_MAX:
        return [f"{where}={_cut(obj)} is outside int64"]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [f"{where}={obj!r} is not a finite number"]
    return []
