"""A task and a style outside the package: the worked example of docs/extending.md, run as written.

The test copies the example module and spec out of the doc into a folder outside the package,
puts it on sys.path, and runs ``tbptt-bench sweep <spec> --preset smoke`` then ``report``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tbptt_bench.cli import main
from tbptt_bench.runs import store
from tbptt_bench.runs.spec import load_spec, resolve
from tbptt_bench.styles import StyleError, parse_style
from tbptt_bench.tasks import TaskError, make_task, task_class

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _block(lang: str) -> str:
    """The first fenced ``lang`` block of docs/extending.md."""
    m = re.search(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert m, f"docs/extending.md has no {lang} block"
    return m.group(1)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The doc's module on sys.path (spawned sweep workers inherit it) and its spec, outside the repo."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "toy_ext.py").write_text(_block("python"), encoding="utf-8")
    (tmp_path / "toy.toml").write_text(_block("toml"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(ext))
    monkeypatch.setenv("PYTHONPATH", f"{ext}:{Path(store.__file__).resolve().parents[2]}")
    return tmp_path


def test_an_outside_task_and_style_sweep_and_report(toy, capsys):
    spec_path = toy / "toy.toml"
    results = toy / "results"
    runs = resolve(load_spec(spec_path), "smoke")
    assert [r.style for r in runs] == ["tf_style(3)", "tbptt(3, 6)", "full()"]
    assert all(re.fullmatch(r"[a-z0-9_.-]+", r.run_id) for r in runs)
    assert runs[0].run_id.startswith("toy_ext-delayedbit-tf_style-3-tanh4-lr0.01-s0-")

    assert main(["sweep", str(spec_path), "--preset", "smoke", "--results", str(results)]) == 0
    loaded = store.load_runs(results)
    assert loaded.skipped == [] and sorted(loaded.runs["run_id"]) == sorted(r.run_id for r in runs)
    assert set(loaded.runs["status"]) == {"ok"} and set(loaded.runs["task"]) == {"toy_ext-delayedbit"}
    assert loaded.runs["ref_no_memory"].iloc[0] == pytest.approx(0.6931472, abs=1e-6)

    assert main(["report", str(results)]) == 0
    tables = list((results / "tables").rglob("toy_ext-delayedbit/r2rt.md"))
    assert len(tables) == 1 and "toy_ext" not in capsys.readouterr().err


def test_outside_names_that_do_not_import_are_one_line_errors(toy):
    assert task_class("toy_ext:DelayedBit").name == "delayed_bit"
    with pytest.raises(TaskError, match=r"task='toy_ext:Nope' is not allowed: cannot import it"):
        make_task("toy_ext:Nope")
    with pytest.raises(TaskError, match="must be a dataclass subclassing"):
        make_task("toy_ext:every")
    with pytest.raises(StyleError, match=r"style 'toy_ext:DelayedBit\(2\)' is not allowed: .* must return"):
        parse_style("toy_ext:DelayedBit(2)")
    with pytest.raises(StyleError, match="cannot import it"):
        parse_style("no_such_module:every(3)")
