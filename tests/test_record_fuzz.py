"""One definition of a valid record: sweep, report, compare and the loader agree, and none raises.

Issue #16, class 2. Real records (an echo smoke sweep, trained in-process) are corrupted field by
field -- wrong types, int64 overflow, negative counts, NaN/Infinity/-Infinity, null where a value
is required, a summary that disagrees with its curve or status, a config edited after the run
(its hash no longer names the folder) -- 224 cases, each copy in its own device folder of one
results root. Then ``store.validate_record``, ``store.load_runs`` (the loader; ``tbptt_bench.load_results`` is
added by the report-page helper on another branch), ``build_report``, ``compare`` and the sweep's
``plan`` must name exactly the same folders invalid, none may raise, each invalid one is reported
(one warning line each) and planned for a rerun, and a rerun restores every one of them.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from tbptt_bench.report import build
from tbptt_bench.report.compare import compare
from tbptt_bench.runs import harness, store, sweep
from tbptt_bench.runs.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
ECHO = load_spec(REPO / "tasks" / "echo.toml")
NAN, INF = float("nan"), float("inf")
BIG = 2**63  # one past int64
WRONG_TYPES = ["text", 1.5, True, [1], {"a": 1}]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, list[sweep.PlannedRun]]:
    """A real echo smoke sweep (2 styles), written by the harness in this process."""
    root = tmp_path_factory.mktemp("base") / "results"
    tag = sweep.local_device_tag("cpu")
    runs = sweep.plan([ECHO], "smoke", tag, root, styles_override=["tf_style(5)", "random(0.5)"])
    for r in runs:
        harness.execute_run(r.config, root, "cpu")
    assert all(store.validate_record(r.run_dir) == [] for r in runs)
    return root, runs


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _set(obj: dict, dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for k in head:
        obj = obj[k]
    if value is _DROP:
        obj.pop(last)
    else:
        obj[last] = value


_DROP = object()


def _field_cases() -> list[tuple[str, str, Any, bool]]:
    """(file, dotted key, new value, must be invalid) for every field of the three JSON files."""
    cases: list[tuple[str, str, Any, bool]] = []
    text_fields = {
        "config.json": ["task", "sweep", "device", "style.preset", "style.label", "style.spec", "model.cell"],
        "summary.json": ["engine_path"],
        "env.json": ["device_name", "torch_version", "git_commit"],
    }
    for file, keys in text_fields.items():
        for key in keys:
            for v in (123, 1.5, ["x"], {"x": 1}):
                cases.append((file, key, v, True))
    int_fields = {
        "config.json": ["seed", "model.hidden_size", "style.k1", "style.k2", "style.n", "budget.row_len"],
        "summary.json": ["updates", "timesteps", "warmup_updates", "peak_mem_bytes", "diverged_at_update"],
    }
    for file, keys in int_fields.items():
        for key in keys:
            for v in (BIG, -BIG - 1, -1, 1.5, "7", True, NAN):
                cases.append((file, key, v, True))
    float_fields = {
        "config.json": ["optimizer.lr", "clip", "references.optimal", "style.pi"],
        "summary.json": ["min_val_loss", "final_val_loss", "train_wall_s", "clip_rate", "timesteps_per_s"],
    }
    for file, keys in float_fields.items():
        for key in keys:
            for v in (NAN, INF, -INF, "0.5", [0.5], True):
                cases.append((file, key, v, True))
    required = {
        "config.json": ["task", "loss", "style", "model", "budget", "seed", "references"],
        "summary.json": ["status", "updates", "min_val_loss", "engine_path"],
        "env.json": ["device_name", "git_dirty"],
    }
    for file, keys in required.items():
        for key in keys:
            cases.append((file, key, _DROP, True))
    cases += [
        ("summary.json", "status", "weird", True),
        ("summary.json", "status", "diverged", True),  # diverged without diverged_at_update
        ("summary.json", "failure_kind", "infrastructure", True),  # a failure kind on an ok run
        ("summary.json", "failure_kind", "cosmic rays", True),
        ("summary.json", "config_hash", "000000000000", True),
        ("summary.json", "forward_steps", -5, True),
        ("summary.json", "backprop_steps", BIG, True),
        ("summary.json", "test_loss", -INF, True),
        ("summary.json", "train_wall_s", 1e308, True),  # beyond store.MAX_SECONDS: damage, not a time
        ("summary.json", "timesteps_per_s", 1e308, True),  # beyond store.MAX_RATE
        ("summary.json", "test_loss", 1e308, True),  # beyond float32: store.MAX_LOSS
        ("config.json", "loss", "hinge", True),
        ("config.json", "task_params.lags", [3, BIG], True),
        ("config.json", "task_params.lags", [3, 9], True),  # an edited config: another cell's hash
        ("config.json", "optimizer.lr", 0.2, True),
        ("config.json", "budget.extra", 1, True),
        ("env.json", "cudnn_version", 90800, False),  # torch gives an int here: valid
        ("env.json", "platform", None, False),
        ("summary.json", "test_loss", 0.5, False),  # the newer protocol's keys are optional ...
        ("summary.json", "failure_kind", None, False),
        ("summary.json", "forward_steps", 10, False),
    ]
    return cases


def _curve_cases(run: Path) -> list[tuple[str, Any]]:
    """(name, damage(run_dir)) for curve.parquet and its agreement with the summary."""
    rows = store.read_curve(run)
    train = [i for i, r in enumerate(rows) if r["split"] == "train"]
    first_val = next(i for i, r in enumerate(rows) if r["split"] == "val")

    def rewrite(fn, **types):
        def damage(d: Path) -> None:
            rs = [dict(r) for r in rows]
            fn(rs)
            _write_raw_curve(d, rs, **types)

        return damage

    def put(i: int, **values):
        return lambda rs: rs[i].update(values)

    return [
        ("train loss nan", rewrite(put(train[0], loss=NAN))),
        ("train loss -inf", rewrite(put(train[-1], loss=-INF))),
        ("val loss inf", rewrite(put(first_val, loss=INF))),
        ("train loss 1e308", rewrite(put(train[0], loss=1e308))),
        ("train row dropped", rewrite(lambda rs: rs.pop(train[-1]))),
        ("train row duplicated", rewrite(lambda rs: rs.insert(train[0], rs[train[0]]))),
        ("update count negative", rewrite(put(train[0], update=-1))),
        ("negative wall time", rewrite(put(train[0], train_wall_s=-0.1))),
        ("unknown split", rewrite(put(train[0], split="test"))),
        ("last timestep moved", rewrite(put(train[-1], timesteps=rows[train[-1]]["timesteps"] + 1))),
        ("loss stored as float32", rewrite(lambda rs: None, loss="float32")),
        ("a null loss", rewrite(put(first_val, loss=None))),
        ("a column missing", lambda d: _write_raw_curve(d, rows, drop="backprop_steps_and_loss")),
        (
            "min val off",
            lambda d: _edit(d / "summary.json", lambda s: s.update(min_val_loss=s["min_val_loss"] / 2)),
        ),
        (
            "updates off by one",
            lambda d: _edit(d / "summary.json", lambda s: s.update(updates=s["updates"] + 1)),
        ),
    ]


def _write_raw_curve(d: Path, rows: list[dict], loss: str = "float64", drop: str = "") -> None:
    """curve.parquet exactly as given, past the writer's checks (which would refuse the damage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"split": pa.array([r["split"] for r in rows], pa.string())}
    for c in ("update", "timesteps", "backprop_steps"):
        cols[c] = pa.array([r[c] for r in rows], pa.int64())
    cols["train_wall_us"] = pa.array([round(r["train_wall_s"] * 1e6) for r in rows], pa.int64())
    cols["loss"] = pa.array([r["loss"] for r in rows], getattr(pa, loss)())
    if drop:
        cols.pop("backprop_steps"), cols.pop("loss")
    pq.write_table(pa.table(cols), d / "curve.parquet")


def _edit(path: Path, fn) -> None:
    obj = _json(path)
    fn(obj)
    path.write_text(json.dumps(obj, allow_nan=True))  # NaN and Infinity as Python writes them


def _build_corpus(root: Path, run: Path) -> dict[str, tuple[Path, bool | None]]:
    """Corrupted copies of ``run`` under ``root/case-NNN/smoke/``: {case: (folder, must be invalid)}."""
    cases: dict[str, tuple[Path, bool | None]] = {}
    all_cases = [
        (
            f"{file}:{key}={value!r}",
            lambda d, f=file, k=key, v=value: _edit(d / f, lambda o: _set(o, k, v)),
            bad,
        )
        for file, key, value, bad in _field_cases()
    ] + [(name, damage, True) for name, damage in _curve_cases(run)]
    for i, (name, damage, bad) in enumerate(all_cases):
        folder = root / f"case-{i:03d}" / "smoke" / run.name
        shutil.copytree(run, folder)
        damage(folder)
        cases[name] = (folder, bad)
    return cases


def test_sweep_report_compare_and_loader_agree_on_every_corrupted_record(base, tmp_path, caplog):
    src_root, runs = base
    root = tmp_path / "results"
    cases = _build_corpus(root, runs[0].run_dir)
    assert len(cases) == 224
    folders = {folder: name for name, (folder, _) in cases.items()}
    # 1. the one definition
    invalid = {f for f in folders if store.validate_record(f)}
    for name, (folder, bad) in cases.items():
        assert (folder in invalid) == bad, (name, store.validate_record(folder))
    # 2. the loader (never raises; skips exactly the invalid ones, with their reason)
    loaded = store.load_runs(root)
    assert {p for p, _ in loaded.skipped} == invalid
    assert set(Path(p) for p in loaded.runs["run_dir"]) == set(folders) - invalid
    assert all(math.isfinite(x) for x in loaded.runs["min_val_loss"].dropna())
    # 3. the report: one warning line per invalid folder, never raises, lists them in the index
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build.build_report(root, tmp_path / "report", figures=False)
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped run folder ")]
    assert len(warned) == len(invalid)
    assert all("\n" not in m and len(m) < 1000 for m in warned)
    index = (tmp_path / "report" / "tables" / "index.md").read_text()
    assert f"({len(invalid)} run folders skipped)" in index
    # 4. compare: never raises, warns once per invalid folder
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        compare([root, src_root], tmp_path / "compare")
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped run folder ")]
    assert len(warned) == len(invalid)
    # 5. the sweep plans a rerun of exactly the invalid ones, saying why
    planned: dict[Path, sweep.PlannedRun] = {}
    for case_dir in sorted(root.glob("case-*")):
        for r in sweep.plan(
            [ECHO], "smoke", case_dir.name, root, styles_override=["tf_style(5)", "random(0.5)"]
        ):
            if r.run_dir.exists():
                planned[r.run_dir] = r
    assert set(planned) == set(folders)
    assert {d for d, r in planned.items() if r.state == "incomplete"} == invalid
    assert all(planned[d].reason for d in invalid)


def test_a_rerun_restores_invalid_records_to_the_uncorrupted_ones(base, tmp_path):
    src_root, runs = base
    root = tmp_path / "results"
    tag = sweep.local_device_tag("cpu")
    for r in runs:  # the records, in place, then damaged three different ways
        shutil.copytree(r.run_dir, root / tag / "smoke" / r.run_dir.name)
    a, b = (root / tag / "smoke" / r.run_dir.name for r in runs)
    _edit(a / "summary.json", lambda s: s.update(min_val_loss=-INF))
    _edit(b / "config.json", lambda c: c["model"].update(cell=7))
    plan = sweep.plan([ECHO], "smoke", tag, root, styles_override=["tf_style(5)", "random(0.5)"])
    assert [p.state for p in plan] == ["incomplete", "incomplete"]
    counts = sweep.execute(plan, root, "cpu", quiet=True)
    assert counts == {"ok": 2, "skipped": 0}
    for r in runs:
        fresh = root / tag / "smoke" / r.run_dir.name
        assert store.validate_record(fresh) == []
        assert _curve(fresh) == _curve(r.run_dir)  # the same numbers as before the damage


def _curve(run: Path) -> list[tuple]:
    return [(r["split"], r["update"], r["timesteps"], r["loss"]) for r in store.read_curve(run)]


def test_records_of_the_earlier_protocol_stay_valid(base, tmp_path):
    _, runs = base
    old = tmp_path / "cpu-x" / "smoke" / runs[0].run_dir.name
    shutil.copytree(runs[0].run_dir, old)
    _edit(old / "summary.json", lambda s: [s.pop(k, None) for k in store.SUMMARY_OPTIONAL_KEYS])
    assert store.validate_record(old) == []
    row = store.load_runs(tmp_path).runs.iloc[0]
    assert row["failure_kind"] is None and row["config_hash"] is None  # shown as n/a


def test_problem_lines_never_echo_a_huge_value(base, tmp_path):
    _, runs = base
    run = tmp_path / "cpu-x" / "smoke" / runs[0].run_dir.name
    shutil.copytree(runs[0].run_dir, run)
    _edit(run / "summary.json", lambda s: s.update(engine_path=["x" * 100_000]))
    (problem,) = store.validate_record(run)
    assert "engine_path" in problem and len(problem) < 300


def test_validate_record_never_raises_on_random_bytes(base, tmp_path):
    """Each file replaced by bytes that are not JSON/parquet, or by JSON of another shape."""
    _, runs = base
    payloads = [b"", b"\x00\xff" * 10, b"[]", b"null", b"123", b'"text"', b"{" * 5000, b"[" * 100_000, b"NaN"]
    payloads += [b"PAR1", b"PAR1" + b"\x00" * 64 + b"PAR1"]  # parquet's magic around nothing
    for i, payload in enumerate(payloads):
        for file in ("config.json", "env.json", "summary.json", "curve.parquet"):
            run = tmp_path / f"c{i}" / "smoke" / runs[0].run_dir.name
            shutil.rmtree(run, ignore_errors=True)
            shutil.copytree(runs[0].run_dir, run)
            (run / file).write_bytes(payload)
            problems = store.validate_record(run)
            assert problems and all(isinstance(p, str) and len(p) < 1000 for p in problems), (file, payload)
    loaded = store.load_runs(tmp_path)
    assert loaded.runs.empty and len(loaded.skipped) == len(payloads)


def test_valid_records_with_extreme_values_never_break_report_or_compare(base, tmp_path):
    """Valid but extreme: every number at an end of its bound (int64 max, 1e308, 0)."""
    _, runs = base
    extremes = [
        {"peak_mem_bytes": 2**63 - 1, "saved_for_backward_peak_bytes": 2**63 - 1},
        {"timesteps_per_s": 1e15, "updates_per_s": 1e15, "train_wall_s": 1e9, "eval_wall_s": 1e9},
        {"timesteps_per_s": 0.0, "updates_per_s": 0.0, "train_wall_s": 0.0, "eval_wall_s": 0.0},
        {"clip_rate": 1.0, "warmup_updates": 2**63 - 1, "final_val_loss": -3.4e38, "test_loss": 3.4e38},
        {"error": "x" * 10_000, "engine_path": "", "peak_mem_source": "\n\t|*"},
    ]
    for i, fields in enumerate(extremes):
        for r in runs:
            run = tmp_path / "results" / f"cpu-{i}" / "smoke" / r.run_dir.name
            shutil.copytree(r.run_dir, run)
            _edit(run / "summary.json", lambda s, f=fields: s.update(f))
            assert store.validate_record(run) == [], fields
    for sign in (1, -1):  # every loss at the float32 limit, curve and summary agreeing
        for r in runs:
            run = tmp_path / "results" / f"loss{sign}" / "smoke" / r.run_dir.name
            shutil.copytree(r.run_dir, run)
            big = sign * store.MAX_LOSS
            store.write_curve(run, [{**row, "loss": big} for row in store.read_curve(run)])
            _edit(run / "summary.json", lambda s, b=big: s.update(min_val_loss=b, final_val_loss=b))
            assert store.validate_record(run) == []
    root = tmp_path / "results"
    assert len(store.load_runs(root).runs) == (len(extremes) + 2) * len(runs)
    build.build_report(root, tmp_path / "report", figures=True)
    compare([root / "cpu-0", root / "cpu-1", root / "cpu-2"], tmp_path / "compare")
