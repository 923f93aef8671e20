"""InFlightLimit, the core: exact counts, idempotent release, no leak; a stateful model run in
memory and on a real redis-server; the decorator's ``in_flight=``. More Redis tests are in
test_inflight_redis.py, the middlewares' in test_inflight_http.py."""

from __future__ import annotations

import asyncio
import pickle
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tokenbucket import (
    BucketRegistry,
    InFlightLimit,
    InFlightLimitExceeded,
    MemorySlots,
    RateLimitExceeded,
    Rule,
    Slot,
    rate_limit,
)
from tokenbucket.redis import AsyncRedisStore, RedisStore


class TestOptions:
    @pytest.mark.parametrize(
        ("args", "kwargs", "error", "message"),
        [
            ((0,), {}, ValueError, "'max_in_flight' must be an int >= 1, got 0"),
            ((2.0,), {}, TypeError, "'max_in_flight' must be an int >= 1, got 2.0"),
            ((True,), {}, TypeError, "'max_in_flight' must be an int >= 1, got True"),
            ((4,), {"lease": 0}, ValueError, "'lease' must be from 0.001 to 1e9 seconds, got 0"),
            ((4,), {"lease": float("nan")}, ValueError, "'lease' must be from 0.001"),
            ((4,), {"lease": "30"}, TypeError, "'lease' must be a number of seconds > 0"),
            ((4,), {"store": object()}, TypeError, "'store' must be None (in memory)"),
        ],
    )
    def test_bad_options_name_the_field(self, args, kwargs, error, message):
        with pytest.raises(error) as raised:
            InFlightLimit(*args, **kwargs)
        assert message in str(raised.value)

    def test_properties(self):
        limit = InFlightLimit(4, lease=2.5)
        assert (limit.max_in_flight, limit.lease, limit.is_async, limit.blocking) == (
            4,
            2.5,
            False,
            False,
        )
        assert isinstance(limit.store, MemorySlots)
        assert repr(limit) == "InFlightLimit(4, store=MemorySlots, lease=2.5)"

    def test_exception_pickles(self):
        error = pickle.loads(pickle.dumps(InFlightLimitExceeded("k", 4)))
        assert (error.key, error.limit) == ("k", 4)
        assert str(error) == "4 requests of 'k' already in flight"


class TestMemory:
    def test_exact_cap_per_key(self):
        limit = InFlightLimit(3)
        slots = [limit.acquire("a") for _ in range(5)]
        assert [slot is not None for slot in slots] == [True, True, True, False, False]
        assert limit.acquire("b") is not None  # keys are independent
        assert (limit.in_flight("a"), limit.in_flight("b"), limit.in_flight("c")) == (3, 1, 0)

    def test_release_is_idempotent_and_frees_only_its_own_slot(self):
        limit = InFlightLimit(2)
        first, second = limit.acquire("a"), limit.acquire("a")
        assert first is not None
        assert second is not None
        limit.release(first)
        limit.release(first)
        limit.release(first)
        assert limit.in_flight("a") == 1
        assert second.held
        assert not first.held
        third = limit.acquire("a")
        assert third is not None
        assert limit.acquire("a") is None

    def test_entries_dropped_at_zero(self):
        limit = InFlightLimit(1)
        for key in map(str, range(1000)):
            with limit.hold(key):
                pass
        assert len(limit.store) == 0

    def test_hold_raises_when_full_and_releases_on_exception(self):
        limit = InFlightLimit(1)
        seen = []

        def fail():
            with limit.hold("a"):
                with pytest.raises(InFlightLimitExceeded) as refused, limit.hold("a"):
                    pass  # pragma: no cover
                seen.append((refused.value.key, refused.value.limit, limit.in_flight("a")))
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            fail()
        assert seen == [("a", 1, 1)]
        assert limit.in_flight("a") == 0

    def test_async_methods_work_in_memory(self):
        limit = InFlightLimit(1)

        async def main():
            async with limit.ahold("a") as slot:
                assert isinstance(slot, Slot)
                assert await limit.aacquire("a") is None
                assert await limit.ain_flight("a") == 1
            assert await limit.ain_flight("a") == 0
            slot = await limit.aacquire("a")
            await limit.arelease(slot)
            await limit.arelease(slot)
            return await limit.ain_flight("a")

        assert asyncio.run(main()) == 0

    def test_threads_never_exceed_the_cap_and_leave_nothing(self):
        """8 threads x 3,000 holds on one key of 3: never more than 3 inside, 0 held after."""
        limit, lock = InFlightLimit(3), threading.Lock()
        inside, peak, refused = [0], [0], [0]

        def worker():
            for _ in range(3000):
                try:
                    with limit.hold("k"):
                        with lock:
                            inside[0] += 1
                            peak[0] = max(peak[0], inside[0])
                        with lock:
                            inside[0] -= 1
                except InFlightLimitExceeded:
                    with lock:
                        refused[0] += 1

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert peak[0] <= 3
        assert limit.in_flight("k") == 0
        assert len(limit.store) == 0


class SlotMachine(RuleBasedStateMachine):
    """acquire/release in any order, releases repeated, against a model: key -> set of slots."""

    CAP = 3
    slots = Bundle("slots")

    def __init__(self):
        super().__init__()
        self.limit = self.make_limit()
        self.model = {}

    def make_limit(self):
        return InFlightLimit(self.CAP)

    @rule(target=slots, key=st.sampled_from(["a", "b", "\0x", "é"]))
    def acquire(self, key):
        slot = self.limit.acquire(key)
        held = self.model.setdefault(key, set())
        assert (slot is not None) == (len(held) < self.CAP)
        if slot is not None:
            held.add(slot)
        return slot

    @rule(slot=slots)
    def release_again(self, slot):
        """Releasing a slot, released or not, frees that slot only."""
        if slot is not None:
            self.limit.release(slot)
            self.model[slot.key].discard(slot)

    @rule(slot=consumes(slots))
    def release(self, slot):
        if slot is not None:
            self.limit.release(slot)
            self.model[slot.key].discard(slot)

    @invariant()
    def counts_match(self):
        for key, held in self.model.items():
            assert self.limit.in_flight(key) == len(held)


TestMemoryMachine = SlotMachine.TestCase
TestMemoryMachine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)


class RedisSlotMachine(SlotMachine):
    url = ""

    def make_limit(self):
        store = RedisStore.from_url(self.url)
        store.client.flushall()
        return InFlightLimit(self.CAP, store=store)

    def teardown(self):
        self.limit.store.close()


def test_redis_machine(redis_url):
    RedisSlotMachine.url = redis_url
    test = RedisSlotMachine.TestCase
    test.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
    test("runTest").runTest()


class TestDecorator:
    def test_sync_calls_over_the_cap_are_refused_and_take_no_token(self):
        registry, limit = BucketRegistry(Rule(10, 0)), InFlightLimit(1)
        results = []

        @rate_limit(registry, in_flight=limit, key=lambda user: user)
        def work(user):
            if user == "a" and not results:
                results.append("outer")
                with pytest.raises(InFlightLimitExceeded):
                    work("a")  # the same key, while the first call runs
                results.append(work("b"))  # another key is free
            if user == "boom":
                raise ValueError(user)
            return user

        assert work("a") == "a"
        assert results == ["outer", "b"]
        assert registry.tokens("a") == 9  # the refused call took no token
        with pytest.raises(ValueError, match="boom"):
            work("boom")
        assert len(limit.store) == 0

    def test_rate_limited_call_gives_its_slot_back(self):
        limit = InFlightLimit(1)
        work = rate_limit(BucketRegistry(Rule(1, 0)), in_flight=limit)(lambda: "ok")
        assert work() == "ok"
        with pytest.raises(RateLimitExceeded):
            work()
        assert len(limit.store) == 0

    def test_async_calls(self):
        limit = InFlightLimit(2)

        @rate_limit(BucketRegistry(Rule(100, 0)), in_flight=limit)
        async def work():
            await asyncio.sleep(0.01)
            return "ok"

        async def main():
            return await asyncio.gather(*(work() for _ in range(5)), return_exceptions=True)

        results = asyncio.run(main())
        assert results.count("ok") == 2
        assert [type(r) for r in results].count(InFlightLimitExceeded) == 3
        assert len(limit.store) == 0

    def test_store_kinds_checked(self, redis_url):
        async def work():
            return None

        store = RedisStore.from_url(redis_url)
        with pytest.raises(TypeError, match="in_flight store, RedisStore, blocks the event loop"):
            rate_limit(Rule(1, 1), in_flight=InFlightLimit(1, store=store))(work)
        store.close()
        in_flight = InFlightLimit(1, store=AsyncRedisStore.from_url(redis_url))
        with pytest.raises(TypeError, match="synchronous but the in_flight store is async"):
            rate_limit(Rule(1, 1), in_flight=in_flight)(lambda: None)
        with pytest.raises(TypeError, match="'in_flight' must be an InFlightLimit or None, got 2"):
            rate_limit(Rule(1, 1), in_flight=2)
