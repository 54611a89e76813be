"""pytest-benchmark side of ``tbptt-bench compare``: benchmark JSON files paired across devices.

JSON under ``DIR/benchmarks/`` (any depth) is matched on (test, style, size, implementation),
never on the device; the sizes may use different sequence lengths per device, so the speedup is a
ratio of timesteps/s (of median times where that is missing). Torch-free; ``compare.py`` renders
the table.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .compare_runs import _ratio, log  # log: compare's logger, so its warnings keep their name

__all__ = ["benchmark_timings"]


# -- pytest-benchmark JSON ----------------------------------------------------------------------
def _bench_files(folder: Path) -> list[Path]:
    """JSON under FOLDER/benchmarks/ (any depth); for a device folder without one, its parent's."""
    if folder.name == "benchmarks":
        root = folder
    elif (folder / "benchmarks").is_dir() or not (folder.parent / "benchmarks").is_dir():
        root = folder / "benchmarks"
    else:
        root = folder.parent / "benchmarks"
    return sorted(root.rglob("*.json")) if root.is_dir() else []


def benchmark_timings(
    dirs: Sequence[Path], prefer: Sequence[str] = ()
) -> tuple[list[str], dict[tuple, dict[str, dict]]]:
    """Devices and {(test, style, size, impl): {device: {name, median_s, timesteps_per_s, T, file}}}.

    The key leaves the device out (pytest-benchmark groups such as ``full() | cpu | small`` name
    it, so keying on them paired nothing). Devices named in ``prefer`` come first, the rest in
    order of appearance. Each file is read once; later files (by path) win on repeats.
    """
    seen: list[str] = []
    table: dict[tuple, dict[str, dict]] = {}
    files = list(dict.fromkeys(p.resolve() for folder in dirs for p in _bench_files(Path(folder))))
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(doc, dict) and "benchmarks" not in doc and "machine_info" not in doc:
                continue  # another JSON kept beside them (e.g. a probe report)
            machine, benches = doc.get("machine_info") or {}, doc["benchmarks"]
            for b in benches:
                extra, params = b.get("extra_info") or {}, b.get("params") or {}
                cpu = (
                    (machine.get("cpu") or {}).get("brand_raw")
                    if isinstance(machine.get("cpu"), dict)
                    else None
                )
                device = str(
                    extra.get("device_name")
                    or machine.get("device_name")
                    or extra.get("device")
                    or cpu
                    or path.parent.name
                )
                key = (
                    str(b["name"]).split("[", 1)[0],
                    str(extra.get("style") or params.get("style") or b["name"]),
                    str(extra.get("size") or params.get("size") or ""),
                    str(extra.get("impl") or params.get("impl") or ""),
                )
                if device not in seen:
                    seen.append(device)
                tps = extra.get("timesteps_per_s")
                table.setdefault(key, {})[device] = {
                    "name": b["name"],
                    "median_s": float(b["stats"]["median"]),
                    "timesteps_per_s": None if tps is None else float(tps),
                    "T": extra.get("T"),
                    "file": path,
                }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("skipped benchmark file %s: %s", path, e)
    devices = [d for d in dict.fromkeys(prefer) if d in seen] + [d for d in seen if d not in prefer]
    return devices, table


def _bench_speedup(row: dict, base: dict | None) -> float | None:
    if base is None:
        return None
    if row["timesteps_per_s"] is not None and base["timesteps_per_s"] is not None:
        return _ratio(row["timesteps_per_s"], base["timesteps_per_s"])
    return _ratio(base["median_s"], row["median_s"])
