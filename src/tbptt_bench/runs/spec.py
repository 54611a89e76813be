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

Adding a key: add it to the matching table of ``runs/spec_fields.py`` (``_SCHEMA``, where every
key's checker and bounds live) and to the dataclass; unknown keys are errors, so a typo never
passes silently.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import BenchError, check_int
from ..styles import StyleError, parse_style  # noqa: F401  (StyleError: re-exported, as before)

# What this module uses, plus re-exports (noqa: F401): the checkers and bounds lived here before
# spec_fields.py was split out, and callers use them as ``spec.X``.
from .spec_fields import (  # noqa: F401
    _BUDGET_KEYS,
    _BUDGET_OPTIONAL,
    _HIDDEN,
    _LRS,
    _OVERRIDE_KEYS,
    _SCHEMA,
    _SEEDS,
    _STYLES,
    BUDGET_MODES,
    MAX_CLIP,
    MAX_COUNT,
    MAX_HIDDEN,
    MAX_LR,
    MAX_ROWS,
    MAX_SEED,
    MAX_STEPS,
    MIN_EVAL_POINTS,
    OPTIMIZERS,
    SWEEP_PRESETS,
    _Bad,
    _float_in,
    _freeze,
    _int_in,
    _list_of,
    _mode,
    _nonneg_int,
    _numbers,
    _optimizer,
    _pos_int,
    _str,
    _style,
    _table,
)

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


class SpecError(BenchError):
    """A spec file is unreadable, has an unknown or missing key, or a value of the wrong type."""


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
