"""Memory stays bounded when keys are unbounded (every client IP on the internet)."""

import tracemalloc

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule


def flood(registry, store, clock, keys, per_tick, start=0):
    """Send one request from each of ``keys`` new clients; return (admitted, largest tracked)."""
    admitted = largest = 0
    for i in range(start, start + keys):
        if i % per_tick == 0:
            clock.advance(0.05)
        admitted += registry.try_consume(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{i}")
        largest = max(largest, len(store))
    return admitted, largest


def test_flood_of_new_keys_respects_max_keys_and_memory_stays_flat():
    """120,000 distinct keys, max_keys=1,000: never more tracked, and memory does not grow.

    The cap binds: buckets refill (and may be reclaimed) 2,000 keys after their only use, so
    twice as many keys are in flight as may be tracked. The memory check is a slope: after a
    warm-up of 20,000 keys, the next 100,000 keys add (almost) nothing. A leak of one small
    object per key would add megabytes; the tolerance is a third of a byte per key.
    """
    clock = ManualClock()
    store = MemoryStore(clock=clock, max_keys=1_000)
    registry = BucketRegistry(Rule(10, 1.0), store=store)
    tracemalloc.start()
    try:
        _, warm_largest = flood(registry, store, clock, 20_000, per_tick=100)
        baseline = tracemalloc.get_traced_memory()[0]
        admitted, largest = flood(registry, store, clock, 100_000, per_tick=100, start=20_000)
        final, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(warm_largest, largest) <= 1_000
    # Refilled buckets are reclaimed, so new keys keep getting in, but not all of them.
    assert 0.3 * 100_000 < admitted < 0.9 * 100_000, admitted
    # Flat: 100,000 more keys added less than a third of a byte each.
    assert final - baseline < 32 * 1024, (baseline, final)
    # Everything the store ever held at once (dict, key strings, states; ~250 B per tracked key).
    assert peak < 1_000 * 300, peak


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
