"""What the report writes and remembers: files rewritten only when their bytes change, paths
relative to the output folder, the content hashes ``tables/manifest.json`` keeps (the report's own
source, each group's run files), and the removal of files a previous report listed and this one
did not write, under the safety checks that let nothing but the report's own outputs go.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runs import store

if TYPE_CHECKING:
    from .groups import Group

__all__ = ["OWN_DIRS", "write_text_if_changed"]

log = logging.getLogger("tbptt_bench.report.build")  # the report's one logger (see build.py)


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:  # different drives (Windows)
        return path.as_posix()


def write_text_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds exactly it (mtime kept)."""
    data = text if text.endswith("\n") else text + "\n"
    try:
        if path.read_text(encoding="utf-8") == data:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    store.write_text_atomic(path, data)
    return True


def _code_hash() -> str:
    """The report's own source: a change to how things are drawn re-renders every group."""
    h = hashlib.blake2b(digest_size=16)
    here = Path(__file__).resolve().parent
    for p in sorted(here.glob("*.py")) + [here.parent / "runs" / "store.py"]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _group_hash(code: str, group: Group, figures: bool) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{code}|figures={figures}".encode())
    for d in sorted(group.run_dirs):
        h.update(b"\0" + d.name.encode())
        pack = store.pack_of(d)
        if pack is not None:  # a packed run: its sweep's pack, as a whole
            h.update(b"\2" + pack.digest.encode())
            continue
        for f in sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(b"\1" + f.name.encode() + b"\1")
            h.update(f.read_bytes())
    return h.hexdigest()


#: The only folders (under the output folder) whose files a report may delete: its own outputs.
OWN_DIRS = ("tables", "figures")


def _deletable(out: Path, rel: Any) -> Path | None:
    try:
        return _deletable_path(out, rel)
    except (OSError, ValueError):  # a name the file system refuses (too long, ...) names nothing to delete
        return None


def _deletable_path(out: Path, rel: Any) -> Path | None:
    """The file ``rel`` (a manifest entry) names, if the report may delete it; else None.

    Only a plain file inside ``<out>/tables`` or ``<out>/figures`` (checked on the real paths),
    reached through no symlink at any level, and in no run folder (one holding config.json or
    summary.json, e.g. a results root passed as the output folder). A tampered manifest can
    then name anything: nothing but the report's own stale outputs goes.
    """
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        return None
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts or len(parts) < 2 or parts[0] not in OWN_DIRS:
        return None
    path = out / rel
    cur = out
    for part in parts:  # no symlink on the way: the real file must be the one named
        cur = cur / part
        if cur.is_symlink():
            return None
    if not path.is_file():
        return None
    try:
        real, own = (
            path.resolve(strict=True),
            [(out / d).resolve(strict=True) for d in OWN_DIRS if (out / d).is_dir()],
        )
    except OSError:
        return None
    if not any(real.is_relative_to(d) for d in own):
        return None
    for parent in real.parents:  # never a file of a run record, wherever the folders sit
        if (parent / "config.json").is_file() or (parent / "summary.json").is_file():
            return None
        if parent in own:
            break
    if real.name in ("config.json", "env.json", "curve.csv", "curve.parquet", "summary.json"):
        return None
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists() or path.is_symlink()
    except (OSError, ValueError):
        return False


def _clean_stale(out: Path, manifest: Path, written: list[Path]) -> None:
    """Remove files the previous report listed and this one did not write (then empty folders).

    Only what ``_deletable`` allows: the report's own outputs under tables/ and figures/.
    """
    if manifest.is_symlink():
        return
    try:
        old = json.loads(manifest.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return
    if not isinstance(old, list):
        return
    keep = {_rel(p, out) for p in written}
    for rel in old:
        if not isinstance(rel, str) or rel in keep:
            continue
        path = _deletable(out, rel)
        if path is None:
            if _exists(out / rel):
                log.warning(
                    "kept %s: the manifest names it but it is not a report output", store.cut_text(rel, 200)
                )
            continue
        path.unlink()
        log.info("removed stale report file %s", rel)
        for parent in path.parents:
            if (
                parent in (out, out / "tables", out / "figures")
                or parent.is_symlink()
                or not parent.is_dir()
                or any(parent.iterdir())
            ):
                break
            parent.rmdir()
