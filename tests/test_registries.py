"""The registries drive the tests: every task, cell and error class is checked without naming it here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import tbptt_bench
from tbptt_bench.errors import BenchError, check_float, check_int
from tbptt_bench.models import MODELS
from tbptt_bench.runs import harness
from tbptt_bench.runs.spec import Budget, RunConfig
from tbptt_bench.tasks import TASKS

BUDGET = Budget(epochs=1, batch=2, row_len=12, val_batch=2, val_len=12, eval_points=10, warmup_updates=0)


def _config(task: str, cell: str) -> RunConfig:
    cls = TASKS[task]
    hidden = getattr(cls(**cls.smoke_params), "fixed_hidden_size", None) or 4
    return RunConfig(
        task=task,
        task_params=cls.smoke_params,
        cell=cell,
        hidden_size=hidden,
        optimizer="adam",
        lr=1e-3,
        clip=None,
        style="tf_style(4)",
        budget=BUDGET,
        seed=0,
        sweep="smoke",
    )


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_runs_through_the_harness_at_its_smoke_size(task):
    rec = harness.run_record(_config(task, TASKS[task].required_cell or "tanh"), "cpu")
    assert rec.summary["status"] == "ok", rec.summary["error"]
    assert rec.summary["updates"] == 3 and rec.summary["test_loss"] is not None


@pytest.mark.parametrize("cell", sorted(MODELS))
def test_every_cell_runs_through_the_harness(cell):
    task = next((n for n, c in TASKS.items() if c.required_cell == cell), "echo")  # a task that takes it
    rec = harness.run_record(_config(task, cell), "cpu")
    assert rec.summary["status"] == "ok", rec.summary["error"]


def _package_errors():
    for info in pkgutil.walk_packages(tbptt_bench.__path__, "tbptt_bench."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Exception)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                yield obj


def test_every_error_class_of_the_package_is_a_bench_error():
    errors = sorted({e for e in _package_errors()}, key=lambda e: e.__qualname__)
    assert len(errors) >= 10  # the walk found them (a broken walk must not pass)
    assert [e.__qualname__ for e in errors if not issubclass(e, BenchError)] == []


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: check_int("batch", 2.0, 1), "batch=2.0 is not allowed: batch must be an integer >= 1"),
        (lambda: check_int("batch", True, 1), "batch=True is not allowed: batch must be an integer >= 1"),
        (lambda: check_int("k", 9, 1, 8), "k=9 is not allowed: k must be an integer in [1, 8]"),
        (
            lambda: check_float("lr", float("nan"), 0.0),
            "lr=nan is not allowed: lr must be a finite number >= 0.0",
        ),
        (
            lambda: check_float("pi", 0.0, 0.0, 1.0, lo_open=True),
            "pi=0.0 is not allowed: pi must be a finite number in (0.0, 1.0]",
        ),
    ],
)
def test_checks_raise_one_line_errors_naming_value_and_range(call, message):
    with pytest.raises(BenchError) as err:
        call()
    assert str(err.value) == message


def test_checks_return_the_cleaned_value():
    import numpy as np

    assert check_int("n", np.int64(3), 1) == 3 and type(check_int("n", np.int64(3), 1)) is int
    assert check_float("x", 2, 0.0) == 2.0 and type(check_float("x", 2, 0.0)) is float
