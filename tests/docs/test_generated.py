"""Every measured number in README.md and docs/ is a generated block, equal to what docs/data says.

Issue 21 item 8: 22 claims had drifted from the code they described (tables 180 commits old,
ratios measured before the store changed). Now benchmarks/regenerate.py writes docs/data and
docs/tables.py renders each block from it; these tests fail when a block was edited by hand or
its data changed without re-rendering, and when a data file does not say where it came from.
They run no benchmark.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _load("docs_tables", DOCS / "tables.py")
regenerate = _load("regenerate", ROOT / "benchmarks" / "regenerate.py")
DATA = tables.Data(DOCS / "data")


def test_generated_blocks_equal_what_docs_data_renders():
    assert tables.differences(DATA) == {}, "run: .venv/bin/python docs/tables.py"


def test_every_block_is_used_and_every_used_block_is_known():
    used = {name for page in tables.PAGES for name, _ in tables.blocks_in(page.read_text())}
    assert used == set(tables.BLOCKS)


def test_a_block_edited_by_hand_is_found_and_rewritten():
    page = "Before.\n\n<!-- generated: core-table -->\n| a | b |\n<!-- /generated -->\nAfter.\n"
    assert tables.blocks_in(page) == [("core-table", "| a | b |\n")]
    fixed = tables.rewrite(page, DATA)
    assert fixed != page
    assert fixed.startswith("Before.\n\n<!-- generated: core-table -->\n\n| library |")
    assert fixed.endswith("\n\n<!-- /generated -->\nAfter.\n")
    assert tables.rewrite(fixed, DATA) == fixed


def test_an_unknown_block_name_is_refused():
    with pytest.raises(SystemExit, match="unknown generated block 'core-tabel'"):
        tables.rewrite("<!-- generated: core-tabel -->\nx\n<!-- /generated -->", DATA)


@pytest.mark.parametrize("path", sorted((DOCS / "data").glob("*.json")), ids=lambda p: p.name)
def test_each_data_file_says_where_it_was_measured_by_a_full_run(path):
    stamp = json.loads(path.read_text())["measured"]
    assert re.fullmatch(r"[0-9a-f]{7,40}( \+ uncommitted changes)?", stamp["commit"]), stamp
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", stamp["date"]), stamp
    assert re.search(r", \d+ cores$", stamp["machine"]), stamp
    assert stamp["python"].count(".") == 2, stamp
    assert stamp["command"].startswith("python benchmarks/"), stamp
    assert stamp["quick"] is False, "a --quick run's numbers are not for the docs"


def test_every_data_file_is_made_by_a_step_of_the_one_command():
    made = {step.data for step in regenerate.STEPS.values()}
    assert {p.name for p in (DOCS / "data").glob("*.json")} == made


def test_the_peers_are_pinned_and_the_pins_are_what_the_data_was_measured_with():
    pins = regenerate.pins()
    assert {"limits", "pyrate-limiter", "throttled-py", "token-bucket", "slowapi"} <= set(pins)
    for path in sorted((DOCS / "data").glob("*.json")):
        peers = json.loads(path.read_text())["measured"]["peers"]
        for name, version in peers.items():
            if regenerate._normal(name) in pins:
                assert version == pins[regenerate._normal(name)], (path.name, name)


def test_no_measured_number_outside_a_generated_block_on_the_benchmarks_page():
    """benchmarks.md holds only generated numbers: µs, x ratios and decisions per second."""
    text = (DOCS / "benchmarks.md").read_text()
    outside = re.sub(r"<!-- generated: .*?<!-- /generated -->", "", text, flags=re.S)
    found = re.findall(r"\b\d+(?:\.\d+)?(?: ?µs| ?ms|x\b)", outside)
    assert found == [], found
