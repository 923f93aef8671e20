"""Every Python sample in README.md and docs/ runs, so the documentation cannot rot.

Each ```python block runs alone in a fresh interpreter (tests/docs/docs_support/run_page.py), as a
reader would paste only that block: it brings its own imports and set-up. A block that cannot
(it needs the Django project the blocks before it configure) is marked on its page and listed in
NOT_ALONE; its page also runs in order in one namespace, with its ```pycon blocks as doctests.
Samples may talk to a real Redis (TOKENBUCKET_REDIS_URL) and to a minimal Django project.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
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
from run_page import blocks, python_blocks  # noqa: E402

sys.path.remove(str(SUPPORT))

#: Every ```python block that cannot run by itself, with the reason its page's marker gives.
NOT_ALONE = {
    ("docs/admin-api.md", 3): ("runs the calls and the logging set-up of the two blocks above"),
    ("docs/django.md", 2): "configures Django with the settings and views above",
    ("docs/django.md", 3): "needs the Django project set up above",
    ("docs/django.md", 4): "needs the Django project set up above",
}


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


#: (page, index) of every ```python block that runs alone.
ALONE = [
    (page, index)
    for page in PAGES
    for index, (_, _, reason) in enumerate(python_blocks(page.read_text()))
    if reason is None
]
#: Pages run in order, in one namespace: those with a block that cannot run alone or a doctest.
IN_ORDER = [
    page
    for page in PAGES
    if any(reason for _, _, reason in python_blocks(page.read_text()))
    or any(lang == "pycon" for lang, _, _ in blocks(page.read_text()))
]


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


def test_a_sample_that_needs_the_one_before_fails_alone(tmp_path):
    """Run alone, a block that relies on an earlier block's names fails, naming its line."""
    page = tmp_path / "broken.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n```python\nassert x == 1\n```\n")
    run = [sys.executable, str(SUPPORT / "run_page.py"), str(page)]
    assert subprocess.run(run, capture_output=True).returncode == 0  # in order: fine
    alone = subprocess.run([*run, "1"], capture_output=True, text=True)
    assert alone.returncode == 1
    assert 'File "broken.md:8"' in alone.stderr
    assert "NameError: name 'x' is not defined" in alone.stderr


def test_not_runnable_blocks_are_marked_listed_and_counted():
    """A block is run alone unless its page marks it; every marked block is listed in NOT_ALONE
    with the marker's reason, so none is skipped silently. The marker is an HTML comment right
    before the fence, invisible on the site."""
    text = "<!-- not runnable alone: a reason -->\n```python\nx\n```\n\n```python\ny\n```\n"
    assert [reason for _, _, reason in python_blocks(text)] == ["a reason", None]
    marked = {
        (name(page), index): reason
        for page in PAGES
        for index, (_, _, reason) in enumerate(python_blocks(page.read_text()))
        if reason is not None
    }
    assert marked == NOT_ALONE
    total = sum(len(list(python_blocks(page.read_text()))) for page in PAGES)
    assert len(ALONE) + len(marked) == total
    assert len(ALONE) >= 76, (len(ALONE), total)
    assert {page.name for page in IN_ORDER} == {"admin-api.md", "django.md"}


@pytest.fixture(scope="session")
def alone_runs(request, tmp_path_factory):
    """Runs the selected blocks alone, each in a fresh interpreter of its own, three at a time
    (a block takes about a second, mostly imports). Each block that uses Redis gets a database
    of the session's server to itself, so that blocks running together do not meet."""
    selected = [
        (item.callspec.params["page"], item.callspec.params["index"])
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_sample_runs_alone"
    ]
    bodies = {
        (page, index): list(python_blocks(page.read_text()))[index][1] for page, index in selected
    }
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    if any("TOKENBUCKET_REDIS_CLUSTER_URL" in body for body in bodies.values()):
        cluster = request.getfixturevalue("redis_cluster")
        cluster.heal()
        cluster.flush()
        env["TOKENBUCKET_REDIS_CLUSTER_URL"] = cluster.url
    databases = iter(range(1, 16))
    port = None
    if any("TOKENBUCKET_REDIS_URL" in body for body in bodies.values()):
        port = request.getfixturevalue("redis_server").port

    def run(page: Path, index: int, block_env: dict, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(SUPPORT / "run_page.py"), str(page), str(index)],
            cwd=cwd,
            env=block_env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        runs: dict = {}
        for (page, index), body in bodies.items():
            block_env = dict(env)
            if "TOKENBUCKET_REDIS_URL" in body:
                block_env["TOKENBUCKET_REDIS_URL"] = f"redis://127.0.0.1:{port}/{next(databases)}"
            cwd = tmp_path_factory.mktemp("sample")  # here: mktemp is not thread-safe
            runs[page, index] = pool.submit(run, page, index, block_env, cwd)
        yield runs
        for future in runs.values():
            future.cancel()


@pytest.mark.parametrize(("page", "index"), ALONE, ids=[f"{name(p)}-{i}" for p, i in ALONE])
def test_sample_runs_alone(page, index, alone_runs):
    """Issue 21 item 5: 38 of 82 blocks failed when pasted alone (missing imports, names of an
    earlier block). Each block runs by itself in a fresh interpreter."""
    future: Future = alone_runs[page, index]
    result = future.result()
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("page", IN_ORDER, ids=name)
def test_samples_run(page, tmp_path, redis_url, request):
    """The page's samples run in order without error in a fresh interpreter."""
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
    script = (ROOT / "src" / "tokenbucket" / "_stores" / "redis" / "lua" / "bucket.lua").read_text()
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


def _tree_paths(page: str) -> set:
    """The files the package trees in ``page`` name, as paths under ``src/tokenbucket``.

    Every ``text`` block whose first line is ``src/tokenbucket/`` or a folder under it is a tree;
    an entry may name several files or folders, separated by ", ".
    """
    text = (ROOT / "docs" / page).read_text()
    named = set()
    for root, body in re.findall(r"```text\nsrc/tokenbucket/((?:[\w]+/)*)\n(.*?)```", text, re.S):
        stack = [part for part in root.split("/") if part]
        depth0 = len(stack)
        for line in body.splitlines():
            entry = re.match(r"^((?:│   |    )*)[├└]── ([\w./]+(?:, [\w./]+)*)", line)
            if entry is None:
                continue
            depth = depth0 + len(entry.group(1)) // 4
            del stack[depth:]
            names = entry.group(2).split(", ")
            for name in names:
                if name.endswith("/"):
                    named.add("/".join([*stack, name.rstrip("/"), "__init__.py"]))
                else:
                    named.add("/".join([*stack, name]))
            if len(names) == 1 and names[0].endswith("/"):
                stack.append(names[0].rstrip("/"))
    return named


def test_the_package_tree_names_every_module():
    """how-it-works.md's tree names every module of the package (a public folder, metrics/
    and testing/, stands for its files) and nothing that is not there: it cannot drift."""
    package = ROOT / "src" / "tokenbucket"
    files = {
        str(path.relative_to(package))
        for path in package.rglob("*")
        if path.suffix in (".py", ".lua") and "__pycache__" not in path.parts
    }
    public = ("metrics/", "testing/")
    files = {f for f in files if not f.startswith(public) or f.endswith("/__init__.py")}
    files = {f for f in files if not (f.endswith("/__init__.py") and f.count("/") > 1)}
    named = _tree_paths("how-it-works.md")
    named = {f for f in named if not (f.endswith("/__init__.py") and f.count("/") > 1)}
    assert named == files
