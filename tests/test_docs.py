"""Every Python sample in README.md and docs/ runs, so the documentation cannot rot.

Each page's ```python blocks run in order in one namespace (later blocks may use names from
earlier ones), as a reader would paste them. ```pycon blocks are checked as doctests.
"""

from __future__ import annotations

import doctest
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```", re.M | re.S
)


def blocks(page: Path):
    text = page.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        body = textwrap.dedent(match.group("body"))
        yield match.group("lang"), line, body


def test_pages_have_samples():
    """The harness finds the samples (a broken regex would make every page pass)."""
    counted = {page.name: sum(lang == "python" for lang, _, _ in blocks(page)) for page in PAGES}
    assert counted["README.md"] >= 1
    assert sum(counted.values()) >= 10, counted


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_samples_run(page, monkeypatch, tmp_path, request):
    """Run the page's Python blocks in order; check its pycon blocks as doctests."""
    monkeypatch.chdir(tmp_path)
    if page.name == "redis.md":  # its samples talk to a real Redis, as the reader's would
        monkeypatch.setenv("TOKENBUCKET_REDIS_URL", request.getfixturevalue("redis_url"))
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for lang, line, body in blocks(page):
        where = f"{page.relative_to(ROOT)}:{line}"
        if lang == "python":
            try:
                exec(compile(body, where, "exec"), namespace)
            except Exception as error:
                raise AssertionError(f"sample at {where} failed: {error!r}") from error
        elif lang == "pycon":
            test = parser.get_doctest(body, namespace, where, where, line)
            result = runner.run(test)
            assert result.failed == 0, f"doctest at {where} failed"
