"""Evidence that the tasks separate the styles (issue 3): slow, trains real budgets on CPU.

echo at r2rt's settings (batch 200, 5,000-step rows, Adagrad 0.1): TF-style(5) with state 4
stays at the lag-3-only line, TF-style(10) with state 16 gets near the all-lags line; TF-style(1)
learns nothing. copy with m = 10 (Aicher et al.'s windows 2K-1 long advanced by K): K = 5 < m
fails, K = 15 > m learns. Run with ``pytest -m slow tests/test_separation.py``.
"""

import pytest
import torch

from tbptt_bench.engine import evaluate_stream, train_stream
from tbptt_bench.models import make_model
from tbptt_bench.styles import overlapping, tf_style
from tbptt_bench.tasks import make_task

pytestmark = pytest.mark.slow


def best_validation_loss(task_name, style, cell, hidden, epochs, batch, row_len, optimizer, lr, **params):
    task = make_task(task_name, **params)
    torch.manual_seed(0)
    model = make_model(cell, task.input_size, hidden, task.output_size)
    opt = optimizer(model.parameters(), lr=lr)
    val = task.make_validation(seed=0, batch=50, length=2000)
    best = float("inf")
    for epoch in range(epochs):
        stream = task.make_train(seed=0, epoch=epoch, batch=batch, length=row_len)
        train_stream(model, stream.x, stream.y, style, opt, loss=task.loss)
        best = min(best, evaluate_stream(model, val.x, val.y, task.loss)[0])
    return best, task.references(val)


def echo(style, hidden):
    return best_validation_loss("echo", style, "tanh", hidden, 5, 200, 5000, torch.optim.Adagrad, 0.1)


def test_echo_tf_style_5_with_state_4_learns_lag_3_only():
    best, ref = echo(tf_style(5), 4)
    assert ref["optimal"] + 0.03 < best < ref["partial"] + 0.01, best


def test_echo_tf_style_10_with_state_16_gets_near_the_all_lags_line():
    best, ref = echo(tf_style(10), 16)
    assert best < ref["optimal"] + 0.015, best


def test_echo_tf_style_1_learns_nothing():
    best, ref = echo(tf_style(1), 16)
    assert best > ref["no_memory"] - 0.02, best


@pytest.mark.parametrize("K, learns", [(5, False), (15, True)])
def test_copy_needs_windows_longer_than_the_copy_length(K, learns):
    best, ref = best_validation_loss(
        "copy", overlapping(K, 2 * K - 1), "lstm", 64, 10, 64, 4000, torch.optim.Adam, 3e-3, m=10
    )
    if learns:
        assert best < 0.6 * ref["no_memory"], best
    else:
        assert best > 0.75 * ref["no_memory"], best
