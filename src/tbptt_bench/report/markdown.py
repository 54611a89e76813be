"""A Markdown pipe-table writer that escapes its cells, and a DataFrame front end. Torch-free.

``DataFrame.to_markdown`` needs the optional ``tabulate`` package (absent from this project's
environment), and its output would change with tabulate's version; this writer is ours, so the
same frame always gives the same bytes. Cells are escaped: ``|`` becomes ``\\|`` and a line break
``<br>``, so every row keeps the header's cell count.

>>> print("\\n".join(md_table(["a", "b"], [["x|y", "1"]], "lr")))
| a | b |
| :--- | ---: |
| x\\|y | 1 |
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..errors import BenchError

__all__ = ["MarkdownError", "escape", "frame_to_markdown", "md_table"]


class MarkdownError(BenchError):
    """A table whose rows do not match its header."""


def escape(cell: Any) -> str:
    """One table cell: text with pipes escaped and line breaks as ``<br>``."""
    text = "" if cell is None else str(cell)
    text = text.replace("\\|", "|").replace("|", "\\|")
    return re.sub(r"\r\n|\r|\n", "<br>", text).strip()


def md_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], align: str | None = None) -> list[str]:
    """Lines of a pipe table; ``align`` has one ``l`` or ``r`` per column (default all ``l``)."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise MarkdownError(f"align={align!r} has {len(align)} columns, the header {len(header)}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise MarkdownError(f"row {i} has {len(row)} cells, the header {len(header)}: {list(row)!r}")
    seps = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(escape(h) for h in header) + " |", "| " + " | ".join(seps) + " |"]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return lines


def frame_to_markdown(df, align: str | None = None) -> list[str]:
    """A DataFrame's columns and rows (index dropped) as a pipe table; missing values as ``—``."""
    rows = [["—" if _missing(v) else v for v in rec] for rec in df.itertuples(index=False, name=None)]
    return md_table([str(c) for c in df.columns], rows, align)


def _missing(v: Any) -> bool:
    try:
        return v is None or bool(v != v)
    except (TypeError, ValueError):
        return False
