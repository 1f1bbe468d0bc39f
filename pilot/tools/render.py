"""Tables as istioctl prints them: aligned columns, plain text when piped, rich (bold header, coloured
states) in a terminal. ``NO_COLOR`` turns the colours off as everywhere."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import IO

# Words that get a colour in a terminal (statuses of proxy-status, levels of analyze).
STYLES: Mapping[str, str] = {
    "SYNCED": "green",
    "STALE": "yellow",
    "ERROR": "bold red",
    "NOT SENT": "dim",
    "IGNORED": "dim",
    "Error": "bold red",
    "Warning": "yellow",
    "Info": "cyan",
    "HEALTHY": "green",
    "UNHEALTHY": "red",
}


def is_terminal(out: IO[str]) -> bool:
    return hasattr(out, "isatty") and out.isatty() and not os.environ.get("NO_COLOR")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    padding: int = 5,
    out: IO[str] | None = None,
) -> None:
    """Print ``rows`` under ``headers``: Go tabwriter's layout (cells padded to the widest plus ``padding``,
    the last column unpadded) when piped, a rich table in a terminal."""
    out = out or sys.stdout
    if is_terminal(out):
        _rich_table(headers, rows, padding, out)
        return
    out.write(plain_table(headers, rows, padding=padding))


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, padding: int = 5) -> str:
    lines = [list(headers), *[list(r) for r in rows]]
    columns = max(len(line) for line in lines)
    widths = [max((len(line[i]) for line in lines if i < len(line)), default=0) for i in range(columns)]
    text = []
    for line in lines:
        cells = [cell.ljust(widths[i] + padding) if i < len(line) - 1 else cell for i, cell in enumerate(line)]
        text.append("".join(cells).rstrip())
    return "\n".join(text) + "\n"


def _rich_table(headers: Sequence[str], rows: Sequence[Sequence[str]], padding: int, out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, max(1, padding // 2)), header_style="bold")
    for header in headers:
        grid.add_column(header, no_wrap=True, overflow="fold")
    for row in rows:
        grid.add_row(*(Text(cell, style=style_of(cell)) for cell in row))
    Console(file=out, soft_wrap=True, highlight=False).print(grid)


def style_of(cell: str) -> str:
    word = cell.split(" (", 1)[0]
    return STYLES.get(word, "")


def coloured(text: str, word: str, out: IO[str]) -> str:
    """``text`` with ``word``'s colour when ``out`` is a terminal (for lines that are not tables)."""
    style = STYLES.get(word, "")
    if not style or not is_terminal(out):
        return text
    from io import StringIO

    from rich.console import Console
    from rich.text import Text

    buffer = StringIO()
    Console(file=buffer, force_terminal=True, highlight=False, soft_wrap=True).print(Text(text, style=style), end="")
    return buffer.getvalue()
