"""The generated blocks of the documentation, each rendered from docs/data (see tables.py).

Every function takes the data and returns Markdown: a table or the sentences that compare,
ending with the line that says where and when the numbers were measured. Comparisons are the
ratios of one run, on one machine; instruction counts (callgrind) are given beside timings
wherever both exist, because they do not drift with the load of a shared machine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

Document = Dict[str, Any]


class Data:
    """The JSON files of a data folder, read once each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: Dict[str, Document] = {}

    def __getitem__(self, name: str) -> Document:
        if name not in self._read:
            self._read[name] = json.loads(
                (self.folder / f"{name}.json").read_text()
            )
        return self._read[name]


BLOCKS: Dict[str, Callable[[Data], str]] = {}


def block(
    name: str,
) -> Callable[[Callable[[Data], str]], Callable[[Data], str]]:
    """Register a block renderer under ``name``."""

    def register(function: Callable[[Data], str]) -> Callable[[Data], str]:
        BLOCKS[name] = function
        return function

    return register


# -- formatting ------------------------------------------------------------------------------


def measured(*documents: Document) -> str:
    """The line naming the commit, date, machine and commands of the documents' runs."""
    stamps = []
    for document in documents:
        stamp = document.get("measured")
        if stamp is None:
            raise ValueError(
                "a data file without its 'measured' stamp: regenerate it"
            )
        stamps.append(stamp)
    places: Dict[str, List[str]] = {}
    for stamp in stamps:
        place = (
            f"commit `{stamp['commit']}`, {stamp['date']}, {stamp['machine']}, "
            f"Python {stamp['python']}"
        )
        quick = " (a --quick run: not for publishing)" if stamp["quick"] else ""
        places.setdefault(place, []).append(f"`{stamp['command']}`{quick}")
    return (
        "*Measured at "
        + "; and at ".join(
            f"{place}: {', '.join(runs)}" for place, runs in places.items()
        )
        + ".*"
    )


def x(value: float) -> str:
    """A ratio: ``3.1x``, or ``12x`` from 10 up."""
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def span(values: Sequence[float], unit: str = "x", digits: int = 1) -> str:
    """``lo-hi`` of ``values``, as ratios (``2.4-4.6x``) or in ``unit`` (one value if alike)."""
    lo, hi = min(values), max(values)
    if unit == "x":
        low, high, suffix = x(lo)[:-1], x(hi)[:-1], "x"
    else:
        low, high = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
        suffix = f" {unit}"
    return (low if low == high else f"{low}-{high}") + suffix


def count(value: float) -> str:
    """An instruction count: ``38,747``."""
    return f"{value:,.0f}"


def table(
    header: Sequence[str], align: Sequence[str], rows: List[Sequence[str]]
) -> str:
    """A Markdown table; ``align`` holds ``l`` or ``r`` per column.

    A number and its unit (``0.53 µs``) are joined by a no-break space, so that a narrow
    column (a phone) never puts the unit on a line of its own.
    """
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"
    )
    for row in rows:
        cells = [re.sub(r"(\d) (µs|ms|s|B)\b", "\\1\u00a0\\2", c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def faster(ours: float, theirs: float) -> str:
    """``1.3x faster`` / ``1.2x slower`` / ``as fast``: tokenbucket's time against another's."""
    if abs(theirs / ours - 1) < 0.05:
        return "as fast (within 5%)"
    if theirs > ours:
        return f"{theirs / ours:.1f}x faster"
    return f"{ours / theirs:.1f}x slower"


# The blocks themselves, registered on import, in the order of the pages.
import blocks_core  # noqa: E402, F401
import blocks_middleware  # noqa: E402, F401
import blocks_more  # noqa: E402, F401
import blocks_redis  # noqa: E402, F401
