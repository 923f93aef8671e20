"""Project-wide pytest configuration: names every doctest can use without importing them."""

import pytest

import tokenbucket


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update({name: getattr(tokenbucket, name) for name in tokenbucket.__all__})
