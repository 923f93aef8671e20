"""pytest plugin of tokenbucket: fixtures for testing rate limits without sleeping.

Registered through the ``pytest11`` entry point. It is deliberately tiny: importing it loads
nothing but pytest, and tokenbucket itself is imported only when a test uses a fixture.

Fixtures:
    tokenbucket_clock: a fresh [`ManualClock`][tokenbucket.ManualClock] at 0.0.
    tokenbucket_registry: a [`BucketRegistry`][tokenbucket.BucketRegistry] on that clock, with
        the rule of the ``tokenbucket_rule`` marker (default 10 tokens, 1 per second).

For example, in a test module:

    import pytest

    @pytest.mark.tokenbucket_rule(capacity=5, refill_rate=0.1)
    def test_login_lockout(tokenbucket_registry, tokenbucket_clock):
        assert sum(tokenbucket_registry.try_consume("alice") for _ in range(9)) == 5
        tokenbucket_clock.advance(10)
        assert tokenbucket_registry.try_consume("alice")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tokenbucket import BucketRegistry, ManualClock


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``tokenbucket_rule`` marker."""
    config.addinivalue_line(
        "markers",
        "tokenbucket_rule(capacity, refill_rate): the default rule of tokenbucket_registry",
    )


@pytest.fixture
def tokenbucket_clock() -> ManualClock:
    """A manual clock at 0.0 that moves only with ``advance``/``set``/``sleep``."""
    from tokenbucket import ManualClock

    return ManualClock()


@pytest.fixture
def tokenbucket_registry(
    request: pytest.FixtureRequest, tokenbucket_clock: ManualClock
) -> BucketRegistry:
    """A registry on ``tokenbucket_clock``, ruled by ``@pytest.mark.tokenbucket_rule``."""
    from tokenbucket import BucketRegistry, Rule

    marker = request.node.get_closest_marker("tokenbucket_rule")
    arguments: Any = (marker.args, marker.kwargs) if marker else ((10, 1.0), {})
    return BucketRegistry(Rule(*arguments[0], **arguments[1]), clock=tokenbucket_clock)
