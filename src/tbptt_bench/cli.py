"""The ``tbptt-bench`` command line: list, sweep, run, report, compare.

    tbptt-bench run                           # quick sweep of every task into results/local/, then its report
    tbptt-bench sweep echo --preset smoke     # one task's smoke runs into results/local/
    tbptt-bench sweep --dry-run               # the plan: which runs exist, which would train
    tbptt-bench report results/               # REPORT.md, tables and figures from the records alone
    tbptt-bench compare results/cpu-amd-epyc results/cuda-nvidia-h200 --out /tmp/compare
    tbptt-bench export results/ --format parquet --out runs.parquet

Runs go to results/local/ (git-ignored) unless --results says otherwise; the committed results/
change only through an explicit `tbptt-bench report results`.

Bad input (unknown task, style, preset or device, CUDA absent, --jobs 0, a number out of its
bounds, a run too big for this machine's memory by estimate, an unwritable results folder, a broken
spec file) prints one line ``tbptt-bench: error: ...`` (cut at 400 characters) on stderr and exits 2
before anything is trained or written; so does a file-system error met later (a full disk stops the
sweep). Exit 1 means some run failed (its error and ``failure_kind`` are in its summary) or was
left out ("not run": held too long by another process, or a damaged folder that cannot be removed);
130 an interrupt. See docs/reliability.md.

This module is the parser (flags, their checks, the help) and ``main``; what each command does is
in ``commands.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

from .commands import (  # the commands' names stay importable from here
    DEFAULT_PRESET,
    MAX_ERROR_CHARS,  # noqa: F401
    PROG,
    CLIError,  # noqa: F401
    _check_writable,  # noqa: F401
    _cmd_compact,
    _cmd_compare,
    _cmd_export,
    _cmd_gradients,
    _cmd_list,
    _cmd_report,
    _cmd_run,
    _cmd_sweep,
    _cmd_unpack,
    _cut,
    _load_specs,  # noqa: F401
    _print_plan,  # noqa: F401
    _sweep,  # noqa: F401
    find_specs_dir,
)
from .errors import BenchError
from .runs.spec import SWEEP_PRESETS

__all__ = ["build_parser", "find_specs_dir", "main"]

#: Where run/sweep write unless --results says otherwise: git-ignored, so a sweep never dirties the
#: checkout; the committed results/ are regenerated only by an explicit `report`.
DEFAULT_RESULTS = "results/local"


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: ``tbptt-bench: error: ...``, exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        message = re.sub(r"\s*[\r\n]+\s*", " ", message)  # e.g. an unrecognized argument holding a newline
        self.exit(2, f"{PROG}: error: {_cut(message)} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{_cut(repr(text), 80)} is not allowed: use a positive integer"
        ) from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{_cut(repr(text), 80)} is not allowed: use a positive integer")
    return v


#: --jobs and --threads above this are typos (and each job is a process, each thread a core).
MAX_WORKERS = 1024


def _at_most(hi: int) -> Callable[[str], int]:
    """An argparse type: a positive integer no larger than ``hi``."""

    def check(text: str) -> int:
        v = _positive_int(text)
        if v > hi:
            raise argparse.ArgumentTypeError(
                f"{_cut(repr(text), 80)} is not allowed: use a positive integer up to {hi}"
            )
        return v

    return check


_worker_count = _at_most(MAX_WORKERS)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 < v <= 10**7:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{_cut(repr(text), 80)} is not allowed: use seconds in (0, 1e7]")
    return v


#: --seeds above this is almost surely a typo, and planning it would take minutes and gigabytes.
MAX_SEEDS = 1000


_seed_count = _at_most(MAX_SEEDS)


# -- parser -----------------------------------------------------------------------------------
def _sweep_flags(p: argparse.ArgumentParser, default_preset: str) -> None:
    """What to run (specs, preset, seeds, styles, where records go); then how (``_how_flags``)."""
    p.add_argument(
        "specs",
        nargs="*",
        metavar="SPEC",
        help="task names (e.g. echo) or spec files (tasks/echo.toml); default: every spec in tasks/",
    )
    p.add_argument(
        "--preset",
        default=default_preset,
        choices=SWEEP_PRESETS,
        help=(
            "sweep size: smoke (seconds), quick (minutes), full (the real comparison, equal data); "
            f"full-updates and full-episodic (full on the other budget axes); default {default_preset} "
            "(`tbptt-bench list` shows each preset's run count)"
        ),
    )
    p.add_argument(
        "--seeds", type=_seed_count, metavar="N", help="run seeds 0..N-1 instead of the spec's seeds"
    )
    p.add_argument(
        "--style",
        action="append",
        metavar="STYLE",
        help="run only this style, e.g. 'tf_style(5)' (repeat for several); default: the spec's styles",
    )
    p.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        metavar="DIR",
        help=f"results folder (default {DEFAULT_RESULTS}/, git-ignored: the committed results/ stay untouched)",
    )
    p.add_argument(
        "--machine",
        metavar="NAME",
        help=f"name this machine: runs go to <results>/<device kind>-NAME/ (also {'TBPTT_BENCH_MACHINE'})",
    )
    p.add_argument(
        "--specs-dir",
        metavar="DIR",
        help="folder of <task>.toml specs (default: ./tasks or the checkout's tasks/)",
    )
    _how_flags(p)


def _how_flags(p: argparse.ArgumentParser) -> None:
    """How a sweep runs: device, processes, threads, backend, and what it prints or skips."""
    p.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda", "mps"),
        help="where to train; auto picks cuda, then mps, then cpu (default auto)",
    )
    p.add_argument(
        "--jobs",
        type=_worker_count,
        default=1,
        metavar="N",
        help="worker processes running at once, each run in a fresh process (default 1)",
    )
    p.add_argument(
        "--threads",
        type=_worker_count,
        default=1,
        metavar="N",
        help="torch intra-op threads per run (default 1: small RNNs are latency-bound)",
    )
    p.add_argument(
        "--backend",
        default="local",
        choices=("local", "ray"),
        help="local processes, or Ray tasks (needs `pip install tbptt-bench[ray]`); default local",
    )
    p.add_argument(
        "--address", metavar="ADDR", help="Ray cluster address (default: start a local Ray instance)"
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the plan (and which runs are complete); train nothing"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rerun complete runs too (each old folder is replaced atomically)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rerun runs that failed by their own exception (failures of the machine -- a killed "
        "worker, out of memory or disk -- are always rerun)",
    )
    p.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=600.0,
        metavar="S",
        help="leave out a run another process has held this long (default 600 s; said after 10 s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-run lines")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog=PROG, description="A benchmark for truncated backpropagation through time.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    p = sub.add_parser(
        "list",
        help="tasks, styles, sweep presets and the devices seen in a results folder",
        description="List tasks, styles, sweep presets and the devices seen in a results folder.",
    )
    p.add_argument(
        "--results", default="results", metavar="DIR", help="results folder to look in (default results/)"
    )
    p.add_argument(
        "--specs-dir",
        metavar="DIR",
        help="folder of <task>.toml specs (default: ./tasks or the checkout's tasks/)",
    )
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "sweep",
        help="train every run of a sweep preset that is not complete yet",
        description="Train every run of a sweep preset that is not complete yet.",
    )
    _sweep_flags(p, DEFAULT_PRESET)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser(
        "run",
        help="the quick sweep of every task, then the report",
        description="The quick sweep (same flags as sweep), then the report.",
    )
    _sweep_flags(p, DEFAULT_PRESET)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser(
        "gradients",
        help="gradient-quality study: each style's gradient vs the exact one, at training checkpoints",
        description="Measure every style's gradient (cosine, bias, spread, cost) against the exact "
        "gradient on a burned-in window, at checkpoints of a short TF-style training; write the records "
        "to <results>/<device>/gradients/.",
    )
    p.add_argument("tasks", nargs="*", metavar="TASK", help="tasks to study (default: every spec)")
    p.add_argument("--results", required=True, metavar="DIR", help="results folder to write the records into")
    p.add_argument("--specs-dir", metavar="DIR", help="folder of <task>.toml specs (default as for sweep)")
    p.add_argument("--smoke", action="store_true", help="a seconds-sized study (for tests)")
    p.add_argument("--quiet", action="store_true", help="no per-task lines")
    p.set_defaults(func=_cmd_gradients)
    _add_report_parsers(sub)
    return parser


def _add_report_parsers(sub) -> None:
    """The commands that read records: report and compare."""
    p = sub.add_parser(
        "report",
        help="tables and figures from the records in a results folder",
        description="Regenerate tables/ and figures/ in a results folder from its run records.",
    )
    p.add_argument(
        "results_dir",
        nargs="?",
        default="results",
        metavar="RESULTS_DIR",
        help="results folder (default results/)",
    )
    p.add_argument(
        "--readme",
        metavar="FILE",
        help="also rewrite the block between the results markers of this README (e.g. README.md)",
    )
    for flag, what in (
        ("--device", "device folder, e.g. cpu-amd-epyc"),
        ("--sweep", "sweep, e.g. full"),
        ("--task", "task, e.g. echo"),
    ):
        p.add_argument(
            flag,
            action="append",
            metavar="NAME",
            help=f"render only this {what} (glob patterns allowed; repeat for several); others keep their files",
        )
    p.add_argument(
        "--jobs", type=_positive_int, metavar="N", help="worker processes rendering groups (default: up to 2)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export",
        help="every run (and its curve) as one parquet or CSV file, for notebooks",
        description="Write the runs table of a results folder as parquet or CSV (curves beside it).",
    )
    p.add_argument(
        "results_dir",
        nargs="?",
        default="results",
        metavar="RESULTS_DIR",
        help="results folder (default results/)",
    )
    p.add_argument(
        "--format", choices=("parquet", "csv"), default="parquet", help="file format (default parquet)"
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="runs file to write, e.g. runs.parquet; the curves go beside it as <stem>-curves.<ext>",
    )
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "compact",
        help="pack each finished sweep's records into one records.parquet (for committing)",
        description=(
            "Rewrite the curve.csv of every valid record under RESULTS_DIR as parquet, then pack "
            "each sweep folder's valid records into <sweep>/records.parquet and remove the folders "
            "packed: JSON texts verbatim, losses bit for bit, wall times to the microsecond. "
            "Damaged or unfinished records, and runs a sweep holds now, are left as they are. "
            "Every reader (sweep, report, compare, load_results) reads packed and unpacked runs alike."
        ),
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="results folder to compact")
    p.set_defaults(func=_cmd_compact)

    p = sub.add_parser(
        "unpack",
        help="write a packed sweep's runs back as one folder each",
        description=(
            "Write every run in SWEEP_DIR/records.parquet back as a run folder (config.json, "
            "env.json, summary.json byte for byte, curve.parquet), then remove the pack."
        ),
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR", help="a sweep folder holding records.parquet")
    p.set_defaults(func=_cmd_unpack)

    p = sub.add_parser(
        "compare",
        help="hardware timings side by side for several results folders",
        description="Timings and memory of the same runs on several devices, side by side.",
    )
    p.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="results folders (or device folders) to compare; the first is the baseline",
    )
    p.add_argument(
        "--out",
        default="results/local/compare",
        metavar="DIR",
        help="where to write the comparison (default results/local/compare)",
    )
    p.set_defaults(func=_cmd_compare)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tbptt-bench`` and ``python -m tbptt_bench``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return status
    except BrokenPipeError:
        # `tbptt-bench list | head -1`: the reader left; that is not an error. Point stdout at
        # devnull so the interpreter's final flush stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system refused (a name too long, a full disk): no traceback
        print(f"{PROG}: error: {_cut(_first_line(e))}", file=sys.stderr)
        return 2
    except BenchError as e:  # bad input anywhere in the package (BackendError too: ray is missing)
        print(f"{PROG}: error: {_cut(_first_line(e))}", file=sys.stderr)
        return 2


def _first_line(e: BaseException) -> str:
    lines = str(e).splitlines()
    return lines[0] if lines and lines[0] else type(e).__name__
