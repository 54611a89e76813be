"""Engine vs best baseline, from pytest-benchmark JSON: one Markdown row per style x device x size.

    python benchmarks/ratios.py results/benchmarks/cpu.json [more.json ...] [--out ratios.md]

Columns: engine timesteps/s, the fastest baseline's timesteps/s (its name and how exactly it
computes the style, see tbptt_bench.baselines), and ratio = engine / baseline (> 1: the engine
is faster), all from median round times; then the same ratio from the two fastest rounds
(min times); and the interleaved ratio: the median over ``--bench-pairs`` repetitions of
baseline time / engine time with the two passes run back to back (the figure machine load
disturbs least on a shared machine; absent in files measured without it). Timesteps are stream steps (each of B rows). Torch-free; reads only the JSON.

>>> doc = {"benchmarks": [
...     {"params": {"style": "full()", "device": "cpu", "size": "small", "impl": "engine"},
...      "stats": {"median": 0.5, "min": 0.4}, "extra_info": {"device_name": "X", "timesteps_per_s": 1000.0}},
...     {"params": {"style": "full()", "device": "cpu", "size": "small", "impl": "chunked_rnn"},
...      "stats": {"median": 0.25, "min": 0.2}, "extra_info": {"device_name": "X", "timesteps_per_s": 2000.0,
...      "semantics": "exact"}},
...     {"params": {"style": "full()", "device": "cpu", "size": "small", "impl": "rnncell_loop"},
...      "stats": {"median": 1.0}, "extra_info": {"device_name": "X", "timesteps_per_s": 500.0}}]}
>>> print(markdown(ratio_rows([doc])), end="")
| style | device | size | engine timesteps/s | best baseline | baseline timesteps/s | ratio (engine/baseline) | ratio of fastest rounds | interleaved ratio |
|---|---|---|---:|---|---:|---:|---:|---:|
| full() | cpu (X) | small | 1,000 | chunked_rnn (exact) | 2,000 | 0.50 | 0.50 | – |
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def _tps(bench: dict) -> float | None:
    extra = bench.get("extra_info") or {}
    if extra.get("timesteps_per_s") is not None:
        return float(extra["timesteps_per_s"])
    median = (bench.get("stats") or {}).get("median")
    return float(extra["T"]) / float(median) if median and extra.get("T") else None


def ratio_rows(docs: list[dict]) -> list[dict]:
    """One row per (style, device, size), in order of first appearance."""
    groups: dict[tuple, dict] = {}
    for doc in docs:
        for b in doc.get("benchmarks", []):
            p, extra = {**(b.get("params") or {}), **(b.get("extra_info") or {})}, b.get("extra_info") or {}
            key = (p.get("style"), p.get("device"), p.get("size"))
            g = groups.setdefault(
                key, {"device_name": extra.get("device_name"), "engine": None, "baselines": []}
            )
            tps, fastest = _tps(b), (b.get("stats") or {}).get("min")
            if p.get("impl") == "engine":
                g["engine"], g["engine_min"], g["interleaved"] = (
                    tps,
                    fastest,
                    extra.get("interleaved_ratios") or {},
                )
            elif tps is not None:
                g["baselines"].append((tps, p.get("impl"), extra.get("semantics"), fastest))
    rows = []
    for (style, device, size), g in groups.items():
        best = max(g["baselines"], key=lambda t: t[0]) if g["baselines"] else (None, None, None, None)
        engine, base, engine_min, base_min = g["engine"], best[0], g.get("engine_min"), best[3]
        rows.append(
            {
                "style": style,
                "device": device,
                "device_name": g["device_name"],
                "size": size,
                "engine_tps": engine,
                "baseline": best[1],
                "semantics": best[2],
                "baseline_tps": base,
                "ratio": engine / base if engine and base else None,
                "ratio_fastest": base_min / engine_min if engine_min and base_min else None,
                "ratio_interleaved": (g.get("interleaved") or {}).get(best[1], {}).get("median_ratio"),
            }
        )
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (numbers rounded for reading; '–' where absent)."""

    def num(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    out = [
        "| style | device | size | engine timesteps/s | best baseline | baseline timesteps/s | ratio (engine/baseline) "
        "| ratio of fastest rounds | interleaved ratio |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        device = f"{r['device']} ({r['device_name']})" if r["device_name"] else str(r["device"])
        base = (
            "–"
            if r["baseline"] is None
            else r["baseline"] + (f" ({r['semantics']})" if r["semantics"] else "")
        )
        out.append(
            f"| {r['style']} | {device} | {r['size']} | {num(r['engine_tps'], ',.0f')} | {base} | "
            f"{num(r['baseline_tps'], ',.0f')} | {num(r['ratio'], '.2f')} | {num(r['ratio_fastest'], '.2f')} | "
            f"{num(r.get('ratio_interleaved'), '.2f')} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON file(s)")
    ap.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = ap.parse_args(argv)
    docs = []
    for path in args.json:
        try:
            docs.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            print(f"ratios.py: error: cannot read {path}: {e}", file=sys.stderr)
            return 2
    table = markdown(ratio_rows(docs))
    sys.stdout.write(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(table)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
