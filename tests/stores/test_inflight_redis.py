"""InFlightLimit on a real redis-server: exact caps, leases, on_error, processes, hostile keys.

The lease tests use a lease of 0.2 s and wait for it: the expiry is Redis's own clock, which a
test cannot move.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tokenbucket import InFlightLimit
from tokenbucket.redis import AsyncRedisStore, RedisStore, RedisUnavailableError


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
        assert client.keys("*") == [b"tokenbucket:\xffin-flight:203.0.113.7"]
        name = b"tokenbucket:\xffin-flight:203.0.113.7"
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
        assert store.client.pttl(b"tokenbucket:\xffin-flight:a") > 29_000

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


def test_a_registry_key_cannot_name_a_slot_set(store):
    """Review item 4: a raw registry key of ``"in-flight\\0k"`` was ``k``'s slot set (a sorted
    set) and hit WRONGTYPE, on the store the limit shares. Now bucket and slot keys are apart."""
    from tokenbucket import BucketRegistry, Rule

    limit = InFlightLimit(2, store=store)
    slot = limit.acquire("k")
    registry = BucketRegistry(Rule(5, 1), store=store)
    for key in ("in-flight\x00k", "in-flight:k", "\udcffin-flight:k", ""):
        assert registry.consume(key).remaining == 4
        # Counted in Redis (the store's fallback would answer the same if Redis had refused).
        name = (store.prefix + key).encode("utf-8", "surrogatepass")
        assert store.client.type(name) == b"hash"
    assert limit.in_flight("k") == 1
    limit.release(slot)
    assert limit.in_flight("k") == 0


_ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)  # surrogates too


@given(prefix=_ANY_TEXT, key=_ANY_TEXT, other_prefix=_ANY_TEXT, other_key=_ANY_TEXT)
@example(prefix="tokenbucket:", key="k", other_prefix="tokenbucket:", other_key="in-flight\0k")
@example(prefix="", key="k", other_prefix="", other_key="in-flight\0k")
def test_no_bucket_hash_is_a_slot_set(prefix, key, other_prefix, other_key):
    """Whatever the prefixes and keys, of one store or two, no bucket hash is named like a slot
    set, and two slot sets share a name only for the same prefix and key."""
    from tokenbucket._stores.redis.inflight import SlotLogic
    from tokenbucket._stores.redis.logic import Logic

    slot_set = SlotLogic(Logic(prefix, "fallback", 1.0)).name(key)
    assert Logic(other_prefix, "fallback", 1.0)._name(other_key) != slot_set
    assert Logic(prefix, "fallback", 1.0)._name(key) != slot_set
    other_set = SlotLogic(Logic(other_prefix, "fallback", 1.0)).name(other_key)
    assert (other_set == slot_set) == ((prefix, key) == (other_prefix, other_key))
