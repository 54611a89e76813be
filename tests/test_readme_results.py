"""The README's results block is regenerated from the report's own tables."""

import shutil

import pytest

from tbptt_bench.report import build_report
from tbptt_bench.report.readme import BEGIN, END, ReadmeError, replace_block, update_readme

FIXTURE = __import__("pathlib").Path(__file__).parent / "fixtures" / "results"


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    root = tmp_path_factory.mktemp("r") / "results"
    shutil.copytree(FIXTURE, root)
    build_report(root, figures=False)
    return root


def test_block_holds_the_echo_table_with_reference_lines_and_is_stable(reported):
    readme = reported.parent / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{BEGIN}\nstale\n{END}\n\n## After\n", encoding="utf-8")
    update_readme(readme, reported)
    first = readme.read_text(encoding="utf-8")
    assert "stale" not in first and first.endswith(f"{END}\n\n## After\n")
    echo_table = (reported / "tables" / "cpu-amd-epyc-7b13" / "smoke" / "echo" / "r2rt.md").read_text(
        encoding="utf-8"
    )
    assert "### echo: final validation loss" in first
    assert (
        "| TF-style (4, 4) | 0.526 ± 0.008 | 0.540 |" in first
        and "| TF-style (4, 4) | 0.526 ± 0.008 | 0.540 |" in echo_table
    )
    assert "- optimal: 0.4545" in first
    assert "**The full report: [results/REPORT.md](results/REPORT.md)**" in first  # the page to open
    update_readme(readme, reported)
    assert readme.read_text(encoding="utf-8") == first


def test_missing_markers_or_tables_are_one_line_errors(tmp_path, reported):
    with pytest.raises(ReadmeError, match="must hold one"):
        replace_block("no markers here\n", "x")
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n", encoding="utf-8")
    with pytest.raises(ReadmeError, match="no r2rt tables"):
        update_readme(readme, tmp_path)
    with pytest.raises(ReadmeError, match="no such file"):
        update_readme(tmp_path / "nope.md", reported)
