"""Before the CUDA benchmark: check the graphed engine on this GPU, pick its forward, profile.

    python benchmarks/gpu_probe.py --forward fused --out probe-fused.json   # one process per variant
    python benchmarks/gpu_probe.py --choose probe-loop.json probe-fused.json
    python benchmarks/gpu_probe.py --forward fused --profile profile.txt

``--forward F --out R``: (1) correctness: the CUDA-graph path against the same function run
eagerly (static-elman) for every graphed style, small size: max |param difference|, capture
errors; (2) speed: median of passes 2-4 of the engine on the large size. F is the forward inside
the graph: the fused cuDNN kernel or per-step products (the engine's ``graph_forward``: fused|loop);
each variant runs in its own process, so a variant that breaks the CUDA context breaks only itself.
``--choose``: the variant that captured everywhere, matched eager and ran fastest ("loop" if none).
``--profile``: torch.profiler's top CUDA kernels for one pass of the engine and of the fastest
baseline per style (large size): where the time goes. Needs CUDA; not collected by pytest.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cases import IMPLS, SIZES, Impl, engine_options, make_case, prepare
from tbptt_bench.engine import train_stream
from tbptt_bench.styles import parse_style

GRAPH_STYLES = ("tf_style(16)", "tf_style(64)", "williams_peng(16)", "overlapping(8, 16)", "one_step(16)")


def _timed_pass(run) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def check_graph_equals_eager(forward: str) -> list[dict]:
    case = make_case(SIZES["small"], "cuda")
    rows = []
    for spec in GRAPH_STYLES:
        out = {}
        for path in ("static-elman", "cuda-graph-elman"):
            model = copy.deepcopy(case.model)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3)
            try:
                r = train_stream(
                    model, case.x, case.y, parse_style(spec), opt, "mse", path=path, graph_forward=forward
                )
                out[path] = (model, r)
            except (RuntimeError, ValueError) as err:  # report, never stop the probe
                out[path] = (None, f"{type(err).__name__}: {err}".splitlines()[0])
        row = {"style": spec, "forward": forward}
        if all(m is not None for m, _ in out.values()):
            (m1, r1), (m2, r2) = out["static-elman"], out["cuda-graph-elman"]
            row["path"] = r2.path
            row["fallback_reason"] = r2.fallback_reason
            row["max_param_diff"] = max(
                float((p - q).detach().abs().max()) for p, q in zip(m1.parameters(), m2.parameters())
            )
            row["max_loss_rel_diff"] = max(
                abs(a.loss - b.loss) / max(abs(a.loss), 1e-30) for a, b in zip(r1.records, r2.records)
            )
        else:
            row["error"] = [r for m, r in out.values() if m is None]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def time_engine(forward: str) -> list[dict]:
    """Median of passes 2-4 of the engine on the large size, per graphed style."""
    case = make_case(SIZES["large"], "cuda")
    options = {**engine_options(), "graph_forward": forward}
    rows = []
    for spec in GRAPH_STYLES:
        times = [_timed_pass(prepare(case, spec, Impl("engine"), options=options)) for _ in range(4)]
        path = prepare(case, spec, Impl("engine"), options=options)()["path"]
        med = statistics.median(times[1:])
        row = {
            "forward": forward,
            "style": spec,
            "median_s": med,
            "timesteps_per_s": case.T / med,
            "path": path,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def choose(reports: list[Path]) -> str:
    """The forward whose graphs captured, matched eager execution and ran fastest ("loop" if none)."""
    best, best_total = "loop", float("inf")
    for path in reports:
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        ok = all(
            "error" not in c and c["path"].startswith("cuda-graph-elman") and c["max_param_diff"] < 1e-4
            for c in rep["checks"]
        ) and all(t["path"].startswith("cuda-graph-elman") for t in rep["timings"])
        total = sum(t["median_s"] for t in rep["timings"])
        if ok and total < best_total:
            best, best_total = rep["forward"], total
    return best


def profile(path: Path) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    case = make_case(SIZES["large"], "cuda")
    lines = []
    for spec, baseline in (
        ("tf_style(16)", "chunked_rnn"),
        ("tf_style(64)", "chunked_rnn"),
        ("williams_peng(16)", "rerun_window"),
        ("full()", "chunked_rnn"),
    ):
        for impl in [i for i in IMPLS[spec] if i.name in ("engine", baseline)]:
            run = prepare(case, spec, impl)
            run()  # warm
            run = prepare(case, spec, impl)
            torch.cuda.synchronize()
            with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                wall = _timed_pass(run)
            table = prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=12, max_name_column_width=60
            )
            head = f"== {spec} | {impl.name} | large (B={case.size.B}, H={case.size.H}, T={case.T}) | wall {wall * 1e3:.1f} ms (profiled)"
            lines += [head, table, ""]
            print(head, flush=True)
    path.write_text("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--forward", choices=("fused", "loop"), help="check and time the graphed engine with this forward"
    )
    ap.add_argument("--out", type=Path, help="JSON report of --forward's checks and timings")
    ap.add_argument("--profile", type=Path, help="write torch.profiler's top kernels here")
    ap.add_argument("--choose", type=Path, nargs="+", help="print the best forward among these reports")
    args = ap.parse_args()
    if args.choose:
        print(choose(args.choose))
        return 0
    if not torch.cuda.is_available():
        print("gpu_probe: error: cuda is not available here", file=sys.stderr)
        return 2
    if args.forward:  # read by bench_cases.engine_options() for the profile's engine passes
        os.environ["TBPTT_BENCH_GRAPH_FORWARD"] = args.forward
    if args.forward and args.out:
        report = {
            "device": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "forward": args.forward,
        }
        report["checks"] = check_graph_equals_eager(args.forward)
        args.out.write_text(json.dumps(report, indent=1))  # written before the timings can fail
        report["timings"] = time_engine(args.forward)
        args.out.write_text(json.dumps(report, indent=1))
    if args.profile is not None:
        profile(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
