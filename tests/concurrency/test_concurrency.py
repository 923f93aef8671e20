"""Exact counts under real thread contention, with a frozen clock (no refill, no sleeping)."""

import sys
import threading
from collections import Counter

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule, TokenBucket

THREADS = 8
ATTEMPTS = 20_000


@pytest.fixture(autouse=True)
def _switch_often():
    """Make the interpreter switch threads every microsecond, to force interleavings."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


def hammer(attempt, per_thread):
    """Run ``attempt(thread, i)`` per_thread times in each of THREADS threads, started together."""
    barrier = threading.Barrier(THREADS)
    results = [[] for _ in range(THREADS)]

    def work(thread):
        barrier.wait()
        out = results[thread]
        for i in range(per_thread):
            out.append(attempt(thread, i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [result for out in results for result in out]


def test_one_bucket_admits_exactly_capacity():
    """8 threads, 20,000 attempts on a bucket of 1,000 that does not refill: 1,000 pass."""
    bucket = TokenBucket(1000, 1.0, clock=ManualClock())
    results = hammer(lambda thread, i: bucket.try_consume(), ATTEMPTS // THREADS)
    assert len(results) == ATTEMPTS
    assert sum(results) == 1000
    assert bucket.tokens == 0.0


def test_one_registry_key_admits_exactly_capacity():
    """The same through the registry on one key, with consume() decisions."""
    registry = BucketRegistry(Rule(1000, 1.0), clock=ManualClock())
    results = hammer(lambda thread, i: registry.consume("k").allowed, ATTEMPTS // THREADS)
    assert sum(results) == 1000
    remaining = [registry.peek("k").remaining]
    assert remaining == [0.0]


def test_hundred_keys_each_admit_exactly_capacity():
    """Across 100 keys of capacity 100, 200 attempts each: exactly 100 pass per key."""
    registry = BucketRegistry(Rule(100, 1.0), clock=ManualClock())
    per_thread = ATTEMPTS // THREADS

    def attempt(thread, i):
        key = f"k{(thread * per_thread + i) % 100}"
        return key, registry.try_consume(key)

    results = hammer(attempt, per_thread)
    admitted = Counter(key for key, ok in results if ok)
    assert len(admitted) == 100
    assert set(admitted.values()) == {100}


def test_new_keys_race_on_creation_and_cap():
    """Threads creating the same new keys at once never double-create or pass the cap."""
    registry = BucketRegistry(Rule(3, 0.0), clock=ManualClock(), max_keys=500)
    store = registry.store
    sizes = []

    def attempt(thread, i):
        ok = registry.try_consume(f"k{i % 800}")
        sizes.append(len(store))  # type: ignore[arg-type]
        return i % 800, ok

    results = hammer(attempt, 2400)
    admitted = Counter(key for key, ok in results if ok)
    assert max(sizes) <= 500
    assert len(admitted) == 500  # exactly the keys that got in before the cap
    assert set(admitted.values()) == {3}  # each admitted exactly its capacity


def test_sweeps_under_contention_lose_no_state():
    """Sweeping while other threads decide never forgets a bucket that is not full."""
    clock = ManualClock()
    registry = BucketRegistry(Rule(5, 1.0), clock=clock)
    per_thread = 3000

    def attempt(thread, i):
        # The hot key "h" is drained and must stay drained; "t*" keys churn to force sweeps.
        registry.try_consume(f"t{thread}-{i}")
        return registry.try_consume("h")

    results = hammer(attempt, per_thread)
    assert sum(results) == 5
    assert registry.tokens("h") == 0.0


@pytest.mark.parametrize("warm", [False, True])
def test_several_limits_admit_exactly_the_tightest(warm):
    """8 threads on {a: 1000, b: 1500} (no refill): exactly 1,000 pass and b keeps exactly
    500; a denial charges neither limit. ``warm``: the buckets exist (the fast path)."""
    registry = BucketRegistry({"a": Rule(1000, 0), "b": Rule(1500, 0)}, clock=ManualClock())
    if warm:
        registry.consume("k")
        registry.reset("k")
    results = hammer(lambda thread, i: registry.consume("k").allowed, ATTEMPTS // THREADS)
    assert sum(results) == 1000
    assert registry.tokens("k", limit="a") == 0.0
    assert registry.tokens("k", limit="b") == 500.0


def test_keys_at_two_levels_share_the_organisation_exactly():
    """8 users of one organisation (user: 200, org: 1,000, no refill), one thread each: the
    organisation admits exactly 1,000, and each user's denials charged it nothing."""
    registry = BucketRegistry({"user": Rule(200, 0), "org": Rule(1000, 0)}, clock=ManualClock())
    results = hammer(
        lambda thread, i: registry.try_consume({"user": f"u{thread}", "org": "acme"}), 400
    )
    assert sum(results) == 1000
    assert registry.tokens("acme", limit="org") == 0.0
    users = [200 - registry.tokens(f"u{thread}", limit="user") for thread in range(THREADS)]
    assert sum(users) == 1000
