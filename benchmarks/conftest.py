"""Benchmark-session setup: the GPU, torch and CUDA versions in pytest-benchmark's machine_info,
an optional thread count, and a per-session cache of cases.

Run: ``pytest benchmarks --benchmark-min-rounds 3 --benchmark-json results/benchmarks/<device>.json``.
Plain ``pytest`` does not collect this folder (testpaths are tests, src and README.md).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="torch intra-op threads for the benchmarks (default: torch's own choice)",
    )
    parser.addoption(
        "--bench-pairs",
        type=int,
        default=5,
        help="interleaved engine/baseline repetitions per engine case, for ratios that machine "
        "load disturbs least (default 5; 0 turns them off)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--bench-pairs") < 0:
        raise pytest.UsageError(
            f"--bench-pairs={config.getoption('--bench-pairs')} is not allowed: use 0 or a positive integer"
        )
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads={threads} is not allowed: use a positive integer")
        import torch

        torch.set_num_threads(threads)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """pytest-benchmark's machine id ignores the GPU and the libraries: add them."""
    import torch

    from tbptt_bench.runs.envinfo import cpu_model, git_info

    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    machine_info.update(
        {
            "device_name": gpus[0] if gpus else cpu_model(),
            "gpu_names": gpus,
            "cpu_model": cpu_model(),
            "torch_version": torch.__version__,
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version() if cuda else None,
            "mps_available": bool(mps is not None and mps.is_available()),
            "torch_threads": torch.get_num_threads(),
            "tbptt_bench_commit": git_info()[0],
        }
    )


@pytest.fixture(scope="session")
def case_cache() -> dict:
    """Cases (stream + initial model) by (size, device), built once per session."""
    return {}
