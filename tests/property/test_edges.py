"""Edges of the core that memory and Redis must handle alike (see conftest.py for the clock).

A charge's or refund's decision is a whole Decision.
"""

from __future__ import annotations

import math

import pytest

from tokenbucket import Rule

S = 1_000_000  # µs per second
BACKENDS = ["memory", "redis"]


def pick(twins, backend, default=None):
    """One registry on ``backend`` (and its clock), on Rule(10, 1) unless said."""
    memory, redis_registry, clock = twins.pair(default or Rule(10, 1), 1000 * S)
    return (memory if backend == "memory" else redis_registry), clock


@pytest.fixture
def no_policy(twins):
    """Fails a test in which the Redis store's failure policy decided (a script error)."""
    twins.policies.clear()
    yield
    assert twins.policies == []


pytestmark = pytest.mark.usefixtures("no_policy")


class TestChargeDecisions:
    """A charge's or refund's decision is a whole Decision (it lacked ``shadow_denied``: its
    repr raised, and a charge on several limits raised TypeError in ``_replace``)."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_charge_and_refund_decisions_are_whole(self, twins, backend):
        registry, _ = pick(twins, backend)
        for decision in (
            registry.charge("k", 12),
            registry.refund("k", 1),
            registry.refund("k", 99),
        ):
            assert decision.shadow_denied == ()
            assert repr(decision).startswith("Decision(allowed=True, ")

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_charge_on_several_limits(self, twins, backend):
        memory, redis_registry, _ = twins.pair({"a": Rule(1, 0.25), "b": Rule(2.5, 0)}, 1000 * S)
        registry = memory if backend == "memory" else redis_registry
        decision = registry.charge("x", 2)
        assert tuple(decision) == (True, 0.0, math.inf, math.inf, 2.5, "b", ())  # b never refills
