"""Specs: the checked-in tasks/*.toml, validation errors, and resolving presets into runs."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tbptt_bench.runs.spec import (
    OPTIMIZERS,
    SWEEP_PRESETS,
    Budget,
    RunConfig,
    SpecError,
    load_spec,
    load_specs,
    parse_spec,
    resolve,
    style_slug,
)
from tbptt_bench.styles import parse_style

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
TASK_NAMES = ["adding", "copy", "echo", "influence", "language"]

MINIMAL = """
[task]
name = "echo"
[model]
cell = "tanh"
hidden_sizes = [4, 8]
[optimizer]
name = "adagrad"
lrs = [0.1, 0.01]
[budget]
epochs = 1
batch = 8
row_len = 50
val_batch = 8
val_len = 50
eval_every_updates = 5
warmup_updates = 0
[sweep]
styles = ["tf_style(5)", "full()", "random(0.25)"]
seeds = [0, 1]
[presets.smoke]
hidden_sizes = [2]
seeds = [7]
styles = ["one_step(3)"]
row_len = 10
"""


def test_every_task_has_one_valid_spec():
    specs = load_specs(TASKS_DIR)
    assert sorted(Path(s.path).stem for s in specs) == TASK_NAMES
    for s in specs:
        assert s.task == Path(s.path).stem
        assert s.optimizer in OPTIMIZERS


def _r2rt_rows(n: int) -> set[str]:
    """r2rt table rows at truncation length n: the five presets and random truncation."""
    return {
        parse_style(s).spec
        for s in (f"tf_style({n})", f"williams_peng({n})", f"one_step({n})", f"random({1 / n})")
    }


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("name", TASK_NAMES)
def test_quick_and_full_presets_hold_every_r2rt_row(name, preset):
    runs = resolve(load_spec(TASKS_DIR / f"{name}.toml"), preset)
    styles = {r.style for r in runs}
    assert "full()" in styles
    ns = {parse_style(s).n for s in styles if parse_style(s).preset == "tf_style" and parse_style(s).n > 1}
    assert {5, 10} <= ns
    for n in ns:
        assert _r2rt_rows(n) <= styles, (name, preset, n)
        overlapping = [
            parse_style(s)
            for s in styles
            if parse_style(s).preset == "overlapping" and parse_style(s).k2 == n
        ]
        assert overlapping and all(o.k1 < n for o in overlapping)


def test_echo_spec_mirrors_r2rt():
    spec = load_spec(TASKS_DIR / "echo.toml")
    assert (spec.budget.batch, spec.budget.row_len) == (200, 5000)
    assert (spec.optimizer, spec.lrs, spec.cell, spec.hidden_sizes) == ("adagrad", (0.1,), "tanh", (4, 16))
    styles = {r.style for r in resolve(spec, "full")}
    assert {
        "tf_style(1)",
        "tf_style(5)",
        "tf_style(10)",
        "williams_peng(5)",
        "williams_peng(10)",
        "full()",
        "random(0.2)",
        "random(0.1)",
    } <= styles
    assert dict(spec.task_params) == {"lags": (3, 8), "effects": (0.5, -0.25), "base": 0.5}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_smoke_preset_is_tiny(name):
    runs = resolve(load_spec(TASKS_DIR / f"{name}.toml"), "smoke")
    assert 0 < len(runs) <= 4
    for r in runs:
        b = r.budget
        assert b.epochs * b.batch * b.row_len <= 200 and b.val_batch * b.val_len <= 200


def test_resolve_one_config_per_hidden_lr_style_seed():
    spec = parse_spec(MINIMAL, "mini.toml")
    runs = resolve(spec, "full")
    assert len(runs) == 2 * 2 * 3 * 2
    assert [(r.hidden_size, r.lr, r.style, r.seed) for r in runs[:3]] == [
        (4, 0.1, "tf_style(5)", 0),
        (4, 0.1, "tf_style(5)", 1),
        (4, 0.1, "full()", 0),
    ]
    assert len({r.run_id for r in runs}) == len(runs)
    smoke = resolve(spec, "smoke")
    assert [(r.hidden_size, r.lr, r.style, r.seed, r.budget.row_len, r.budget.batch) for r in smoke] == [
        (2, 0.1, "one_step(3)", 7, 10, 8),
        (2, 0.01, "one_step(3)", 7, 10, 8),
    ]
    assert resolve(spec, "quick") == [r.__class__(**{**r.__dict__, "sweep": "quick"}) for r in runs]


def test_resolve_overrides_seeds_and_styles():
    spec = parse_spec(MINIMAL, "mini.toml")
    runs = resolve(spec, "smoke", seeds=range(3), styles=["williams_peng(4)", "overlapping(2, 6)"])
    assert sorted({r.seed for r in runs}) == [0, 1, 2]
    assert sorted({r.style for r in runs}) == ["tbptt(2, 6)", "williams_peng(4)"]


def test_run_id_and_hash():
    cfg = resolve(parse_spec(MINIMAL, "mini.toml"), "full")[0]
    canonical = json.dumps(cfg.to_dict(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert cfg.run_id == f"echo-tf_style-5-tanh4-lr0.1-s0-{digest}"
    assert re.fullmatch(r"[a-z0-9_.-]+", cfg.run_id)
    assert style_slug("tbptt(2, 6)") == "tbptt-2-6" and style_slug("random(0.05)") == "random-0.05"


def test_run_config_round_trips_through_json():
    spec = load_spec(TASKS_DIR / "echo.toml")
    cfg = resolve(spec, "quick")[0]
    back = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.run_id == cfg.run_id
    assert back.to_dict()["task_params"] == {"lags": [3, 8], "effects": [0.5, -0.25], "base": 0.5}
    assert isinstance(back.budget, Budget)
    with pytest.raises(Exception):
        cfg.lr = 1.0  # frozen


BAD = [
    ("[task]\nname = 'echo'\nnmae = 1\n", "unknown key 'task.nmae'"),
    (MINIMAL.replace("batch = 8\n", "bacth = 8\n", 1), "unknown key 'budget.bacth'"),
    (MINIMAL.replace("batch = 8\n", "", 1), "missing required key 'budget.batch'"),
    (
        MINIMAL.replace("batch = 8\n", "batch = '8'\n", 1),
        "budget.batch = '8' is not allowed: expected an integer from 1 to 1000000",
    ),
    (MINIMAL.replace("batch = 8\n", "batch = 0\n", 1), "budget.batch = 0 is not allowed"),
    (
        MINIMAL.replace("warmup_updates = 0", "warmup_updates = -1"),
        "budget.warmup_updates = -1 is not allowed: expected an integer from 0 to 1000000000",
    ),
    (
        MINIMAL.replace('name = "adagrad"', 'name = "lbfgs"'),
        "optimizer.name = 'lbfgs' is not allowed: expected one of sgd, adam, adagrad, rmsprop",
    ),
    (
        MINIMAL.replace("lrs = [0.1, 0.01]", "lrs = 0.1"),
        "optimizer.lrs = 0.1 is not allowed: expected a non-empty list of positive numbers",
    ),
    (MINIMAL.replace('"full()"', '"fulll()"'), "sweep.styles"),
    (MINIMAL.replace("hidden_sizes = [4, 8]", "hidden_sizes = []"), "model.hidden_sizes = [] is not allowed"),
    (MINIMAL.replace("[presets.smoke]", "[presets.huge]"), "unknown key 'presets.huge'"),
    (MINIMAL.replace("row_len = 10", "clip = 1.0"), "unknown key 'presets.smoke.clip'"),
    (MINIMAL + "\n[extra]\na = 1\n", "unknown key 'extra'"),
    ("[task\nname = 1", "not valid TOML"),
]


@pytest.mark.parametrize("text, expected", BAD)
def test_bad_specs_raise_one_line_naming_file_and_key(text, expected):
    with pytest.raises(SpecError) as err:
        parse_spec(text, "tasks/bad.toml")
    msg = str(err.value)
    assert msg.startswith("tasks/bad.toml: ") and expected in msg and "\n" not in msg


def test_load_spec_names_the_file(tmp_path):
    (tmp_path / "x.toml").write_text("[task]\nname = 3\n")
    with pytest.raises(
        SpecError, match=r"x\.toml: task\.name = 3 is not allowed: expected a non-empty string"
    ):
        load_spec(tmp_path / "x.toml")
    with pytest.raises(SpecError, match="cannot read spec file"):
        load_spec(tmp_path / "missing.toml")
    with pytest.raises(SpecError, match="specs folder not found"):
        load_specs(tmp_path / "nope")


def test_resolve_rejects_unknown_preset():
    with pytest.raises(SpecError, match="preset 'huge' is not allowed: use one of smoke, quick, full"):
        resolve(parse_spec(MINIMAL), "huge")
    assert SWEEP_PRESETS == ("smoke", "quick", "full")
