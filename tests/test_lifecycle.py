"""Costs after the fact: reserve on an estimate then settle, and waiting as a reservation."""

from __future__ import annotations

import asyncio
import math

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule


def registry(capacity=10, rate=1.0):
    clock = ManualClock(100.0)
    return BucketRegistry(Rule(capacity, rate), clock=clock), clock


class TestReserveThenSettle:
    def test_settle_above_the_estimate_charges_into_debt(self):
        limits, clock = registry()
        spend = limits.reserve("k", 4)
        assert spend
        after = spend.settle(25)
        assert (after.allowed, after.remaining, after.retry_after) == (True, 0.0, 16.0)
        assert not limits.consume("k")  # in debt: nothing passes
        clock.advance(16)
        assert limits.consume("k")  # exactly when retry_after said

    def test_settle_below_the_estimate_refunds_the_rest(self):
        limits, _ = registry()
        spend = limits.reserve("k", 8)
        assert spend.settle(3).remaining == 7

    def test_cancel_gives_the_estimate_back_never_above_full(self):
        limits, clock = registry()
        spend = limits.reserve("k", 8)
        clock.advance(5)  # 5 of the 8 re-earned meanwhile
        assert spend.cancel().remaining == 10  # full, not 15
        assert limits.tokens("k") == 10

    def test_settled_once_and_denials_settle_nothing(self):
        limits, _ = registry()
        spend = limits.reserve("k", 10)
        spend.settle(10)
        with pytest.raises(RuntimeError, match="already settled"):
            spend.settle(1)
        denied = limits.reserve("k", 1)
        assert not denied
        assert denied.settle(50) == denied.decision  # charges nothing
        assert limits.tokens("k") == 0

    @pytest.mark.parametrize("actual", [-1, math.inf, math.nan, "3", True])
    def test_bad_actual(self, actual):
        spend = registry()[0].reserve("k", 1)
        with pytest.raises((TypeError, ValueError), match="'actual'"):
            spend.settle(actual)
        assert spend.settle(1).remaining == 9  # nothing was half applied

    def test_async(self):
        limits, _ = registry()

        async def main():
            spend = await limits.areserve("k", 2)
            return (await spend.asettle(12)).remaining, (await limits.arefund("k", 1)).remaining

        assert asyncio.run(main()) == (0.0, 0.0)
        assert limits.store.level("k", limits.default) == -1
