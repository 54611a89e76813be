"""Writing record files so a reader never sees half of one, and the store's one error. Torch-free.

Every file of a run record goes through ``write_bytes_atomic`` (temp file in the same folder,
fsync, ``os.replace``): a kill or a full disk leaves the old file or the new one, never a mix.

>>> import tempfile, pathlib, json
>>> p = pathlib.Path(tempfile.mkdtemp()) / "a" / "x.json"
>>> write_json_atomic(p, {"loss": float("nan"), "n": 1})
>>> json.loads(p.read_text())
{'loss': None, 'n': 1}
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BenchError

__all__ = ["StoreError", "cut_text", "write_bytes_atomic", "write_json_atomic", "write_text_atomic"]


class StoreError(BenchError):
    """Records that do not follow the results schema."""


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN/inf: non-finite floats are written as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(v) for v in obj]
    return obj


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, ``os.replace``.

    Readers see the old file or the new one, never a half-written one. Creates parent folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """``write_bytes_atomic`` of ``text`` in UTF-8 (newlines written as given)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    """numpy/torch scalars (anything with ``.item()``) as plain numbers; non-finite as null."""
    if hasattr(obj, "item"):
        return _finite_or_none(obj.item())
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON atomically (non-finite floats become null)."""
    text = json.dumps(_finite_or_none(obj), indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    write_text_atomic(path, text + "\n")


def _cut(value: Any, limit: int = 120) -> str:
    """``repr`` cut to ``limit`` characters: a problem line never echoes a huge damaged value."""
    return cut_text(repr(value), limit)


def cut_text(text: str, limit: int = 400) -> str:
    """``text`` itself when short, else its start and how long it was (error lines stay readable).

    >>> cut_text("x" * 1000, 40)
    'xxxxxxxxxxxxxxxxxxxxxxxx... (1000 chars)'
    """
    text = str(text)
    if len(text) <= limit:
        return text
    tail = f"... ({len(text)} chars)"
    return text[: max(0, limit - len(tail))] + tail
