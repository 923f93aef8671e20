"""InFlightLimit, the core: exact counts, idempotent release, no leak, in memory and on Redis.

Redis tests run a real redis-server (``redis_url``; ``own_redis`` where Redis is stopped). The
lease tests use a lease of 0.2 s and wait for it: the expiry is Redis's own clock, which a test
cannot move.
"""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
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
from tokenbucket.redis import AsyncRedisStore, RedisStore, RedisUnavailableError


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


# -- Redis ----------------------------------------------------------------------------------


@pytest.fixture
def store(redis_url):
    store = RedisStore.from_url(redis_url)
    yield store
    store.close()


class TestRedis:
    def test_exact_cap_and_idempotent_release(self, store):
        limit = InFlightLimit(2, store=store)
        first, second = limit.acquire("a"), limit.acquire("a")
        assert limit.acquire("a") is None
        limit.release(first)
        limit.release(first)
        assert limit.in_flight("a") == 1
        assert limit.acquire("a") is not None
        assert limit.acquire("a") is None
        limit.release(second)
        assert limit.in_flight("a") == 1

    def test_one_sorted_set_per_key_with_the_lease_as_ttl(self, store):
        limit = InFlightLimit(4, store=store, lease=30)
        slot = limit.acquire("203.0.113.7")
        client = store.client
        assert client.keys("*") == [b"tokenbucket:in-flight\x00203.0.113.7"]
        name = b"tokenbucket:in-flight\x00203.0.113.7"
        assert client.type(name) == b"zset"
        assert 29_000 < client.pttl(name) <= 30_000
        (member, score), now = client.zrange(name, 0, -1, withscores=True)[0], client.time()
        assert member == slot.id
        assert 29_000 < score - (now[0] * 1000 + now[1] // 1000) <= 30_000
        limit.release(slot)
        assert client.keys("*") == []  # the last slot released: the key is gone

    def test_a_dead_holders_slot_frees_itself_after_the_lease(self, store):
        limit = InFlightLimit(1, store=store, lease=0.2)
        assert limit.acquire("a") is not None  # never released: its holder "died"
        assert limit.acquire("a") is None
        time.sleep(0.25)
        assert limit.in_flight("a") == 0
        assert limit.acquire("a") is not None
        time.sleep(0.25)
        assert store.client.keys("*") == []  # the set expired with its last lease

    def test_a_longer_lease_keeps_the_set_alive(self, store):
        """Two limits on one key with different leases: the set lives as long as the longest."""
        long = InFlightLimit(2, store=store, lease=30)
        short = InFlightLimit(2, store=store, lease=1)
        long.acquire("a")
        short.acquire("a")
        assert store.client.pttl(b"tokenbucket:in-flight\x00a") > 29_000

    def test_script_reloaded_after_script_flush(self, store):
        limit = InFlightLimit(1, store=store)
        store.client.script_flush()
        assert limit.acquire("a") is not None
        assert limit.acquire("a") is None

    def test_async_store(self, redis_url):
        async def main():
            store = AsyncRedisStore.from_url(redis_url)
            limit = InFlightLimit(1, store=store)
            assert limit.is_async
            async with limit.ahold("a"):
                assert await limit.aacquire("a") is None
                assert await limit.ain_flight("a") == 1
            count = await limit.ain_flight("a")
            await store.aclose()
            return limit, count

        limit, count = asyncio.run(main())
        assert count == 0
        for call in (lambda: limit.acquire("a"), lambda: limit.in_flight("a")):
            with pytest.raises(TypeError, match=r"is async: await limit\.a"):
                call()

    @pytest.mark.parametrize(
        ("policy", "expected"),
        [("fallback", [True, True, False]), ("deny", [False] * 3), ("allow", [True] * 3)],
    )
    def test_on_error_policy_while_redis_is_down(self, own_redis, policy, expected):
        store = RedisStore.from_url(own_redis.url, on_error=policy)
        limit = InFlightLimit(2, store=store)
        held = limit.acquire("a")
        own_redis.stop()
        slots = [limit.acquire("a") for _ in range(3)]
        assert [slot is not None for slot in slots] == expected
        for slot in [*slots, held]:
            if slot is not None:
                limit.release(slot)  # never raises: Redis is down
        assert len(store._slots.fallback) == 0  # fallback slots went back where they came from
        with pytest.raises(RedisUnavailableError):
            limit.in_flight("a")
        store.close()


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


CHILD = """
import sys, threading
from tokenbucket import InFlightLimit
from tokenbucket.redis import RedisStore
url, threads, attempts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = RedisStore.from_url(url)
limit = InFlightLimit(3, store=store)
counter = store.client
peak, taken = [0], [0]
lock = threading.Lock()
def work():
    for _ in range(attempts):
        slot = limit.acquire("shared")
        if slot is None:
            continue
        inside = counter.incr("inside")  # after acquiring...
        counter.decr("inside")           # ...and before releasing: never above the cap
        limit.release(slot)
        with lock:
            peak[0] = max(peak[0], inside)
            taken[0] += 1
print("ready", flush=True)
sys.stdin.readline()
workers = [threading.Thread(target=work) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(peak[0], taken[0], store.available, flush=True)
"""


def test_processes_and_threads_never_hold_more_than_the_cap(redis_url):
    """4 processes x 4 threads on one key of 3: never more than 3 inside; 0 held after."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, "4", "150"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    peaks = []
    for (out, err), child in zip(results, children):
        assert child.returncode == 0, err
        peak, taken, available = out.split()
        assert available == "True"
        assert int(taken) > 0
        peaks.append(int(peak))
    assert 1 <= max(peaks) <= 3
    store = RedisStore.from_url(redis_url)
    assert InFlightLimit(3, store=store).in_flight("shared") == 0
    assert store.client.get("inside") == b"0"
    store.close()


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


@given(keys=st.lists(st.text(), min_size=1, max_size=5, unique=True))
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_key_is_its_own_count_in_redis(store, keys):
    """Hostile keys (NUL, lone surrogates, prefixes of one another) never share a count."""
    store.client.flushall()
    limit = InFlightLimit(1, store=store)
    slots = {key: limit.acquire(key) for key in keys}
    assert all(slot is not None for slot in slots.values())
    assert all(limit.acquire(key) is None for key in keys)
    for slot in slots.values():
        limit.release(slot)
    assert all(limit.in_flight(key) == 0 for key in keys)
    assert store.client.keys("*") == []
