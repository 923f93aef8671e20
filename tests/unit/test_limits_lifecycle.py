"""Charge, refund, reserve and acquire on a registry of several named limits (issues 12 + 13)."""

from __future__ import annotations

import asyncio
import math

import pytest

from tokenbucket import BucketRegistry, ManualClock, RateLimitExceeded, Rule, rate_limit

LIMITS = {"burst": Rule(10, 1.0), "daily": Rule(100, 0.01)}


@pytest.fixture
def limits():
    return BucketRegistry(LIMITS, clock=ManualClock())


def levels(registry, key):
    return {name: registry.tokens(key, limit=name) for name in registry.limits}


class TestChargeRefund:
    def test_charge_takes_from_every_limit_into_debt(self, limits):
        """A charge happens in every limit; the binding one is the furthest from a token."""
        decision = limits.charge("alice", 15)
        assert decision.allowed
        assert decision.policy == "burst"
        assert decision.retry_after == 6.0  # 5 in debt, then one token at 1/s
        assert decision.remaining == 0.0
        assert levels(limits, "alice") == {"burst": 0.0, "daily": 85.0}
        denied = limits.consume("alice")
        assert not denied.allowed
        assert denied.retry_after == 6.0
        assert levels(limits, "alice") == {"burst": 0.0, "daily": 85.0}  # a denial took nothing

    def test_refund_gives_back_to_every_limit_never_above_full(self, limits):
        """A refund raises each limit by at most what it lacks."""
        limits.consume("bob", 4)
        limits.refund("bob", 10)
        assert levels(limits, "bob") == {"burst": 10.0, "daily": 100.0}

    def test_reserve_then_settle_charges_the_difference_everywhere(self, limits):
        """Admit on an estimate of 5, settle at 8: 3 more from each limit."""
        reservation = limits.reserve("carol", 5)
        assert reservation
        after = reservation.settle(8)
        assert after.remaining == 2.0
        assert levels(limits, "carol") == {"burst": 2.0, "daily": 92.0}

    def test_keys_at_two_levels(self):
        """A charge to a user and an organisation takes from both buckets."""
        registry = BucketRegistry(
            {"user": Rule(10, 1.0), "org": Rule(50, 1.0)}, clock=ManualClock()
        )
        registry.charge({"user": "alice", "org": "acme"}, 20)
        assert registry.tokens("alice", limit="user") == 0.0
        assert registry.tokens("acme", limit="org") == 30.0
        assert registry.tokens("bob", limit="user") == 10.0


class TestAcquire:
    def test_one_sleep_of_the_longest_wait(self, limits):
        """acquire reserves in every limit at once and sleeps the longest wait once."""
        slept = []
        assert limits.acquire("dave", 10, sleep=slept.append) == 0.0
        assert limits.acquire("dave", 2, sleep=slept.append) == 2.0
        assert slept == [2.0]
        assert levels(limits, "dave") == {"burst": 0.0, "daily": 88.0}

    def test_refused_up_front_names_the_binding_limit(self, limits):
        """More than a limit's capacity can never pass: refused at once, nothing taken."""
        with pytest.raises(RateLimitExceeded) as raised:
            limits.acquire("erin", 12, sleep=lambda seconds: None)
        assert raised.value.decision.policy == "burst"
        assert math.isinf(raised.value.retry_after)
        assert levels(limits, "erin") == {"burst": 10.0, "daily": 100.0}

    def test_interrupted_wait_gives_the_tokens_back(self, limits):
        """A sleep that raises refunds every limit."""
        limits.consume("finn", 10)

        def interrupted(seconds):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            limits.acquire("finn", 3, sleep=interrupted)
        assert levels(limits, "finn") == {"burst": 0.0, "daily": 90.0}

    def test_async_forms(self, limits):
        """acharge, arefund and aacquire agree with the sync forms."""

        async def run():
            slept = []

            async def sleep(seconds):
                slept.append(seconds)

            await limits.acharge("gail", 12)
            await limits.arefund("gail", 1)
            waited = await limits.aacquire("gail", 1, sleep=sleep)
            return waited, slept

        waited, slept = asyncio.run(run())
        assert (waited, slept) == (2.0, [2.0])
        assert levels(limits, "gail") == {"burst": 0.0, "daily": 88.0}

    def test_decorator_waits_on_several_limits(self, limits):
        """@rate_limit(wait=True) over a mapping registry sleeps once per call when needed."""
        slept = []

        @rate_limit(limits, key=lambda: "job", wait=True, sleep=slept.append)
        def job():
            return "done"

        assert [job() for _ in range(11)] == ["done"] * 11
        assert slept == [1.0]
