"""The command line: an end-to-end smoke sweep, skipping on a second sweep, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tbptt_bench import cli
from tbptt_bench.runs import store
from tbptt_bench.runs.spec import load_specs, resolve

REPO = Path(__file__).resolve().parents[1]
#: A named machine: this VM's CPU calls itself a generic "Intel(R) Xeon(R) Processor", which would
#: print the generic-CPU warning on every sweep.
MACHINE = "cli-test-box"
ENV = {**os.environ, "PYTHONWARNINGS": "error", "TBPTT_BENCH_MACHINE": MACHINE}


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tbptt_bench", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    """Every task's smoke preset, trained once through the real entry point."""
    results = tmp_path_factory.mktemp("cli") / "results"
    proc = run_cli("sweep", "--preset", "smoke", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    return results, proc


def test_smoke_sweep_writes_every_planned_run(smoke_results):
    results, proc = smoke_results
    planned = [c for s in load_specs(REPO / "tasks") for c in resolve(s, "smoke")]
    loaded = store.load_runs(results)
    assert loaded.skipped == []
    assert sorted(loaded.runs["run_id"]) == sorted(c.run_id for c in planned)
    assert set(loaded.runs["status"]) == {"ok"}
    assert set(loaded.runs["sweep"]) == {"smoke"} and loaded.runs["device_tag"].str.startswith("cpu-").all()
    assert f"done: ok {len(planned)}, diverged 0, failed 0, skipped 0" in proc.stdout
    assert proc.stderr == ""  # not a terminal: no progress bars


def test_second_sweep_skips_everything(smoke_results):
    results, _ = smoke_results
    stamps = {p: p.stat().st_mtime_ns for p in results.rglob("summary.json")}
    proc = run_cli("sweep", "--preset", "smoke", "--results", str(results))
    assert proc.returncode == 0, proc.stderr
    assert "0 to train" in proc.stdout and f"skipped {len(stamps)}" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in results.rglob("summary.json")} == stamps


def test_dry_run_lists_the_plan_and_trains_nothing(smoke_results, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TBPTT_BENCH_MACHINE", "")  # --machine below sets it; restored afterwards
    results, _ = smoke_results
    assert (
        cli.main(
            [
                "sweep",
                "echo",
                "--preset",
                "smoke",
                "--results",
                str(results),
                "--dry-run",
                "--machine",
                MACHINE,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5 and all(line.startswith("skip  complete") for line in out[:4])
    assert out[-1] == "4 runs: 0 would train, 4 complete (dry run: nothing trained)"
    fresh = tmp_path / "fresh"
    assert (
        cli.main(["sweep", "echo", "--preset", "smoke", "--results", str(fresh), "--dry-run", "--seeds", "2"])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "8 runs: 8 would train, 0 complete (dry run: nothing trained)"
    assert all(line.startswith("train pending") for line in out[:-1])
    assert not fresh.exists()


def test_list_shows_tasks_styles_presets_and_devices(smoke_results, capsys):
    results, _ = smoke_results
    assert cli.main(["list", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "tasks (registry): echo, copy, adding, influence, language, echo_nochain" in out
    for name in (
        "full()",
        "williams_peng(n)",
        "one_step(k1)",
        "overlapping(k1, k2)",
        "tf_style(k)",
        "random(pi)",
    ):
        assert f"  {name}\n" in out
    assert "sweep presets (runs per preset over the specs; default quick):" in out
    planned = {
        p: sum(len(resolve(s, p)) for s in load_specs(REPO / "tasks")) for p in ("smoke", "quick", "full")
    }
    for preset, n in planned.items():
        assert f"  {preset:6s} {n} runs\n" in out
    tag = f"cpu-{MACHINE}"
    assert f"  {tag}: 14 complete runs of 14" in out


def test_report_and_compare_are_thin_wrappers(tmp_path, capsys, monkeypatch):
    from tbptt_bench.report import build as report
    from tbptt_bench.report import compare

    calls = []
    monkeypatch.setattr(
        report, "build_report", lambda d, **kw: calls.append(("report", d)) or [d / "REPORT.md"]
    )
    monkeypatch.setattr(
        compare, "compare", lambda dirs, out: calls.append(("compare", dirs, out)) or [out / "x.md"]
    )
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert cli.main(["report", str(tmp_path / "a")]) == 0
    assert cli.main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    assert calls == [
        ("report", tmp_path / "a"),
        ("compare", [tmp_path / "a", tmp_path / "b"], tmp_path / "c"),
    ]
    assert capsys.readouterr().out.splitlines() == [
        f"tbptt-bench: open {tmp_path / 'a' / 'REPORT.md'}",  # report: one line, the page to open
        str(tmp_path / "c" / "x.md"),
    ]


# -- bad input: one line on stderr, exit 2, nothing trained or written ------------------------------
def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    broken = tmp_path / "broken.toml"
    broken.write_text((REPO / "tasks" / "echo.toml").read_text().replace("row_len = 5000", "row_lenn = 5000"))
    return {
        "unknown task": (
            ["sweep", "nope"],
            "unknown task 'nope': known task specs are adding, copy, echo, echo_nochain, influence, language",
        ),
        "unknown style": (
            ["sweep", "echo", "--style", "bogus(3)"],
            "style 'bogus' is not allowed: known presets are",
        ),
        "bad style args": (
            ["sweep", "echo", "--style", "overlapping(5, 2)"],
            "overlapping windows need k1 < k2",
        ),
        "unknown preset": (["sweep", "--preset", "huge"], "argument --preset: invalid choice: 'huge'"),
        "unknown device": (["sweep", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        "jobs 0": (["sweep", "--jobs", "0"], "argument --jobs: '0' is not allowed: use a positive integer"),
        "seeds 0": (
            ["sweep", "--seeds", "0"],
            "argument --seeds: '0' is not allowed: use a positive integer",
        ),
        "unwritable results": (["sweep", "echo", "--results", str(blocker / "results")], "is not writable"),
        "broken spec": (
            ["sweep", str(broken)],
            f"{broken}: unknown key 'budget.row_lenn'; allowed in [budget]:",
        ),
        "bad specs dir": (["sweep", "--specs-dir", str(tmp_path / "none")], "is not a folder"),
        "unknown command": (["train"], "argument COMMAND: invalid choice: 'train'"),
        "missing report dir": (["report", str(tmp_path / "none")], "does not exist"),
    }


CASES = [
    "unknown task",
    "unknown style",
    "bad style args",
    "unknown preset",
    "unknown device",
    "jobs 0",
    "seeds 0",
    "unwritable results",
    "broken spec",
    "bad specs dir",
    "unknown command",
    "missing report dir",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default results/ would land here: check nothing does
    argv, expected = _bad_cases(tmp_path)[case]
    try:
        status = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("tbptt-bench: error: ") and expected in err, err
    assert not (tmp_path / "results").exists()
    assert not list(tmp_path.rglob("summary.json"))


def test_cuda_asked_for_but_absent(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the absent-CUDA error cannot happen")
    assert cli.main(["sweep", "echo", "--device", "cuda", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tbptt-bench: error: device 'cuda' was asked for but CUDA is not available here")
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_missing_ray_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli.main(["sweep", "echo", "--backend", "ray", "--results", str(tmp_path / "r")]) == 2
    assert (
        capsys.readouterr().err
        == 'tbptt-bench: error: the ray backend needs Ray: pip install -e ".[ray]" (in a checkout) '
        'or pip install "tbptt-bench[ray]"\n'
    )
    assert not (tmp_path / "r").exists()


def test_errors_through_the_real_entry_point_have_no_traceback(tmp_path):
    proc = run_cli("sweep", "nope", "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "tbptt-bench: error: unknown task 'nope': known task specs are adding, copy, echo, echo_nochain, influence, language"
    ]


def test_every_flag_has_help():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, (name, action.dest)


def test_summary_json_of_a_run_is_the_schema(smoke_results):
    results, _ = smoke_results
    summary = json.loads(next(results.rglob("summary.json")).read_text())
    assert set(summary) == set(store.SUMMARY_KEYS) | set(store.SUMMARY_OPTIONAL_KEYS)


def test_any_bench_error_is_exit_2_and_other_errors_are_not_swallowed(tmp_path, capsys, monkeypatch):
    from tbptt_bench.errors import BenchError

    spec = tmp_path / "bad.toml"
    spec.write_text((REPO / "tasks" / "echo.toml").read_text().replace("eval_points = 20", "eval_points = 3"))
    assert cli.main(["sweep", str(spec), "--dry-run", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tbptt-bench: error: ") and "eval_points = 3 is not allowed" in err
    assert err.count("\n") == 1

    class Odd(BenchError):  # a new error class anywhere in the package needs no CLI change
        pass

    def boom(args):
        raise Odd("thing=1 is not allowed: use 2")

    monkeypatch.setattr(cli, "_cmd_list", boom)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err == "tbptt-bench: error: thing=1 is not allowed: use 2\n"

    def bug(args):
        raise ValueError("a bug, not bad input")

    monkeypatch.setattr(cli, "_cmd_list", bug)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["list"])


def test_machine_names_the_device_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TBPTT_BENCH_MACHINE", raising=False)
    monkeypatch.setenv("TBPTT_BENCH_MACHINE", "")
    argv = ["sweep", "echo", "--preset", "smoke", "--results", str(tmp_path), "--dry-run"]
    assert cli.main([*argv, "--machine", "Lab Box 7"]) == 0
    assert "/cpu-lab-box-7/smoke/echo-" in capsys.readouterr().out
    monkeypatch.setenv("TBPTT_BENCH_MACHINE", "cpu-other")
    assert cli.main(argv) == 0
    assert "/cpu-other/smoke/echo-" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.startswith("tbptt-bench 0.")


def test_list_into_a_closed_pipe_is_quiet(tmp_path):
    """`tbptt-bench list | head -1`: exit 0 and nothing on stderr once the reader has gone."""
    proc = subprocess.run(
        f"{sys.executable} -m tbptt_bench list --results {tmp_path} | head -1; echo ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tasks (registry):") and lines[-1] == "0"
    assert proc.stderr == ""
