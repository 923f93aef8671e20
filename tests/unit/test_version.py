"""The version has one source: ``tokenbucket.__version__``, which the build reads."""

import importlib.metadata
import re
from pathlib import Path

import tokenbucket

CHANGELOG = Path(__file__).resolve().parents[2] / "docs" / "changelog.md"


def test_installed_metadata_is_the_package_version():
    assert importlib.metadata.version("tokenbucket-ratelimit") == tokenbucket.__version__


def test_version_follows_the_changelog():
    """The changelog's newest heading names the version: while it says "(unreleased)" the
    package is that version's .devN (or rcN), and the release itself is the bare number."""
    heading = re.search(r"^## (\d+\.\d+\.\d+)( \(unreleased\))?$", CHANGELOG.read_text(), re.M)
    assert heading, "the changelog has no '## X.Y.Z' heading"
    number, unreleased = heading.group(1), heading.group(2)
    if unreleased:
        assert re.fullmatch(rf"{re.escape(number)}(\.dev\d+|rc\d+)", tokenbucket.__version__)
    else:
        assert tokenbucket.__version__ == number
