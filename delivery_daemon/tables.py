"""Plain-text tables for the command line (``orders list|show``, ``demo``), with nothing cut and no dependency.

Contract of :func:`render_table`:

* The result is the table's lines joined by ``\\n``, without a trailing newline; every line has its trailing spaces
  stripped. The caller prints it.
* ``title``, when given, is the first line, as is (not centred).
* With ``show_header`` (the default), a line of column headers follows, then a rule of ``-`` under each column, as
  wide as the column. Without it (a key/value grid), only the rows are printed.
* Columns are separated by ``gap`` spaces (two by default), with no margin before the first.
* A column is as wide as its widest header or cell, in terminal cells: East Asian wide characters count two,
  combining marks none. No terminal width is assumed, so a line is as long as its content.
* A cell is never truncated, wrapped or abbreviated (ids must stay greppable). A cell with line breaks spans several
  lines, the row's other cells left blank on the extra lines.
* ``Column(justify="right")`` right-justifies the header and the cells (numbers); the default is left.
* ``None`` is an empty cell. A tab becomes a space; any other control character (an escape sequence in an error
  message from a remote server, say) is printed as ``\\xNN`` rather than sent to the terminal.
* Every row must have one cell per column (``ValueError`` otherwise). With no rows, the title, header and rule are
  still printed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Column:
    """A column's header and how its cells are justified."""

    header: str
    justify: Literal["left", "right"] = "left"


def _visible(line: str) -> str:
    if line.isprintable():
        return line
    return "".join(
        " " if char == "\t" else f"\\x{ord(char):02x}" if unicodedata.category(char) == "Cc" else char for char in line
    )


def _lines(cell: object) -> list[str]:
    text = "" if cell is None else str(cell)
    return [_visible(line) for line in text.splitlines()] or [""]


def cell_width(text: str) -> int:
    """How many terminal cells ``text`` (one line) takes: wide characters two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(
        0 if unicodedata.combining(char) else 2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text
    )


def _pad(text: str, width: int, justify: str) -> str:
    fill = " " * (width - cell_width(text))
    return fill + text if justify == "right" else text + fill


def render_table(
    columns: Sequence[Column | str],
    rows: Iterable[Sequence[object]],
    *,
    title: str | None = None,
    show_header: bool = True,
    gap: int = 2,
) -> str:
    """The table as text (see the module's contract); a plain ``str`` column is a left-justified header."""
    cols = [column if isinstance(column, Column) else Column(column) for column in columns]
    cells: list[list[list[str]]] = []
    for row in rows:
        if len(row) != len(cols):
            raise ValueError(f"a row has {len(row)} cells for {len(cols)} columns: {row!r}")
        cells.append([_lines(cell) for cell in row])
    widths = [
        max(
            [cell_width(column.header) if show_header else 0]
            + [cell_width(line) for row_cells in cells for line in row_cells[index]]
        )
        for index, column in enumerate(cols)
    ]
    separator = " " * gap

    def line(texts: Sequence[str]) -> str:
        return separator.join(
            _pad(text, width, column.justify) for text, width, column in zip(texts, widths, cols, strict=True)
        ).rstrip()

    out: list[str] = [] if title is None else [title]
    if show_header:
        out.append(line([_visible(column.header) for column in cols]))
        out.append(separator.join("-" * width for width in widths))
    for row_cells in cells:
        height = max(len(cell) for cell in row_cells)
        out.extend(line([cell[i] if i < len(cell) else "" for cell in row_cells]) for i in range(height))
    return "\n".join(out)
