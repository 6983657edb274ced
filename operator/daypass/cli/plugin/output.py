"""How the plugin prints: tables sized to the terminal, JSON, YAML and CSV, ages and times.

Tables follow kubectl's look: upper-case headers, no borders, three spaces between columns.
On a terminal, free-text columns are cut to fit its width; in a pipe nothing is ever cut.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, TextIO

# Never wider than this in a pipe: a row of an audit report can be long, and grep wants it whole.
PIPE_WIDTH = 100_000
# A free-text column cut to fit a terminal keeps at least this much of its text.
FLEXIBLE_MIN = 8
GAP = 3


def width(stream: TextIO) -> int:
    if stream.isatty():
        return shutil.get_terminal_size().columns
    return PIPE_WIDTH


def table(headers: Sequence[str], rows: Sequence[Sequence[str]],
          flexible: Collection[str] = (), stream: TextIO | None = None,
          columns: int | None = None) -> None:
    """Print rows under headers; the `flexible` columns give way when the terminal is narrow.

    `columns` is the width to fit, the terminal's (or no limit in a pipe) when left out.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = stream or sys.stdout
    grid = Table(box=None, show_edge=False, pad_edge=False, padding=(0, GAP, 0, 0),
                 header_style=None)
    narrowest = 0
    for index, header in enumerate(headers):
        natural = max([len(header), *(len(row[index]) for row in rows)])
        if header in flexible:
            least = min(FLEXIBLE_MIN, natural)
            grid.add_column(header, min_width=least, overflow="ellipsis")
        else:
            least = natural
            grid.add_column(header, min_width=natural, no_wrap=True)
        narrowest += least + GAP
    for row in rows:
        grid.add_row(*(Text(cell, no_wrap=True, overflow="ellipsis") for cell in row))

    # Past its narrowest, a row is printed whole and the terminal wraps it, as kubectl's are:
    # a column cut off at the edge would hide facts without saying so.
    fit = max(columns or width(out), narrowest)
    buffer = io.StringIO()
    console = Console(file=buffer, width=fit, color_system=None,
                      highlight=False, markup=False, emoji=False, soft_wrap=False)
    console.print(grid)
    # rich pads every cell to its column's width: kubectl's lines end at their last character.
    for line in buffer.getvalue().splitlines():
        print(line.rstrip(), file=out)


def as_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def as_yaml(data: Any) -> None:
    import yaml

    print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), end="")


def as_csv(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)


def as_list(items: list[dict[str, Any]], output: str) -> None:
    """Objects as `kubectl get -o json|yaml` prints several: one v1 List."""
    document = {"apiVersion": "v1", "kind": "List", "items": items, "metadata": {}}
    if output == "json":
        as_json(document)
    else:
        as_yaml(document)


def age(delta: timedelta) -> str:
    """A span as kubectl writes ages: 45s, 5m30s, 42m, 3h5m, 30h, 3d4h, 12d."""
    seconds = max(0, int(delta.total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def until(moment: datetime | None, now: datetime) -> str:
    """How far a time is from now: `in 42m` ahead, `42m ago` behind, `-` when unknown."""
    if moment is None:
        return "-"
    if moment >= now:
        return f"in {age(moment - now)}"
    return f"{age(now - moment)} ago"


def warn(message: str) -> None:
    print(message, file=sys.stderr)
