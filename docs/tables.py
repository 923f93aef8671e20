"""Write the documentation's generated blocks (tables, comparisons) from docs/data.

No measured number in README.md or docs/*.md can then drift from its data.

A block is the text between ``<!-- generated: NAME -->`` and ``<!-- /generated -->``; NAME is
one of ``BLOCKS`` (docs/blocks.py and the blocks_*.py it imports), rendered from the JSON
that benchmarks/regenerate.py writes, each with the commit and the machine it was measured at.

    .venv/bin/python docs/tables.py           # rewrite every block in place
    .venv/bin/python docs/tables.py --check   # exit 1 if a block differs from docs/data
    .venv/bin/python docs/tables.py --data DIR --render   # print every block from DIR

The docs tests run ``--check``'s function: fast, no benchmark.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from blocks import BLOCKS, Data  # noqa: E402

#: The pages that hold generated blocks (any other page may too: every page is searched).
PAGES = [ROOT / "README.md", *sorted(HERE.glob("*.md"))]

BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
    re.S,
)


def render(name: str, data: Data) -> str:
    """The body of block ``name``: a blank line, the block's Markdown, a blank line."""
    return "\n" + BLOCKS[name](data).strip("\n") + "\n\n"


def blocks_in(text: str) -> List[Tuple[str, str]]:
    """``(name, body)`` of each generated block in ``text``, in order."""
    return [(m.group("name"), m.group("body")) for m in BLOCK.finditer(text)]


def rewrite(text: str, data: Data) -> str:
    """``text`` with every generated block rendered afresh."""

    def one(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in BLOCKS:
            raise SystemExit(
                f"unknown generated block {name!r}; known: {', '.join(BLOCKS)}"
            )
        return match.group(1) + render(name, data) + match.group(4)

    return BLOCK.sub(one, text)


def differences(data: Data) -> Dict[str, List[str]]:
    """Per page, the names of the blocks that differ from what docs/data renders."""
    stale: Dict[str, List[str]] = {}
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for name, body in blocks_in(text):
            if name not in BLOCKS or body != render(name, data):
                stale.setdefault(page.name, []).append(name)
    return stale


def main() -> None:
    """Rewrite, check or print the generated blocks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a block is stale"
    )
    parser.add_argument(
        "--render", action="store_true", help="print every block, write none"
    )
    args = parser.parse_args()
    data = Data(args.data)
    if args.render:
        for name in BLOCKS:
            print(
                f"<!-- generated: {name} -->{render(name, data)}<!-- /generated -->\n"
            )
        return
    if args.check:
        stale = differences(data)
        for page, names in stale.items():
            print(
                f"{page}: stale blocks {', '.join(names)} (run python docs/tables.py)"
            )
        raise SystemExit(1 if stale else 0)
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, data)
        if new != text:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote the generated blocks of {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
