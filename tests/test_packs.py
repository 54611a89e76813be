"""Packed sweeps: ``compact`` packs a sweep's records into one records.parquet; every reader sees
the same runs and rows as from the folders; ``unpack`` gives the folders back byte for byte; a
sweep resumes over a pack; damage is named and never replaced by a smaller pack."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tbptt_bench import cli
from tbptt_bench.report import build_report
from tbptt_bench.runs import curves, packs, store

FIXTURE = Path(__file__).parent / "fixtures" / "results"
RECORD = ("config.json", "env.json", "summary.json", "curve.parquet")


@pytest.fixture
def root(tmp_path) -> Path:
    """The fixture's records with parquet curves (its damaged records stay as they are)."""
    root = tmp_path / "results"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("benchmarks", "*.py"))
    for run in store.iter_run_dirs(root):
        if store.validate_record(run) == []:
            curves.compact_curve(run)
    return root


def _sweeps(root: Path) -> list[Path]:
    return sorted({run.parent for run in store.iter_run_dirs(root)})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_reader_sees_the_same_runs_and_rows_packed(root):
    before = store.load_runs(root)
    damaged = sorted(Path(p) for p, _ in before.skipped)
    left = []
    for sweep in _sweeps(root):
        n, left_here = store.pack_sweep(sweep)
        assert (sweep / packs.PACK_FILE).is_file() and n > 0
        left += [d for d, _ in left_here]
    assert sorted(left) == damaged  # damaged records stay as folders, for the sweep to rerun
    assert len(list(root.rglob("curve.parquet"))) == 0  # every valid one is in a pack
    after = store.load_runs(root)
    pd.testing.assert_frame_equal(after.runs, before.runs)  # run_dir: the path its folder had
    pd.testing.assert_frame_equal(after.curves, before.curves)
    assert sorted(map(str, after.skipped)) == sorted(map(str, before.skipped))
    assert all(store.is_complete(Path(d)) for d in after.runs["run_dir"])


def test_unpack_gives_back_every_file_byte_for_byte(root):
    before = _files(root)
    for sweep in _sweeps(root):
        store.pack_sweep(sweep)
    assert _files(root) != before
    for sweep in _sweeps(root):
        assert store.unpack_sweep(sweep) > 0
        assert not (sweep / packs.PACK_FILE).exists()
    assert _files(root) == before


def test_the_pack_is_smaller_than_the_folders(root):
    sweep = _sweeps(root)[0]
    size = sum(len(b) for b in _files(sweep).values())
    store.pack_sweep(sweep)
    assert (sweep / packs.PACK_FILE).stat().st_size < size / 2


def test_the_report_reads_a_packed_sweep_as_it_reads_the_folders(root, tmp_path):
    packed = tmp_path / "packed"
    shutil.copytree(root, packed)
    for sweep in _sweeps(packed):
        store.pack_sweep(sweep)
    build_report(root, tmp_path / "a", figures=False)
    build_report(packed, tmp_path / "b", figures=False)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    a.pop("tables/manifest.json"), b.pop("tables/manifest.json")  # names the input folder and hashes
    assert a.keys() == b.keys() and len(a) > 5
    assert {k: v.replace(b"packed/", b"results/") for k, v in b.items()} == a  # the command it names


def test_a_folder_with_a_complete_record_wins_and_the_next_compact_packs_it(root):
    sweep = _sweeps(root)[0]
    valid = {d.name for d in store.iter_run_dirs(sweep) if store.validate_record(d) == []}
    listed = {d.name for d in store.iter_run_dirs(sweep)}
    run = sweep / sorted(valid)[0]
    store.pack_sweep(sweep)
    assert not run.exists() and store.record_exists(run) and store.pack_of(run) is not None
    # what a rerun with --force leaves: the run's folder again, here with another memory reading
    pack = packs.open_pack(sweep)
    run.mkdir()
    for name in ("config.json", "env.json"):
        (run / name).write_text(pack.texts[run.name][name])
    curves.write_curve(run, curves.rows_of(pack.curve(run.name)))
    summary = json.loads(pack.texts[run.name]["summary.json"])
    summary["peak_mem_bytes"] += 1
    (run / "summary.json").write_text(json.dumps(summary))
    assert store.pack_of(run) is None and store.validate_record(run) == []
    assert {d.name for d in store.iter_run_dirs(sweep)} == listed  # listed once
    n, left = store.pack_sweep(sweep)
    assert not run.exists() and n == len(valid) and {d.name for d, _ in left} == listed - valid
    assert store.read_record_json(run, "summary.json") == summary  # the folder's record was packed


def test_a_sweep_resumes_over_a_packed_sweep_and_force_shadows_it(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(
        '[task]\nname = "echo"\n[model]\ncell = "tanh"\nhidden_sizes = [4]\n'
        '[optimizer]\nname = "adagrad"\nlrs = [0.1]\n'
        "[budget]\nepochs = 1\nbatch = 4\nrow_len = 30\nval_batch = 4\nval_len = 40\n"
        "eval_points = 10\nwarmup_updates = 1\n"
        '[sweep]\nstyles = ["tf_style(5)", "full()"]\nseeds = [0]\n[presets.smoke]\n'
    )
    results = tmp_path / "results"
    argv = ["sweep", str(spec), "--preset", "smoke", "--results", str(results), "--quiet"]
    assert cli.main(argv) == 0
    before = store.load_runs(results)
    assert cli.main(["compact", str(results)]) == 0
    (sweep,) = _sweeps(results)
    stamp = (sweep / packs.PACK_FILE).stat().st_mtime_ns
    assert cli.main(argv) == 0  # both runs complete in the pack: nothing trains, no folder appears
    assert [p.name for p in sweep.iterdir()] == [packs.PACK_FILE]
    assert (sweep / packs.PACK_FILE).stat().st_mtime_ns == stamp
    assert cli.main(argv + ["--style", "tf_style(5)", "--force"]) == 0  # a folder shadows the pack
    (folder,) = [p for p in sweep.iterdir() if p.is_dir()]
    loaded = store.load_runs(results)
    assert loaded.runs["run_id"].tolist() == before.runs["run_id"].tolist() and loaded.skipped == []
    assert (folder / "summary.json").is_file() and str(folder) in loaded.runs["run_dir"].tolist()
    assert cli.main(["compact", str(results)]) == 0
    assert [p.name for p in sweep.iterdir()] == [packs.PACK_FILE] and len(packs.open_pack(sweep).texts) == 2


def test_a_run_without_curve_rows_and_an_old_curve_layout_pack_exactly(tmp_path):
    old = [{"split": "val", "update": 0, "timesteps": 0, "train_wall_s": 0.0, "loss": math.nan}]
    new = [
        {**old[0], "backprop_steps": 0, "loss": 0.5},
        {**old[0], "split": "train", "update": 1, "backprop_steps": 7, "loss": math.inf},
    ]
    texts = {f: f'{{"file": "{f}"}}' for f in packs.RECORD_FILES}
    records = {
        "a-failed": (texts, pd.DataFrame(columns=list(curves.CURVE_COLUMNS_V2))),
        "b-old": (texts, pd.DataFrame(old)),
        "c-new": (texts, pd.DataFrame(new)),
    }
    (tmp_path / packs.PACK_FILE).write_bytes(packs._pack_bytes(records))
    pack = packs.open_pack(tmp_path)
    assert pack.texts == {r: texts for r in records}
    assert len(pack.curve("a-failed")) == 0
    assert curves.rows_of(pack.curve("b-old"))[0].keys() == old[0].keys()
    assert math.isnan(pack.curve("b-old")["loss"][0])
    assert curves.rows_of(pack.curve("c-new")) == new


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "records.parquet is unreadable"),
        (lambda b: b"PAR1" + b"\0" * 100 + b"PAR1", "records.parquet is unreadable"),
        ("columns", "records.parquet columns"),
        ("texts", "column summary is not set on exactly each run's first row"),
    ],
)
def test_a_damaged_pack_is_named_lists_no_runs_and_is_never_replaced(root, damage, message, capsys):
    sweep = _sweeps(root)[0]
    store.pack_sweep(sweep)
    path = sweep / packs.PACK_FILE
    if damage == "columns":
        pd.DataFrame({"run_id": ["x"]}).to_parquet(path)
    elif damage == "texts":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        col = table.column_names.index("summary")
        path.write_bytes(b"")
        pq.write_table(table.set_column(col, "summary", table.column("summary").fill_null("{}")), path)
    else:
        path.write_bytes(damage(path.read_bytes()))
    damaged = path.read_bytes()
    with pytest.raises(store.StoreError, match=message):
        packs.open_pack(sweep)
    assert [r for r in store.iter_run_dirs(root) if r.parent == sweep and not r.exists()] == []
    with pytest.raises(store.StoreError, match=message):
        store.pack_sweep(sweep)
    assert cli.main(["compact", str(root)]) == 0
    assert f"left {sweep} as it is: " in capsys.readouterr().err
    assert path.read_bytes() == damaged


def test_unpack_command_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["unpack", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no records.parquet" in err and "\n" not in err
