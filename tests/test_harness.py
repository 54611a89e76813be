"""One run: records in the results schema, timing bookkeeping, divergence, failure, determinism."""

from __future__ import annotations

import json

import pytest

from tbptt_bench.runs import envinfo, harness, store
from tbptt_bench.runs.spec import Budget, RunConfig
from tbptt_bench.styles import parse_style

BUDGET = Budget(epochs=2, batch=4, row_len=30, val_batch=4, val_len=40, eval_points=10, warmup_updates=2)


def cfg(**kw) -> RunConfig:
    base = dict(
        task="echo",
        task_params={},
        cell="tanh",
        hidden_size=4,
        optimizer="adagrad",
        lr=0.1,
        clip=None,
        style="tf_style(5)",
        budget=BUDGET,
        seed=0,
        sweep="smoke",
    )
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def echo_record():
    return harness.run_record(cfg(clip=0.05), "cpu")


def test_record_follows_the_schema(echo_record):
    rec = echo_record
    assert set(rec.summary) == set(store.SUMMARY_KEYS) | set(store.SUMMARY_OPTIONAL_KEYS)
    # the store's required keys, plus the machine description env.json gained (optional on load)
    assert set(rec.env) == set(store.ENV_KEYS) | {
        "machine",
        "cpu_cores",
        "ram_bytes",
        "gpu_name",
        "gpu_driver",
        "blas",
        "mkl_available",
        "torch_config",
    }
    assert set(store.CONFIG_KEYS) <= set(rec.config)
    assert rec.config["loss"] == "ce" and rec.config["device"] == "cpu"
    assert rec.config["style"] == parse_style("tf_style(5)").to_dict()
    assert rec.config["model"] == {"cell": "tanh", "hidden_size": 4}
    assert rec.config["optimizer"] == {"name": "adagrad", "lr": 0.1} and rec.config["clip"] == 0.05
    assert rec.config["budget"] == BUDGET.to_dict()
    assert rec.config["protocol"]["mode"] == "data" and rec.config["protocol"]["state_reset"] == "per stream"
    assert rec.config["config_hash"] == rec.summary["config_hash"] == cfg(clip=0.05).config_hash
    assert rec.config["references"]["optimal"] == pytest.approx(0.4544544, abs=1e-6)
    assert rec.config["references"]["no_memory"] == pytest.approx(0.6615632, abs=1e-6)
    assert set(rec.config["reference_notes"]) == set(rec.config["references"])
    json.dumps(rec.config), json.dumps(rec.summary), json.dumps(rec.env)


def test_curve_counts_updates_timesteps_and_evaluations(echo_record):
    s, curve = echo_record.summary, echo_record.curve
    per_epoch = len(parse_style("tf_style(5)").update_times(30))
    assert s["status"] == "ok" and s["updates"] == 2 * per_epoch == 12
    assert s["timesteps"] == 60
    train = [r for r in curve if r["split"] == "train"]
    val = [r for r in curve if r["split"] == "val"]
    assert [r["update"] for r in train] == list(range(1, 13))
    assert [r["timesteps"] for r in train] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]
    # round(linspace(0, 60, 10)); each point sees the parameters after the last update at or before it
    assert [r["timesteps"] for r in val] == [0, 7, 13, 20, 27, 33, 40, 47, 53, 60]
    assert [r["update"] for r in val] == [0, 1, 2, 4, 5, 6, 8, 9, 10, 12]
    walls = [r["train_wall_s"] for r in train]
    assert walls == sorted(walls) and walls[-1] <= s["train_wall_s"]
    assert s["min_val_loss"] == min(r["loss"] for r in val)
    assert s["final_val_loss"] == pytest.approx(sum(r["loss"] for r in val[-3:]) / 3, rel=1e-12)
    assert s["test_loss"] is not None and s["test_loss"] != val[-1]["loss"]  # its own stream
    assert s["eval_wall_s"] > 0 and s["engine_path"] not in ("", "none")


def test_rates_skip_the_warmup_updates(echo_record):
    s, train = echo_record.summary, [r for r in echo_record.curve if r["split"] == "train"]
    warm = train[1]  # the second update ends the warm-up
    assert s["warmup_updates"] == 2
    assert s["updates_per_s"] == pytest.approx(
        (12 - 2) / (s["train_wall_s"] - warm["train_wall_s"]), rel=1e-12
    )
    assert s["timesteps_per_s"] == pytest.approx(
        (60 - 10) / (s["train_wall_s"] - warm["train_wall_s"]), rel=1e-12
    )


def test_memory_and_clipping_are_recorded(echo_record):
    s = echo_record.summary
    assert s["peak_mem_source"] == "ru_maxrss" and s["peak_mem_bytes"] > 10 * 2**20
    assert isinstance(s["saved_for_backward_peak_bytes"], int) and s["saved_for_backward_peak_bytes"] > 0
    assert 0.0 < s["clip_rate"] <= 1.0  # clip 0.05 is tight
    assert s["diverged_at_update"] is None and s["error"] is None


def test_same_config_and_seed_give_identical_curves(echo_record):
    again = harness.run_record(cfg(clip=0.05), "cpu")
    assert [r["loss"] for r in again.curve] == [r["loss"] for r in echo_record.curve]
    other_seed = harness.run_record(cfg(clip=0.05, seed=1), "cpu")
    assert [r["loss"] for r in other_seed.curve] != [r["loss"] for r in echo_record.curve]


def test_random_truncation_is_deterministic_per_seed():
    a = harness.run_record(cfg(style="random(0.3)"), "cpu")
    b = harness.run_record(cfg(style="random(0.3)"), "cpu")
    assert a.summary["status"] == "ok" and a.summary["updates"] == 2
    assert [r["loss"] for r in a.curve] == [r["loss"] for r in b.curve]


def test_divergence_stops_the_run():
    rec = harness.run_record(
        cfg(
            task="influence",
            task_params={},
            cell="influence",
            hidden_size=23,
            optimizer="sgd",
            lr=1e6,
            style="full()",
            budget=Budget(
                epochs=3, batch=1, row_len=40, val_batch=1, val_len=40, eval_points=10, warmup_updates=0
            ),
        ),
        "cpu",
    )
    s = rec.summary
    assert s["status"] == "diverged" and s["error"] is None
    assert s["diverged_at_update"] == s["updates"] >= 1
    assert s["final_val_loss"] is None and s["test_loss"] is None
    vals = [r["loss"] for r in rec.curve if r["split"] == "val" and r["loss"] == r["loss"]]
    assert vals and s["best_val_before_divergence"] == min(vals)  # timestep 0 is always evaluated


def test_an_exception_marks_the_run_failed(monkeypatch):
    import tbptt_bench.engine.train as engine

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore text")

    monkeypatch.setattr(engine, "train_stream", boom)
    rec = harness.run_record(cfg(), "cpu")
    assert rec.summary["status"] == "failed"
    assert rec.summary["error"] == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert rec.summary["updates"] == 0 and rec.summary["failure_kind"] == "infrastructure"
    assert rec.summary["final_val_loss"] is None and rec.summary["test_loss"] is None
    assert rec.summary["min_val_loss"] is None


def test_execute_run_writes_a_complete_loadable_run(tmp_path):
    summary = harness.execute_run(cfg(), tmp_path, "cpu")
    tag = envinfo.device_tag(envinfo.collect("cpu"))
    run_dir = tmp_path / tag / "smoke" / cfg().run_id
    assert store.is_complete(run_dir)
    loaded = store.load_runs(tmp_path)
    assert loaded.skipped == [] and len(loaded.runs) == 1
    row = loaded.runs.iloc[0]
    assert (
        row["run_id"] == cfg().run_id
        and row["status"] == "ok"
        and row["min_val_loss"] == summary["min_val_loss"]
    )
    assert (loaded.curves["split"] == "train").sum() == summary["updates"]


def test_write_record_replaces_an_old_run_whole(tmp_path):
    run_dir = tmp_path / "cpu-x" / "smoke" / "r"
    first = harness.RunRecord(config=_config(), env=_env(), curve=[_row(1.0)], summary=_summary("ok"))
    harness.write_record(run_dir, first)
    (run_dir / "stray.txt").write_text("from the old run")
    second = harness.RunRecord(
        config=_config(), env=_env(), curve=[_row(2.0), _row(3.0)], summary=_summary("failed")
    )
    harness.write_record(run_dir, second)
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "config.json",
        "curve.parquet",
        "env.json",
        "summary.json",
    ]
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["r"]  # no temp folders left


def _config():
    return harness.base_config(cfg(), "cpu")


def _env():
    return {k: None for k in store.ENV_KEYS}


def _row(loss):
    return {
        "split": "train",
        "update": 1,
        "timesteps": 5,
        "backprop_steps": 20,
        "train_wall_s": 0.1,
        "loss": loss,
    }


def _summary(status):
    return {**{k: None for k in store.SUMMARY_KEYS}, "status": status}


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(task="nope"), "task='nope' is not allowed"),
        (dict(cell="transformer"), "cell 'transformer' is not allowed: known cells are"),
        (
            dict(task="influence", cell="tanh", hidden_size=23),
            "cell 'tanh' is not allowed for task 'influence': it needs cell 'influence'",
        ),
        (
            dict(task="influence", cell="influence", hidden_size=8),
            "hidden size 8 is not allowed for task 'influence'",
        ),
        (dict(task_params={"lags": (3,), "wobble": 1}), "wobble"),
    ],
)
def test_check_config_rejects_bad_runs(kw, message):
    with pytest.raises(harness.HarnessError, match=message.replace("(", r"\(").replace(")", r"\)")):
        harness.check_config(cfg(**kw))


def test_env_describes_the_machine():
    env = envinfo.collect("cpu")
    assert env["device_kind"] == "cpu" and env["cuda_version"] is None and env["cpu_threads"] >= 1
    assert env["device_name"] == env["cpu_model"] and envinfo.device_tag(env).startswith("cpu-")
    assert envinfo.slug("Intel(R) Xeon(R) CPU @ 2.20GHz") == "intel-xeon-cpu-2-20ghz"
    with pytest.raises(envinfo.DeviceError, match="device 'tpu' is not allowed"):
        envinfo.resolve_device("tpu")
