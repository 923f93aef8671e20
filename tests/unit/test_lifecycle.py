"""Costs after the fact: reserve on an estimate then settle, and waiting as a reservation."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from tokenbucket import BucketRegistry, ManualClock, RateLimitExceeded, Rule, rate_limit


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


class TestAcquire:
    def test_waiters_are_served_in_order_with_one_sleep_each(self):
        limits, clock = registry(capacity=2, rate=4.0)
        naps = []
        waited = [limits.acquire("k", sleep=naps.append) for _ in range(6)]
        assert waited == [0, 0, 0.25, 0.5, 0.75, 1.0]  # FIFO: each one behind the last
        assert naps == waited[2:]  # one sleep per call that waits, none for the others
        clock.advance(1.0)
        assert limits.tokens("k") == 0  # every reservation earned, nothing more

    def test_max_wait_refuses_up_front_taking_nothing(self):
        limits, _ = registry(capacity=5, rate=1.0)
        limits.acquire("k", 5)
        with pytest.raises(RateLimitExceeded) as caught:
            limits.acquire("k", 3, max_wait=2.5)
        assert caught.value.retry_after == 3.0
        assert limits.store.level("k", limits.default) == 0  # nothing taken
        assert limits.acquire("k", 3, max_wait=3, sleep=lambda s: None) == 3.0
        with pytest.raises(RateLimitExceeded) as caught:
            limits.acquire("k", 6)  # more than the capacity: never
        assert caught.value.retry_after == math.inf

    def test_an_interrupted_waiter_gives_its_tokens_back(self):
        limits, _ = registry(capacity=1, rate=1.0)
        limits.acquire("k")

        def interrupted(seconds):
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            limits.acquire("k", sleep=interrupted)
        assert limits.store.level("k", limits.default) == 0  # not -1

    def test_a_cancelled_async_waiter_gives_its_tokens_back(self):
        limits, _ = registry(capacity=5, rate=10.0)

        async def main():
            await limits.aacquire("k", 5)
            waiter = asyncio.ensure_future(limits.aacquire("k", 5))  # ~0.5 s
            await asyncio.sleep(0.01)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

        asyncio.run(main())
        assert limits.store.level("k", limits.default) == 0  # the 5 came back

    def test_bad_options(self):
        limits, _ = registry()
        with pytest.raises(ValueError, match="'max_wait'"):
            limits.acquire("k", max_wait=-1)
        with pytest.raises(TypeError, match="'sleep'"):
            limits.acquire("k", sleep=3)


def test_concurrent_waiters_sleep_once_each():
    """Regression: the decorator's wait mode retried until it won (N waiters woke ~N²/2
    times). Now each call sleeps at most once, and they run in the order they arrived."""
    limits = BucketRegistry(Rule(1, 400.0))
    sleeps = []
    lock = threading.Lock()

    def counted(seconds):
        with lock:
            sleeps.append(seconds)
        time.sleep(seconds)

    @rate_limit(limits, wait=True, sleep=counted)
    def work():
        return None

    threads = [threading.Thread(target=work) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(sleeps) <= 30
    assert limits.store.level("work", limits.default) <= 1


def test_decorator_async_waits_by_reservation():
    limits, _ = registry(capacity=1, rate=2.0)
    naps = []

    @rate_limit(limits, key=lambda: "k", wait=True, sleep=naps.append)
    async def work():
        return "done"

    async def main():
        return [await work() for _ in range(3)]

    assert asyncio.run(main()) == ["done"] * 3
    assert naps == [0.5, 1.0]
