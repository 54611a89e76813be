"""The data API: load_results (and its doctested page), export to parquet/CSV, the markdown writer."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import tbptt_bench
from tbptt_bench.report.export import ExportError, export
from tbptt_bench.report.load import LoadError, load_results
from tbptt_bench.report.markdown import MarkdownError, frame_to_markdown, md_table

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "results"


def test_docs_results_page_examples_run(monkeypatch):
    monkeypatch.chdir(REPO)  # the page's paths are relative to the checkout
    failed, attempted = doctest.testfile(str(REPO / "docs" / "results.md"), module_relative=False)
    assert attempted >= 5 and failed == 0


def test_load_results_is_public_lazy_and_complete():
    runs, curves = tbptt_bench.load_results(FIXTURE)
    assert len(runs) == 22 and set(curves["run_id"]) <= set(runs["run_id"])
    assert tbptt_bench.load_results is load_results
    code = "import sys, tbptt_bench; print(sorted(m for m in ('pandas', 'torch', 'matplotlib') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr  # importing the package loads nothing heavy
    with pytest.raises(LoadError, match="is not a folder"):
        load_results(FIXTURE / "nope")
    with pytest.raises(AttributeError):
        tbptt_bench.no_such_name  # noqa: B018


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_round_trips_runs_and_curves(tmp_path, fmt):
    out = tmp_path / f"runs.{fmt}"
    paths = export(FIXTURE, out, fmt)
    assert paths == [out, tmp_path / f"runs-curves.{fmt}"]
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    runs, curves = read(paths[0]), read(paths[1])
    want_runs, want_curves = load_results(FIXTURE)
    assert list(runs["run_id"]) == list(want_runs["run_id"]) and len(curves) == len(want_curves)
    assert runs["min_val_loss"].round(9).tolist() == pytest.approx(
        want_runs["min_val_loss"].astype(float).tolist(), nan_ok=True
    )


def test_export_of_an_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="format='xlsx' is not allowed"):
        export(FIXTURE, tmp_path / "runs.xlsx", "xlsx")
    assert not list(tmp_path.iterdir())


def test_export_command(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tbptt_bench",
            "export",
            str(FIXTURE),
            "--format",
            "csv",
            "--out",
            str(tmp_path / "r.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "r.csv"), str(tmp_path / "r-curves.csv")]


def _cells(line: str) -> int:
    return len(line.replace("\\|", "").split("|")) - 2


def test_markdown_rows_keep_the_header_cell_count():
    rows = [["a|b", "line\nbreak", None], ["x", "", "3 | 4"]]
    lines = md_table(["h1", "h|2", "h3"], rows, "llr")
    assert all(_cells(line) == 3 for line in lines)
    assert lines[2] == "| a\\|b | line<br>break |  |" and lines[1] == "| :--- | :--- | ---: |"
    df = pd.DataFrame({"task": ["echo|x"], "speedup": [None]})
    assert frame_to_markdown(df, "lr")[2] == "| echo\\|x | — |"
    with pytest.raises(MarkdownError, match="row 0 has 2 cells, the header 3"):
        md_table(["a", "b", "c"], [["1", "2"]])
