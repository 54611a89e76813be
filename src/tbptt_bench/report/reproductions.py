"""``tables/reproductions.md``: published claims about truncated BPTT, each judged from the run records.

One row per claim: what was claimed and where, the outcome that would reproduce it here, the
numbers measured, and a verdict — "reproduced", "partly", "not reproduced" or "not measured" —
computed by the rule written next to it (never typed in), with one line on why where it is not
reproduced. The inputs are the frame ``store.load_runs(...).runs`` alone (torch is never
imported). This module holds the claims (what, where, the rule in words) and renders the page;
the rules that compute the verdicts, and the conventions they share, are in ``claim_rules.py``
(their names stay importable from here).

The page is built for each (device, sweep) present, the full sweep first.

>>> import pandas as pd
>>> print(reproductions_markdown(pd.DataFrame()).splitlines()[0])
# Reproductions: published claims checked against these records
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from .claim_rules import (  # noqa: F401  (every rule's name stays importable from here)
    COPY_DISTANCE,
    TOL_SHARE,
    VERDICTS,
    Verdict,
    _best,
    _combine,
    _deep_share,
    _fmt,
    _hiddens,
    _k,
    _metric,
    _n_of,
    _num,
    _ok,
    _refs,
    _specs,
    _task,
    _tol,
    judge_aicher_ppl,
    judge_aicher_windows,
    judge_influence,
    judge_nochain,
    judge_one_step,
    judge_overlapping,
    judge_r2rt_echo,
    judge_random,
    judge_true_vs_tf,
    judge_vanishing,
)
from .groups import SWEEP_ORDER

__all__ = ["CLAIMS", "Claim", "Verdict", "judge_all", "reproductions_markdown"]


@dataclass(frozen=True)
class Claim:
    key: str
    claim: str
    source: str
    expected: str
    rule: str
    judge: Callable[[pd.DataFrame], Verdict]


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "one_step",
        "TBPTT(k1, 1) lacks temporal context: one-step truncation cannot learn dependencies on the past",
        "RNN notes (docs/semantics.md's table: depth 1 for the last step, 0 for the rest)",
        "one_step(n) stays at (or above) the no-memory line on echo, copy, adding",
        "every one-step style's best final val loss >= no-memory − tol: reproduced; some: partly; none: not",
        judge_one_step,
    ),
    Claim(
        "overlapping",
        "k1 < k2 < n speeds training: several updates per sequence with long windows",
        "RNN notes (overlapping windows)",
        "overlapping(k1, k2) ends lower than TF-style(k2) (same longest window) at equal data",
        "overlapping best < TF-style(k2) best − tol in every pair: reproduced; some pairs: partly",
        judge_overlapping,
    ),
    Claim(
        "random",
        "Random truncation does not work much better than regular truncation in practice",
        "Dive into Deep Learning, 'Backpropagation Through Time'",
        "random_depth(n) (older records: random(1/n)) is never better than TF-style(n) by more than tol",
        "random best >= TF-style(n) best − tol in every pair: reproduced; some: partly; none: not",
        judge_random,
    ),
    Claim(
        "r2rt_echo",
        "Echo task: k = 1 learns nothing, k = 5 learns lag 3 only (~0.52), k = 10 with state 16 both (~0.45)",
        "r2rt, 'Recurrent Neural Networks in Tensorflow I'",
        "TF-style(1) at no-memory; TF-style(5) at the lag-3 line; TF-style(10), state >= 16, at optimal",
        "each of the three checks per state size that has runs; all hold: reproduced; some: partly",
        judge_r2rt_echo,
    ),
    Claim(
        "nochain",
        "Without a chain (lags 1, 9) windows below 8 cannot learn the long lag (docs/tasks.md)",
        "this project's chaining argument (tasks.echo.min_learning_window)",
        "TF-style/Williams–Peng(n < 8) stay at the lag-1 line, n >= 8 go below it",
        "every window on its predicted side of the lag-1 line (± tol): reproduced; some: partly",
        judge_nochain,
    ),
    Claim(
        "true_vs_tf",
        "'True' (Williams–Peng) truncation beats TF-style at equal n, less so as n grows",
        "r2rt, 'Styles of Truncated Backpropagation' (PTB table)",
        "on language, TF(n) − WP(n) > 0 for every n, shrinking as n grows (min val loss, best lr)",
        "wins at every n and the margin never grows: reproduced; wins somewhere: partly; never: not",
        judge_true_vs_tf,
    ),
    Claim(
        "aicher_windows",
        "Copy task: windows below the copy distance fail, at/above succeed",
        "Aicher, Foti & Fox (2019), fixed m = 10",
        "no loss reaching 11 steps: stays at the position-only plateau; >= half reaching: goes below",
        "each style on its predicted side of the plateau (± tol); borderline windows left out",
        judge_aicher_windows,
    ),
    Claim(
        "aicher_ppl",
        "Copy test perplexity 1.646 at K = 5 vs about 1.04 for K >= 10",
        "Aicher, Foti & Fox (2019), table for fixed m = 10",
        "exp(loss) of overlapping(5, 9) > 1.3 and of overlapping(K, 2K − 1), K >= 10, < 1.1",
        "both sides hold: reproduced; one: partly (test loss where recorded, else final val loss)",
        judge_aicher_ppl,
    ),
    Claim(
        "influence",
        "Short truncation diverges or goes the wrong way; long windows / unbiased estimators converge",
        "Tallec & Ollivier (2017), UORO and ARTBP: influence balancing",
        "every run with k2 <= 10 diverges or ends above its start; some window >= 200 or full BPTT "
        "ends within 10 % of the start−optimal gap of the optimal line",
        "both sides hold: reproduced; one: partly; neither: not",
        judge_influence,
    ),
    Claim(
        "vanishing",
        "Gradient contributions shrink geometrically backwards (about 3× per step in r2rt's probe)",
        "r2rt, 'Styles of Truncated Backpropagation'; the RNN notes",
        "a per-step decay factor of gradient norms below 1",
        "median recorded decay per step < 1: reproduced; otherwise not; no field: not measured",
        judge_vanishing,
    ),
)


def judge_all(runs: pd.DataFrame) -> list[tuple[Claim, Verdict]]:
    """Every claim judged on ``runs`` (one device and sweep)."""
    return [(c, c.judge(runs)) for c in CLAIMS]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def decay_per_step(depth_rows: Sequence[Mapping], task: str, checkpoint: float) -> float | None:
    """The per-step factor by which the exact gradient's depth-d contribution shrinks: exp of the
    least-squares slope of log ||contribution(d)|| against d (gradient study records)."""
    pts = [
        (float(r["depth"]), math.log(float(r["contrib"])))
        for r in depth_rows
        if r.get("task") == task
        and r.get("checkpoint") == checkpoint
        and _num(r.get("contrib")) is not None
        and float(r["contrib"]) > 0
    ]
    if len(pts) < 3:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return math.exp(sum((x - mx) * (y - my) for x, y in pts) / sxx) if sxx else None


def study_markdown(device: str, depth_rows: Sequence[Mapping]) -> list[str]:
    """The vanishing-gradient claim judged from a gradient-quality study (trained checkpoints)."""
    claim = next(c for c in CLAIMS if c.key == "vanishing")
    tasks = sorted({str(r["task"]) for r in depth_rows if "task" in r})
    last = max(
        (float(r["checkpoint"]) for r in depth_rows if _num(r.get("checkpoint")) is not None), default=None
    )
    decays = {t: decay_per_step(depth_rows, t, last) for t in tasks} if last is not None else {}
    known = {t: d for t, d in decays.items() if d is not None}
    frame = pd.DataFrame({"grad_decay_per_step": list(known.values())})
    v = claim.judge(frame)
    measured = "; ".join(f"{t} {d:.3g}" for t, d in known.items())
    measured = (f"per-step decay of the exact gradient's depth contribution at the trained checkpoint: {measured}; "
                + v.measured) if known else v.measured  # fmt: skip
    row = (claim.claim, claim.source, claim.expected, measured, f"**{v.verdict}**", claim.rule, v.why)
    return [
        f"## {device}, gradient-quality study",
        "",
        "| claim | source | expected | measured | verdict | rule | why not |",
        "| :--- | :--- | :--- | :--- | :--- | :--- | :--- |",
        "| " + " | ".join(_cell(x) for x in row) + " |",
        "",
    ]


def reproductions_markdown(runs: pd.DataFrame, studies: Mapping[str, Sequence[Mapping]] | None = None) -> str:
    """The page: one table per (device, sweep), one row per claim; then, per device with a gradient
    study (``studies``: device -> the study's depth rows), the vanishing-gradient claim from it."""
    md = [
        "# Reproductions: published claims checked against these records",
        "",
        "Each verdict is computed from the run records by the rule in its row (module "
        "`tbptt_bench.report.reproductions`). Values are the best learning rate's mean over the seeds "
        f"that finished ok; tol = {TOL_SHARE:.0%} of the task's no-memory − optimal gap. The claims "
        "are about training on the same data (epochs of the same streams), so they are judged on the "
        "equal-data sweeps only; the equal-updates and episodic sweeps are compared in each task's "
        "fair.md.",
        "",
    ]
    if len(runs) and "budget_mode" in runs:  # records from before budget modes trained on equal data
        runs = runs[runs["budget_mode"].isna() | (runs["budget_mode"] == "data")]
    if not len(runs) and not studies:
        return "\n".join(md + ["No runs.", ""])
    groups = (
        sorted(runs.groupby(["device_tag", "sweep"]), key=lambda kv: (SWEEP_ORDER.get(kv[0][1], 9), kv[0]))
        if len(runs)
        else []
    )
    for (device, sweep), g in groups:
        md += [f"## {device}, sweep {sweep} ({len(g)} runs)", ""]
        md += [
            "| claim | source | expected | measured | verdict | rule | why not |",
            "| :--- | :--- | :--- | :--- | :--- | :--- | :--- |",
        ]
        for c, v in judge_all(g):
            md.append(
                "| "
                + " | ".join(
                    _cell(x)
                    for x in (c.claim, c.source, c.expected, v.measured, f"**{v.verdict}**", c.rule, v.why)
                )
                + " |"
            )
        md.append("")
    for device, rows in sorted((studies or {}).items()):
        md += study_markdown(device, rows)
    return "\n".join(md)
