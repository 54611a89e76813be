"""Issue #12's report side, pinned by hand on tiny synthetic frames: final-loss cells, starved runs,
equal-compute interpolation, the paired bootstrap interval, learning rate chosen per style on
validation, missing-sweep lines, and old records (n/a). Torch-free."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tbptt_bench.report import build, fair, stats, tables
from tbptt_bench.runs import store
from tbptt_bench.styles import parse_style

STYLES = {
    "tf4": ("tf_style", "TF-style (4, 4)", "tf_style(4)", 4, 4, 4),
    "wp4": ("williams_peng", "Williams–Peng (1, 4)", "williams_peng(4)", 4, 1, 4),
    "full": ("full", "Full BPTT (T, T)", "full()", None, None, None),
}


def rec(style: str, lr: float, seed: int, final: float | None, **kw) -> dict:
    """One runs-frame row with every column the report reads; ``kw`` overrides."""
    preset, label, spec, n, k1, k2 = STYLES[style]
    r = {
        "run_id": f"{style}-lr{lr}-s{seed}-{kw.get('sweep', 'full')}",
        "device_tag": "cpu-x",
        "sweep": "full",
        "task": "echo",
        "loss_kind": "ce",
        "style_preset": preset,
        "style_label": label,
        "style_spec": spec,
        "style_n": n,
        "k1": k1,
        "k2": k2,
        "pi": None,
        "cell": "tanh",
        "hidden_size": 4,
        "optimizer": "adagrad",
        "lr": lr,
        "clip": None,
        "seed": seed,
        "status": "ok",
        "min_val_loss": None if final is None else final - 0.01,
        "final_val_loss": final,
        "train_wall_s": 10.0,
        "timesteps_per_s": 100.0,
        "peak_mem_bytes": 1024 * 1024,
        "peak_mem_source": "ru_maxrss",
        "saved_for_backward_peak_bytes": 1024,
        "updates": 1000,
        "timesteps": 10000,
        "backprop_steps": 5000,
        "test_loss": None if final is None else final + 0.02,
        "best_val_before_divergence": None,
        "diverged_at_update": None,
        "ref_optimal": 0.45,
        "ref_partial": None,
        "ref_no_memory": 0.66,
        "ref_optimal_note": None,
        "ref_partial_note": None,
        "ref_no_memory_note": None,
    }
    r.update(kw)
    return r


def frame(rows: list[dict]) -> pd.DataFrame:
    """Integer columns nullable, as ``store.load_runs`` gives them."""
    df = pd.DataFrame(rows)
    for col in (
        "style_n",
        "k1",
        "k2",
        "seed",
        "updates",
        "timesteps",
        "backprop_steps",
        "diverged_at_update",
    ):
        df[col] = df[col].astype("Int64")
    return df


def block(md: str, heading: str) -> str:
    """The Markdown from ``heading`` to the next heading of any level."""
    rest = md.split(heading, 1)[1]
    return rest.split("\n#", 1)[0]


# -- final-loss cells ----------------------------------------------------------------------------
def test_r2rt_cell_is_the_final_loss_with_the_minimum_as_secondary():
    runs = frame(
        [
            rec("tf4", 0.1, 0, 0.50, min_val_loss=0.30),
            rec("tf4", 0.1, 1, 0.52, min_val_loss=0.32),
            rec("wp4", 0.1, 0, 0.49, min_val_loss=0.40),
        ]
    )
    md, csv_body = tables.r2rt_tables(runs)
    # final: mean(0.50, 0.52) = 0.510, sd = 0.02/sqrt(2) = 0.01414; WP 0.49 is the block's best
    assert "| TF-style (4, 4) | 0.510 ± 0.014 | 1k | 5k |" in md
    assert "| Williams–Peng (1, 4) | **0.490** | 1k | 5k |" in md
    # the minimum table ranks the other way round: TF 0.310 < WP 0.400
    mins = tables.r2rt_min_tables(runs)
    assert "| TF-style (4, 4) | **0.310 ± 0.014** | 1k | 5k |" in mins
    assert "| Williams–Peng (1, 4) | 0.400 | 1k | 5k |" in mins
    row = next(r for r in csv_body.splitlines()[1:] if "williams_peng(4)" in r)
    assert ",0.490000,,0.040000,0.400000," in row  # final, sd (one seed), excess 0.49 − 0.45, minimum
    assert "predate" not in md


def test_diverged_cell_gives_best_before_divergence_and_first_update():
    runs = frame(
        [
            rec(
                "tf4",
                0.3,
                0,
                None,
                status="diverged",
                diverged_at_update=340,
                best_val_before_divergence=0.61,
            ),
            rec(
                "tf4",
                0.3,
                1,
                None,
                status="diverged",
                diverged_at_update=120,
                best_val_before_divergence=0.65,
            ),
        ]
    )
    c = tables.model_groups(runs)[0].cells[0]
    assert tables.cell_text(c) == "diverged at upd. 120, best 0.610"


# -- starved runs ----------------------------------------------------------------------------------
def starved_frame() -> pd.DataFrame:
    return frame(
        [
            rec("tf4", 0.1, 0, 0.52),
            rec("tf4", 0.1, 1, 0.54),
            rec("wp4", 0.1, 0, 0.50),
            rec("wp4", 0.1, 1, 0.50),
            rec("full", 0.1, 0, 0.40, updates=5),  # lower than everyone, but 5 updates: not trained
            rec("full", 0.1, 1, 0.42, updates=5),
        ]
    )


def test_starved_cell_is_marked_and_never_bold():
    md, csv_body = tables.r2rt_tables(starved_frame())
    assert "| Full BPTT (T, T) | 0.410 ± 0.014 (5 upd.) | 5 | 5k |" in md
    assert "**0.410" not in md and "| Williams–Peng (1, 4) | **0.500 ± 0.000** |" in md
    full_rows = [r for r in csv_body.splitlines() if "full()" in r]
    assert full_rows and all(r.endswith(",0") for r in full_rows)  # best_in_block = 0


def test_summary_and_cost_never_compare_against_a_starved_run():
    runs = starved_frame()
    text = tables.summary_markdown(runs)
    assert "- Not compared (fewer than 100 updates, not trained): Full BPTT (T, T) (5 upd.)." in text
    assert "Full BPTT" not in text.split("Not compared", 1)[1].split("\n", 1)[1]
    assert "equal data" in text
    cost, _ = tables.cost_tables(runs)
    assert "× full" not in cost
    # TF-style(4) is starved here: no ratio against it, and the fair tables give no differences
    runs.loc[runs["style_spec"] == "tf_style(4)", "updates"] = 50
    _, cost_csv = tables.cost_tables(runs)
    wp = next(r for r in cost_csv.splitlines() if "williams_peng(4)" in r)
    assert wp.endswith(
        ",100.000,,1.000000,,0.000977,"
    )  # values shown (memory in MiB), every ratio to the starved TF-style empty
    md, _ = fair.fair_tables(runs)
    assert "TF-style (4, 4) trained only 50 updates (< 100): not a reference, no paired differences." in md


# -- learning rate per style, paired differences -------------------------------------------------
def test_lr_is_chosen_per_style_on_validation_and_test_is_reported():
    runs = frame(
        [
            # lr 0.1: val 0.50, test 0.60; lr 0.03: val 0.52, test 0.40 -> chosen on val: 0.1
            rec("wp4", 0.1, 0, 0.50, test_loss=0.60),
            rec("wp4", 0.03, 0, 0.52, test_loss=0.40),
            # lr 0.3 is lower on val but one of its seeds diverged: the clean lr 0.1 wins
            rec("tf4", 0.3, 0, 0.40, test_loss=0.45),
            rec("tf4", 0.3, 1, None, status="diverged", diverged_at_update=9),
            rec("tf4", 0.1, 0, 0.55, test_loss=0.57),
            rec("tf4", 0.1, 1, 0.56, test_loss=0.59),
        ]
    )
    g = tables.model_groups(runs)[0]
    rows = fair.block_rows(g.cells, lambda s: s.final, lambda s: s.test, 4)
    chosen = {r.cell.style_spec: (r.cell.lr, r.metric) for r in rows}
    assert chosen == {"tf_style(4)": (0.1, {0: 0.57, 1: 0.59}), "williams_peng(4)": (0.1, {0: 0.60})}
    wp = next(r for r in rows if r.cell.style_spec == "williams_peng(4)")
    assert wp.delta == pytest.approx({0: 0.60 - 0.57})  # paired on the seed both have
    md, _ = fair.fair_tables(runs)
    assert "| Williams–Peng (1, 4) | 0.1 | 1/1 | 1k | 5k | 0.500 | 0.600 | +0.150 | +0.030 (1 seed) |" in md
    assert (
        "| TF-style (4, 4) | 0.1 | 2/2 | 1k | 5k | 0.555 ± 0.007 | 0.580 ± 0.014 | +0.130 | (reference) |"
        in md
    )


def test_bootstrap_interval_matches_a_hand_computation():
    diffs = [0.1, -0.2, 0.4]
    rng = np.random.default_rng(0)  # the documented seed and resample count
    idx = rng.integers(0, 3, size=(2000, 3))
    means = sorted(sum(diffs[i] for i in row) / 3 for row in idx.tolist())

    def q(p: float) -> float:  # linear interpolation between order statistics (numpy's default)
        pos = p * (len(means) - 1)
        lo = int(pos)
        return means[lo] + (pos - lo) * (means[lo + 1] - means[lo])

    assert stats.bootstrap_ci(diffs) == pytest.approx((q(0.025), q(0.975)), abs=1e-12)
    # two seeds: resample means are 0, 0.5 or 1, each end has probability 1/4 > 2.5%
    assert stats.bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert stats.bootstrap_ci([0.3]) is None
    text, mean, ci = fair.delta_text({0: 0.1, 1: -0.2, 2: 0.4}, starved=False)
    assert mean == pytest.approx(0.1) and ci == stats.bootstrap_ci(diffs)
    assert text == f"+0.100 [{ci[0]:+.3f}, {ci[1]:+.3f}]"


# -- equal compute ---------------------------------------------------------------------------------
def test_interpolation_by_hand():
    assert stats.interpolate([0, 100, 200], [1.0, 0.6, 0.5], 50) == pytest.approx(0.8)
    assert stats.interpolate([0, 100, 200], [1.0, 0.6, 0.5], 200) == 0.5
    assert stats.interpolate([0, 100, 200], [1.0, 0.6, 0.5], 201) is None
    # a plateau (no backprop between two evaluations): the later, more-trained point is the left end
    assert stats.interpolate([0, 100, 100, 200], [1.0, 0.9, 0.7, 0.5], 150) == pytest.approx(0.6)
    assert stats.interpolate([0, 100, 200], [1.0, float("nan"), 0.5], 150) is None  # diverged at 100


def compute_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = frame(
        [
            rec("tf4", 0.1, 0, 0.50, backprop_steps=400),
            rec("tf4", 0.1, 1, 0.52, backprop_steps=400),
            rec("wp4", 0.1, 0, 0.45, backprop_steps=1600),
            rec("wp4", 0.1, 1, 0.47, backprop_steps=1600),
        ]
    )
    curves = []
    for r in runs.to_dict("records"):
        final_bp, off = r["backprop_steps"], r["seed"] * 0.02
        # tf: 1.0 -> 0.5 over bp 0..400; wp: 1.0 at 0, 0.8 at 400, ..., 0.45 at 1600
        losses = [1.0, 0.7, 0.6, 0.55, 0.5] if final_bp == 400 else [1.0, 0.8, 0.6, 0.5, 0.45]
        for i, loss in enumerate(losses):
            curves.append(
                {
                    "run_id": r["run_id"],
                    "device_tag": "cpu-x",
                    "sweep": "full",
                    "task": "echo",
                    "split": "val",
                    "update": i * 10,
                    "timesteps": i * 100,
                    "backprop_steps": final_bp * i // 4,
                    "loss": loss + off,
                }
            )
    return runs, pd.DataFrame(curves)


def test_equal_compute_reads_each_curve_at_the_smallest_final_budget():
    runs, curves = compute_frames()
    md, csv_body = fair.fair_tables(runs, curves)
    section = md.split("## 4. Equal compute", 1)[1]
    assert (
        "Budget: 400 backprop steps (the smallest final count among the block's trained styles: TF-style (4, 4))."
        in section
    )
    # at 400: TF ends there (0.50, 0.52); WP's second evaluation is at 400 (0.80, 0.82); paired Δ 0.30
    assert "| TF-style (4, 4) | 0.1 | 2/2 | 1k | 400 | 0.510 ± 0.014 | +0.060 | (reference) |" in section
    assert (
        "| Williams–Peng (1, 4) | 0.1 | 2/2 | 1k | 1.6k | 0.810 ± 0.014 | +0.360 | +0.300 [+0.300, +0.300] |"
        in section
    )
    # a stated budget between evaluations: WP at 600 = 0.8 + (600-400)/400 * (0.6-0.8) = 0.7 (seed 0)
    md, _ = fair.fair_tables(runs, curves, compute_budget=600)
    assert "Budget: 600 backprop steps (stated)." in md
    assert "| Williams–Peng (1, 4) | 0.1 | 2/2 | 1k | 1.6k | 0.710 ± 0.014 |" in md
    compute_rows = [r for r in csv_body.splitlines() if r.startswith("compute,")]
    assert len(compute_rows) == 2 and all(r.endswith(",400.0") for r in compute_rows)


# -- missing sweeps and old records -----------------------------------------------------------------
def test_missing_sweeps_get_one_line_each():
    runs, curves = compute_frames()
    md, _ = fair.fair_tables(runs, curves)
    assert "Not available: no `full-updates` sweep (budget mode \"updates\") for echo on `cpu-x`." in md
    assert "Not available: no `full-episodic` sweep (budget mode \"episodic\") for echo on `cpu-x`." in md
    assert md.count("## ") == 4 + md.count("### ")


def test_old_records_show_na_and_say_they_predate_the_protocol():
    old = starved_frame().drop(columns=["backprop_steps", "test_loss", "best_val_before_divergence"])
    old = pd.concat(
        [
            old,
            frame([rec("wp4", 0.3, 0, None, status="diverged", diverged_at_update=7)]).drop(
                columns=["backprop_steps", "test_loss", "best_val_before_divergence"]
            ),
        ]
    )
    md, _ = tables.r2rt_tables(old)
    assert "These records predate the fair-comparison protocol" in md
    assert "| Williams–Peng (1, 4) | diverged at upd. 7, best n/a | **0.500 ± 0.000** | 1k | n/a |" in md
    cost, _ = tables.cost_tables(old)
    assert "| 4 | TF-style (4, 4) | 0.1 | 1k | n/a | — |" in cost
    fmd, _ = fair.fair_tables(old, pd.DataFrame({"run_id": [], "sweep": [], "split": []}))
    assert "reported: final validation loss (no test loss in these records)" in fmd
    assert "n/a: the curves of sweep `full` carry no backprop_steps" in fmd
    assert "These records predate" in tables.summary_markdown(old)


# -- end to end: new-protocol records on disk ---------------------------------------------------
ENV = {k: None for k in store.ENV_KEYS} | {
    "device_name": "CPU X",
    "torch_version": "2.13.0",
    "git_commit": "abc",
}


def write(
    root, sweep: str, spec: str, lr: float, seed: int, final: float, row_len: int, updates: int
) -> None:
    config = {
        "task": "echo",
        "task_params": {},
        "loss": "ce",
        "references": {"optimal": 0.45, "no_memory": 0.66},
        "style": parse_style(spec).to_dict(),
        "model": {"cell": "tanh", "hidden_size": 4},
        "optimizer": {"name": "adagrad", "lr": lr},
        "clip": None,
        "budget": {"mode": "updates" if sweep == "full-updates" else "data", "row_len": row_len, "batch": 2},
        "seed": seed,
        "sweep": sweep,
        "device": "cpu",
    }
    bp = updates * 8
    val = {0: 0.7, updates // 2: final + 0.05, updates: final}

    def row(split: str, u: int, loss: float) -> dict:
        return {
            "split": split,
            "update": u,
            "timesteps": u * 4,
            "backprop_steps": u * 8,
            "train_wall_s": 0.1 * u,
            "loss": loss,
        }

    # a valid record (store.validate_record): one train row per update, validations in between
    curve = [row("val", 0, val[0])]
    for u in range(1, updates + 1):
        curve.append(row("train", u, final))
        if u in val:
            curve.append(row("val", u, val[u]))
    summary = {k: None for k in store.SUMMARY_KEYS} | {
        "status": "ok",
        "min_val_loss": final,
        "final_val_loss": final,
        "train_wall_s": 1.0,
        "eval_wall_s": 0.1,
        "warmup_updates": 0,
        "clip_rate": 0.0,
        "engine_path": "manual-elman",
        "updates": updates,
        "timesteps": updates * 4,
        "timesteps_per_s": 100.0,
        "peak_mem_bytes": 1024,
        "peak_mem_source": "ru_maxrss",
        "forward_steps": updates * 4,
        "backprop_steps": bp,
        "test_loss": final + 0.01,
    }
    store.write_run(root / "cpu-x" / sweep / store.expected_run_id(config), config, ENV, curve, summary)


def test_report_writes_fair_tables_from_new_protocol_records(tmp_path):
    root = tmp_path / "results"
    for seed, off in ((0, 0.0), (1, 0.01)):
        write(root, "full", "tf_style(4)", 0.1, seed, 0.52 + off, 200, 500)
        write(root, "full", "williams_peng(4)", 0.1, seed, 0.50 + off, 200, 2000)
        write(root, "full", "full()", 0.1, seed, 0.48 + off, 200, 5)
        write(root, "full-updates", "tf_style(4)", 0.1, seed, 0.51 + off, 2000, 500)
        write(root, "full-updates", "full()", 0.1, seed, 0.47 + off, 40, 500)
    paths = build.build_report(root, tmp_path / "out", figures=False)
    fair_md = (tmp_path / "out" / "tables" / "cpu-x" / "echo" / "fair.md").read_text(encoding="utf-8")
    assert all(p.stat().st_size > 0 for p in paths)
    assert "reported: test loss (held-out stream, evaluated once at the end)" in fair_md
    assert (
        "Full BPTT ran episodically on rows of 40 steps (state reset per row) to make the same number of "
        "updates; the other styles on rows of 2,000." in fair_md
    )
    # equal updates: full BPTT trained (500 updates), so it gets a paired difference: 0.48 − 0.52 on test
    updates = fair_md.split("## 2. Equal updates", 1)[1].split("## 3.", 1)[0]
    assert (
        "| Full BPTT (T, T) | 0.1 | 2/2 | 500 | 4k | 40 | 0.475 ± 0.007 | 0.485 ± 0.007 | +0.035 | -0.040 [-0.040, -0.040] |"
        in updates
    )
    data = fair_md.split("## 1. Equal data", 1)[1].split("## 2.", 1)[0]
    assert (
        "| Full BPTT (T, T) | 0.1 | 2/2 | 5 (starved) | 40 | 0.485 ± 0.007 | 0.495 ± 0.007 | +0.045 | — (starved) |"
        in data
    )
    assert "Not available: no `full-episodic` sweep" in fair_md and "predate" not in fair_md
    compute = fair_md.split("## 4. Equal compute", 1)[1]
    assert "Not in the table (no curve reaches the budget): Full BPTT (T, T)." in compute
    index = (tmp_path / "out" / "tables" / "index.md").read_text(encoding="utf-8")
    assert "(cpu-x/echo/fair.md)" in index
    again = tmp_path / "again"
    build.build_report(root, again, figures=False)
    assert (again / "tables" / "cpu-x" / "echo" / "fair.csv").read_bytes() == (
        tmp_path / "out" / "tables" / "cpu-x" / "echo" / "fair.csv"
    ).read_bytes()
    r2rt = (tmp_path / "out" / "tables" / "cpu-x" / "full" / "echo" / "r2rt.md").read_text(encoding="utf-8")
    assert "| Williams–Peng (1, 4) | **0.505 ± 0.007** | 2k | 16k |" in r2rt


def test_equal_updates_blocks_name_a_style_that_made_other_update_counts():
    def rows(wp_updates: int) -> pd.DataFrame:
        kw = dict(sweep="full-updates", budget_mode="updates", row_len=100)
        made = {"tf4": 500, "full": 500, "wp4": wp_updates}
        return frame([rec(st, 0.1, s, 0.5, updates=u, **kw) for st, u in made.items() for s in range(3)])

    md, _ = fair.fair_tables(rows(6_550))
    assert "Not at equal updates (most styles made 500): Williams–Peng (1, 4) (6,550)" in md
    assert "Not at equal updates" not in fair.fair_tables(rows(510))[0]


def test_summary_gives_paired_differences_and_names_the_axis():
    runs = frame(
        [rec("tf4", 0.1, s, v) for s, v in enumerate([0.50, 0.52, 0.54])]
        + [rec("wp4", 0.1, s, v) for s, v in enumerate([0.45, 0.50, 0.49])]
        + [rec("full", 0.1, s, 0.30, updates=5) for s in range(3)]
    )
    text = tables.summary_markdown(runs)
    lo, hi = stats.bootstrap_ci([-0.05, -0.02, -0.05])
    assert hi < 0  # every resample mean lies in [-0.05, -0.02]
    assert (
        "- n = 4, paired over seeds against TF-style (4, 4) (final validation loss, each at its best lr; "
        f"mean difference [95% bootstrap interval]): Williams–Peng (1, 4) -0.040 [{lo:+.3f}, {hi:+.3f}] (better)."
    ) in text
    assert "equal data (every style sees the sweep's timesteps)" in text and "Full BPTT (T, T) -" not in text
    updates = runs.assign(sweep="full-updates")
    assert "at equal updates (every style makes the same number of updates)" in tables.summary_markdown(
        updates
    )


def test_starved_style_does_not_set_the_compute_budget():
    runs, curves = compute_frames()
    # a starved full-BPTT run (5 updates) whose curve ends at 100 backprop steps; TF at lr 0.03 ends at 300
    extra = [
        rec("full", 0.1, 0, 0.9, updates=5, backprop_steps=100),
        rec("tf4", 0.03, 0, 0.6, backprop_steps=300),
    ]
    rows = [
        {
            "run_id": r["run_id"],
            "device_tag": "cpu-x",
            "sweep": "full",
            "task": "echo",
            "split": "val",
            "update": i,
            "timesteps": 100 * i,
            "backprop_steps": r["backprop_steps"] * i // 2,
            "loss": 1.0 - 0.1 * i,
        }
        for r in extra
        for i in range(3)
    ]
    md, _ = fair.fair_tables(
        pd.concat([runs, frame(extra)], ignore_index=True),
        pd.concat([curves, pd.DataFrame(rows)], ignore_index=True),
    )
    # the budget is TF-style's smallest final count over its lrs (300), not the starved run's 100
    assert (
        "Budget: 300 backprop steps (the smallest final count among the block's trained styles: TF-style (4, 4))."
        in md
    )


def test_mixed_records_mark_only_the_old_sweep():
    new = starved_frame()
    old = starved_frame().assign(sweep="full-updates", backprop_steps=pd.NA, test_loss=None)
    old["run_id"] = old["run_id"] + "-old"
    md, _ = fair.fair_tables(pd.concat([new, old], ignore_index=True))
    assert md.count("These records predate") == 1
    assert "These records predate" in md.split("## 2. Equal updates", 1)[1].split("## 3.", 1)[0]


def test_learning_curves_add_a_backprop_steps_axis_for_records_that_count_them(tmp_path):
    """Issue #12 item 2: curves against timesteps, updates and backprop steps (plus wall time)."""
    from tbptt_bench.report import figures

    root = tmp_path / "results"
    write(root, "full", "tf_style(4)", 0.1, 0, 0.52, 200, 500)
    write(root, "full", "williams_peng(4)", 0.1, 0, 0.50, 200, 2000)
    loaded = store.load_runs(root)
    fig = figures.learning_curves_figure(loaded.runs, loaded.curves)
    assert [ax.get_xlabel() for ax in fig.axes] == [
        "timesteps processed",
        "updates made (symlog)",
        "backprop steps, all rows (symlog)",
        "training wall time (s, mean over seeds)",
    ]
    # Williams–Peng's line reaches 4x TF-style's updates at the end (2,000 vs 500)
    ends = sorted(max(line.get_xdata()) for line in fig.axes[1].lines if line.get_linestyle() != "--")
    assert ends == [500, 2000]
