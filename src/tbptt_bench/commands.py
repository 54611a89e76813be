"""What each ``tbptt-bench`` command does: the ``_cmd_*`` functions that ``cli.py``'s parser
dispatches to, the sweep behind ``run`` and ``sweep``, and the spec lookup they share.

Also the few things the parser and ``main`` in ``cli.py`` share with them: the program name, the
default preset, ``CLIError`` and the cut of an error line. ``cli.py`` imports this module (never the
other way) and re-exports its names, so ``tbptt_bench.cli.<name>`` keeps working.
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .errors import BenchError

PROG = "tbptt-bench"
#: One default preset for both run and sweep.
DEFAULT_PRESET = "quick"


class CLIError(BenchError):
    """Bad command-line input the parser cannot see (e.g. an unknown task name)."""


#: An error line is cut here: a 100 KB argument is named, not echoed in full.
MAX_ERROR_CHARS = 400


def _cut(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    if len(text) <= limit:
        return text
    tail = f"... ({len(text)} chars)"
    return text[: limit - len(tail)] + tail


# -- locating specs ---------------------------------------------------------------------------
def find_specs_dir(explicit: str | None = None) -> Path:
    """--specs-dir, else ./tasks when it holds specs, else the checkout's tasks/ beside src/."""
    from .runs.spec import SpecError

    if explicit:
        d = Path(explicit)
        if not d.is_dir():
            raise SpecError(f"--specs-dir {explicit!r} is not a folder")
        return d
    here = Path.cwd() / "tasks"
    if any(here.glob("*.toml")):
        return here
    repo = Path(__file__).resolve().parents[2] / "tasks"
    if repo.is_dir():
        return repo
    raise SpecError(
        "no tasks/ folder of <task>.toml specs found in the current folder or beside the package; "
        "pass --specs-dir DIR"
    )


def _load_specs(names: Sequence[str], specs_dir: str | None):
    from .runs.spec import load_spec, load_specs

    if names and all(n.endswith(".toml") or Path(n).is_file() for n in names):
        return [load_spec(n) for n in names]
    available = load_specs(find_specs_dir(specs_dir))
    if not names:
        return available
    by_name = {}
    for s in available:
        by_name.setdefault(Path(s.path).stem, s)
        by_name.setdefault(s.task, s)
    out = []
    for n in names:
        if n.endswith(".toml") or Path(n).is_file():
            out.append(load_spec(n))
        elif n in by_name:
            out.append(by_name[n])
        else:
            raise CLIError(
                f"unknown task {n!r}: known task specs are {', '.join(sorted(by_name)) or '(none)'}"
            )
    return out


# -- commands ---------------------------------------------------------------------------------
def _cmd_list(args) -> int:
    from . import styles
    from .runs.spec import SWEEP_PRESETS, SpecError, load_specs
    from .runs.store import check_run, iter_run_dirs

    try:
        from .tasks import TASKS

        print("tasks (registry):", ", ".join(TASKS))
    except ImportError:
        print("tasks (registry): unavailable (tbptt_bench.tasks is missing)")
    try:
        specs_dir = find_specs_dir(args.specs_dir)
        print(f"task specs ({specs_dir}):")
        for s in load_specs(specs_dir):
            print(
                f"  {Path(s.path).stem:10s} task={s.task} cell={s.cell} styles={len(s.styles)} "
                f"presets={', '.join(s.presets) or '-'}"
            )
    except SpecError as e:
        print(f"task specs: none ({e})")
    print("styles (presets; write them as calls, e.g. tf_style(5)):")
    for name, fn in styles.PRESETS.items():
        params = ", ".join(inspect.signature(fn).parameters)
        print(f"  {name}({params})")
    print(f"sweep presets (runs per preset over the specs; default {DEFAULT_PRESET}):")
    try:
        from .runs.spec import resolve

        specs = load_specs(find_specs_dir(args.specs_dir))
        for preset in SWEEP_PRESETS:
            n = sum(len(resolve(s, preset)) for s in specs)
            print(f"  {preset:6s} {n} runs")
    except (SpecError, TypeError, ValueError) as e:
        print(f"  {', '.join(SWEEP_PRESETS)} (run counts unavailable: {e})")
    root = Path(args.results)
    tags: dict[str, list[int]] = {}
    for run in iter_run_dirs(root):
        rel = run.relative_to(root).parts
        if len(rel) == 3:
            t = tags.setdefault(rel[0], [0, 0])
            t[0] += 1
            t[1] += check_run(run) is None  # the one definition of a valid record
    print(f"devices in {root}:", "none" if not tags else "")
    for tag, (n, done) in sorted(tags.items()):
        print(f"  {tag}: {done} complete runs of {n}")
    return 0


def _check_writable(results: Path) -> None:
    try:
        results.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=results):
            pass
    except OSError as e:
        raise CLIError(f"results folder {str(results)!r} is not writable ({e.strerror or e})") from None


def _sweep(args, preset: str) -> int:
    from .runs import envinfo, sweep
    from .styles import parse_style

    if not str(args.results).strip():  # "" would silently mean the current folder
        raise CLIError("--results '' is not allowed: name a results folder, e.g. --results results")
    if args.address and args.backend != "ray":
        raise CLIError(f"--address {_cut(repr(args.address), 80)} is not allowed without --backend ray")
    specs = _load_specs(args.specs, args.specs_dir)
    if not specs:
        raise CLIError("no task specs to run")
    for style in args.style or ():
        parse_style(style)
    if args.machine is not None:
        if not args.machine.strip():
            raise CLIError("--machine '' is not allowed: give a name such as 'lab-epyc-7b13'")
        os.environ[envinfo.MACHINE_ENV] = args.machine  # the run processes inherit it
    if args.backend == "ray":
        if args.device not in ("auto", *envinfo.DEVICES):
            envinfo.resolve_device(args.device)
        device = "cpu" if args.device == "auto" else args.device
        tag = sweep.ray_device_tag(device, args.address)
    else:
        device = envinfo.resolve_device(args.device)
        tag = sweep.local_device_tag(device)

    results = Path(args.results)
    runs = sweep.plan(specs, preset, tag, results, args.seeds, args.style, retry_failed=args.retry_failed)
    if args.dry_run:
        return _print_plan(runs, args.force)
    _check_writable(results)
    if device == "cpu" and not envinfo.machine_name() and envinfo.is_generic_cpu(envinfo.cpu_model()):
        print(
            f"{PROG}: warning: this CPU calls itself {envinfo.cpu_model()!r}, which names no model; "
            f"name the machine with --machine NAME (or {envinfo.MACHINE_ENV}) so its results do not "
            "share a folder with another machine's",
            file=sys.stderr,
        )
    n_todo = sum(1 for r in runs if args.force or r.state != "complete")
    if not args.quiet:
        print(
            f"{PROG}: {len(runs)} runs ({preset}, {tag}): {n_todo} to train, {len(runs) - n_todo} complete",
            flush=True,
        )
        for r in runs:
            if r.state in ("incomplete", "retry"):
                print(f"{PROG}: rerunning {r.run_dir} ({r.reason})", flush=True)
    counts = sweep.execute(
        runs,
        results,
        device,
        backend=args.backend,
        jobs=args.jobs,
        threads=args.threads,
        force=args.force,
        quiet=args.quiet,
        address=args.address,
        retry_failed=args.retry_failed,
        lock_timeout_s=args.lock_timeout,
    )
    if not args.quiet:
        print(
            f"{PROG}: done: "
            + ", ".join(f"{k} {counts.get(k, 0)}" for k in ("ok", "diverged", "failed", "skipped"))
            + (f", not run {counts['not_run']}" if counts.get("not_run") else "")
        )
    return 1 if counts.get("failed") or counts.get("not_run") else 0


def _print_plan(runs, force: bool) -> int:
    for r in runs:
        action = "train" if force or r.state != "complete" else "skip"
        print(f"{action:5s} {r.state:10s} {r.run_dir}" + (f"  ({r.reason})" if r.reason else ""))
    n = sum(1 for r in runs if force or r.state != "complete")
    print(f"{len(runs)} runs: {n} would train, {len(runs) - n} complete (dry run: nothing trained)")
    return 0


def _cmd_sweep(args) -> int:
    return _sweep(args, args.preset)


def _cmd_run(args) -> int:
    status = _sweep(args, args.preset)
    if args.dry_run:
        return status
    from .report.build import build_report  # lazy: sweeping needs no pandas/seaborn import

    report = build_report(
        Path(args.results), jobs=min(2, os.cpu_count() or 1), progress=False if args.quiet else None
    )[0]
    print(f"{PROG}: open {report}")
    return status


def _cmd_report(args) -> int:
    from .report.build import build_report
    from .report.readme import update_readme

    if not Path(args.results_dir).is_dir():
        raise CLIError(f"results folder {args.results_dir!r} does not exist")
    if args.readme is not None and not Path(args.readme).is_file():
        raise CLIError(f"--readme {args.readme!r} is not allowed: no such file")
    report = build_report(
        Path(args.results_dir),
        devices=args.device,
        sweeps=args.sweep,
        tasks=args.task,
        jobs=args.jobs or min(2, os.cpu_count() or 1),
        progress=False if args.quiet else None,
    )[0]
    if args.readme is not None:
        print(f"{PROG}: updated {update_readme(args.readme, args.results_dir)}", file=sys.stderr)
    print(f"{PROG}: open {report}")
    return 0


def _cmd_export(args) -> int:
    from .report.export import export

    if not Path(args.results_dir).is_dir():
        raise CLIError(f"results folder {args.results_dir!r} does not exist")
    for p in export(args.results_dir, args.out, args.format):
        print(p)
    return 0


def _cmd_compact(args) -> int:
    from .runs import store

    if not Path(args.results_dir).is_dir():
        raise CLIError(f"results folder {args.results_dir!r} does not exist")
    done = left = before = after = 0
    for run in store.iter_run_dirs(args.results_dir):
        old = run / store.LEGACY_CURVE_FILE
        if not old.exists():
            continue
        if store.validate_record(run):  # a damaged record stays as it is (named below when packing)
            left += 1
            continue
        before += old.stat().st_size
        store.compact_curve(run)
        after += (run / store.CURVE_FILE).stat().st_size
        done += 1
    print(
        f"{PROG}: {done} curves rewritten as parquet ({before / 2**20:,.1f} MiB of CSV -> "
        f"{after / 2**20:,.1f} MiB), {left} damaged records left as they were"
    )
    for sweep in sorted({run.parent for run in store.iter_run_dirs(args.results_dir)}):
        size = _tree_bytes(sweep)
        try:
            n, left_out = store.pack_sweep(sweep)
        except store.StoreError as e:
            print(f"{PROG}: left {sweep} as it is: {e}", file=sys.stderr)
            continue
        for d, why in left_out:
            print(f"{PROG}: left {d}: {why}", file=sys.stderr)
        print(
            f"{PROG}: packed {sweep}: {n} runs in {store.PACK_FILE} ({size / 2**20:,.1f} MiB -> "
            f"{_tree_bytes(sweep) / 2**20:,.1f} MiB), {len(left_out)} folders left"
        )
    return 0


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _cmd_unpack(args) -> int:
    from .runs import store

    sweep = Path(args.sweep_dir)
    if not (sweep / store.PACK_FILE).is_file():
        raise CLIError(f"sweep folder {args.sweep_dir!r} holds no {store.PACK_FILE}: nothing to unpack")
    try:
        n = store.unpack_sweep(sweep)
    except store.StoreError as e:
        raise CLIError(f"cannot unpack {args.sweep_dir!r}: {e}") from None
    print(f"{PROG}: wrote {n} run folders in {sweep}; {store.PACK_FILE} removed")
    return 0


def _cmd_compare(args) -> int:
    try:
        from .report.compare import compare
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("tbptt_bench"):
            raise CLIError(
                "the compare module (tbptt_bench.report.compare) is not available in this installation"
            ) from None
        raise
    for d in args.dirs:
        if not Path(d).is_dir():
            raise CLIError(f"results folder {d!r} does not exist")
    for p in compare([Path(d) for d in args.dirs], Path(args.out)):
        print(p)
    return 0


def _cmd_gradients(args) -> int:
    from .analysis import run_study

    quiet = args.quiet
    out = run_study(
        args.tasks,
        Path(args.results),
        specs=find_specs_dir(args.specs_dir),
        smoke=args.smoke,
        log=None if quiet else (lambda m: print(f"{PROG}: {m}", file=sys.stderr)),
    )
    print(out)
    return 0
