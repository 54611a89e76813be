"""Task specs: one TOML file per task, validated into frozen dataclasses, resolved into runs.

A spec names the task and its generator parameters, the model, the optimizer, the budget, the
styles and seeds, and per-preset overrides (``smoke`` seconds, ``quick`` minutes, ``full`` the
real comparison). ``resolve`` expands one preset into one ``RunConfig`` per
(hidden size, learning rate, style, seed). This module is pure Python (no torch).

>>> spec = parse_spec('''
... [task]
... name = "echo"
... [model]
... cell = "tanh"
... hidden_sizes = [4]
... [optimizer]
... name = "adagrad"
... lrs = [0.1]
... [budget]
... epochs = 1
... batch = 8
... row_len = 50
... val_batch = 8
... val_len = 50
... eval_points = 10
... warmup_updates = 1
... [sweep]
... styles = ["tf_style(5)", "full()"]
... seeds = [0]
... ''', "echo.toml")
>>> [(r.style, r.hidden_size, r.lr) for r in resolve(spec, "full")]
[('tf_style(5)', 4, 0.1), ('full()', 4, 0.1)]
>>> resolve(spec, "full")[0].run_id  # doctest: +ELLIPSIS
'echo-tf_style-5-tanh4-lr0.1-s0-...'

Units: ``row_len``, ``val_len`` and ``episode_len`` are steps per row, ``batch`` and ``val_batch``
rows, ``updates`` and ``warmup_updates`` parameter updates, ``epochs`` fresh training streams,
``eval_points`` validation evaluations on one schedule shared by every style of the task.

Budget modes (``budget.mode``; docs/semantics.md, "Fair comparison"):

- ``"data"`` (default): every style sees the same data, ``epochs`` streams of ``batch`` rows of
  ``row_len`` steps, state carried along a row and reset per stream.
- ``"updates"``: every style makes the same number of updates ``updates`` = U. A style with a
  fixed k1 trains on one stream of ``batch`` rows of U * k1 steps; a style whose k1 is the whole
  sequence (full BPTT, random truncation on it) trains on U fresh streams of ``row_len`` steps,
  one update each, state reset per row.
- ``"episodic"``: the ``epochs`` streams are cut into sequences of ``episode_len`` steps with
  the state reset between them; full BPTT makes one update per sequence, other styles update
  inside each sequence. Validation and test use the same episodes.

Adding a key: add it to the matching ``_Field`` table below and to the dataclass; unknown keys
are errors, so a typo never passes silently.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import BenchError, check_int
from ..styles import StyleError, parse_style

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "BUDGET_MODES",
    "MIN_EVAL_POINTS",
    "OPTIMIZERS",
    "SWEEP_PRESETS",
    "Budget",
    "PresetOverride",
    "RunConfig",
    "Spec",
    "SpecError",
    "load_spec",
    "load_specs",
    "parse_spec",
    "resolve",
    "style_slug",
]

#: Optimizer names a spec may use -> the ``torch.optim`` class the harness builds.
OPTIMIZERS: dict[str, str] = {"sgd": "SGD", "adam": "Adam", "adagrad": "Adagrad", "rmsprop": "RMSprop"}

#: Sweep presets, smallest first; the two ``full-*`` presets are the full sizes on the other budget
#: axes (equal updates, episodic sequences), so a table can compare styles on each axis.
SWEEP_PRESETS: tuple[str, ...] = ("smoke", "quick", "full", "full-updates", "full-episodic")

#: ``budget.mode`` values (module doc).
BUDGET_MODES: tuple[str, ...] = ("data", "updates", "episodic")

#: The fewest validation evaluations a run may schedule (a final loss averages the last 3).
MIN_EVAL_POINTS = 10


class SpecError(BenchError):
    """A spec file is unreadable, has an unknown or missing key, or a value of the wrong type."""


# -- value checkers: each returns the cleaned value or raises _Bad(what is allowed) -------------
class _Bad(Exception):
    pass


# Upper bounds at the door (issue #16): far above any run this benchmark makes, far below values
# that overflow int64 in the records or only fail after minutes of planning or by memory.
# The sweep also estimates each run's memory from these (``sweep.estimate_run_bytes``).
MAX_STEPS = 10**8  # row_len, val_len: steps per row
MAX_ROWS = 10**6  # batch, val_batch
MAX_COUNT = 10**9  # epochs, eval_points, warmup_updates, updates, episode_len
MAX_HIDDEN = 65536
MAX_SEED = 2**31 - 1
MAX_LR = 1e3
MAX_CLIP = 1e12


def _int_in(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise _Bad(f"an integer from {lo} to {hi}")
        return v

    return check


def _mode(v: Any) -> str:
    if v not in BUDGET_MODES:
        raise _Bad(f"one of {', '.join(BUDGET_MODES)}")
    return v


def _float_in(hi: float) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= hi:
            raise _Bad(f"a positive number up to {hi:g}")
        return float(v)

    return check


_pos_int = _int_in(1, MAX_COUNT)
_nonneg_int = _int_in(0, MAX_COUNT)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _Bad("a non-empty string")
    return v


def _optimizer(v: Any) -> str:
    if v not in OPTIMIZERS:
        raise _Bad(f"one of {', '.join(OPTIMIZERS)}")
    return v


def _style(v: Any) -> str:
    try:
        return parse_style(v).spec
    except StyleError as e:
        raise _Bad(f"a style call like 'tf_style(5)' ({e})") from None


def _list_of(item: Callable[[Any], Any], what: str) -> Callable[[Any], tuple]:
    def check(v: Any) -> tuple:
        if not isinstance(v, list) or not v:
            raise _Bad(f"a non-empty list of {what}")
        try:
            return tuple(item(x) for x in v)
        except _Bad:
            raise _Bad(f"a non-empty list of {what}") from None

    return check


def _table(v: Any) -> dict:
    if not isinstance(v, dict):
        raise _Bad("a table")
    for x in _numbers(v):  # task parameters: each task checks its own; these bounds hold for all
        if isinstance(x, float) and not math.isfinite(x):
            raise _Bad("a table of finite numbers")
        if isinstance(x, int) and not -MAX_COUNT <= x <= MAX_COUNT:
            raise _Bad(f"a table of numbers within +-{MAX_COUNT}")
    return {k: _freeze(x) for k, x in v.items()}


def _numbers(v: Any) -> Iterable[Any]:
    if isinstance(v, dict):
        for x in v.values():
            yield from _numbers(x)
    elif isinstance(v, list):
        for x in v:
            yield from _numbers(x)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        yield v


def _freeze(v: Any) -> Any:
    """TOML arrays become tuples so configs stay immutable (JSON writes them back as lists)."""
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


_BUDGET_KEYS: dict[str, Callable[[Any], Any]] = {
    "epochs": _pos_int,
    "batch": _int_in(1, MAX_ROWS),
    "row_len": _int_in(1, MAX_STEPS),
    "val_batch": _int_in(1, MAX_ROWS),
    "val_len": _int_in(1, MAX_STEPS),
    "eval_points": _int_in(MIN_EVAL_POINTS, MAX_COUNT),
    "warmup_updates": _nonneg_int,
    "mode": _mode,
    "updates": _pos_int,
    "episode_len": _pos_int,
}
#: Budget keys a spec may leave out (the mode-specific ones; ``Budget`` says what each defaults to).
_BUDGET_OPTIONAL = ("mode", "updates", "episode_len")
_HIDDEN = _list_of(_int_in(1, MAX_HIDDEN), f"integers from 1 to {MAX_HIDDEN}")
_LRS = _list_of(_float_in(MAX_LR), f"positive numbers up to {MAX_LR:g}")
_SEEDS = _list_of(_int_in(0, MAX_SEED), f"integers from 0 to {MAX_SEED}")
_STYLES = _list_of(_style, "style strings like 'tf_style(5)'")
_OVERRIDE_KEYS: dict[str, Callable[[Any], Any]] = {
    **_BUDGET_KEYS,
    "hidden_sizes": _HIDDEN,
    "lrs": _LRS,
    "seeds": _SEEDS,
    "styles": _STYLES,
}
#: section -> key -> (checker, required)
_SCHEMA: dict[str, dict[str, tuple[Callable[[Any], Any], bool]]] = {
    "task": {"name": (_str, True), "params": (_table, False)},
    "model": {"cell": (_str, True), "hidden_sizes": (_HIDDEN, True)},
    "optimizer": {"name": (_optimizer, True), "lrs": (_LRS, True), "clip": (_float_in(MAX_CLIP), False)},
    "budget": {k: (c, k not in _BUDGET_OPTIONAL) for k, c in _BUDGET_KEYS.items()},
    "sweep": {"styles": (_STYLES, True), "seeds": (_SEEDS, True)},
}


# -- dataclasses -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """How long one run trains and how it is measured (steps, rows, updates; see module doc).

    ``updates`` is used (and required) only by mode "updates", ``episode_len`` only by mode
    "episodic" (it must divide ``row_len`` and ``val_len``, so every episode is whole).
    """

    epochs: int
    batch: int
    row_len: int
    val_batch: int
    val_len: int
    eval_points: int
    warmup_updates: int
    mode: str = "data"
    updates: int | None = None
    episode_len: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in BUDGET_MODES:
            raise SpecError(f"budget.mode={self.mode!r} is not allowed: use one of {', '.join(BUDGET_MODES)}")
        check_int("budget.eval_points", self.eval_points, MIN_EVAL_POINTS, error=SpecError)
        if self.mode == "updates":
            check_int("budget.updates", self.updates, 1, error=SpecError)
        # Enough room on the schedule's axis for eval_points distinct points (at least 10).
        span, what = (
            (self.updates, "updates")
            if self.mode == "updates"
            else (
                self.epochs * self.row_len,
                "epochs * row_len",
            )
        )
        if span < self.eval_points - 1:
            raise SpecError(
                f"budget.eval_points={self.eval_points} is not allowed with {what}={span}: "
                f"the schedule needs {what} >= eval_points - 1 for distinct points"
            )
        if self.mode == "episodic":
            n = check_int("budget.episode_len", self.episode_len, 1, error=SpecError)
            for key in ("row_len", "val_len"):
                if getattr(self, key) % n:
                    raise SpecError(
                        f"budget.episode_len={n} is not allowed with budget.{key}={getattr(self, key)}: "
                        "it must divide it (whole episodes only)"
                    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PresetOverride:
    """What one sweep preset changes; ``None``/empty means "as in the base sections"."""

    budget: Mapping[str, int] = field(default_factory=dict)
    hidden_sizes: tuple[int, ...] | None = None
    lrs: tuple[float, ...] | None = None
    seeds: tuple[int, ...] | None = None
    styles: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Spec:
    """One validated task spec file."""

    path: str
    task: str
    task_params: Mapping[str, Any]
    cell: str
    hidden_sizes: tuple[int, ...]
    optimizer: str
    lrs: tuple[float, ...]
    clip: float | None
    budget: Budget
    styles: tuple[str, ...]
    seeds: tuple[int, ...]
    presets: Mapping[str, PresetOverride]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run (and so its id). JSON-able via ``to_dict``.

    ``style`` is the canonical style string (``styles.parse_style(style).spec``).
    """

    task: str
    task_params: Mapping[str, Any]
    cell: str
    hidden_size: int
    optimizer: str
    lr: float
    clip: float | None
    style: str
    budget: Budget
    seed: int
    sweep: str

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["task_params"] = _thaw(dict(self.task_params))
        d["budget"] = self.budget.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        d = dict(d)
        d["task_params"] = _freeze(dict(d["task_params"]))
        try:
            d["budget"] = Budget(**d["budget"])
        except TypeError:  # e.g. a config.json written before eval_points replaced eval_every_updates
            allowed = ", ".join(f.name for f in fields(Budget))
            raise SpecError(f"budget {sorted(d['budget'])} is not allowed: a budget has {allowed}") from None
        return cls(**d)

    @property
    def config_hash(self) -> str:
        """12 hex digits of sha256 over the canonical JSON of ``to_dict()``."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def run_id(self) -> str:
        """``<task slug>-<style slug>-<cell><hidden>-lr<lr>-s<seed>-<hash>``, e.g. ``echo-tf_style-5-tanh4-lr0.1-s0-…``.

        A task or style given as ``"package.module:Name"`` appears in its folder-safe slug form.
        """
        return (
            f"{style_slug(self.task)}-{style_slug(self.style)}-{self.cell}{self.hidden_size}-lr{self.lr:g}"
            f"-s{self.seed}-{self.config_hash}"
        )


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, dict):
        return {k: _thaw(x) for k, x in v.items()}
    return v


def style_slug(style: str) -> str:
    """A folder-safe form of a style string (lowercase letters, digits, ``_``, ``.`` and ``-``).

    >>> style_slug("tf_style(5)"), style_slug("random(0.1)"), style_slug("full()")
    ('tf_style-5', 'random-0.1', 'full')
    >>> style_slug("my_styles:every(3)"), style_slug("my_tasks.toy:ToyTask")
    ('my_styles-every-3', 'my_tasks.toy-toytask')
    """
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9_.]+", "-", style.lower())).strip("-")


# -- loading ---------------------------------------------------------------------------------
def _check_section(path: str, where: str, table: Any, schema: Mapping[str, tuple[Callable, bool]]) -> dict:
    if not isinstance(table, dict):
        raise SpecError(f"{path}: [{where}] must be a table with keys {', '.join(schema)}")
    out = {}
    for key in table:
        if key not in schema:
            raise SpecError(f"{path}: unknown key '{where}.{key}'; allowed in [{where}]: {', '.join(schema)}")
    for key, (check, required) in schema.items():
        if key not in table:
            if required:
                raise SpecError(f"{path}: missing required key '{where}.{key}'")
            continue
        try:
            out[key] = check(table[key])
        except _Bad as e:
            shown = repr(table[key])
            shown = shown if len(shown) <= 200 else shown[:180] + f"... ({len(shown)} chars)"
            raise SpecError(f"{path}: {where}.{key} = {shown} is not allowed: expected {e}") from None
    return out


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    """Validate TOML text into a ``Spec``; ``path`` only labels error messages."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    allowed = [*_SCHEMA, "presets"]
    for key in raw:
        if key not in allowed:
            raise SpecError(f"{path}: unknown key '{key}'; allowed top-level tables: {', '.join(allowed)}")
    sec = {name: _check_section(path, name, raw.get(name, {}), schema) for name, schema in _SCHEMA.items()}
    presets_raw = raw.get("presets", {})
    if not isinstance(presets_raw, dict):
        raise SpecError(f"{path}: [presets] must be a table of {', '.join(SWEEP_PRESETS)}")
    presets = {}
    for name, table in presets_raw.items():
        if name not in SWEEP_PRESETS:
            raise SpecError(
                f"{path}: unknown key 'presets.{name}'; allowed presets: {', '.join(SWEEP_PRESETS)}"
            )
        o = _check_section(path, f"presets.{name}", table, {k: (c, False) for k, c in _OVERRIDE_KEYS.items()})
        _check_budget(path, f"presets.{name}", _merged_budget(sec["budget"], o))
        presets[name] = PresetOverride(
            budget={k: v for k, v in o.items() if k in _BUDGET_KEYS},
            **{k: o.get(k) for k in ("hidden_sizes", "lrs", "seeds", "styles")},
        )
    return Spec(
        path=path,
        task=sec["task"]["name"],
        task_params=sec["task"].get("params", {}),
        cell=sec["model"]["cell"],
        hidden_sizes=sec["model"]["hidden_sizes"],
        optimizer=sec["optimizer"]["name"],
        lrs=sec["optimizer"]["lrs"],
        clip=sec["optimizer"].get("clip"),
        budget=_check_budget(path, "budget", sec["budget"]),
        styles=sec["sweep"]["styles"],
        seeds=sec["sweep"]["seeds"],
        presets=presets,
    )


def _merged_budget(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """The budget keys of ``base`` with those of ``override`` on top (other override keys ignored)."""
    return {**base, **{k: v for k, v in override.items() if k in _BUDGET_KEYS}}


def _check_budget(path: str, where: str, keys: Mapping[str, Any]) -> Budget:
    try:
        return Budget(**keys)
    except SpecError as e:
        raise SpecError(f"{path}: [{where}] {e}") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate one spec file (``SpecError`` names the file and the key)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read spec file ({e.__class__.__name__}: {e})") from None
    return parse_spec(text, str(p))


def load_specs(directory: str | Path) -> list[Spec]:
    """Every ``*.toml`` in ``directory``, sorted by file name."""
    d = Path(directory)
    if not d.is_dir():
        raise SpecError(f"{d}: specs folder not found (a folder of <task>.toml files is expected)")
    return [load_spec(p) for p in sorted(d.glob("*.toml"))]


def resolve(
    spec: Spec, preset: str, seeds: Iterable[int] | None = None, styles: Iterable[str] | None = None
) -> list[RunConfig]:
    """One ``RunConfig`` per (hidden size, lr, style, seed) for a sweep preset.

    ``seeds`` replaces the spec's seeds (the CLI's ``--seeds N`` passes ``range(N)``);
    ``styles`` (style strings) replaces its styles (``StyleError`` for a bad one).
    """
    if preset not in SWEEP_PRESETS:
        raise SpecError(f"preset {preset!r} is not allowed: use one of {', '.join(SWEEP_PRESETS)}")
    o = spec.presets.get(preset, PresetOverride())
    budget = replace(spec.budget, **dict(o.budget))
    seed_list = tuple(seeds) if seeds is not None else (o.seeds or spec.seeds)
    style_list = tuple(parse_style(s).spec for s in styles) if styles else (o.styles or spec.styles)
    return [
        RunConfig(
            task=spec.task,
            task_params=spec.task_params,
            cell=spec.cell,
            hidden_size=h,
            optimizer=spec.optimizer,
            lr=lr,
            clip=spec.clip,
            style=style,
            budget=budget,
            seed=seed,
            sweep=preset,
        )
        for h in (o.hidden_sizes or spec.hidden_sizes)
        for lr in (o.lrs or spec.lrs)
        for style in style_list
        for seed in seed_list
    ]
