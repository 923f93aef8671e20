"""One contract for every store: MemoryStore, RedisStore and AsyncRedisStore decide alike.

Each test runs through a BucketRegistry on every backend: the in-memory store, both Redis
stores on one redis-server, and both on a Redis Cluster (3 masters, 3 replicas) through
redis-py's cluster clients. Redis time cannot be injected, so the
scripted sequences either do not refill (refill_rate 0: decisions are then exact and must equal
the in-memory store's) or assert bounds over the wall time measured around the calls (the
in-memory store runs on a frozen ManualClock, so it sits at the lower bound).
"""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import redis
import redis.cluster
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, Decision, ManualClock, MemoryStore, Rule
from tokenbucket._core.keys import limit_key
from tokenbucket.redis import AsyncRedisStore, RedisStore

REDIS_BACKENDS = ["redis", "redis-async", "cluster", "cluster-async"]
BACKENDS = ["memory", *REDIS_BACKENDS]


def redis_url_for(request, kind):
    """The URL of a flushed server (``redis*``) or cluster (``cluster*``) for ``kind``."""
    return request.getfixturevalue(
        "redis_cluster_url" if kind.startswith("cluster") else "redis_url"
    )


class Limits:
    """A registry on one backend, called the same way whatever the backend.

    Async registries run their ``a``-prefixed methods on one event loop, so the async client's
    connections stay on the loop that made them.
    """

    def __init__(self, registry, loop=None):
        self.registry = registry
        self.loop = loop

    def __getattr__(self, name):
        if self.loop is None or name == "update_default":
            return getattr(self.registry, name)
        method = getattr(self.registry, "a" + name)
        return lambda *args, **kwargs: self.loop.run_until_complete(method(*args, **kwargs))


class Backend:
    """Makes registries on one kind of store; closes what it opened."""

    def __init__(self, kind, url=None, prefix="tokenbucket:"):
        self.kind = kind
        self.url = url
        self.prefix = prefix
        self.loop = asyncio.new_event_loop() if kind.endswith("-async") else None
        self.stores = []

    def make(self, default, store=None):
        if store is None:
            store = self.store()
        return Limits(BucketRegistry(default, store=store), self.loop)

    def store(self):
        if self.kind == "memory":
            return MemoryStore(clock=ManualClock(1000.0))
        options = {
            "prefix": self.prefix,
            "on_error": "deny",
            "socket_timeout": 5,
            "cluster": self.kind.startswith("cluster"),
        }
        if self.loop is None:
            store = RedisStore.from_url(self.url, **options)
        else:

            async def make():  # in the loop that uses it (Python 3.9's asyncio needs that)
                return AsyncRedisStore.from_url(self.url, **options)

            store = self.loop.run_until_complete(make())
        self.stores.append(store)
        return store

    def close(self):
        for store in self.stores:
            if self.loop is None:
                store.close()
            else:
                self.loop.run_until_complete(store.aclose())
        for store in self.stores:
            assert store.available, "a Redis call failed during the test"
        if self.loop is not None:
            self.loop.close()


@pytest.fixture(params=BACKENDS)
def backend(request):
    kind = request.param
    made = Backend(kind, redis_url_for(request, kind) if kind != "memory" else None)
    yield made
    made.close()


def run(limits, steps):
    """Run scripted (method, *args) steps; return every result."""
    out = []
    for method, *args in steps:
        kwargs = args.pop() if args and isinstance(args[-1], dict) else {}
        out.append(getattr(limits, method)(*args, **kwargs))
    return out


def reference(default, steps):
    """The same steps on a fresh in-memory registry with a frozen clock."""
    return run(Limits(BucketRegistry(default, clock=ManualClock(1000.0))), steps)


# Scripted sequences without refill: every backend must return exactly what memory returns.
SCRIPTS = {
    "drain": (
        Rule(5, 0),
        [
            ("consume", "k", 2),
            ("consume", "k", 2),
            ("consume", "k", 2),
            ("peek", "k", 1),
            ("try_consume", "k"),
            ("try_consume", "k"),
            ("tokens", "k"),
            ("tokens", "other"),
        ],
    ),
    "fractions": (
        Rule(1, 0),
        [*[("try_consume", "k", 0.1)] * 11, ("tokens", "k"), ("peek", "k", 1e-10)],
    ),
    "too-large": (
        Rule(3, 0),
        [("consume", "k", 4), ("consume", "k", 10**30), ("peek", "k", 3.5), ("consume", "k", 3)],
    ),
    "override-into-debt": (
        Rule(10, 0),
        [
            ("consume", "k", 8),
            ("update_rule", "k", {"capacity": 5}),
            ("tokens", "k"),
            ("peek", "k"),
            ("consume", "k"),
            ("update_rule", "k", {"capacity": 20}),
            ("consume", "k", 12),
            ("consume", "k"),
            ("rule_for", "k"),
        ],
    ),
    "partial-updates": (
        Rule(10, 0),
        [
            ("update_rule", "k", {"capacity": 20}),
            ("update_rule", "k", {"refill_rate": 0.0}),
            ("update_rule", "k", {"capacity": 7.5, "refill_rate": 0}),
            ("rule_for", "k"),
            ("rule_for", "other"),
            ("consume", "k", 7.5),
        ],
    ),
    "remove-rule": (
        Rule(10, 0),
        [
            ("update_rule", "k", {"capacity": 50}),
            ("consume", "k", 45),
            ("remove_rule", "k"),
            ("remove_rule", "k"),
            ("rule_for", "k"),
            ("tokens", "k"),
            ("peek", "k"),
            ("remove_rule", "never"),
        ],
    ),
    "reset-keeps-override": (
        Rule(10, 0),
        [
            ("update_rule", "k", {"capacity": 3}),
            ("consume", "k", 3),
            ("reset", "k"),
            ("tokens", "k"),
            ("rule_for", "k"),
            ("consume", "k", 2),
            ("reset", "plain"),
            ("tokens", "plain"),
        ],
    ),
    "new-default": (
        Rule(10, 0),
        [
            ("consume", "a", 4),
            ("update_rule", "b", {"capacity": 5}),
            ("consume", "b", 1),
            ("update_default", {"capacity": 3}),
            ("tokens", "a"),
            ("consume", "a"),
            ("tokens", "b"),
            ("tokens", "fresh"),
            ("update_default", {"capacity": 30}),
            ("consume", "a", 25),
            ("consume", "a"),
        ],
    ),
    "large-capacity": (
        Rule(10**12, 0),
        [
            ("consume", "k", 1),
            ("consume", "k", 0.5),
            ("consume", "k", 999_999_999_998.5),
            ("consume", "k", 1e-9),
            ("consume", "k", 1e-3),
            ("tokens", "k"),
        ],
    ),
    "charge-into-debt-and-refund": (
        Rule(10, 0),
        [
            ("consume", "k", 3),
            ("charge", "k", 12),
            ("tokens", "k"),
            ("consume", "k"),
            ("refund", "k", 4),
            ("peek", "k"),
            ("refund", "k", 100),
            ("tokens", "k"),
            ("charge", "k", 0.5),
            ("charge", "k", 10**6),
            ("refund", "fresh", 3),
            ("tokens", "fresh"),
            ("update_rule", "o", {"capacity": 4}),
            ("charge", "o", 6),
            ("refund", "o", 1.5),
            ("update_default", {"capacity": 5}),
            ("charge", "k", 1),
            ("refund", "k", 0.25),
        ],
    ),
    "odd-keys": (
        Rule(2, 0),
        [
            (method, key)
            for key in ("", "}{", "{tag}", "{}x", "é\u2603", "\udc80", "a" * 1000)
            for method in ("try_consume", "try_consume", "try_consume")
        ],
    ),
}


@pytest.fixture(params=REDIS_BACKENDS)
def shared_backend(request):
    """The Redis backends only: the in-memory store is the reference they are compared with
    (and is itself checked against the exact model in test_model.py)."""
    made = Backend(request.param, redis_url_for(request, request.param))
    yield made
    made.close()


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripted_sequences_match_memory(shared_backend, script):
    """The same steps give the same decisions, levels and rules as the in-memory store."""
    default, steps = SCRIPTS[script]
    assert run(shared_backend.make(default), steps) == reference(default, steps)


class TestExactValues:
    """The reference itself, pinned, so that agreement means the documented semantics."""

    def test_drain(self, backend):
        """Two tokens at a time from 5: allowed, allowed, denied; nothing taken on denial."""
        limits = backend.make(Rule(5, 0))
        assert limits.consume("k", 2) == Decision(True, 3.0, 0.0, math.inf, 5)
        assert limits.consume("k", 2) == Decision(True, 1.0, 0.0, math.inf, 5)
        assert limits.consume("k", 2) == Decision(False, 1.0, math.inf, math.inf, 5)
        assert limits.tokens("k") == 1.0

    def test_debt_after_lowered_capacity(self):
        """8 of 10 used, capacity lowered to 5: 3 in debt, reported as 0 and denied."""
        limits = Limits(BucketRegistry(Rule(10, 0), clock=ManualClock()))
        limits.consume("k", 8)
        assert limits.update_rule("k", capacity=5) == Rule(5, 0)
        assert limits.tokens("k") == 0.0
        assert limits.update_rule("k", capacity=20) == Rule(20, 0)
        assert limits.tokens("k") == 12.0

    def test_fractions_admit_within_epsilon(self, backend):
        """Ten 0.1-token requests fit a capacity of 1 (float sums within EPSILON); the 11th not."""
        limits = backend.make(Rule(1, 0))
        assert [limits.try_consume("k", 0.1) for _ in range(11)] == [True] * 10 + [False]

    def test_fractional_sums_do_not_drift(self, backend):
        """10,000 requests of 10.1 tokens: the level is the exact one to 1e-9 (no drift)."""
        from fractions import Fraction

        limits = backend.make(Rule(200_000, 0))
        for _ in range(10_000):
            limits.try_consume("k", 10.1)
        exact = 200_000 - 10_000 * Fraction(10.1)
        assert abs(Fraction(limits.tokens("k")) - exact) <= Fraction(1, 10**9)

    def test_rule_types_round_trip(self, backend):
        """Overrides come back as the very numbers given: ints stay ints, floats exact."""
        limits = backend.make(Rule(10, 0))
        odd = 0.1 + 0.2
        assert limits.update_rule("k", capacity=odd, refill_rate=1e-7) == Rule(odd, 1e-7)
        rule = limits.rule_for("k")
        assert (rule.capacity, rule.refill_rate) == (odd, 1e-7)
        limits.update_rule("k", capacity=7, refill_rate=0)
        rule = limits.rule_for("k")
        assert (type(rule.capacity), type(rule.refill_rate)) == (int, int)
        assert limits.consume("k", 2).limit == 7

    def test_large_capacity_is_exact(self, backend):
        """A capacity of 1e12 counts single tokens and halves exactly."""
        limits = backend.make(Rule(10**12, 0))
        assert limits.consume("k", 1).remaining == 999_999_999_999.0
        assert limits.consume("k", 0.5).remaining == 999_999_999_998.5


class TestWithRealTime:
    """Refilling buckets: bounds over the wall time measured around the calls."""

    def test_refill_is_bounded_by_elapsed_time(self, backend):
        """After draining 10 at 1 token/s, the level is at most the elapsed time, never more."""
        limits = backend.make(Rule(10, 1.0))
        start = time.monotonic()
        assert limits.consume("k", 10).allowed
        level = limits.tokens("k")
        elapsed = time.monotonic() - start
        assert 0.0 <= level <= elapsed + 1e-6
        decision = limits.peek("k", 5)
        assert not decision.allowed
        assert 5 - time.monotonic() + start - 1e-6 <= decision.retry_after <= 5.0

    def test_waiters_reserve_one_behind_the_other(self, backend):
        """acquire: one store call each, waits growing by one token's time (first come, first
        served), less only what refilled meanwhile; charge/refund report the debt exactly."""
        limits = backend.make(Rule(1, 10.0))
        naps = []
        start = time.monotonic()
        waits = [limits.acquire("k", sleep=naps.append) for _ in range(4)]
        elapsed = time.monotonic() - start
        assert waits[0] == 0
        assert naps == waits[1:]
        for index, wait in enumerate(waits[1:], 1):
            assert index / 10 - elapsed - 1e-6 <= wait <= index / 10 + 1e-6
        after = limits.refund("k", 0.5)
        elapsed = time.monotonic() - start  # the refund's clock, later on a loaded machine
        assert after.remaining == 0
        assert 0.25 - elapsed - 1e-6 <= after.retry_after - 0.1 <= 0.25 + 1e-6

    def test_update_rule_settles_then_carries_the_deficit(self, backend):
        """10 used at 1/s, then 50 at rate 0: the deficit (10 minus what refilled) carries."""
        limits = backend.make(Rule(10, 1.0))
        start = time.monotonic()
        limits.consume("k", 10)
        assert limits.update_rule("k", capacity=50, refill_rate=0) == Rule(50, 0)
        elapsed = time.monotonic() - start
        level = limits.tokens("k")
        assert 40.0 <= level <= 40.0 + elapsed + 1e-6
        assert limits.tokens("k") == level  # frozen from the update on

    def test_new_default_settles_at_the_old_rate(self, backend):
        """A bucket written at rate 1 is settled at rate 1 by its next decision, then frozen."""
        limits = backend.make(Rule(10, 1.0))
        start = time.monotonic()
        limits.consume("k", 10)
        limits.update_default(refill_rate=0)
        denied = limits.consume("k", 11)  # never allowed, but it settles the bucket
        elapsed = time.monotonic() - start
        assert not denied.allowed
        assert 0.0 <= denied.remaining <= elapsed + 1e-6
        assert limits.tokens("k") == denied.remaining  # frozen at the settled level
        assert limits.tokens("k") == denied.remaining

    def test_override_with_refill(self, backend):
        """An override's refill rate applies: 3 used at 1000/s are back within the bound."""
        limits = backend.make(Rule(3, 0))
        limits.update_rule("k", refill_rate=1000.0)
        start = time.monotonic()
        assert limits.consume("k", 3).allowed
        level = limits.tokens("k")
        elapsed = time.monotonic() - start
        assert 0.0 <= level <= min(3.0, 1000.0 * elapsed + 1e-6)


def test_two_registries_share_overrides_and_buckets(backend):
    """Two registries on one store (two workers on one Redis): one set of limits."""
    store = backend.store()
    first, second = backend.make(Rule(4, 0), store), backend.make(Rule(4, 0), store)
    assert first.try_consume("k", 3)
    assert not second.try_consume("k", 2)
    second.update_rule("k", capacity=10)
    assert first.rule_for("k") == Rule(10, 0)
    assert first.tokens("k") == 7.0


# Random sequences without refill, checked step by step against the in-memory store.
KEYS = st.sampled_from(["a", "b", "c"])
CAPACITIES = st.one_of(st.integers(1, 20), st.floats(0.01, 20, allow_nan=False))
AMOUNTS = st.one_of(st.integers(1, 8), st.floats(0.001, 8, allow_nan=False))
STEPS = st.one_of(
    st.tuples(st.just("consume"), KEYS, AMOUNTS),
    st.tuples(st.just("charge"), KEYS, AMOUNTS),
    st.tuples(st.just("refund"), KEYS, AMOUNTS),
    st.tuples(st.just("peek"), KEYS, AMOUNTS),
    st.tuples(st.just("tokens"), KEYS),
    st.tuples(st.just("update_rule"), KEYS, st.fixed_dictionaries({"capacity": CAPACITIES})),
    st.tuples(st.just("remove_rule"), KEYS),
    st.tuples(st.just("reset"), KEYS),
    st.tuples(st.just("rule_for"), KEYS),
    st.tuples(st.just("update_default"), st.fixed_dictionaries({"capacity": CAPACITIES})),
)


def flusher(backend):
    """An admin client of the backend's server or cluster, and a call that empties it."""
    if backend.kind.startswith("cluster"):
        admin = redis.cluster.RedisCluster.from_url(backend.url)
        return admin, lambda: admin.flushall(target_nodes=redis.cluster.RedisCluster.PRIMARIES)
    admin = redis.Redis.from_url(backend.url)
    return admin, admin.flushall


@pytest.mark.parametrize("kind", REDIS_BACKENDS)
def test_random_sequences_match_memory(kind, request):
    """Hypothesis-generated steps on Redis return exactly what the in-memory store returns."""
    backend = Backend(kind, redis_url_for(request, kind))
    store = backend.store()
    admin, flush = flusher(backend)
    try:

        @settings(max_examples=40)
        @given(capacity=CAPACITIES, steps=st.lists(STEPS, max_size=25))
        def check(capacity, steps):
            flush()  # every example starts from an empty Redis
            default = Rule(capacity, 0)
            assert run(backend.make(default, store), steps) == reference(default, steps)

        check()
    finally:
        admin.close()
        backend.close()


# Several limits at once, all or nothing: straight on each store (the protocol's take_all, on
# groups: a key and its limits). Limit n of key "u1" is the bucket of store key limit_key("u1",
# n), which one-bucket calls address too; on a Redis Cluster a key's limits share its slot.
A, B, C = (limit_key("u1", name) for name in "abc")


def group(*limits, key="u1"):
    """The groups of one key's limits, ``("a", rule), ...``."""
    return [(key, tuple(limits))]


def grouped(buckets):
    """``[(A, rule), (C, rule)]``, limits of key u1 by store key, as the store's groups."""
    names = {A: "a", B: "b", C: "c"}
    return group(*((names[key], rule) for key, rule in buckets))


class Direct:
    """A store called the same way whatever the backend (coroutines run on the loop)."""

    def __init__(self, backend):
        self.store = backend.store()
        self.loop = backend.loop

    def __getattr__(self, name):
        method = getattr(self.store, name)
        if self.loop is None:
            return method
        return lambda *args: self.loop.run_until_complete(method(*args))


class TestTakeAll:
    def test_all_or_nothing(self, backend):
        """Allowed only if every limit has the amount; a denial charges none of them."""
        store = Direct(backend)
        groups = group(("a", Rule(5, 0)), ("b", Rule(3, 0)))
        assert store.take_all(groups, 2) == (True, ((True, 3, Rule(5, 0)), (True, 1, Rule(3, 0))))
        assert store.take_all(groups, 2) == (
            False,
            ((True, 3, Rule(5, 0)), (False, 1, Rule(3, 0))),
        )
        assert (store.level(A, Rule(5, 0)), store.level(B, Rule(3, 0))) == (3, 1)
        assert store.take_all(groups, 1)[0]
        assert (store.level(A, Rule(5, 0)), store.level(B, Rule(3, 0))) == (2, 0)

    def test_peek_all_changes_nothing(self, backend):
        """peek_all answers what take_all would, and takes nothing; a one-bucket take on a
        limit's store key takes from that limit."""
        store = Direct(backend)
        limits = (("a", Rule(5, 0)), ("b", Rule(3, 0)), ("c", Rule(1, 0)))
        store.take(B, 2, Rule(3, 0))
        assert store.peek_all(group(*limits), 1) == (
            True,
            ((True, 4, Rule(5, 0)), (True, 0, Rule(3, 0)), (True, 0, Rule(1, 0))),
        )
        assert store.peek_all(group(*limits), 2)[0] is False
        assert [store.level(key, rule) for key, (_, rule) in zip((A, B, C), limits)] == [5, 1, 1]
        assert store.take_all(group(*limits), 1) == (
            True,
            ((True, 4, Rule(5, 0)), (True, 0, Rule(3, 0)), (True, 0, Rule(1, 0))),
        )

    def test_overrides_decide_and_are_reported(self, backend):
        """Each limit's outcome names the rule that decided it: its override, if any."""
        store = Direct(backend)
        store.update_rule(B, Rule(3, 0), 10, None)
        assert store.take_all(group(("a", Rule(5, 0)), ("b", Rule(3, 0))), 4) == (
            True,
            ((True, 1, Rule(5, 0)), (True, 6, Rule(10, 0))),
        )

    def test_same_as_take_for_one_bucket(self, backend):
        """take_all on one limit decides as take, fractions and debt included."""
        store = Direct(backend)
        rule = Rule(1, 0)
        for _ in range(10):
            assert store.take_all(group(("a", rule)), 0.1)[0] == store.take("{u1}", 0.1, rule)[0]
        assert store.take_all(group(("a", rule)), 0.1) == (False, (store.take("{u1}", 0.1, rule),))
        assert store.level(A, rule) == store.level("{u1}", rule)

    def test_keys_of_two_groups_go_together(self, backend):
        """A request charged to two keys (a user and an organisation) is all or nothing across
        both: the user's limit denies, so the organisation's is not charged. (On a Redis
        Cluster two keys are two hash slots: ValueError, before anything is taken.)"""
        store = Direct(backend)
        groups = [("alice", (("user", Rule(1, 0)),)), ("acme", (("org", Rule(5, 0)),))]
        if backend.kind.startswith("cluster"):
            with pytest.raises(ValueError, match="hash slot"):
                store.take_all(groups, 1)
            return
        assert store.take_all(groups, 1)[0]
        assert store.take_all(groups, 1) == (
            False,
            ((False, 0, Rule(1, 0)), (True, 4, Rule(5, 0))),
        )
        assert store.level(limit_key("acme", "org"), Rule(5, 0)) == 4

    def test_bad_groups(self, backend):
        """Repeated keys, or names within a key, raise ValueError before anything is taken;
        no groups admit."""
        store = Direct(backend)
        with pytest.raises(ValueError, match="distinct keys"):
            store.take_all(group(("a", Rule(5, 0))) + group(("b", Rule(5, 0))), 1)
        with pytest.raises(ValueError, match="distinct names"):
            store.take_all(group(("a", Rule(5, 0)), ("a", Rule(5, 0))), 1)
        assert store.level(A, Rule(5, 0)) == 5
        assert store.level(B, Rule(5, 0)) == 5
        assert store.take_all([], 1) == (True, ())


@pytest.mark.parametrize("kind", ["cluster", "cluster-async"])
def test_cluster_keys_of_several_slots_are_refused(kind, request):
    """On a Redis Cluster, keys of different hash slots raise ValueError (no CROSSSLOT error
    hidden by the on_error policy); the limits of one key, or keys sharing a {hash tag},
    work."""
    backend = Backend(kind, redis_url_for(request, kind))
    try:
        store = Direct(backend)
        with pytest.raises(ValueError, match="one Redis Cluster hash slot"):
            store.take_all(group(("x", Rule(5, 0)), key="a") + group(("x", Rule(5, 0)), key="b"), 1)
        assert store.level(limit_key("a", "x"), Rule(5, 0)) == 5
        assert store.take_all(group(("x", Rule(5, 0)), ("y", Rule(5, 0)), key="t"), 1)[0]
    finally:
        backend.close()


def test_take_all_at_the_cap_admits_all_new_keys_or_none():
    """MemoryStore at max_keys: a take_all that needs more new keys than the cap allows is
    denied (the new keys count as empty) and charges the tracked ones nothing. A key counts
    once, whatever its limits."""
    store = MemoryStore(clock=ManualClock(), max_keys=2)
    limits = (("x", Rule(5, 0)), ("y", Rule(5, 0)))
    assert store.take_all(group(*limits, key="a"), 1)[0]
    allowed, outcomes = store.take_all(
        group(*limits, key="a") + group(*limits, key="b") + group(*limits, key="c"), 1
    )
    empty = (False, 0.0, Rule(5, 0))
    assert (allowed, outcomes) == (False, ((True, 4, Rule(5, 0)),) * 2 + (empty,) * 4)
    assert store.peek_all(group(*limits, key="a") + group(*limits, key="b"), 1)[0]
    assert store.level(limit_key("a", "y"), Rule(5, 0)) == 4
    assert limit_key("b", "x") not in store
    assert store.take_all(group(*limits, key="a") + group(*limits, key="b"), 1)[0]
    assert len(store) == 2


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_take_all_from_threads_is_atomic(kind, request):
    """8 threads taking 1 from both of {a: 1000, b: 1500}: exactly 1,000 admitted, and b is
    left with exactly 500 (a denial charges neither limit)."""
    import threading

    backend = Backend(kind, redis_url_for(request, kind) if kind != "memory" else None)
    try:
        store = backend.store()
        groups = group(("a", Rule(1000, 0)), ("b", Rule(1500, 0)))
        admitted = [0] * 8
        barrier = threading.Barrier(8)

        def work(index):
            barrier.wait()
            for _ in range(160):
                admitted[index] += store.take_all(groups, 1)[0]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(admitted) == 1000
        assert store.level(A, Rule(1000, 0)) == 0
        assert store.level(B, Rule(1500, 0)) == 500
    finally:
        backend.close()


MAX_WAITS = st.none() | st.sampled_from([0.0, 1.0, math.inf])
TAKE_ALL_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["take_all", "peek_all", "charge_all", "refund_all"]),
        st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True),
        AMOUNTS,
        MAX_WAITS,
    )
    | st.tuples(
        st.sampled_from(["take", "charge", "refund"]),
        st.sampled_from([A, B, C]),
        AMOUNTS,
        MAX_WAITS,
    ),
    max_size=20,
)


@pytest.mark.parametrize("kind", REDIS_BACKENDS)
def test_random_take_all_match_memory(kind, request):
    """Hypothesis-generated take_all/peek_all/take and charge/refund (one limit or several,
    reservations too; one-bucket calls on the limits' store keys) steps (with a changing
    default rule per key) return on Redis exactly what the in-memory store returns."""
    backend = Backend(kind, redis_url_for(request, kind))
    store = Direct(backend)
    admin, flush = flusher(backend)
    try:

        @settings(max_examples=40)
        @given(capacities=st.lists(CAPACITIES, min_size=2, max_size=2), steps=TAKE_ALL_STEPS)
        def check(capacities, steps):
            flush()
            reference = MemoryStore(clock=ManualClock(1000.0))
            for index, (method, keys, amount, max_wait) in enumerate(steps):
                rule = Rule(capacities[index % 2], 0)  # defaults change between calls
                if method in ("take", "charge", "refund"):
                    args = (keys, amount, rule)
                else:  # limits of key u1, named a, b, c: the store keys A, B, C
                    args = (group(*((name, rule) for name in keys)), amount)
                if method.startswith("charge"):  # a reservation, or (None) a plain charge
                    args += (max_wait,)
                assert getattr(store, method)(*args) == getattr(reference, method)(*args)

        check()
    finally:
        admin.close()
        backend.close()


# Several named limits through the registry (issue 12): one take_all per decision.
SEVERAL = {"burst": Rule(3, 0), "daily": Rule(5, 0)}
SEVERAL_STEPS = [
    ("consume", "k", 1),
    ("consume", "k", 2),
    ("consume", "k", 1),  # denied by burst: daily keeps 2
    ("tokens", "k", {"limit": "daily"}),
    ("update_rule", "k", {"capacity": 10, "limit": "burst"}),
    ("consume", "k", 2),
    ("consume", "k", 1),  # denied by daily
    ("peek", "k", 1),
    ("rules_for", "k"),
    ("remove_rule", "k", {"limit": "burst"}),
    ("tokens", "k", {"limit": "burst"}),
    ("reset", "k", {"limit": "daily"}),
    ("consume", "k", 6),  # more than daily's capacity: never
    ("consume", "k{x}", 1),
    ("tokens", "}k", {"limit": "burst"}),
]


def test_several_limits_match_memory(shared_backend):
    """A registry of several limits decides on Redis (one server or a Cluster: one key's limits
    share a slot) exactly as in memory: decisions, levels, overrides per limit."""
    assert run(shared_backend.make(SEVERAL), SEVERAL_STEPS) == reference(SEVERAL, SEVERAL_STEPS)


def test_several_limits_exact_values(backend):
    """The reference pinned: the binding limit names the decision."""
    limits = backend.make(SEVERAL)
    assert limits.consume("k", 3) == Decision(True, 0.0, 0.0, math.inf, 3, "burst")
    assert limits.consume("k") == Decision(False, 0.0, math.inf, math.inf, 3, "burst")
    assert limits.tokens("k", limit="daily") == 2.0


LEVELS = {"user": Rule(2, 0), "org": Rule(3, 0)}


@pytest.mark.parametrize("kind", ["memory", "redis", "redis-async"])
def test_keys_at_different_levels_on_one_server(kind, request):
    """A key per limit (user and organisation): all or nothing on one Redis, as in memory."""
    backend = Backend(kind, redis_url_for(request, kind) if kind != "memory" else None)
    try:
        limits = backend.make(LEVELS)
        asks = [{"user": user, "org": "acme"} for user in ("ann", "ann", "ann", "bob", "bob")]
        assert [limits.try_consume(ask) for ask in asks] == [True, True, False, True, False]
        assert limits.tokens("bob", limit="user") == 1.0  # the org's denial charged bob nothing
    finally:
        backend.close()


@pytest.mark.parametrize("kind", ["cluster", "cluster-async"])
def test_keys_at_different_levels_on_a_cluster_are_refused(kind, request):
    """On a Cluster the keys of different levels are in different slots: ValueError, before
    anything is charged (never a CROSSSLOT hidden by the on_error policy)."""
    backend = Backend(kind, redis_url_for(request, kind))
    try:
        limits = backend.make(LEVELS)
        with pytest.raises(ValueError, match="one Redis Cluster hash slot"):
            limits.consume({"user": "ann", "org": "acme"})
        assert limits.tokens("ann", limit="user") == 2.0
    finally:
        backend.close()


def test_several_limits_are_one_script_call(request):
    """A decision over three limits is one EVALSHA (one round trip), whatever the limits."""
    backend = Backend("redis", redis_url_for(request, "redis"))
    admin = redis.Redis.from_url(backend.url)
    try:
        limits = backend.make({"a": Rule(5, 0), "b": Rule(6, 0), "c": Rule(7, 0)})
        limits.consume("k")  # loads the script
        admin.config_resetstat()
        for _ in range(10):
            limits.consume("k")
        calls = {name[8:]: stat["calls"] for name, stat in admin.info("commandstats").items()}
        assert calls.pop("evalsha") == 10
        inside = {"time", "hmget", "hset", "hdel", "del", "persist", "pexpire", "config|resetstat"}
        inside |= {"get", "set"}  # the call's marker (applied once)
        assert set(calls) <= inside, calls  # the rest ran inside the script
    finally:
        admin.close()
        backend.close()


WORKER = """
import sys
from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import RedisStore
store = RedisStore.from_url(sys.argv[1], on_error="deny")
limits = BucketRegistry({"a": Rule(1000, 0), "b": Rule(1500, 0)}, store=store)
print(sum(limits.try_consume("k") for _ in range(400)))
"""


def test_several_limits_across_processes(request):
    """4 processes x 400 attempts on {a: 1000, b: 1500} in one Redis: exactly 1,000 admitted,
    and b left with exactly 500."""
    import subprocess
    import sys

    url = redis_url_for(request, "redis")
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    admitted = [int(worker.communicate(timeout=120)[0]) for worker in workers]
    assert sum(admitted) == 1000
    store = RedisStore.from_url(url)
    try:
        limits = BucketRegistry({"a": Rule(1000, 0), "b": Rule(1500, 0)}, store=store)
        assert limits.tokens("k", limit="a") == 0.0
        assert limits.tokens("k", limit="b") == 500.0
    finally:
        store.close()
