"""Every Python sample in README.md and docs/ runs, so the documentation cannot rot.

Each page runs in a fresh interpreter (tests/docs_support/run_page.py): its ```python blocks
in order in one namespace, as a reader would paste them, and its ```pycon blocks as doctests.
Pages may talk to a real Redis (TOKENBUCKET_REDIS_URL) and to a minimal Django project.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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
