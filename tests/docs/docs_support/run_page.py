"""Run a Markdown page's samples in a fresh interpreter.

``python run_page.py PAGE`` runs the page's ```python blocks in order in one namespace, as a
reader would paste them into a new Python session, and checks its ```pycon blocks as doctests.
``python run_page.py PAGE INDEX`` runs the page's ```python block number INDEX (from 0) alone,
as a reader would paste only that block. An error names the page and the line.

A block that cannot run alone says so, for the tests, in an HTML comment right before its fence
(``<!-- not runnable alone: the reason -->``), which the rendered page does not show.
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


#: The marker of a block that cannot run alone, on the lines right before its fence.
NOT_ALONE = re.compile(r"<!-- not runnable alone: (?P<reason>[^<>]+?) -->\s*\Z")


def python_blocks(text: str):
    """Yield (first line number, dedented body, reason or None) for each ```python block.

    The reason is the one its ``not runnable alone`` marker gives; None for a block that runs
    by itself.
    """
    for match in FENCE.finditer(text):
        if match.group("lang") != "python":
            continue
        line = text.count("\n", 0, match.start()) + 2
        before = text[max(0, match.start() - 300) : match.start()]
        marker = NOT_ALONE.search(before)
        reason = marker.group("reason") if marker else None
        yield line, textwrap.dedent(match.group("body")), reason


def fresh_namespace() -> dict:
    """The namespace of a fresh __main__ module with no file, for the samples.

    Tools that look up a sample's source (hypothesis, through inspect) then find none, not this
    script's lines (3.13 does look there for a class, by its __firstlineno__).
    """
    main_module = types.ModuleType("__main__")
    sys.modules["__main__"] = main_module
    return main_module.__dict__


def run_alone(path: str, index: int) -> int:
    """Run the page's ```python block number ``index`` alone."""
    page = Path(path)
    line, body, _ = list(python_blocks(page.read_text()))[index]
    exec(compile(body, f"{page.name}:{line}", "exec"), fresh_namespace())
    return 0


def main(path: str) -> int:
    page = Path(path)
    namespace = fresh_namespace()
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
    if len(sys.argv) == 3:
        sys.exit(run_alone(sys.argv[1], int(sys.argv[2])))
    sys.exit(main(sys.argv[1]))
