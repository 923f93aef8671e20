"""The store's shadow mask (issue 15 item 4): watched buckets never decide, and are charged
only when they admit and the call is allowed; memory and Redis alike, one script call."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbucket import ManualClock, MemoryStore, Rule

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


@pytest.fixture(params=BACKENDS)
def direct(request):
    kind = request.param
    backend = Backend(kind, None if kind == "memory" else redis_url_for(request, kind))
    yield Direct(backend)
    backend.close()


def test_a_shadow_bucket_never_decides_and_is_charged_only_when_it_admits(direct):
    """Enforced A (5), shadow B (2): B's denials refuse nothing and charge B nothing."""
    buckets = [(A, Rule(5, 0)), (B, Rule(2, 0))]
    mask = (False, True)
    results = [direct.take_all(grouped(buckets), 1, mask) for _ in range(6)]
    assert [allowed for allowed, _ in results] == [True] * 5 + [False]
    assert [outcome[1][0] for _, outcome in results] == [True, True, False, False, False, False]
    assert results[1] == (True, ((True, 3, Rule(5, 0)), (True, 0, Rule(2, 0))))
    assert results[2] == (True, ((True, 2, Rule(5, 0)), (False, 0, Rule(2, 0))))
    assert results[5] == (False, ((False, 0, Rule(5, 0)), (False, 0, Rule(2, 0))))
    assert (direct.level(A, Rule(5, 0)), direct.level(B, Rule(2, 0))) == (0, 0)


def test_an_enforced_denial_charges_the_shadow_bucket_nothing(direct):
    """A request the enforced bucket refuses charges no bucket, shadow or not."""
    buckets = [(A, Rule(1, 0)), (B, Rule(5, 0))]
    assert direct.take_all(grouped(buckets), 1, (False, True))[0]
    assert direct.take_all(grouped(buckets), 1, (False, True)) == (
        False,
        ((False, 0, Rule(1, 0)), (True, 4, Rule(5, 0))),
    )
    assert direct.level(B, Rule(5, 0)) == 4


def test_every_bucket_in_shadow_admits_everything(direct):
    """All watched: always allowed; each bucket charged while it has the amount."""
    buckets = [(A, Rule(2, 0)), (C, Rule(3, 0))]
    results = [direct.take_all(grouped(buckets), 1, (True, True)) for _ in range(4)]
    assert [allowed for allowed, _ in results] == [True] * 4
    assert direct.level(A, Rule(2, 0)) == 0
    assert direct.level(C, Rule(3, 0)) == 0
    assert direct.peek_all(grouped(buckets), 1, (True, True)) == (
        True,
        ((False, 0, Rule(2, 0)), (False, 0, Rule(3, 0))),
    )


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["take_all", "peek_all"]),
        st.lists(st.sampled_from([A, B, C]), min_size=1, max_size=3, unique=True),
        st.lists(st.booleans(), min_size=3, max_size=3),
        AMOUNTS,
    ),
    max_size=20,
)


@pytest.mark.parametrize("kind", REDIS_BACKENDS)
def test_random_shadow_take_all_match_memory(kind, request):
    """Hypothesis-generated take_all/peek_all with random shadow masks (and defaults that
    change between calls) answer on Redis exactly what the in-memory store answers."""
    backend = Backend(kind, redis_url_for(request, kind))
    store = Direct(backend)
    admin, flush = flusher(backend)
    try:

        @settings(max_examples=30)
        @given(capacities=st.lists(CAPACITIES, min_size=2, max_size=2), steps=STEPS)
        def check(capacities, steps):
            flush()
            reference = MemoryStore(clock=ManualClock(1000.0))
            for index, (method, keys, mask, amount) in enumerate(steps):
                rule = Rule(capacities[index % 2], 0)
                args = (grouped([(key, rule) for key in keys]), amount, tuple(mask[: len(keys)]))
                assert getattr(store, method)(*args) == getattr(reference, method)(*args)

        check()
    finally:
        admin.close()
        backend.close()


def test_shadow_limits_are_one_script_call(request):
    """With a limit in shadow a decision is still one EVALSHA, and decides as in memory."""
    import redis

    backend = Backend("redis", redis_url_for(request, "redis"))
    admin = redis.Redis.from_url(backend.url)
    try:
        limits = backend.make({"burst": Rule(10, 0), "tight": Rule(5, 0)})
        limits.set_shadow("tight", True)
        limits.consume("warm")  # loads the script
        admin.config_resetstat()
        decisions = [limits.consume("k") for _ in range(12)]
        calls = {name[8:]: stat["calls"] for name, stat in admin.info("commandstats").items()}
        assert calls.pop("evalsha") == 12
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
        assert [d.shadow_denied for d in decisions] == [()] * 5 + [("tight",)] * 5 + [()] * 2
        assert limits.tokens("k", limit="tight") == 0.0
    finally:
        admin.close()
        backend.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_a_shadow_limit_through_the_registry_on_every_backend(kind, request):
    """The registry's shadow decisions (sync and awaited) are alike on every store."""
    backend = Backend(kind, None if kind == "memory" else redis_url_for(request, kind))
    try:
        limits = backend.make({"burst": Rule(10, 0), "tight": Rule(5, 0)})
        limits.registry.set_shadow("tight", True)
        decisions = [limits.consume("k") for _ in range(12)]
        assert [d.allowed for d in decisions] == [True] * 10 + [False] * 2
        assert [d.shadow_denied for d in decisions] == [()] * 5 + [("tight",)] * 5 + [()] * 2
        assert {d.policy for d in decisions} == {"burst"}
        assert limits.peek("k").shadow_denied == ()  # burst refuses: nothing to report
        assert limits.tokens("k", limit="tight") == 0.0
        limits.registry.set_shadow("burst", True)
        limits.registry.set_shadow("tight", False)
        assert limits.consume("j", 5).shadow_denied == ()
        assert limits.consume("j", 6).allowed is False  # tight enforces now
        assert limits.try_consume("k") is False
    finally:
        backend.close()
