"""compare on the fixture's two device tags: expected speedups, baseline order, benchmark JSON."""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path

import pytest

from tbptt_bench.report.compare import CompareError, compare

FIXTURE = Path(__file__).parent / "fixtures" / "results"
CPU, GPU = "cpu-amd-epyc-7b13", "cuda-nvidia-h100-80gb-hbm3"


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_compare_fixture_root_speedups_and_benchmarks(tmp_path):
    paths = compare([FIXTURE], tmp_path)
    assert [p.name for p in paths] == [
        "compare.md",
        "compare.csv",
        "benchmarks.csv",
        "compare.png",
        "compare.svg",
    ]
    rows = {(r["style_spec"], r["source"]): r for r in _rows(tmp_path / "compare.csv")}
    # full BPTT, lr 0.1: 50,000 / 2,000 timesteps/s; TF-style (4, 4): 8,000 / mean(900, 1,100)
    assert {k: v["speedup_vs_baseline"] for k, v in rows.items()} == {
        ("full()", CPU): "1.0000",
        ("full()", GPU): "25.0000",
        ("tf_style(4)", CPU): "1.0000",
        ("tf_style(4)", GPU): "8.0000",
    }
    assert (
        rows[("tf_style(4)", CPU)]["ok_runs"] == "2"
        and rows[("tf_style(4)", CPU)]["peak_mem_MiB"] == "110.000"
    )
    assert rows[("full()", GPU)]["peak_mem_source"] == "cuda_max_allocated"
    md = (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert "Baseline: `cpu-amd-epyc-7b13`." in md
    assert (
        "| echo | smoke | tanh4 (adagrad) | 0.1 | Full BPTT (T, T) | 2,000 | 200.0 | 50,000 | 20.0 | 25.00× |"
        in md
    )
    assert (
        "| echo | smoke | tanh4 (adagrad) | 0.1 | TF-style (4, 4) | 1,000 | 110.0 | 8,000 | 10.0 | 8.00× |"
        in md
    )
    assert "0.01" not in md.split("## pytest-benchmark")[0]  # lr 0.01 ran on the GPU only
    bench = {(r["style"], r["device"]): r for r in _rows(tmp_path / "benchmarks.csv")}
    assert bench[("full()", "NVIDIA H100 80GB HBM3")]["speedup_vs_baseline"] == "25.0000"
    assert bench[("tf_style(4)", "NVIDIA H100 80GB HBM3")]["speedup_vs_baseline"] == "8.0000"
    assert bench[("tf_style(4)", "AMD EPYC 7B13")]["median_s"] == "0.020000000"
    assert "| train_speed | tf_style(4) | engine | 20.000 | 1,000 | 2.500 | 8,000 | 8.00× |" in md
    svg = (tmp_path / "compare.svg").read_text(encoding="utf-8")
    assert (
        "timesteps/s (log scale, higher is better)" in svg and "task: style, model and learning rate" in svg
    )


def test_first_dir_is_the_baseline(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.compare"):
        paths = compare([FIXTURE / GPU, FIXTURE / CPU], tmp_path)
    rows = {
        (r["style_spec"], r["device_tag"]): r["speedup_vs_baseline"] for r in _rows(tmp_path / "compare.csv")
    }
    assert rows == {
        ("full()", GPU): "1.0000",
        ("full()", CPU): "0.0400",
        ("tf_style(4)", GPU): "1.0000",
        ("tf_style(4)", CPU): "0.1250",
    }
    assert "Baseline: `cuda-nvidia-h100-80gb-hbm3`." in (tmp_path / "compare.md").read_text(encoding="utf-8")
    assert sum("skipped run folder" in r.getMessage() for r in caplog.records) == 2  # corrupted + incomplete
    # device folders share their parent's benchmarks/; the benchmark baseline follows the same order
    assert "benchmarks.csv" in [p.name for p in paths]
    bench = {(r["style"], r["device"]): r["speedup_vs_baseline"] for r in _rows(tmp_path / "benchmarks.csv")}
    assert bench == {
        ("full()", "NVIDIA H100 80GB HBM3"): "1.0000",
        ("full()", "AMD EPYC 7B13"): "0.0400",
        ("tf_style(4)", "NVIDIA H100 80GB HBM3"): "1.0000",
        ("tf_style(4)", "AMD EPYC 7B13"): "0.1250",
    }


def test_absent_benchmark_json_is_fine(tmp_path):
    for tag in (CPU, GPU):
        shutil.copytree(FIXTURE / tag, tmp_path / "results" / tag)
    paths = compare([tmp_path / "results"], tmp_path / "out")
    assert [p.name for p in paths] == ["compare.md", "compare.csv", "compare.png", "compare.svg"]
    md = (tmp_path / "out" / "compare.md").read_text(encoding="utf-8")
    assert "pytest-benchmark" not in md and "25.00×" in md


def test_broken_benchmark_file_is_skipped(tmp_path, caplog):
    root = tmp_path / "results"
    shutil.copytree(FIXTURE / "benchmarks", root / "benchmarks")
    (root / "benchmarks" / "broken.json").write_text("{nope", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.compare"):
        paths = compare([root], tmp_path / "out")
    assert [p.name for p in paths] == ["compare.md", "compare.csv", "benchmarks.csv"]  # no runs: no figure
    assert any(
        "skipped benchmark file" in r.getMessage() and "broken.json" in r.getMessage() for r in caplog.records
    )
    assert len(_rows(tmp_path / "out" / "benchmarks.csv")) == 4
    assert "No (task, sweep, model, style, lr) finished ok on two or more sources." in (
        tmp_path / "out" / "compare.md"
    ).read_text(encoding="utf-8")


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(CompareError, match=r"dirs=\[\] is not allowed"):
        compare([], tmp_path)
    with pytest.raises(CompareError, match="dir=.*missing.* is not a folder"):
        compare([FIXTURE, tmp_path / "missing"], tmp_path)
