"""Project-wide pytest configuration: names every doctest can use without importing them."""

import os

import pytest
from hypothesis import HealthCheck, settings

import tokenbucket

# "default" keeps the suite quick; HYPOTHESIS_PROFILE=thorough searches much harder.
settings.register_profile(
    "default",
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update({name: getattr(tokenbucket, name) for name in tokenbucket.__all__})
