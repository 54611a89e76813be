"""Numerical faults: an exploding run is recorded as diverged at the right update, and shown so.

The configuration: a linear Elman RNN (``cell = "linear"``) on the adding
task with its recurrent matrix rescaled to spectral radius 1.5, plain SGD and no clipping; its
gradients grow like 1.5^depth and the loss overflows within a few updates. The harness is
watched from outside (``engine.train_stream``'s callback and ``engine.evaluate_stream`` are
wrapped), so "the right update" is the first one whose training loss, or the validation loss
right after it, is not finite — counted by the spy, not by the harness. With clipping
(global norm 1) the same run trains and stays finite.
"""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch

from tbptt_bench import models
from tbptt_bench.engine import train as engine
from tbptt_bench.report import build as report
from tbptt_bench.runs import harness, store
from tbptt_bench.runs.spec import Budget, RunConfig


def config(clip: float | None, lr: float, row_len: int, style: str, val_len: int = 60) -> RunConfig:
    return RunConfig(
        task="adding",
        task_params={},
        cell="linear",
        hidden_size=8,
        optimizer="sgd",
        lr=lr,
        clip=clip,
        style=style,
        seed=0,
        sweep="smoke",
        budget=Budget(
            epochs=3,
            batch=4,
            row_len=row_len,
            val_batch=4,
            val_len=val_len,
            eval_points=10,
            warmup_updates=0,
        ),
    )


@pytest.fixture
def exploding(monkeypatch):
    """W_hh of every model built rescaled to spectral radius 1.5; every loss the harness sees logged."""
    events: list[tuple[str, float]] = []
    make_model, train_stream, evaluate_stream = models.make_model, engine.train_stream, engine.evaluate_stream

    def make(*a, **k):
        model = make_model(*a, **k)
        with torch.no_grad():
            model.W_hh.mul_(1.5 / torch.linalg.eigvals(model.W_hh.double()).abs().max().item())
        return model

    def train(*a, callback=None, **k):
        if callback is None:  # the harness's untimed memory probe: not part of training
            return train_stream(*a, **k)

        def spy(rec):
            events.append(("train", rec.loss))
            callback(rec)

        return train_stream(*a, callback=spy, **k)

    def evaluate(*a, **k):
        out = evaluate_stream(*a, **k)
        events.append(("val", out[0]))
        return out

    monkeypatch.setattr(models, "make_model", make)
    monkeypatch.setattr(engine, "train_stream", train)
    monkeypatch.setattr(engine, "evaluate_stream", evaluate)
    return events


def first_bad_update(events: list[tuple[str, float]]) -> tuple[int, int]:
    """(updates done when the first non-finite loss appeared, index of that event)."""
    updates = 0
    for i, (kind, loss) in enumerate(events):
        updates += kind == "train"
        if not math.isfinite(loss):
            return updates, i
    raise AssertionError(f"nothing diverged: {events}")


@pytest.mark.parametrize(
    "case",
    [
        dict(lr=0.1, row_len=60, style="tf_style(10)", min_updates=2),  # the training loss overflows
        # 200 validation steps grow the state 1.5^200-fold: the first evaluation (timestep 0, before
        # any update) overflows while training on rows of 20 steps would stay finite
        dict(lr=1e-6, row_len=20, style="tf_style(5)", val_len=200),
    ],
    ids=["train-loss", "val-loss"],
)
def test_an_exploding_run_is_diverged_at_the_first_non_finite_loss(exploding, case):
    min_updates = case.pop("min_updates", 0)
    rec = harness.run_record(config(None, **case), "cpu")
    expected, i = first_bad_update(exploding)
    assert i == len(exploding) - 1  # the run stopped right there: no update after the bad loss
    s = rec.summary
    assert s["status"] == "diverged" and s["error"] is None
    assert s["diverged_at_update"] == s["updates"] == expected >= min_updates
    train = [r for r in rec.curve if r["split"] == "train"]
    assert [r["update"] for r in train] == list(range(1, expected + 1))
    assert not math.isfinite(rec.curve[-1]["loss"]) and rec.curve[-1]["split"] == exploding[-1][0]
    assert all(math.isfinite(r["loss"]) for r in rec.curve[:-1])
    vals = [loss for kind, loss in exploding if kind == "val" and math.isfinite(loss)]
    assert s["min_val_loss"] == (min(vals) if vals else None) and s["final_val_loss"] is None


def test_divergence_is_shown_in_the_report_and_clipping_trains(exploding, tmp_path):
    case = dict(lr=0.1, row_len=60, style="tf_style(10)")
    for clip in (None, 1.0):
        harness.execute_run(config(clip, **case), tmp_path, "cpu")
    loaded = store.load_runs(tmp_path)
    assert loaded.skipped == [] and len(loaded.runs) == 2
    by_clip = {None if math.isnan(r["clip"]) else r["clip"]: r for _, r in loaded.runs.iterrows()}
    wild, tame = by_clip[None], by_clip[1.0]
    # the validation at timestep 20 (right after update 2) is the first non-finite loss
    assert wild["status"] == "diverged" and wild["diverged_at_update"] == wild["updates"] == 2
    assert tame["status"] == "ok" and tame["updates"] == 18 and tame["clip_rate"] > 0.5
    tame_curve = loaded.curves[loaded.curves["run_id"] == tame["run_id"]]
    assert tame_curve["loss"].map(math.isfinite).all()
    val = tame_curve[tame_curve["split"] == "val"]["loss"].tolist()
    assert val[-1] < val[0] / 5  # it learns
    assert tame["final_val_loss"] == pytest.approx(sum(val[-3:]) / 3, rel=1e-12)  # the last 3 evaluations

    report.build_report(tmp_path, figures=False)
    table = next(tmp_path.glob("tables/*/smoke/adding/r2rt.csv"))
    rows = {r["clip"]: r for r in csv.DictReader(io.StringIO(table.read_text()))}
    assert (rows[""]["ok"], rows[""]["diverged"]) == ("0", "1")
    assert rows[""]["text"].startswith("diverged at upd. 2, best ")  # where it diverged, best loss before
    assert (
        rows["1"]["ok"] == "1"
        and rows["1"]["diverged"] == "0"
        and float(rows["1"]["min_val_loss_mean"]) == pytest.approx(tame["min_val_loss"], abs=5e-6)
        and rows["1"]["text"].startswith(f"{tame['final_val_loss']:.3f}")  # the cell is the final loss
    )
    md = table.with_name("r2rt.md").read_text()
    section = md.split("\n## linear, hidden 8 (sgd)\n")[1].split("\n## ")[0]
    assert "| TF-style (10, 10) | diverged at upd. 2, best " in section
