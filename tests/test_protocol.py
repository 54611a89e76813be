"""The run protocol (docs/semantics.md, "Fair comparison"): counts, the evaluation schedule,
final and test loss, and the three budget modes, checked by hand on tiny streams."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tbptt_bench.engine import train as engine
from tbptt_bench.runs import harness, store
from tbptt_bench.runs.spec import SWEEP_PRESETS, Budget, RunConfig, SpecError, load_spec, resolve
from tbptt_bench.styles import parse_style

REPO = Path(__file__).resolve().parents[1]
STYLES = ["tf_style(5)", "williams_peng(3)", "one_step(4)", "overlapping(2, 5)", "full()", "random(0.3)"]
TINY = dict(batch=2, row_len=20, val_batch=2, val_len=20, eval_points=10, warmup_updates=1)


def cfg(style: str, budget: Budget, **kw) -> RunConfig:
    base = dict(task="echo", task_params={}, cell="tanh", hidden_size=4, optimizer="adagrad", lr=0.1)
    base.update(clip=None, style=style, budget=budget, seed=0, sweep="smoke")
    return RunConfig(**{**base, **kw})


def tiny(preset: str) -> Budget:
    """echo's budget for ``preset`` (its mode and mode keys) shrunk to a tiny stream."""
    b = resolve(load_spec(REPO / "tasks" / "echo.toml"), preset)[0].budget
    return replace(
        b, **TINY, epochs=min(b.epochs, 2), updates=b.updates and 12, episode_len=b.episode_len and 10
    )


def by_hand(style: str, b: Budget) -> dict[str, int]:
    """Updates, timesteps, forward and backprop steps from the definitions alone.

    Segments: data = epochs rows of row_len; updates = one row of U*k1 (fixed k1) or U rows of
    row_len (k1 = the whole row); episodic = epochs*row_len/episode_len rows of episode_len.
    In a segment of L steps, updates fall at multiples of k1 and at L; the update at t computes
    t - t' new steps and backpropagates min(k2, t) steps (the window (max(t - k2, 0), t]).
    """
    s = parse_style(style)
    if b.mode == "data":
        lengths = [b.row_len] * b.epochs
    elif b.mode == "episodic":
        lengths = [b.episode_len] * (b.epochs * b.row_len // b.episode_len)
    else:
        lengths = [b.updates * s.k1] if s.k1 is not None else [b.row_len] * b.updates
    out = dict(updates=0, timesteps=sum(lengths), forward_steps=0, backprop_steps=0)
    for L in lengths:
        k1, k2 = s.k1 or L, s.k2 or L
        times = sorted(set(range(k1, L + 1, k1)) | {L})
        out["updates"] += len(times)
        out["forward_steps"] += L * b.batch
        out["backprop_steps"] += sum(min(k2, t) for t in times) * b.batch
    return out


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_counts_in_the_summary_match_the_definitions_and_the_curve(preset):
    b = tiny(preset)
    for style in STYLES:
        rec = harness.run_record(cfg(style, b), "cpu")
        s, train = rec.summary, [r for r in rec.curve if r["split"] == "train"]
        assert s["status"] == "ok", (style, s["error"])
        hand = by_hand(style, b)
        assert {k: s[k] for k in hand} == hand, (preset, style)
        assert len(train) == s["updates"] and train[-1]["timesteps"] == s["timesteps"]
        assert train[-1]["backprop_steps"] == s["backprop_steps"]  # the curve's column is cumulative
        steps = [r["backprop_steps"] for r in rec.curve]
        assert steps == sorted(steps) and steps[0] == 0  # nothing backpropagated before timestep 0
        assert rec.config["protocol"]["planned_updates"] == s["updates"]


def test_updates_mode_gives_every_style_the_same_update_count():
    b = tiny("full-updates")
    recs = {st: harness.run_record(cfg(st, b), "cpu") for st in ("tf_style(5)", "williams_peng(3)", "full()")}
    assert {r.summary["updates"] for r in recs.values()} == {12}
    assert recs["tf_style(5)"].summary["timesteps"] == 60  # one row of U * k1 steps
    assert recs["tf_style(5)"].config["protocol"]["state_reset"] == "per stream"
    assert recs["williams_peng(3)"].summary["timesteps"] == 12
    full = recs["full()"]
    assert full.summary["timesteps"] == 12 * 20  # U fresh rows of row_len, one update each
    assert full.config["protocol"]["state_reset"] == "per row" and full.config["protocol"]["segments"] == 12
    # the schedule is on the update axis, identical for every style
    for r in recs.values():
        assert [v["update"] for v in r.curve if v["split"] == "val"] == list(harness.eval_schedule(12, 10))


def test_episodic_mode_resets_per_episode_and_full_bptt_updates_once_per_episode():
    b = tiny("full-episodic")
    assert (b.mode, b.episode_len, b.epochs * b.row_len) == ("episodic", 10, 40)
    full = harness.run_record(cfg("full()", b), "cpu")
    tf = harness.run_record(cfg("tf_style(5)", b), "cpu")
    assert full.summary["updates"] == 4 and tf.summary["updates"] == 8
    assert full.summary["backprop_steps"] == 4 * 10 * b.batch
    assert full.config["protocol"]["state_reset"] == "per episode"
    assert [r["timesteps"] for r in full.curve if r["split"] == "train"] == [10, 20, 30, 40]


def _spy(monkeypatch):
    """Snapshots of the parameters after every update, in run order (index 0: before training)."""
    snaps: list[list[torch.Tensor]] = []
    model_box: list = []
    real = engine.train_stream

    def train_stream(model, *a, callback=None, **k):
        if callback is None:  # the untimed memory probe, on a copy of the model
            return real(model, *a, **k)
        if not snaps:
            model_box.append(model)
            snaps.append([p.detach().clone() for p in model.parameters()])

        def cb(rec):
            snaps.append([p.detach().clone() for p in model.parameters()])
            callback(rec)

        return real(model, *a, callback=cb, **k)

    monkeypatch.setattr(engine, "train_stream", train_stream)
    return snaps, model_box


def _loss_with(model, params, stream, loss: str) -> float:
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for p, v in zip(probe.parameters(), params):
            p.copy_(v)
    return engine.evaluate_stream(probe, stream.x, stream.y, loss)[0]


@pytest.mark.parametrize("style", STYLES)
def test_each_point_is_evaluated_with_the_parameters_after_the_last_update_before_it(style, monkeypatch):
    snaps, box = _spy(monkeypatch)
    b = Budget(epochs=2, **TINY)
    rec = harness.run_record(cfg(style, b), "cpu")
    from tbptt_bench.tasks import make_task

    task = make_task("echo")
    val = task.make_validation(0, b.val_batch, b.val_len)
    update_times = [r["timesteps"] for r in rec.curve if r["split"] == "train"]
    points = [r for r in rec.curve if r["split"] == "val"]
    for r in points:
        done = sum(t <= r["timesteps"] for t in update_times)  # updates at or before the point
        assert r["update"] == done
        assert r["loss"] == _loss_with(box[0], snaps[done], val, "ce")
    # final: the mean of the last 3 scheduled evaluations; test: its own stream, the last parameters
    assert rec.summary["final_val_loss"] == pytest.approx(sum(r["loss"] for r in points[-3:]) / 3, rel=1e-12)
    test = task.make_validation(harness.TEST_SEED_OFFSET, b.val_batch, b.val_len)
    assert rec.summary["test_loss"] == _loss_with(box[0], snaps[-1], test, "ce")


def test_the_schedule_is_the_same_for_every_style_starts_at_0_and_has_at_least_10_points():
    b = Budget(epochs=2, **TINY)
    schedules = {
        st: [r["timesteps"] for r in harness.run_record(cfg(st, b), "cpu").curve if r["split"] == "val"]
        for st in STYLES
    }
    expected = [round(40 * i / 9) for i in range(10)]
    assert all(s == expected for s in schedules.values()), schedules
    for spec in (REPO / "tasks").glob("*.toml"):
        for preset in SWEEP_PRESETS:
            for run in resolve(load_spec(spec), preset)[:1]:
                plan = harness.plan_run(run.budget, parse_style(run.style))
                assert plan.schedule[0] == 0 and len(plan.schedule) >= 10, (spec.name, preset)


@pytest.mark.parametrize(
    "style, segments, length",
    [("tf_style(5)", 1, 250), ("williams_peng(5)", 1, 50), ("artbp(5)", 1, 250), ("full()", 50, 20)],
)
def test_equal_updates_plans_u_updates_for_every_style_with_a_window(style, segments, length):
    """Equal updates: U = 50 updates of k1 steps on one stream; ARTBP on a stream of U * n steps
    (its segments' mean length is n: 50 updates in expectation, not one per n steps of 50 rows);
    full BPTT on U fresh rows."""
    b = Budget(epochs=1, mode="updates", updates=50, **TINY)
    plan = harness.plan_run(b, parse_style(style))
    assert len(plan.segments) == segments and {s.length for s in plan.segments} == {length}
    assert len(plan.update_positions) == 50 and plan.describe()["planned_updates"] == 50
    rec = harness.run_record(cfg(style, b), "cpu")
    made = rec.summary["updates"]
    assert made == 50 if style != "artbp(5)" else 25 <= made <= 100, made


@pytest.mark.parametrize("style", ["artbp(4)", "adaptive(0.1)", "random_depth(4)"])
def test_styles_with_random_update_times_run_on_the_same_schedule(style):
    """ARTBP and adaptive TBPTT choose their update times while training: the run still trains
    (no plan check), and every schedule point is evaluated once, at the same timesteps as any style."""
    b = Budget(epochs=2, **TINY)
    rec = harness.run_record(cfg(style, b), "cpu")
    assert rec.summary["status"] == "ok", rec.summary["error"]
    val = [r["timesteps"] for r in rec.curve if r["split"] == "val"]
    assert val == [round(40 * i / 9) for i in range(10)]
    train = [r for r in rec.curve if r["split"] == "train"]
    assert rec.summary["updates"] == len(train) > 0 and train[-1]["timesteps"] == 40
    assert rec.summary["backprop_steps"] == train[-1]["backprop_steps"] > 0


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(mode="updates"), "budget.updates=None is not allowed"),
        (dict(mode="episodic", episode_len=7), "budget.episode_len=7 is not allowed with budget.row_len=20"),
        (dict(mode="sideways"), "budget.mode='sideways' is not allowed"),
        (dict(eval_points=5), "budget.eval_points=5 is not allowed"),
        (dict(mode="updates", updates=3), "budget.eval_points=10 is not allowed with updates=3"),
    ],
)
def test_bad_budgets_are_one_line_errors(kw, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        Budget(**{**dict(epochs=2, **TINY), **kw})


def test_old_records_without_the_protocol_fields_still_load():
    loaded = store.load_runs(REPO / "tests" / "fixtures" / "results")  # written before the protocol
    assert len(loaded.runs) > 0
    for key in store.SUMMARY_OPTIONAL_KEYS:
        if key == "failure_kind":  # classified from an old failed record's error text (docs/reliability.md)
            failed = loaded.runs["status"] == "failed"
            assert loaded.runs.loc[~failed, key].isna().all() and loaded.runs.loc[failed, key].notna().all()
            continue
        assert key in loaded.runs.columns and loaded.runs[key].isna().all()
    assert loaded.curves["backprop_steps"].isna().all()


def test_a_diverged_run_keeps_its_best_validation_before_divergence():
    b = Budget(epochs=3, batch=1, row_len=40, val_batch=1, val_len=40, eval_points=10, warmup_updates=0)
    rec = harness.run_record(
        cfg("full()", b, task="influence", cell="influence", hidden_size=23, optimizer="sgd", lr=1e6), "cpu"
    )
    s = rec.summary
    vals = [r["loss"] for r in rec.curve if r["split"] == "val" and math.isfinite(r["loss"])]
    assert s["status"] == "diverged" and s["best_val_before_divergence"] == min(vals)
    assert s["final_val_loss"] is None and s["test_loss"] is None and s["failure_kind"] is None
