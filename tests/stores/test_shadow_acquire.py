"""``acquire`` with a limit in shadow (issue 22): a shadow limit never refuses or delays a
waiting call, on every store, and an interrupted wait gives back only what the reservation
charged. Each test failed before its fix."""

from __future__ import annotations

import asyncio

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, RateLimitExceeded, Rule
from tokenbucket._registry.limits import limit_key
from tokenbucket.redis import RedisStore

from .test_store_conformance import (
    AMOUNTS,
    BACKENDS,
    CAPACITIES,
    REDIS_BACKENDS,
    A,
    B,
    Backend,
    C,
    Direct,
    flusher,
    grouped,
    redis_url_for,
)


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_spent_shadow_limit_neither_refuses_nor_is_charged_by_acquire(kind, request):
    """Enforced burst 10, shadow daily 2 (no refill): once daily is spent, acquire still
    passes at once (it used to raise 'refused by daily'), and charges burst only."""
    backend = Backend(kind, None if kind == "memory" else redis_url_for(request, kind))
    try:
        limits = backend.make({"burst": Rule(10, 0), "daily": Rule(2, 0)})
        limits.registry.set_shadow("daily", True)
        assert [limits.consume("k").shadow_denied for _ in range(3)] == [(), (), ("daily",)]
        assert limits.acquire("k", 2, max_wait=0) == 0
        assert limits.tokens("k", limit="burst") == 5.0
        assert limits.tokens("k", limit="daily") == 0.0
        with pytest.raises(RateLimitExceeded, match="burst"):  # the enforced limit refuses
            limits.acquire("k", 6, max_wait=0)
        assert limits.tokens("k", limit="burst") == 5.0
    finally:
        backend.close()


def test_a_shadow_limit_does_not_lengthen_the_wait():
    """Shadow daily (slow refill) is empty: acquire waits for burst alone (1 s, not 100 s);
    daily, whose own wait fits, is charged into debt as if it were enforced."""
    clock = ManualClock(100.0)
    limits = {"burst": Rule(1, 1.0), "daily": Rule(1, 0.01)}
    registry = BucketRegistry(limits, clock=clock, shadow={"daily"})
    assert registry.consume("k")
    naps = []
    assert registry.acquire("k", sleep=naps.append) == 1.0
    assert asyncio.run(registry.aacquire("k", sleep=naps.append)) == 2.0
    assert naps == [1.0, 2.0]
    assert registry.tokens("k", limit="daily") == 0
    assert registry._sync.level(limit_key("k", "daily"), limits["daily"]) == -2.0


def watched_and_drained(clock):
    """Enforced burst 3 (1 token/s), shadow daily 2 (no refill): both empty, daily denied."""
    limits = {"burst": Rule(3, 1.0), "daily": Rule(2, 0)}
    registry = BucketRegistry(limits, clock=clock, shadow={"daily"})
    decisions = [registry.consume("k") for _ in range(3)]
    assert [d.shadow_denied for d in decisions] == [(), (), ("daily",)]
    return registry


def interrupt(_seconds):
    raise KeyboardInterrupt


@pytest.mark.parametrize("awaited", [False, True])
def test_an_interrupted_acquire_refunds_only_what_its_reservation_charged(awaited):
    """daily (shadow, spent, no refill) was not charged by the reservation: the interrupted
    wait gives burst its token back and daily nothing (a refund of every limit would have
    credited daily a token no request took)."""
    registry = watched_and_drained(ManualClock(100.0))
    if awaited:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(registry.aacquire("k", sleep=interrupt))
    else:
        with pytest.raises(KeyboardInterrupt):
            registry.acquire("k", sleep=interrupt)
    assert registry.tokens("k", limit="burst") == 0
    assert registry.tokens("k", limit="daily") == 0
    registry.set_shadow("daily", False)
    with pytest.raises(RateLimitExceeded, match="daily"):
        registry.acquire("k", max_wait=1e9)


def test_redis_undo_of_a_shadow_reservation_refunds_only_the_charged_buckets(redis_url):
    """The script's undo (an aacquire cancelled while its call was on the way) refunds the
    buckets the reservation charged, read from its reply, and not a shadow bucket it skipped."""
    from tokenbucket._stores.redis.groups import flat
    from tokenbucket._stores.redis.once import new_call

    burst, daily = Rule(10, 0), Rule(1, 0)
    groups = [("k", (("burst", burst), ("daily", daily)))]
    (burst_key, _), (daily_key, _) = buckets = flat(groups)
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
        store = RedisStore(client)
        logic = store._logic
        assert store.take(daily_key, 1, daily)[0]
        call = new_call()
        taken = store._run(logic.charge_all(groups, 2, 0.0, call, (False, True)))
        assert taken == (True, ((True, 8.0, burst), (False, 0.0, daily)))
        store._run(logic.undo(buckets, 2, call))
        assert (store.level(burst_key, burst), store.level(daily_key, daily)) == (10.0, 0.0)


RESERVATIONS = st.lists(
    st.tuples(
        st.sampled_from(["charge_all", "take_all", "refund_all"]),
        st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=3, unique=True),
        st.lists(st.booleans(), min_size=3, max_size=3),
        AMOUNTS,
        st.sampled_from([0.0, 5.0, None]),
    ),
    max_size=15,
)


@pytest.mark.parametrize("kind", REDIS_BACKENDS)
def test_random_shadow_reservations_match_memory(kind, request):
    """Hypothesis-generated reservations with shadow masks (with takes and refunds between)
    answer on Redis exactly what the in-memory store answers."""
    backend = Backend(kind, redis_url_for(request, kind))
    store = Direct(backend)
    admin, flush = flusher(backend)
    try:

        @settings(max_examples=30, deadline=None)
        @given(capacities=st.lists(CAPACITIES, min_size=2, max_size=2), steps=RESERVATIONS)
        def check(capacities, steps):
            flush()
            reference = MemoryStore(clock=ManualClock(1000.0))
            for index, (method, keys, mask, amount, max_wait) in enumerate(steps):
                rule = Rule(capacities[index % 2], 0)
                buckets = grouped([(key, rule) for key in keys])
                shadow = tuple(mask[: len(keys)])
                if method == "charge_all":
                    args = (buckets, amount, max_wait, shadow)
                elif method == "take_all":
                    args = (buckets, amount, shadow)
                else:
                    args = (buckets, amount)
                assert getattr(store, method)(*args) == getattr(reference, method)(*args)

        check()
    finally:
        admin.close()
        backend.close()
