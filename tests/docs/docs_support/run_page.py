"""Run one Markdown page's samples in a fresh interpreter: ``python run_page.py PAGE``.

The page's ```python blocks run in order in one namespace, as a reader would paste them into a
new Python session; ```pycon blocks are checked as doctests. Exit status 1 names the block.
"""

from __future__ import annotations

import doctest
import re
import sys
import textwrap
import types
from pathlib import Path

FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def blocks(text: str):
    """Yield (language, first line number, dedented body) for each fenced block."""
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        yield match.group("lang"), line, textwrap.dedent(match.group("body"))


def main(path: str) -> int:
    page = Path(path)
    # The samples run in a fresh __main__ module with no file: tools that look up a sample's
    # source (hypothesis, through inspect) then find none, not this script's lines (3.13 does
    # look there for a class, by its __firstlineno__).
    main_module = types.ModuleType("__main__")
    sys.modules["__main__"] = main_module
    namespace = main_module.__dict__
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for lang, line, body in blocks(page.read_text()):
        where = f"{page.name}:{line}"
        if lang == "python":
            exec(compile(body, where, "exec"), namespace)
        elif lang == "pycon":
            result = runner.run(parser.get_doctest(body, namespace, where, where, line))
            if result.failed:
                print(f"doctest at {where} failed", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
