"""compare on the fixture's two device tags: expected speedups, baseline order, benchmark JSON."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
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
    assert [p.name for p in paths] == ["compare.md", "compare.csv", "benchmarks.csv", "compare.png"]
    rows = {(r["style_spec"], r["source"]): r for r in _rows(tmp_path / "compare.csv")}
    # full BPTT, lr 0.1: 50,000 / 2,000 timesteps/s; TF-style (4, 4): 8,000 / mean(900, 1,100)
    assert {k: v["speedup_vs_baseline"] for k, v in rows.items()} == {
        ("full()", CPU): "1.0000",
        ("full()", GPU): "25.0000",
        ("tf_style(4)", CPU): "1.0000",
        ("tf_style(4)", GPU): "8.0000",
    }
    tf_cpu = rows[("tf_style(4)", CPU)]
    assert (tf_cpu["ok_runs"], tf_cpu["peak_mem_MiB"], tf_cpu["timesteps_per_s_sd"]) == (
        "2",
        "110.000",
        "141.421",
    )
    assert rows[("full()", GPU)]["peak_mem_source"] == "cuda_max_allocated"
    assert rows[("full()", GPU)]["min_train_wall_s"] == "0.5000"
    md = (tmp_path / "compare.md").read_text(encoding="utf-8")
    # each source's versions, from env.json
    assert (
        f"| `{GPU}` | `{FIXTURE.as_posix()}` | NVIDIA H100 80GB HBM3 | 2.13.0+cu128 | 12.8 | 90800 | 3.11.9 |"
        in md
    )
    assert f"| `{CPU}` (baseline) |" in md
    # the memory measure is named per column; seeds as mean ± sd (count); † = trained under 1 s
    assert f"{CPU} peak MiB (ru_maxrss)" in md and f"{GPU} peak MiB (cuda_max_allocated)" in md
    assert (
        "| echo | smoke | tanh4 (adagrad) | 0.1 | Full BPTT (T, T) | 2,000 | 200 | 50,000 † | 20 | 25.00× |"
        in md
    )
    assert (
        "| echo | smoke | tanh4 (adagrad) | 0.1 | TF-style (4, 4) | 1,000 ± 141 (2) | 110 | 8,000 | 10 | 8.00× ± 1.13 |"
        in md
    )
    # geometric mean of 25 and 8 over the two configurations both devices ran
    assert "| echo | 14.14× (2) |" in md
    assert "0.01 |" not in md.split("## pytest-benchmark")[0]  # lr 0.01 ran on the GPU only
    bench = {(r["style"], r["device"]): r for r in _rows(tmp_path / "benchmarks.csv")}
    assert bench[("full()", "NVIDIA H100 80GB HBM3")]["speedup_vs_baseline"] == "25.0000"
    assert bench[("tf_style(4)", "NVIDIA H100 80GB HBM3")]["speedup_vs_baseline"] == "8.0000"
    assert bench[("tf_style(4)", "AMD EPYC 7B13")]["median_s"] == "0.020000000"
    assert (
        "| test_train_speed | tf_style(4) |  | engine | — | 20.000 | 1,000 | — | 2.500 | 8,000 | 8.00× |"
        in md
    )
    # every table row has the header's cell count (cells are escaped)
    for block in md.split("\n\n"):
        lines = [ln for ln in block.splitlines() if ln.startswith("|")]
        if lines:
            n = len(split_row(lines[0]))
            assert all(len(split_row(ln)) == n for ln in lines), block


def split_row(line: str) -> list[str]:
    """Cells of a pipe-table row, honouring escaped pipes."""
    return re.split(r"(?<!\\)\|", line.strip())[1:-1]


def test_benchmarks_pair_across_devices_whose_groups_name_the_device(tmp_path):
    """pytest-benchmark groups like 'full() | cpu | small' hold the device: the key must not."""
    root = tmp_path / "results" / "benchmarks"
    for dev, name, T, tps in (("cpu", "AMD EPYC 7B13", 256, 1000.0), ("cuda", "NVIDIA H200", 1024, 6000.0)):
        doc = {
            "machine_info": {"device_name": name},
            "benchmarks": [
                {
                    "name": f"test_train_pass[full()-{dev}-large-engine]",
                    "group": f"full() | {dev} | large",
                    "params": {"style": "full()", "device": dev, "size": "large", "impl": "engine"},
                    "extra_info": {
                        "device_name": name,
                        "style": "full()",
                        "size": "large",
                        "impl": "engine",
                        "T": T,
                        "timesteps_per_s": tps,
                    },
                    "stats": {"median": T / tps},
                }
            ],
        }
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{dev}.json").write_text(json.dumps(doc), encoding="utf-8")
    compare([tmp_path / "results"], tmp_path / "out")
    rows = _rows(tmp_path / "out" / "benchmarks.csv")
    assert [(r["device"], r["T"], r["speedup_vs_baseline"]) for r in rows] == [
        ("AMD EPYC 7B13", "256", "1.0000"),
        ("NVIDIA H200", "1024", "6.0000"),  # a ratio of timesteps/s, although T differs
    ]
    md = (tmp_path / "out" / "compare.md").read_text(encoding="utf-8")
    assert (
        "| test_train_pass | full() | large | engine | 256 | 256.000 | 1,000 | 1024 | 170.667 | 6,000 | 6.00× |"
        in md
    )


def test_figure_has_one_panel_per_task_and_a_line_at_one(tmp_path):
    from tbptt_bench.report.compare import _figure, run_timings

    sources, per_key = run_timings([FIXTURE])
    shared = {k: v for k, v in per_key.items() if len(v) >= 2}
    captured = {}
    import tbptt_bench.report.figures as F

    real_save = F.save

    def keep(fig, stem, formats=("png",)):
        captured["fig"] = fig
        return real_save(fig, stem, formats)

    F.save = keep
    try:
        _figure(sources, shared, tmp_path / "c")
    finally:
        F.save = real_save
    (ax,) = captured["fig"].axes
    assert ax.get_title(loc="left") == "echo" and ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "Full BPTT (T, T), lr 0.1",
        "TF-style (4, 4), lr 0.1",
    ]
    assert any(line.get_linestyle() == "--" and list(line.get_xdata()) == [1.0, 1.0] for line in ax.lines)
    xs = sorted(round(float(c.lines[0].get_xdata()[0]), 3) for c in ax.containers)
    assert xs == [8.0, 25.0]


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
    assert f"| `{GPU}` (baseline) |" in (tmp_path / "compare.md").read_text(encoding="utf-8")
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
    assert [p.name for p in paths] == ["compare.md", "compare.csv", "compare.png"]
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
