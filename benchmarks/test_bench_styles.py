"""Speed of ONE training pass per style x device x size x implementation (engine vs baselines).

Each benchmark times one pass over a fixed stream from a fresh model and optimizer (built in the
untimed setup), with the device synchronized inside the timed function; one warm-up round, then
``--benchmark-min-rounds`` rounds. The group is style | device | size, so the engine and the
baselines standing for that style sit side by side. Untimed extra passes measure the bytes saved
for backward (and, on CUDA, the allocator's peak); for the engine, ``--bench-pairs`` repetitions
alternate the engine with every baseline pass by pass and record the median of the per-pair
ratios (``interleaved_ratios``). ``benchmarks/ratios.py`` turns the JSON into a
Markdown table of engine / best-baseline throughput.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from bench_cases import (
    IMPLS,
    SIZES,
    STYLES,
    device_or_skip,
    make_case,
    peak_device_bytes,
    prepare,
    synchronize,
)
from tbptt_bench.runs.envinfo import device_name
from tbptt_bench.styles import parse_style

DEVICES = ("cpu", "cuda", "mps")

IMPLS_BY_NAME = {(style, impl.name): impl for style in STYLES for impl in IMPLS[style]}
CASES = [
    pytest.param(style, device, size, impl.name, id=f"{style.replace(' ', '')}-{device}-{size}-{impl.name}")
    for style in STYLES
    for device in DEVICES
    for size in SIZES
    for impl in IMPLS[style]
]


def interleaved_ratios(case, style: str, pairs: int) -> dict | None:
    """{baseline: {"median_ratio": median of t_baseline / t_engine, "pairs": n}} over ``pairs``
    repetitions of one pass of every implementation of ``style`` in turn (fresh model each)."""
    if pairs <= 0:
        return None
    times: dict[str, list[float]] = {}
    for _ in range(pairs):
        for impl in IMPLS[style]:
            run = prepare(case, style, impl)
            synchronize(case.device)
            start = time.perf_counter()
            run()
            times.setdefault(impl.name, []).append(time.perf_counter() - start)
    engine = times.pop("engine")
    return {
        name: {"median_ratio": statistics.median(b / e for b, e in zip(ts, engine)), "pairs": pairs}
        for name, ts in times.items()
    }


@pytest.mark.parametrize("style,device,size,impl", CASES)
def test_train_pass(benchmark, request, case_cache, style: str, device: str, size: str, impl: str):
    device_or_skip(device)
    chosen = IMPLS_BY_NAME[style, impl]
    if (size, device) not in case_cache:
        case_cache[size, device] = make_case(SIZES[size], device)
    case = case_cache[size, device]
    parsed = parse_style(style)
    benchmark.group = f"{style} | {device} | {size}"

    # 1. Timed: one pass per round, fresh model and optimizer from the untimed setup.
    rounds = max(1, int(request.config.getoption("benchmark_min_rounds")))
    prepared = []

    def setup():
        prepared[:] = [prepare(case, style, chosen)]  # drop the last round's model
        synchronize(device)  # the copy must not leak into the timed call
        return (), {}

    result = benchmark.pedantic(
        lambda: prepared[-1](), setup=setup, rounds=rounds, warmup_rounds=1, iterations=1
    )
    prepared.clear()  # pytest-benchmark keeps its fixtures to the end: let this round's model go now

    # 2. Untimed: bytes saved for backward, and the allocator's peak on CUDA.
    saved = prepare(case, style, chosen, measure_memory=True)()["saved_bytes_peak"]
    peak = peak_device_bytes(case, style, chosen)

    # 3. Untimed by pytest-benchmark: engine and baselines alternated pass by pass, so machine load
    #    hits both alike; per repetition the ratio baseline time / engine time, median over them.
    interleaved = (
        interleaved_ratios(case, style, request.config.getoption("--bench-pairs"))
        if chosen.is_engine
        else None
    )

    stats = benchmark.stats.stats if benchmark.stats is not None else None
    median = stats.median if stats is not None and stats.rounds else None
    benchmark.extra_info.update(
        {
            "device": device,
            "device_name": device_name(device),
            "style": style,
            "style_spec": parsed.spec,
            "style_label": parsed.label,
            "impl": impl,
            "semantics": chosen.semantics,
            "engine_path": result["path"] if chosen.is_engine else None,
            "engine_fallback_reason": result["fallback_reason"],
            "size": size,
            "B": case.size.B,
            "H": case.size.H,
            "T": case.T,
            "updates": result["updates"],
            "timesteps": case.T,
            "timesteps_per_s": case.T / median if median else None,  # stream steps (B rows each) per s
            "samples_per_s": case.T * case.size.B / median if median else None,  # row-steps per s
            "updates_per_s": result["updates"] / median if median else None,
            "peak_mem_bytes": peak,
            "peak_mem_source": "cuda_max_allocated_above_pass_start" if peak is not None else None,
            "saved_for_backward_bytes": saved,
            "torch_threads": torch.get_num_threads(),
            "interleaved_ratios": interleaved,
        }
    )
    if chosen.is_engine:
        assert result["updates"] == len(parsed.update_times(case.T))
