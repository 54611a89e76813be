"""Estimate how long a sweep preset takes: time one short run per (task, style, hidden size), extrapolate.

    python benchmarks/estimate_presets.py                     # every spec in tasks/, preset full, --jobs 2
    python benchmarks/estimate_presets.py copy echo --preset full --jobs 2 --sample-steps 1000

For every distinct (style, hidden size) of a spec's preset, one sample run goes through the
harness's own ``run_record`` (so the engine path, evaluation and probes are the ones a sweep
uses) with one epoch of ``--sample-steps`` steps per row (the preset's batch; the full
validation stream; one evaluation). From it:

    train   = train_wall_s / sample steps  x  epochs x row_len        (cost per stream step)
    eval    = eval_wall_s per evaluation  x  number of evaluations   (the spec's eval_points on the
              validation stream plus one on the test stream, or --evals N)
    streams = seconds to draw one full training stream x epochs
    fixed   = the sample run's wall time outside training and evaluation (model, probes)

summed per run and multiplied by the runs that share the cost (learning rates x seeds). The
preset's wall time at ``--jobs J`` is the serial total / J (the sweep keeps J processes busy)
but never below its longest run. Learning rate and seed do not change the cost of a run that
finishes; a run that diverges stops early, so the estimate is an upper bound for those.

Timings on a shared machine are inflated by whatever else runs, by a factor that changed 4x
within minutes on the 2-core machine this was written on. So every sample's wall times are
scaled by the CPU share the process got (process CPU seconds / wall seconds): the estimate is
for cores that run only the sweep. Checked against a complete run measured under the same
load: adding williams_peng(20), estimated 168 s, measured 181 s. Nothing is written unless
``--out`` names a Markdown file; records of the sample runs are never written.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _sample_budget(budget, steps: int):
    from tbptt_bench.runs.spec import MIN_EVAL_POINTS

    return dataclasses.replace(
        budget,
        epochs=1,
        row_len=min(budget.row_len, steps),
        eval_points=MIN_EVAL_POINTS,  # the fewest the schedule allows; the cost of one is measured
        warmup_updates=0,
    )


def _n_evals(config, style, override: int | None) -> int:
    """Evaluations of a run: every point of the validation schedule, then the test stream once."""
    if override is not None:
        return override
    return config.budget.eval_points + 1


def estimate_spec(spec, preset: str, sample_steps: int, evals: int | None, log=print) -> list[dict]:
    """One row per (hidden size, style): seconds per run (train, eval, streams, fixed) and runs sharing it."""
    import torch

    from tbptt_bench.runs.harness import check_config, run_record
    from tbptt_bench.runs.spec import resolve
    from tbptt_bench.styles import parse_style

    torch.set_num_threads(1)
    configs = resolve(spec, preset)
    groups: dict[tuple[int, str], list] = {}
    for c in configs:
        groups.setdefault((c.hidden_size, c.style), []).append(c)
    first = configs[0]
    task = check_config(first)
    b = first.budget
    t0 = time.process_time()
    task.make_train(first.seed, 0, b.batch, b.row_len)
    stream_s = time.process_time() - t0
    rows = []
    for (hidden, style_s), cs in groups.items():
        c = cs[0]
        style = parse_style(style_s)
        sample = dataclasses.replace(c, budget=_sample_budget(c.budget, sample_steps), sweep="estimate")
        t0, cpu0 = time.perf_counter(), time.process_time()
        rec = run_record(sample, "cpu")
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        # The CPU seconds this process got, over the wall seconds it took: 1 on an idle core,
        # below 1 when other work shares the cores. Scaling wall times by it estimates what
        # the run costs with a core to itself (as with --jobs 2 on an otherwise idle 2-core machine).
        share = min(cpu / wall, 1.0) if wall > 0 else 1.0
        s = rec.summary
        if s["status"] == "failed":
            raise RuntimeError(f"sample run {sample.run_id} failed: {s['error']}")
        steps = sample.budget.row_len
        n_eval = _n_evals(c, style, evals)
        train = s["train_wall_s"] * share / steps * c.budget.row_len * c.budget.epochs
        ev = s["eval_wall_s"] * share / (sample.budget.eval_points + 1) * n_eval
        fixed = max(wall - s["train_wall_s"] - s["eval_wall_s"], 0.0) * share
        row = {
            "task": spec.task,
            "hidden": hidden,
            "style": style_s,
            "runs": len(cs),
            "train_s": train,
            "eval_s": ev,
            "evals": n_eval,
            "streams_s": stream_s * c.budget.epochs,
            "fixed_s": fixed,
            "cpu_share": share,
        }
        row["per_run_s"] = row["train_s"] + row["eval_s"] + row["streams_s"] + row["fixed_s"]
        row["total_s"] = row["per_run_s"] * row["runs"]
        rows.append(row)
        log(
            f"  {spec.task:<13} {c.cell}{hidden:<4} {style_s:<22} x{len(cs):<3} "
            f"{row['per_run_s']:8.1f} s/run (train {train:.1f}, {n_eval} evals {ev:.1f}, "
            f"streams {row['streams_s']:.1f}, fixed {fixed:.1f}; cpu share {share:.2f})",
        )
    return rows


def markdown(rows: list[dict], jobs: int, preset: str, loads: tuple, command: str) -> str:
    by_task: dict[str, list[dict]] = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    total = sum(r["total_s"] for r in rows)
    longest = max((r["per_run_s"] for r in rows), default=0.0)
    wall = max(total / jobs, longest)
    lines = [
        f"Preset `{preset}`, `--jobs {jobs}`: {sum(r['runs'] for r in rows)} runs, "
        f"{total / 3600:.2f} h of compute, estimated wall time {wall / 3600:.2f} h "
        f"(longest run {longest / 60:.1f} min). Times are CPU seconds (the sample runs' wall times "
        "scaled by the CPU share they got), i.e. for a machine whose cores run only this sweep; "
        f"load average before/after sampling: {loads[0]:.2f} / {loads[1]:.2f}; median CPU share "
        f"{sorted(r['cpu_share'] for r in rows)[len(rows) // 2] if rows else 1.0:.2f}.",
        "",
        f"Command: `{command}`",
        "",
        "| task | runs | compute (min) | share | most expensive style (s per run) |",
        "| :--- | ---: | ---: | ---: | :--- |",
    ]
    for task, rs in by_task.items():
        t = sum(r["total_s"] for r in rs)
        top = max(rs, key=lambda r: r["per_run_s"])
        lines.append(
            f"| {task} | {sum(r['runs'] for r in rs)} | {t / 60:.1f} | {t / total:.0%} | "
            f"{top['style']} ({top['per_run_s']:.0f}) |"
        )
    lines += [
        "",
        "| task | hidden | style | runs | s per run | train | evals (s) | streams | fixed |",
        "| :--- | ---: | :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['hidden']} | {r['style']} | {r['runs']} | {r['per_run_s']:.1f} | "
            f"{r['train_s']:.1f} | {r['evals']} ({r['eval_s']:.1f}) | {r['streams_s']:.1f} | {r['fixed_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("specs", nargs="*", help="task names (default: every spec in --specs-dir)")
    p.add_argument("--specs-dir", default=str(ROOT / "tasks"))
    p.add_argument("--preset", default="full", choices=("smoke", "quick", "full"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--sample-steps", type=int, default=1000, help="steps per row of each sample run")
    p.add_argument("--evals", type=int, help="evaluations per run (default: the spec's eval schedule)")
    p.add_argument("--out", help="also write the Markdown summary here")
    args = p.parse_args(argv)
    from tbptt_bench.runs.spec import load_spec, load_specs

    specs = (
        [load_spec(Path(args.specs_dir) / f"{n}.toml") for n in args.specs]
        if args.specs
        else load_specs(args.specs_dir)
    )
    loads = [os.getloadavg()[0]]
    rows = []
    for spec in specs:
        print(f"{spec.task}:", flush=True)
        rows += estimate_spec(spec, args.preset, args.sample_steps, args.evals)
    loads.append(os.getloadavg()[0])
    command = "python benchmarks/estimate_presets.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = markdown(rows, args.jobs, args.preset, tuple(loads), command.strip())
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
