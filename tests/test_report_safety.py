"""The report deletes nothing but its own stale outputs, whatever tables/manifest.json says.

Issue #16, class 1: a tampered manifest named a run's summary.json (and, through a symlink, a file
outside the results folder) and ``report`` deleted them. Deletions are now limited to plain files
under the output folder's tables/ and figures/, reached through no symlink, never in a run folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest

from tbptt_bench import cli
from tbptt_bench.report import build
from tbptt_bench.runs import store

FIXTURE = Path(__file__).parent / "fixtures" / "results"


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root)
    build.build_report(root, figures=False)
    return root


def _plant(results: Path, tmp_path: Path) -> tuple[dict[str, Path], list[Path]]:
    """A manifest naming victims everywhere, and genuinely stale report outputs; return both."""
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    run = next(store.iter_run_dirs(results))
    (results / "tables" / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    (results / "tables" / "link.md").symlink_to(outside)
    (results / "notes.md").write_text("mine")
    fake_run = results / "tables" / "planted"  # a run folder someone put inside tables/
    fake_run.mkdir()
    (fake_run / "config.json").write_text("{}")
    (fake_run / "summary.json").write_text("{}")
    stale = [results / "tables" / "old" / "stale.md", results / "figures" / "old" / "stale.svg"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("stale")
    victims = {
        "run summary": run / "summary.json",
        "run summary (absolute)": run / "summary.json",
        "outside (..)": outside,
        "outside (link dir)": outside,
        "outside (link file)": outside,
        "own file beside tables": results / "notes.md",
        "planted run file": fake_run / "summary.json",
        "planted run config": fake_run / "config.json",
    }
    names = [
        os.path.relpath(run / "summary.json", results),
        str(run / "summary.json"),
        os.path.relpath(outside, results),
        "tables/linkdir/outside.txt",
        "tables/link.md",
        "notes.md",
        "tables/planted/summary.json",
        "tables/planted/config.json",
        "tables/../" + os.path.relpath(run / "summary.json", results),
        42,
        None,
        "",
        "tables",
        "x" * 5000,
    ]
    manifest = results / "tables" / "manifest.json"
    files = json.loads(manifest.read_text())["files"]
    manifest.write_text(
        json.dumps({"files": files + names + [p.relative_to(results).as_posix() for p in stale]})
    )
    return victims, stale


def test_a_tampered_manifest_deletes_only_the_reports_own_stale_outputs(results, tmp_path, caplog):
    victims, stale = _plant(results, tmp_path)
    before = {name: p.read_bytes() for name, p in victims.items()}
    runs_before = sorted(store.iter_run_dirs(results))
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.build"):
        build.build_report(results, figures=False)
    assert {name: p.read_bytes() for name, p in victims.items()} == before  # nothing else deleted
    assert all(not p.exists() for p in stale)  # the report's own stale outputs are gone
    assert not (results / "tables" / "old").exists() and not (results / "figures" / "old").exists()
    assert sorted(store.iter_run_dirs(results)) == runs_before
    assert all(store.validate_record(r) == [] or "summary.json" not in str(r) for r in runs_before)
    assert (results / "tables" / "link.md").is_symlink() and (results / "tables" / "linkdir").is_symlink()
    kept = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kept ")]
    assert kept and all(len(m) < 400 for m in kept)  # said, not echoed in full


def test_a_manifest_that_is_a_symlink_is_not_followed(results, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "tables" / "x.md"
    victim.parent.mkdir()
    victim.write_text("keep")
    manifest = results / "tables" / "manifest.json"
    (elsewhere / "manifest.json").write_text(json.dumps({"files": ["tables/x.md"]}))
    manifest.unlink()
    manifest.symlink_to(elsewhere / "manifest.json")
    build.build_report(results, figures=False)
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("content", ["[1, 2]", '{"files": "tables/index.md"}', "not json", '{"files": [[]]}'])
def test_a_malformed_manifest_is_ignored(results, content):
    (results / "tables" / "manifest.json").write_text(content)
    paths = build.build_report(results, figures=False)
    assert (results / "tables" / "index.md") in paths and store.load_runs(results).runs.shape[0] == 22


def test_report_on_an_empty_folder_says_no_runs_found(tmp_path, capsys, caplog):
    empty = tmp_path / "empty"
    empty.mkdir()
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.build"):
        assert cli.main(["report", str(empty)]) == 0
    assert any(r.getMessage().startswith("no runs found in ") for r in caplog.records)
