"""Every Python sample in README.md and docs/ runs, so the documentation cannot rot.

Each page runs in a fresh interpreter (tests/docs/docs_support/run_page.py): its ```python blocks
in order in one namespace, as a reader would paste them, and its ```pycon blocks as doctests.
Pages may talk to a real Redis (TOKENBUCKET_REDIS_URL) and to a minimal Django project.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.9 and 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent / "docs_support"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

sys.path.insert(0, str(SUPPORT))
from run_page import blocks  # noqa: E402

sys.path.remove(str(SUPPORT))


def test_pages_have_samples():
    """The harness finds the samples (a broken pattern would make every page pass)."""
    counted = {
        page.name: sum(lang == "python" for lang, _, _ in blocks(page.read_text()))
        for page in PAGES
    }
    assert counted["README.md"] >= 2
    assert counted["quickstart.md"] >= 8
    assert sum(counted.values()) >= 30, counted


def test_a_failing_sample_fails(tmp_path):
    """The runner reports a broken sample with its page and line (so passing means something)."""
    page = tmp_path / "broken.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n")
    result = subprocess.run(
        [sys.executable, str(SUPPORT / "run_page.py"), str(page)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert 'File "broken.md:8"' in result.stderr


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_samples_run(page, tmp_path, redis_url, request):
    """The page's samples run without error in a fresh interpreter."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "TOKENBUCKET_REDIS_URL": redis_url,
    }
    if page.name == "redis.md":  # its Redis Cluster samples
        env["TOKENBUCKET_REDIS_CLUSTER_URL"] = request.getfixturevalue("redis_cluster_url")
    result = subprocess.run(
        [sys.executable, str(SUPPORT / "run_page.py"), str(page)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_redis_field_table_lists_every_field_the_script_writes():
    """docs/redis.md's table of hash fields names every field bucket.lua stores (HSET)."""
    script = (ROOT / "src" / "tokenbucket" / "_lua" / "bucket.lua").read_text()
    written = set()
    for call in re.findall(r"redis\.call\('HSET', key, ([^)]*)\)", script):
        written.update(re.findall(r"'(\w+)'", call))
    assert written >= {"t", "u", "l", "c", "r", "C", "R"}, written
    page = (ROOT / "docs" / "redis.md").read_text()
    table = page[page.index("| field | meaning |") :].split("\n\n")[0]
    documented = {
        name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    assert documented == written


def test_docs_command_is_the_one_scripts_test_sh_runs():
    """README builds the site the way scripts/test.sh does (Material's notice silenced)."""
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "scripts" / "test.sh").read_text()
    builds = [
        line for text in (readme, script) for line in text.splitlines() if "mkdocs build" in line
    ]
    assert len(builds) == 2, builds
    assert all("NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict" in line for line in builds)


def test_docs_group_can_format_signatures():
    """mkdocstrings formats API signatures with Ruff or Black: the docs group installs one."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    docs = pyproject["dependency-groups"]["docs"]
    assert any(re.match(r"(ruff|black)\b", requirement) for requirement in docs), docs


def test_built_site_is_pages_and_full_size_figures(tmp_path):
    """The built site has no figure sources, each figure links to its full-size image, and the
    build prints no warning (signature formatting, Material's notice)."""
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNING" not in result.stderr, result.stderr[-3000:]
    assert "Formatting signatures" not in result.stderr
    assert "end of life" not in result.stderr
    assert not (site / "figures.py").exists()
    assert not (site / "data").exists()
    images = 0
    for page in site.rglob("*.html"):
        for src in re.findall(r'<img [^>]*src="([^"]+\.png)"', page.read_text()):
            images += 1
            assert f'<a href="{src}"><img ' in page.read_text(), (page, src)
    assert images >= 2


@pytest.mark.parametrize("name", ["README.md", "docs/index.md", "docs/quickstart.md"])
def test_commented_sample_lines_fit_the_page(name):
    """Review item 10: at 1280 px, code lines with a trailing comment wrapped mid-comment on
    the home page and the quick start. Lines with a comment now fit in 79 characters."""
    long = [
        line
        for lang, _, code in blocks((ROOT / name).read_text())
        if lang == "python"
        for line in code.splitlines()
        if "#" in line and len(line) > 79
    ]
    assert long == []


def test_readme_and_home_page_open_with_the_same_sample():
    """README.md and docs/index.md show the same first sample (the home page's has no assert)."""
    first = {
        name: next(code for lang, _, code in blocks((ROOT / name).read_text()) if lang == "python")
        for name in ("README.md", "docs/index.md")
    }
    readme = [line for line in first["README.md"].splitlines() if not line.startswith("assert")]
    assert readme == first["docs/index.md"].splitlines()


def test_docstrings_have_no_rest_double_colons():
    """Docstrings are Google style rendered as Markdown: a reST 'Example::' shows its '::'."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "src").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"[^:\s]::\s*$", line)
    ]
    assert found == []


def test_figures_fit_the_column_at_150_dpi():
    """Every figure is drawn at most 7.2 inches wide at 150 dpi (1,080 pixels), so the column
    (and a phone) shrinks none of them more than the others; several-limits.png was 11 inches
    at 100 dpi, two panels side by side, its labels a few pixels high."""
    widths = {}
    for path in sorted((ROOT / "docs" / "img").glob("*.png")):
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n", path
        widths[path.name] = int.from_bytes(header[16:20], "big")
    assert widths
    assert all(width <= 1080 for width in widths.values()), widths


#: Pages whose samples were being rewritten elsewhere when the others were fitted to the box.
@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if p.parent.name == "docs"],
    ids=lambda p: p.name,
)
def test_samples_fit_the_code_box(page):
    """Code blocks do not wrap (a wrapped line restarts at column 0 and loses its indentation):
    each sample line fits the box, 80 columns at the site's widest layout, and scrolls on a
    narrower screen. Output and diagrams (```text) may be wider."""
    long = [
        f"{page.name}:{line + number}: {text}"
        for lang, line, body in blocks(page.read_text())
        if lang != "text"
        for number, text in enumerate(body.splitlines())
        if len(text) > 80
    ]
    assert long == []
