"""The report on the checked-in fixture: exact tables, determinism, figures, skipped runs, no torch."""

from __future__ import annotations

import csv
import io
import json
import logging
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tbptt_bench import styles
from tbptt_bench.report import build as report
from tbptt_bench.report import figures, tables
from tbptt_bench.runs import store

FIXTURE = Path(__file__).parent / "fixtures" / "results"
CPU, GPU = "cpu-amd-epyc-7b13", "cuda-nvidia-h100-80gb-hbm3"
ECHO_CPU = Path(CPU) / "smoke" / "echo"

# Computed by hand from tests/fixtures/results/make_fixture.py (RUNS), where final = minimum validation
# loss: e.g. TF-style (4, 4) at lr 0.1 has seeds 0.520 and 0.532 -> mean 0.526, sample sd
# 0.012/sqrt(2) = 0.00849; updates per run = 5 epochs x updates per 200-step row (TF(4) 50, WP(1,4) 200,
# overlapping(2,4) 100, one-step(4) 50, TF(8) 25; full BPTT and the notes' random form 1): full BPTT's
# 5 updates are starved, so the full block has no bold cell; best of block n = 4 is Williams–Peng 0.515;
# random(0.25) at lr 0.1 diverged at update 2*1+1 = 3 (no best-before-divergence in these old records).
EXPECTED_ECHO_CPU_R2RT = """\
# echo: final validation loss by style and learning rate

Device `cpu-amd-epyc-7b13`, sweep `smoke`. Cell: final validation loss (cross-entropy, nats; \
the mean of the last 3 scheduled evaluations), mean ± sd over seeds where several finished; \
columns = learning rate; updates and backprop steps = means per run over the style's ok runs. \
"(5 upd.)" = trained fewer than 100 updates: marked, never bold, never a reference. **bold** = \
best unmarked cell in its block. A diverged cell gives the update of the first divergence and \
the best validation loss reached before it. Secondary table (minimum validation loss): \
r2rt_min.md.

These records predate the fair-comparison protocol (docs/semantics.md, "Fair comparison"): they \
carry no forward/backprop step counts and no test loss (shown as n/a), and their "final" \
validation loss is the last single evaluation, not the mean of the last 3 scheduled ones.

## tanh, hidden 4 (adagrad)

### n = 4

| style | lr 0.1 | lr 0.03 | updates | backprop steps |
| :--- | ---: | ---: | ---: | ---: |
| TF-style (4, 4) | 0.526 ± 0.008 | 0.540 | 250 | n/a |
| Williams–Peng (1, 4) | **0.515** | 0.525 | 1k | n/a |
| Overlapping (2, 4) | 0.518 | 0.530 | 500 | n/a |
| One-step (4, 1) | 0.660 | failed | 250 | n/a |
| Random truncation (pi=0.25) | diverged at upd. 3, best n/a | 0.600 (5 upd.) | 5 | n/a |

### n = 8

| style | lr 0.1 | lr 0.03 | updates | backprop steps |
| :--- | ---: | ---: | ---: | ---: |
| TF-style (8, 8) | **0.465** | 0.480 | 125 | n/a |

### Full BPTT

| style | lr 0.1 | lr 0.03 | updates | backprop steps |
| :--- | ---: | ---: | ---: | ---: |
| Full BPTT (T, T) | 0.460 (5 upd.) | 0.470 (5 upd.) | 5 | n/a |

## tanh, hidden 16 (adagrad)

### n = 8

| style | lr 0.1 | updates | backprop steps |
| :--- | ---: | ---: | ---: |
| TF-style (8, 8) | **0.456** | 125 | n/a |

### Full BPTT

| style | lr 0.1 | updates | backprop steps |
| :--- | ---: | ---: | ---: |
| Full BPTT (T, T) | 0.455 (5 upd.) | 5 | n/a |

Reference lines (cross-entropy, nats):

- optimal: 0.4545 — knows both lags (3 and 8)
- partial: 0.5192 — knows lag 3 only
- no-memory: 0.6616 — knows nothing: marginal Bernoulli(0.625)
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One full report (tables and figures) of the fixture, built once for this module."""
    out = tmp_path_factory.mktemp("report")
    paths = report.build_report(FIXTURE, out, progress=False)
    return out, paths


def _csv_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_r2rt_markdown_matches_hand_computed_table(built):
    out, _ = built
    assert (out / "tables" / ECHO_CPU / "r2rt.md").read_text(encoding="utf-8") == EXPECTED_ECHO_CPU_R2RT


def test_r2rt_csv_values(built):
    out, _ = built
    rows = {
        (r["hidden_size"], r["style_spec"], r["lr"]): r
        for r in _csv_rows(out / "tables" / ECHO_CPU / "r2rt.csv")
    }
    assert len(rows) == 16
    tf = rows[("4", "tf_style(4)", "0.1")]
    assert (tf["runs"], tf["ok"], tf["min_val_loss_mean"], tf["min_val_loss_sd"], tf["best_in_block"]) == (
        "2",
        "2",
        "0.526000",
        "0.008485",
        "0",
    )
    wp = rows[("4", "williams_peng(4)", "0.1")]
    assert (wp["n"], wp["min_val_loss_mean"], wp["min_val_loss_sd"], wp["best_in_block"]) == (
        "4",
        "0.515000",
        "",
        "1",
    )
    assert (wp["final_val_loss_mean"], wp["updates_mean"], wp["backprop_steps_mean"]) == (
        "0.515000",
        "1000.0",
        "",
    )
    rnd = rows[("4", "random(0.25)", "0.1")]
    assert (rnd["text"], rnd["diverged"], rnd["ok"], rnd["min_val_loss_mean"], rnd["diverged_at_update"]) == (
        "diverged at upd. 3, best n/a",
        "1",
        "0",
        "",
        "3",
    )
    assert rows[("4", "one_step(4)", "0.03")]["text"] == "failed"
    full = rows[("4", "full()", "0.1")]  # 5 updates: starved, so never best
    assert (full["n"], full["starved"], full["best_in_block"], full["text"]) == (
        "",
        "1",
        "0",
        "0.460 (5 upd.)",
    )
    gpu = _csv_rows(out / "tables" / GPU / "smoke" / "echo" / "r2rt.csv")
    assert [(r["style_spec"], r["lr"], r["text"]) for r in gpu] == [
        ("tf_style(4)", "0.1", "0.523"),
        ("tf_style(4)", "0.01", "0.600"),
        ("full()", "0.1", "0.461 (5 upd.)"),
    ]


def test_cost_table_ratios_to_tf_style_of_the_block(built):
    out, _ = built
    md = (out / "tables" / ECHO_CPU / "cost.md").read_text(encoding="utf-8")
    # Williams–Peng (1, 4), lr 0.1: 80 s vs TF-style (4, 4)'s mean (20+24)/2 = 22 s; 250 vs (900+1100)/2
    # timesteps/s; peak 120 vs (100+120)/2 MiB; saved 128 vs 128 KiB. Old records: no backprop steps.
    assert (
        "| 4 | Williams–Peng (1, 4) | 0.1 | 1k | n/a | — | 80.000 | 3.64× | 250 | 0.25× | 120 | 1.09× "
        "| 0.125 | 1.00× |" in md
    )
    # full BPTT (5 updates, starved) is marked and is nobody's reference: no "× full" ratio anywhere
    assert (
        "| T | Full BPTT (T, T) | 0.03 | 5 (starved) | n/a | — | 8.000 | — | 2,500 | — | 200 | — | 0.500 | — |"
        in md
    )
    assert "× full" not in md
    assert (
        "Left out (no ok seed): One-step (4, 1) at lr 0.03 (failed); "
        "Random truncation (pi=0.25) at lr 0.1 (diverged at upd. 3, best n/a)."
    ) in md
    assert "Peak memory source: ru_maxrss" in md and "| saved for backward (MiB) |" in md
    assert [tables.sig3(x) for x in (0.000123456, 0.125, 1.5, 110.4, 4321.0, None)] == [
        "0.000123",
        "0.125",
        "1.50",
        "110",
        "4,321",
        "—",
    ]
    rows = {
        (r["hidden_size"], r["style_spec"], r["lr"]): r
        for r in _csv_rows(out / "tables" / ECHO_CPU / "cost.csv")
    }
    wp = rows[("4", "williams_peng(4)", "0.03")]  # 80 s vs TF-style(4)'s 20 s at lr 0.03; 250 vs 1000
    assert (wp["train_wall_s"], wp["train_wall_vs_tf"], wp["timesteps_per_s_vs_tf"], wp["updates"]) == (
        "80.000",
        "4.0000",
        "0.2500",
        "1000.0",
    )
    h16 = rows[("16", "tf_style(8)", "0.1")]
    assert (h16["timesteps_per_s_vs_tf"], h16["saved_for_backward_MiB"], h16["starved"]) == (
        "1.0000",
        "1.000000",
        "0",
    )
    assert rows[("16", "full()", "0.1")]["timesteps_per_s_vs_tf"] == ""  # the whole-sequence block has no TF
    assert ("4", "one_step(4)", "0.03") not in rows and ("4", "random(0.25)", "0.1") not in rows
    gpu = {
        r["style_spec"] + "@" + r["lr"]: r
        for r in _csv_rows(out / "tables" / GPU / "smoke" / "echo" / "cost.csv")
    }
    assert gpu["tf_style(4)@0.1"]["train_wall_vs_tf"] == "1.0000"
    assert gpu["full()@0.1"]["train_wall_vs_tf"] == ""


def test_summary_is_written_from_the_numbers(built):
    out, _ = built
    text = (out / "tables" / ECHO_CPU / "summary.md").read_text(encoding="utf-8")
    assert "17 runs (15 ok, 1 diverged, 1 failed)" in text
    assert "Reference lines: optimal 0.4545, partial 0.5192, no-memory 0.6616." in text
    assert "within 5% of the no-memory−optimal gap (0.0104) above it." in text
    # full BPTT (5 updates) and the notes' random form (5 updates) are starved: named, never compared
    assert (
        "- Not compared (fewer than 100 updates, not trained): Full BPTT (T, T) (5 upd.), "
        "Random truncation (pi=0.25) (5 upd.)."
    ) in text
    assert "Reaches the optimal line" not in text.split("## tanh, hidden 16")[0]
    assert (
        "- Reaches the partial line: TF-style (8, 8) (0.465 at lr 0.1), Williams–Peng (1, 4) (0.515 at lr 0.1), "
        "Overlapping (2, 4) (0.518 at lr 0.1), TF-style (4, 4) (0.526 at lr 0.1)."
    ) in text
    assert "- Stays at the no-memory line: One-step (4, 1) (0.660 at lr 0.1)." in text
    assert (
        "- n = 4: best is Williams–Peng (1, 4) (0.515 at lr 0.1); TF-style (4, 4) reaches 0.526 (+0.011)."
        in text
    )
    assert (
        "- Best non-TF truncated style: Williams–Peng (1, 4) (0.515 at lr 0.1), against TF-style (4, 4)'s 0.526 "
        "at the same lr (-0.011); it costs 3.64× its training wall time, 1.09× its peak memory."
    ) in text
    assert "full BPTT's" not in text
    # hidden 16: 0.456 is within 5% of the gap (0.0104) of the optimal line 0.4545
    assert "- Reaches the optimal line: TF-style (8, 8) (0.456 at lr 0.1)." in text


def test_summary_follows_changed_data():
    runs = store.load_runs(FIXTURE).runs
    echo = runs[(runs["device_tag"] == CPU) & (runs["task"] == "echo") & (runs["hidden_size"] == 4)].copy()
    echo.loc[echo["style_spec"] == "one_step(4)", "final_val_loss"] = 0.40
    text = tables.summary_markdown(echo)
    assert "- Reaches the optimal line: One-step (4, 1) (0.400 at lr 0.1)." in text
    assert (
        "- n = 4: best is One-step (4, 1) (0.400 at lr 0.1); TF-style (4, 4) reaches 0.526 (+0.126)." in text
    )
    assert "Stays at the no-memory line" not in text


def test_report_is_byte_identical_on_a_second_run(built, tmp_path):
    """Same records -> the same bytes in every file, PNGs included (fixed font, no dates)."""
    out, paths = built
    again = report.build_report(FIXTURE, tmp_path, progress=False)
    assert [p.relative_to(tmp_path) for p in again] == [p.relative_to(out) for p in paths]
    for p in again:
        rel = p.relative_to(tmp_path)
        assert p.read_bytes() == (out / rel).read_bytes(), rel
    # a figure built and saved again gives the same SVG bytes too (no dates, fixed hash salt)
    loaded = store.load_runs(FIXTURE)
    group = loaded.runs[(loaded.runs["device_tag"] == CPU) & (loaded.runs["task"] == "echo")]
    curves = loaded.curves[(loaded.curves["device_tag"] == CPU) & (loaded.curves["task"] == "echo")]
    for name in ("a", "b"):
        figures.save(figures.learning_curves_figure(group, curves), tmp_path / name, formats=("svg",))
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_saved_pngs_are_palette_images_of_the_rendered_figure(built):
    """Figures are stored with a 256-colour palette (a third of the RGBA bytes) and still show
    what was drawn: every pixel within a few levels of the full-colour rendering."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from tbptt_bench.report import figure_style

    out, paths = built
    pngs = [p for p in paths if p.suffix == ".png"]
    assert pngs and all(Image.open(io.BytesIO(p.read_bytes())).mode == "P" for p in pngs)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 1], color="#d55e00")
    ax.set_title("a line")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    full = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=int)
    small = figure_style._palette_png(buf.getvalue())
    assert len(small) < len(buf.getvalue())
    pal = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=int)
    assert pal.shape == full.shape and np.abs(pal - full).max() <= 24


def test_unchanged_groups_are_not_rendered_or_rewritten(tmp_path, monkeypatch):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    rendered: list[str] = []
    real = report._render_group

    def counting(results_, out, device, sweep, task, *rest):
        rendered.append(f"{device}/{sweep}/{task}")
        return real(results_, out, device, sweep, task, *rest)

    monkeypatch.setattr(report, "_render_group", counting)
    first = report.build_report(results, progress=False)
    assert sorted(rendered) == [f"{CPU}/smoke/adding", f"{CPU}/smoke/echo", f"{GPU}/smoke/echo"]
    stamps = {p: p.stat().st_mtime_ns for p in first}
    rendered.clear()
    assert report.build_report(results, progress=False) == first
    assert rendered == []  # every hash matched the manifest
    assert {p: p.stat().st_mtime_ns for p in first} == stamps  # and no file was rewritten
    # one run changes: only its group renders again
    (run,) = (results / CPU / "smoke").glob("adding-full-*")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    summary["final_val_loss"] = 0.0123  # the cell (final loss); not checked against the curve
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    report.build_report(results, progress=False)
    assert rendered == [f"{CPU}/smoke/adding"]
    assert "0.012" in (results / "tables" / CPU / "smoke" / "adding" / "r2rt.md").read_text(encoding="utf-8")
    # filters: only the groups asked for render; the others keep their files
    rendered.clear()
    (run / "summary.json").write_text(json.dumps({**summary, "final_val_loss": 0.0456}), encoding="utf-8")
    paths = report.build_report(results, progress=False, tasks=["echo"], figures=True)
    assert rendered == [] and (results / "tables" / CPU / "smoke" / "adding" / "r2rt.md") in paths
    report.build_report(results, progress=False, devices=["cpu-*"], sweeps=["smoke"], tasks=["add*"])
    assert rendered == [f"{CPU}/smoke/adding"]


def _links(md: str) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", md)


def _anchor(heading: str) -> str:
    """GitHub's heading anchor: lowercase, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_and_image_in_report_and_index_resolves(built):
    out, _ = built
    checked = 0
    for page in (out / "REPORT.md", out / "tables" / "index.md"):
        text = page.read_text(encoding="utf-8")
        anchors = {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
        for target in _links(text):
            checked += 1
            if target.startswith("#"):
                assert target[1:] in anchors, (page.name, target)
            else:
                assert (page.parent / target).is_file(), (page.name, target)
    assert checked > 30
    report_md = (out / "REPORT.md").read_text(encoding="utf-8")
    # per task: summary sentences, table links and the three figures; then the device comparison
    for needle in (
        "## echo",
        "Reaches the optimal line: TF-style (8, 8) (0.456 at lr 0.1).",
        f"[r2rt](tables/{CPU}/smoke/echo/r2rt.md)",
        f"(figures/{CPU}/smoke/echo/loss_vs_n.png)",
        f"(figures/{CPU}/smoke/echo/curves.png)",
        f"(figures/{CPU}/smoke/echo/quality_vs_cost.png)",
        "## Hardware comparison",
        "| echo | 14.14× (2) |",
        "(compare/compare.png)",
    ):
        assert needle in report_md, needle
    assert report_md.index("## adding") < report_md.index("## echo") < report_md.index("## Hardware")


def test_returns_every_file_and_index_lists_them(built):
    out, paths = built
    assert all(p.is_file() for p in paths) and len(paths) == len(set(paths))
    assert paths[0] == out / "REPORT.md"
    rel = sorted(p.relative_to(out).as_posix() for p in paths)
    groups = (f"{CPU}/smoke/adding", f"{CPU}/smoke/echo", f"{GPU}/smoke/echo")
    expected = sorted(
        [
            f"tables/{g}/{n}"
            for g in groups
            for n in ("r2rt.md", "r2rt.csv", "r2rt_min.md", "cost.md", "cost.csv", "summary.md")
        ]
        + [
            f"tables/{g}/{n}"
            for g in (f"{CPU}/adding", f"{CPU}/echo", f"{GPU}/echo")
            for n in ("fair.md", "fair.csv")
        ]
        + [f"figures/{g}/{n}.png" for g in groups for n in ("loss_vs_n", "curves", "quality_vs_cost")]
        + [f"figures/{n}.{e}" for n in ("truncation_patterns", "gradient_norms") for e in ("png", "svg")]
        + [f"compare/{n}" for n in ("compare.md", "compare.csv", "benchmarks.csv", "compare.png")]
        + ["REPORT.md", "tables/index.md", "tables/manifest.json", "tables/reproductions.md"]
    )
    assert rel == expected
    index = (out / "tables" / "index.md").read_text(encoding="utf-8")
    for p in paths:
        if p.name not in ("index.md", "manifest.json", "REPORT.md"):
            assert p.name in index
    assert "from 22 complete runs (2 run folders skipped)" in index


def test_skipped_folders_warn_once_each_and_are_left_out(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tbptt_bench.report.build"):
        report.build_report(FIXTURE, tmp_path, figures=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "tbptt_bench.report.build"]
    assert len(lines) == 2
    assert lines[0].startswith(f"skipped run folder {CPU}/smoke/echo-tf_style-4-tanh4-lr0.3-s0-")
    assert "summary.json is unreadable" in lines[0]
    assert lines[1].startswith(f"skipped run folder {CPU}/smoke/echo-williams_peng-4-tanh4-lr0.3-s0-")
    assert lines[1].endswith("incomplete: no summary.json")
    index = (tmp_path / "tables" / "index.md").read_text(encoding="utf-8")
    assert "## Skipped run folders" in index and "incomplete: no summary.json" in index
    assert "lr 0.3" not in (tmp_path / "tables" / ECHO_CPU / "r2rt.md").read_text(encoding="utf-8")


def test_stale_files_from_a_previous_report_are_removed(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    report.build_report(results, figures=False)
    assert (results / "tables" / CPU / "smoke" / "adding" / "r2rt.md").is_file()
    (results / "tables" / "notes.md").write_text("mine")  # not ours: must survive
    for run in (results / CPU / "smoke").glob("adding-*"):
        shutil.rmtree(run)
    report.build_report(results, figures=False)
    assert not (results / "tables" / CPU / "smoke" / "adding").exists()
    assert (results / "tables" / ECHO_CPU / "r2rt.md").is_file()
    assert (results / "tables" / "notes.md").read_text() == "mine"


def test_missing_results_folder_is_a_clear_error(tmp_path):
    with pytest.raises(report.ReportError, match="results_dir=.*nope.* is not a folder"):
        report.build_report(tmp_path / "nope")


# -- figures ------------------------------------------------------------------------------------
def test_learning_curve_and_quality_figures_are_labelled():
    loaded = store.load_runs(FIXTURE)
    group = loaded.runs[(loaded.runs["device_tag"] == CPU) & (loaded.runs["task"] == "echo")]
    curves = loaded.curves[(loaded.curves["device_tag"] == CPU) & (loaded.curves["task"] == "echo")]
    fig = figures.learning_curves_figure(group, curves)
    # two model groups (hidden 4, 16) x (timesteps, updates, wall time): the fixture's records
    # predate backprop counting, so the backprop-steps axis is left out
    assert len(fig.axes) == 6
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "timesteps processed",
        "updates made (symlog)",
        "training wall time (s, mean over seeds)",
    ] * 2
    assert [ax.get_xscale() for ax in fig.axes[:3]] == ["linear", "symlog", "linear"]
    assert all(ax.get_ylabel() == "validation loss (cross-entropy, nats)" for ax in fig.axes)
    assert "echo" in fig._suptitle.get_text() and CPU in fig._suptitle.get_text()
    # dashed reference lines at the task's optimal / partial / no-memory values
    dashed = sorted(
        {round(line.get_ydata()[0], 7) for line in fig.axes[0].lines if line.get_linestyle() == "--"}
    )
    assert dashed == [0.4544544, 0.5191667, 0.6615632]
    # the hidden-4 panel: one line per style at its best lr (seeds averaged), a band where 2 seeds
    styled = [line for line in fig.axes[0].lines if line.get_linestyle() != "--" and line.get_marker() == "o"]
    assert len(styled) == 7
    assert len(fig.axes[0].collections) == 1  # TF-style (4, 4) has two seeds: its min-max band
    qc = figures.quality_cost_figure(group)
    ax = qc.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == (
        "training wall time (s)",
        "final validation loss (cross-entropy, nats)",
    )
    assert "echo" in ax.get_title() and CPU in ax.get_title()


def test_loss_vs_n_points_are_best_lr_means_with_seed_sd():
    loaded = store.load_runs(FIXTURE)
    group = loaded.runs[(loaded.runs["device_tag"] == CPU) & (loaded.runs["task"] == "echo")]
    fig = figures.loss_vs_n_figure(group)
    ax = fig.axes[0]  # tanh, hidden 4
    assert ax.get_title() == "tanh, hidden 4 (adagrad)" and ax.get_xscale() == "log"
    by_label = {c.get_label(): c for c in ax.containers}
    tf = by_label["TF-style (n, n)"].lines[0]
    assert [round(y, 4) for y in tf.get_ydata()] == [0.526, 0.465]  # n = 4 (2 seeds), n = 8
    (bars,) = by_label["TF-style (n, n)"].lines[2]
    seg = bars.get_segments()[0]
    assert abs((seg[1][1] - seg[0][1]) / 2 - 0.0084853) < 1e-6  # ± sample sd of 0.520, 0.532
    assert [round(y, 3) for y in by_label["one-step (n, 1)"].lines[0].get_ydata()] == [0.66]
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata()) == 2]
    assert any(abs(line.get_ydata()[0] - 0.46) < 1e-9 for line in solid)  # full BPTT's level
    dashed = {round(line.get_ydata()[0], 4) for line in ax.lines if line.get_linestyle() == "--"}
    assert dashed == {0.4545, 0.5192, 0.6616}
    lo, hi = ax.get_ylim()
    assert lo < 0.4545 and hi > 0.6616


def test_family_colours_never_repeat_and_shade_by_n():
    loaded = store.load_runs(FIXTURE)
    looks = figures.family_styles(loaded.runs[loaded.runs["task"] == "echo"])
    by_family: dict[str, list] = {}
    for look in looks.values():
        by_family.setdefault(look["family"], []).append(look)
    # each family's full-strength colour is its own; no colour is shared across families
    solid = {f: [lk["color"] for lk in v if lk["ls"] == "-"] for f, v in by_family.items()}
    assert all(len(c) == 1 for c in solid.values())
    colours = [c for f, v in by_family.items() for c in {lk["color"] for lk in v}]
    assert len(colours) == len(set(colours))
    tf4, tf8 = looks["TF-style (4, 4)"], looks["TF-style (8, 8)"]
    assert (
        tf8["ls"] == "-" and tf4["ls"] != "-" and sum(tf4["color"]) > sum(tf8["color"])
    )  # smaller n lighter
    assert all(lk["ls"] != "--" for lk in looks.values())  # dashed is kept for reference lines


def test_informative_ylim_drops_far_outliers_and_keeps_references():
    lo, hi, clipped = figures.informative_ylim([0.5, 0.52, 0.55, 0.6, 9.0] + [0.51] * 20, [0.45, 0.66])
    assert clipped and lo < 0.45 and 0.66 < hi < 1.0
    lo, hi, clipped = figures.informative_ylim([0.5, 0.6, 0.62], [0.45, 0.6])
    assert not clipped and hi >= 0.62


def test_log_y_only_when_losses_span_more_than_two_decades():
    assert not figures.log_y_wanted([0.45, 0.52, 0.66], [0.4545])
    assert figures.log_y_wanted([0.3, 2.0, 6500.0], [0.21, 17.1])  # influence's truncated styles
    assert not figures.log_y_wanted([0.0, 0.0, 5.0], [0.2])  # zeros are not a decade
    from tbptt_bench.report.figure_style import _new_figure, _style, set_loss_axis

    with _style():
        _, axes = _new_figure(1, 2, 3.0, 2.0)
        hi, clipped, log = set_loss_axis(axes[0][0], [0.3, 2.0, 6500.0], [0.21, 17.1])
        lo, top = axes[0][0].get_ylim()
        assert log and not clipped and axes[0][0].get_yscale() == "log" and lo < 0.21 and top > 6500
        hi, clipped, log = set_loss_axis(axes[0][1], [0.5, 0.52, 0.55, 0.6, 9.0] + [0.51] * 20, [0.45, 0.66])
        assert not log and clipped and hi < 1.0 and axes[0][1].get_yscale() == "linear"


def test_reference_labels_never_overprint():
    from tbptt_bench.report.figure_style import _new_figure, _ref_lines, _style

    with _style():
        fig, axes = _new_figure(1, 1, 4.0, 3.0)
        ax = axes[0][0]
        ax.set_ylim(0.0, 100.0)
        _ref_lines(ax, [("optimal", 0.17, None), ("no-memory", 1.7, None), ("chance", 60.0, None)])
        texts = {t.get_text(): t for t in ax.texts}
        # 0.17 and 1.7 are 1.5% of the axis apart: one label under its line, one above
        assert set(texts) == {"optimal 0.17", "no-memory 1.7", "chance 60"}
        assert texts["optimal 0.17"].get_va() == "top" and texts["no-memory 1.7"].get_va() == "bottom"
        assert texts["chance 60"].get_va() == "bottom"
        ax.set_yscale("log")  # the same lines a decade apart on a log axis: each its own label
        ax.set_ylim(0.1, 100.0)
        for t in list(ax.texts):
            t.remove()
        _ref_lines(ax, [("optimal", 0.17, None), ("no-memory", 1.7, None), ("zero", 0.0, None)])
        assert {t.get_va() for t in ax.texts} == {"bottom"}
        assert [t.get_text() for t in ax.texts] == ["optimal 0.17", "no-memory 1.7"]  # 0: not on a log axis
        ax.set_yscale("linear")
        ax.set_ylim(0.0, 100.0)
        for t in list(ax.texts):
            t.remove()
        _ref_lines(ax, [("a", 1.0, None), ("b", 2.0, None), ("c", 3.0, None)])
        assert [t.get_text() for t in ax.texts] == ["c 3 · b 2 · a 1"]  # three close: one label


def test_saved_svg_carries_axis_labels(built):
    out, _ = built
    svg = (out / "figures" / "gradient_norms.svg").read_text(encoding="utf-8")
    assert "distance i − t from the loss (steps)" in svg and "<dc:date>" not in svg
    assert (out / "figures" / ECHO_CPU / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_truncation_patterns_are_drawn_from_the_styles_schedules():
    T, k, pi, seed = 12, 4, 0.5, 0
    fig = figures.truncation_patterns_figure(T=T, k=k, pi=pi, seed=seed)
    expected = [
        styles.full(),
        styles.tf_style(k),
        styles.williams_peng(k),
        styles.overlapping(2, k),
        styles.one_step(k),
    ]
    depths = [s.depths(T) for s in expected] + [styles.random(pi).sample_depths(T, random.Random(seed))]
    panels = fig.axes[:6]
    for ax, style, d in zip(panels, expected + [styles.random(pi)], depths):
        grid = np.asarray(ax.images[0].get_array())
        assert grid.shape == (T, T)
        assert (grid > 0).sum(axis=1).tolist() == d, style.label  # row s shades exactly d_s states
        for s in range(1, T + 1):  # ... namely h_(s-d_s+1) .. h_s
            assert np.flatnonzero(grid[s - 1]).tolist() == list(range(s - d[s - 1], s))
        stars = ax.collections[0].get_offsets()
        assert [int(x) for x, _ in stars] == style.update_times(T)
        assert style.label in ax.get_title()
        assert (ax.get_xlabel(), ax.get_ylabel()) == (
            "hidden state h_j reached by the gradient",
            "loss at step s",
        )
    assert depths[3] == [
        1,
        2,
        3,
        4,
        3,
        4,
        3,
        4,
        3,
        4,
        3,
        4,
    ]  # overlapping(2, 4): k2-k1+1..k2 after the first window
    assert depths[4].count(0) == 9  # one-step(4, 1): all but each update's last loss reach the readout only


def test_linear_rnn_gradient_norms_follow_the_eigenvalue_argument():
    d = np.arange(31)
    plain = figures.linear_rnn_gradient_norms((0.5, 0.9, 1.0, 1.1), max_distance=30)
    clipped = figures.linear_rnn_gradient_norms((0.5, 0.9, 1.0, 1.1), max_distance=30, clip=1.0)
    for rho in (0.5, 0.9, 1.0, 1.1):
        np.testing.assert_allclose(plain[rho], rho**d, rtol=1e-9)  # ||(rho Q)^T^d v|| = rho^d ||v||
        total = np.sqrt(np.sum(rho ** (2 * d)))
        np.testing.assert_allclose(clipped[rho], rho**d * min(1.0, 1.0 / total), rtol=1e-9)
        assert np.sqrt(np.sum(clipped[rho] ** 2)) <= 1.0 + 1e-12
    # the closed form against an explicit product of the same matrices
    rng = np.random.default_rng(0)
    q, r = np.linalg.qr(rng.standard_normal((16, 16)))
    q = q * np.sign(np.diag(r))
    w_qh = rng.standard_normal((1, 16))
    v = w_qh.T / np.linalg.norm(w_qh)
    assert np.linalg.norm(np.linalg.matrix_power((1.1 * q).T, 7) @ v) == pytest.approx(
        plain[1.1][7], rel=1e-9
    )
    fig = figures.gradient_norms_figure(max_distance=30)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log"]
    assert all(ax.get_ylabel() == "||dL/dh_t|| (log scale)" for ax in fig.axes)
    assert [len(ax.lines) for ax in fig.axes] == [4, 4]


def test_report_modules_never_import_torch(tmp_path):
    code = (
        "import sys\n"
        "import tbptt_bench.report.build, tbptt_bench.report.compare, tbptt_bench.report.tables, tbptt_bench.runs.store\n"
        "import tbptt_bench.report.figures as F\n"
        f"tbptt_bench.report.build.build_report({str(FIXTURE)!r}, {str(tmp_path)!r}, figures=False)\n"
        "F.gradient_norms_figure(max_distance=5)\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "import matplotlib\n"
        "print('ok', 'matplotlib.pyplot' not in sys.modules or not __import__('matplotlib.pyplot').pyplot.get_fignums())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok True"


def test_groups_without_any_ok_run_still_report(tmp_path):
    """A task whose runs all failed or diverged: tables say so, the figures still draw."""
    for pattern in ("echo-one_step-4-tanh4-lr0.03-*", "echo-random-0.25-tanh4-lr0.1-*"):
        (src,) = (FIXTURE / CPU / "smoke").glob(pattern)
        shutil.copytree(src, tmp_path / "results" / CPU / "smoke" / src.name)
    report.build_report(tmp_path / "results", figures=False)
    md = (tmp_path / "results" / "tables" / ECHO_CPU / "r2rt.md").read_text(encoding="utf-8")
    assert "| One-step (4, 1) | — | failed | n/a | n/a |" in md
    assert "| Random truncation (pi=0.25) | diverged at upd. 3, best n/a | — | n/a | n/a |" in md
    summary = (tmp_path / "results" / "tables" / ECHO_CPU / "summary.md").read_text(encoding="utf-8")
    assert "2 runs (0 ok, 1 diverged, 1 failed)" in summary and "No configuration finished ok." in summary
    cost = (tmp_path / "results" / "tables" / ECHO_CPU / "cost.md").read_text(encoding="utf-8")
    assert (
        "Left out (no ok seed): One-step (4, 1) at lr 0.03 (failed); Random truncation (pi=0.25) at lr 0.1 "
        "(diverged at upd. 3, best n/a)" in cost
    )
    loaded = store.load_runs(tmp_path / "results")
    fig = figures.learning_curves_figure(loaded.runs, loaded.curves)
    assert [len(ax.lines) for ax in fig.axes] == [3, 3, 3]  # only the three dashed reference lines
    assert figures.quality_cost_figure(loaded.runs).axes[0].get_xlabel() == "training wall time (s)"


def test_loss_vs_n_draws_styles_without_n_as_levels():
    # adaptive TBPTT chooses its window while training: no n, so it is a dotted level, not missing
    loaded = store.load_runs(FIXTURE)
    group = loaded.runs[(loaded.runs["device_tag"] == CPU) & (loaded.runs["task"] == "echo")].copy()
    one_step = group["style_preset"] == "one_step"
    assert one_step.any()
    group.loc[one_step, ["style_preset", "style_n", "style_spec", "style_label"]] = [
        "adaptive",
        np.nan,
        "adaptive(delta=0.1,K<=64)",
        "Adaptive TBPTT (delta=0.1, K<=64)",
    ]
    fig = figures.loss_vs_n_figure(group)
    ax = fig.axes[0]
    dotted = [line for line in ax.lines if line.get_linestyle() == ":"]
    assert [round(line.get_ydata()[0], 3) for line in dotted] == [0.66]  # one-step's n = 8 mean
    assert "adaptive TBPTT (no fixed n; best lr)" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_hardware_comparison_is_reused_until_its_inputs_change(tmp_path, monkeypatch):
    # compare reads and validates every record again: skipped while nothing it reads changed
    from tbptt_bench.report import compare as compare_mod

    results = tmp_path / "results"
    shutil.copytree(FIXTURE, results)
    calls: list[int] = []
    real = compare_mod.compare

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(compare_mod, "compare", counting)
    report.build_report(results, progress=False)
    page = (results / "REPORT.md").read_text(encoding="utf-8")
    assert len(calls) == 1 and "## Hardware comparison" in page and "compare.md" in page
    report.build_report(results, progress=False)
    assert len(calls) == 1 and (results / "REPORT.md").read_text(encoding="utf-8") == page
    (bench,) = sorted((results / "benchmarks").rglob("*.json"))[:1]
    bench.write_text(bench.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # new bytes, same data
    report.build_report(results, progress=False)
    assert len(calls) == 2
    (results / "compare" / "compare.md").unlink()  # an output gone: compared again
    report.build_report(results, progress=False)
    assert len(calls) == 3 and (results / "compare" / "compare.md").is_file()
