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
from tbptt_bench.tasks import TASKS

TASKS_DIR = Path(__file__).resolve().parents[1] / "tasks"
TASK_NAMES = sorted(TASKS)  # the registry drives the tests: a new task needs a spec file too
#: Tasks whose grid is r2rt's table (every style at every n); copy, echo_nochain and influence
#: run the windows their claims are about (docs/presets.md) and are tested below.
R2RT_TASKS = ["adding", "echo", "language"]

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
eval_points = 10
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
    """r2rt table rows at truncation length n: the five presets and their random peers (random
    truncation at expected depth n, ARTBP at expected segment n; issue #13)."""
    return {
        parse_style(s).spec
        for s in (
            f"tf_style({n})",
            f"williams_peng({n})",
            f"one_step({n})",
            f"random_depth({n})",
            f"artbp({n})",
        )
    }


@pytest.mark.parametrize("preset", ["quick", "full"])
@pytest.mark.parametrize("name", R2RT_TASKS)
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
    assert (spec.optimizer, spec.cell, spec.hidden_sizes) == ("adagrad", "tanh", (4, 16)) and 0.1 in spec.lrs
    styles = {r.style for r in resolve(spec, "full")}
    assert {
        "tf_style(1)",
        "tf_style(5)",
        "tf_style(10)",
        "williams_peng(5)",
        "williams_peng(10)",
        "full()",
        "random_depth(5)",
        "random_depth(10)",
        "artbp(5)",
        "artbp(10)",
    } <= styles
    assert dict(spec.task_params) == {"lags": (3, 8), "effects": (0.5, -0.25), "base": 0.5}


@pytest.mark.parametrize("name", TASK_NAMES)
def test_full_preset_has_three_seeds_and_three_learning_rates_over_10x(name):
    spec = load_spec(TASKS_DIR / f"{name}.toml")
    runs = resolve(spec, "full")
    for style in {r.style for r in runs}:
        lrs = sorted({r.lr for r in runs if r.style == style})
        assert len(lrs) >= 3 and lrs[-1] / lrs[0] >= 10 * (1 - 1e-9), (name, style, lrs)
        assert sorted({r.seed for r in runs if r.style == style}) == [0, 1, 2]


def test_copy_grid_has_the_boundary_and_aichers_windows_on_a_two_layer_lstm():
    spec = load_spec(TASKS_DIR / "copy.toml")
    assert (spec.cell, spec.hidden_sizes, spec.budget.batch) == ("lstm2x", (50,), 64)
    styles = {r.style for r in resolve(spec, "full")}
    assert {"tf_style(10)", "tf_style(11)"} <= styles  # m = 10: the boundary
    assert {parse_style(f"overlapping({K}, {2 * K - 1})").spec for K in (5, 10, 11)} <= styles
    assert dict(spec.task_params) == {"m": 10}


def test_influence_grid_reaches_small_learning_rates_and_long_windows():
    spec = load_spec(TASKS_DIR / "influence.toml")
    assert {1e-4, 3e-5} <= set(spec.lrs) and spec.seeds == (0, 1, 2)
    assert spec.task_params["input_noise"] > 0  # the seeds are different streams
    assert max(parse_style(s).k2 or 0 for s in spec.styles) >= 200 and "full()" in spec.styles


def test_echo_nochain_grid_has_windows_on_both_sides_of_the_chain_window():
    from tbptt_bench.tasks.echo import min_learning_window

    spec = load_spec(TASKS_DIR / "echo_nochain.toml")
    k = min_learning_window(spec.task_params["lags"])
    ks = {parse_style(s).k2 for s in spec.styles if parse_style(s).preset == "tf_style"}
    assert k == 8 and any(n < k for n in ks) and any(n >= k for n in ks)


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
    old = {**cfg.to_dict(), "budget": {**cfg.budget.to_dict(), "eval_every_updates": 25}}
    with pytest.raises(
        SpecError, match=r"budget \[.*'eval_every_updates'.*\] is not allowed: a budget has epochs"
    ):
        RunConfig.from_dict(old)
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
    with pytest.raises(
        SpecError, match=f"preset 'huge' is not allowed: use one of {', '.join(SWEEP_PRESETS)}"
    ):
        resolve(parse_spec(MINIMAL), "huge")
    assert SWEEP_PRESETS[:3] == ("smoke", "quick", "full")  # smallest first; then the other budget axes


@pytest.mark.parametrize("name", TASK_NAMES)
def test_every_spec_holds_the_full_preset_on_every_budget_axis(name):
    spec = load_spec(TASKS_DIR / f"{name}.toml")
    full = resolve(spec, "full")
    for preset, mode in (("full", "data"), ("full-updates", "updates"), ("full-episodic", "episodic")):
        runs = resolve(spec, preset)
        assert {r.budget.mode for r in runs} == {mode}, (name, preset)
        assert [(r.style, r.hidden_size, r.lr, r.seed) for r in runs] == [
            (r.style, r.hidden_size, r.lr, r.seed) for r in full
        ]  # the same grid: only the budget axis differs
    for preset in ("smoke", "quick"):
        assert {r.budget.mode for r in resolve(spec, preset)} == {"data"}


def test_budget_modes_parse_and_change_the_run_id():
    spec = parse_spec(
        MINIMAL + '[presets.full-updates]\nmode = "updates"\nupdates = 40\n'
        '[presets.full-episodic]\nmode = "episodic"\nepisode_len = 10\n',
        "mini.toml",
    )
    data, upd, epi = (resolve(spec, p)[0] for p in ("full", "full-updates", "full-episodic"))
    assert (upd.budget.mode, upd.budget.updates, epi.budget.mode, epi.budget.episode_len) == (
        "updates",
        40,
        "episodic",
        10,
    )
    assert len({data.run_id, upd.run_id, epi.run_id}) == 3  # other budget, other run
    with pytest.raises(SpecError, match=r"mini\.toml: \[presets\.full-episodic\] budget\.episode_len=7"):
        parse_spec(MINIMAL + '[presets.full-episodic]\nmode = "episodic"\nepisode_len = 7\n', "mini.toml")
    with pytest.raises(SpecError, match="budget.mode = 'weekly' is not allowed: expected one of data"):
        parse_spec(MINIMAL.replace("warmup_updates = 0", 'warmup_updates = 0\nmode = "weekly"'), "mini.toml")
