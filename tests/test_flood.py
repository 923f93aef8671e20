"""Memory stays bounded when keys are unbounded (every client IP on the internet)."""

import tracemalloc

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule


def test_million_keys_respect_max_keys_and_memory_stays_flat():
    """1,000,000 distinct keys, max_keys=10,000: never more tracked, and memory does not grow."""
    clock = ManualClock()
    store = MemoryStore(clock=clock, max_keys=10_000)
    registry = BucketRegistry(Rule(10, 1.0), store=store)
    largest = 0
    admitted = 0
    tracemalloc.start()
    try:
        for i in range(1_000_000):
            if i % 100 == 0:
                clock.advance(0.05)  # buckets refill to full after 1 s, i.e. 2,000 keys later
            admitted += registry.try_consume(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{i}")
            size = len(store)
            largest = max(largest, size)
            if i == 100_000:
                baseline = tracemalloc.get_traced_memory()[0]
        final, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert largest <= 10_000
    # Refilled buckets are reclaimed, so new keys keep getting in.
    assert admitted > 900_000
    # Flat: the last 900,000 keys added (almost) nothing.
    assert final - baseline < 256 * 1024, (baseline, final)
    assert peak < 10_000 * 200, peak  # the target: at most 200 bytes per tracked key


def test_cap_holds_when_nothing_refills():
    """With a frozen clock the first max_keys keys get buckets and the rest are denied."""
    store = MemoryStore(clock=ManualClock(), max_keys=1_000)
    registry = BucketRegistry(Rule(1, 1.0), store=store)
    results = [registry.try_consume(f"key-{i}") for i in range(50_000)]
    assert sum(results) == 1_000
    assert results[:1_000] == [True] * 1_000
    assert len(store) == 1_000


def test_forgetting_keeps_memory_proportional_to_active_keys():
    """Without a cap, refilled buckets are forgotten: tracked keys follow recent activity."""
    clock = ManualClock()
    store = MemoryStore(clock=clock)
    registry = BucketRegistry(Rule(1, 1.0), store=store)
    largest = 0
    for i in range(200_000):
        clock.advance(0.001)  # a bucket refills 1,000 requests after its last use
        assert registry.try_consume(f"client-{i}")
        largest = max(largest, len(store))
    # At most ~1,000 keys are not yet full, plus one sweep interval of full ones.
    assert largest < 3_000, largest
