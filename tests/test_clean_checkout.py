"""A sweep and its report leave a git checkout clean: runs go to the git-ignored results/local/.

The test clones this repository (its committed state) into a temporary folder and runs the real
entry point there, so it checks the .gitignore and the default folders together.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120
    ).stdout


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout"
)
def test_run_in_a_fresh_clone_leaves_git_status_empty(tmp_path):
    clone = tmp_path / "clone"
    _git(
        "clone",
        "--quiet",
        "--no-hardlinks" if os.name == "nt" else "--local",
        str(REPO),
        str(clone),
        cwd=tmp_path,
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(clone / "src"),
        "TBPTT_BENCH_MACHINE": "clean-test",
        "PYTHONWARNINGS": "error",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tbptt_bench",
            "run",
            "echo",
            "--preset",
            "smoke",
            "--style",
            "full()",
            "--quiet",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == f"tbptt-bench: open {Path('results/local/REPORT.md')}"  # one line: where to look
    assert (clone / "results" / "local" / "REPORT.md").is_file()
    assert list((clone / "results" / "local" / "cpu-clean-test" / "smoke").glob("echo-full-*"))
    assert _git("status", "--porcelain", cwd=clone) == ""


@pytest.mark.skipif(
    shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs a git checkout"
)
def test_git_dirty_ignores_changes_under_results(tmp_path):
    from tbptt_bench.runs.envinfo import git_info

    clone = tmp_path / "clone"
    _git("clone", "--quiet", "--local", str(REPO), str(clone), cwd=tmp_path)
    sub = clone / "src" / "tbptt_bench"  # git_info looks from inside the package, as the runs do
    assert git_info(sub)[1] is False
    readme = clone / "results" / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nregenerated\n", encoding="utf-8")
    assert git_info(sub)[1] is False  # a regenerated report is not a code change
    (sub / "styles.py").write_text((sub / "styles.py").read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert git_info(sub)[1] is True
