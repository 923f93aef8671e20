"""Regression tests for defects found from outside (issue 9, items 5, 7, 9 and 10)."""

from __future__ import annotations

import gc
import math
import re
import threading
from fractions import Fraction

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket._http import TEXT, Policy, rate_limit_headers, retry_after_seconds
from tokenbucket.redis import RedisStore


class TestEqualRules:
    def test_equal_rules_in_two_registries_keep_the_carry(self):
        """Registries sharing a store with equal, distinct default rules stay exact (1e-9)."""
        store = MemoryStore(clock=ManualClock(1000.0))
        first = BucketRegistry(Rule(200_000, 0), store=store)
        second = BucketRegistry(Rule(200_000, 0), store=store)
        for i in range(10_000):
            assert (first if i % 2 else second).try_consume("k", 10.1)
        exact = 200_000 - 10_000 * Fraction(10.1)
        assert abs(Fraction(first.tokens("k")) - exact) <= Fraction(1, 10**9)


class TestClockBehind:
    """After the clock steps back, waiting exactly retry_after admits, and not sooner."""

    def test_retry_after_counts_the_wait_for_the_clock_to_catch_up(self):
        """The issue's case: 50 s behind, 1 token missing at 1/s is 51 s, not 1 s."""
        clock = ManualClock(1000.0)
        registry = BucketRegistry(Rule(10, 1), clock=clock)
        assert registry.consume("k", 10).allowed
        clock.set(900.0)
        clock.advance(50.0)
        decision = registry.peek("k")
        assert registry.tokens("k") == 0.0
        assert decision.retry_after == 51.0
        assert decision.reset_after == 60.0
        clock.advance(50.999)
        assert not registry.try_consume("k")
        clock.advance(0.001)
        assert registry.consume("k").allowed

    def test_partly_refilled_bucket_behind(self):
        """Behind a bucket with 5 of 10 left: 8 tokens need 3 s after the clock catches up."""
        clock = ManualClock(100.0)
        registry = BucketRegistry(Rule(10, 1), clock=clock)
        registry.consume("k", 5)
        clock.set(90.0)
        decision = registry.consume("k", 8)
        assert not decision.allowed
        assert decision.retry_after == 13.0
        assert registry.tokens("k") == 5.0  # the level itself is unchanged
        clock.set(102.999)
        assert not registry.try_consume("k", 8)
        clock.set(103.0)
        assert registry.try_consume("k", 8)


@pytest.fixture
def admin(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def server_seconds(client):
    seconds, micros = client.time()
    return seconds + micros / 1e6


class TestClockBehindRedis:
    """The same in the Lua script. Redis time cannot be stepped back, so the test writes a
    bucket state whose instant is in the server's future: the same as a clock that stepped
    back (the script only sees now - t)."""

    def write_state(self, admin, key, behind, used, rule):
        seconds, micros = admin.time()
        base = seconds * 1_000_000 + micros + round(behind * 1_000_000)
        admin.hset(
            "tokenbucket:" + key,
            mapping={
                "t": base,
                "u": repr(used),
                "c": repr(rule.capacity),
                "r": repr(rule.refill_rate),
            },
        )
        return base

    def test_retry_after_counts_the_wait_for_the_clock_to_catch_up(self, redis_url, admin):
        """50 s behind, 1 token missing at 1000/s: retry_after is 50.001 s, not 0.001 s."""
        rule = Rule(10, 1000)
        store = RedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
        registry = BucketRegistry(rule, store=store)
        before = server_seconds(admin)
        self.write_state(admin, "k", 50.0, 10, rule)
        decision = registry.peek("k")
        after = server_seconds(admin)
        assert not decision.allowed
        assert 50.001 - (after - before) - 1e-6 <= decision.retry_after <= 50.001 + 1e-6
        store.close()

    @settings(
        max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(
        behind=st.floats(0.0, 100.0),
        capacity=st.integers(1, 100),
        used=st.floats(0.01, 1.0),
        amount=st.floats(0.01, 1.0),
        rate=st.floats(0.5, 10.0),
    )
    def test_waiting_retry_after_admits_and_not_sooner(
        self, redis_url, admin, behind, capacity, used, amount, rate
    ):
        """Waiting retry_after (shifting the state's instant back by it) admits; waiting 0.5 s
        less does not (the margin covers the test's own time between calls)."""
        rule = Rule(capacity, rate)
        amount, used = amount * capacity, used * capacity
        store = RedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
        registry = BucketRegistry(rule, store=store)
        try:
            base = self.write_state(admin, "p", behind, used, rule)
            decision = registry.peek("p", amount)
            if decision.allowed:
                return
            wait = decision.retry_after
            assert math.isfinite(wait)
            if wait > 0.5:
                admin.hset("tokenbucket:p", "t", base - math.floor((wait - 0.5) * 1_000_000))
                assert not registry.consume("p", amount).allowed
            admin.hset("tokenbucket:p", "t", base - math.ceil(wait * 1_000_000))
            assert registry.consume("p", amount).allowed
        finally:
            admin.delete("tokenbucket:p")
            store.close()


SF_INTEGER = re.compile(r"[0-9]{1,15}")  # RFC 9651 Integer, non-negative


def sf_integer(text):
    assert SF_INTEGER.fullmatch(text), text
    value = int(text)
    assert 0 <= value <= 999_999_999_999_999
    return value


def header_values(decision, limit_policy):
    """Every number the middleware writes for ``decision``: parsed, each checked."""
    fields = dict(rate_limit_headers(decision, limit_policy, 3, TEXT))
    policy = re.fullmatch(r'"default";q=([^;,]+)(?:;w=([^;,]+))?', fields["RateLimit-Policy"])
    state = re.fullmatch(r'"default";r=([^;,]+)(?:;t=([^;,]+))?', fields["RateLimit"])
    assert policy, fields
    assert state, fields
    numbers = {"q": sf_integer(policy[1]), "r": sf_integer(state[1])}
    if policy[2] is not None:
        numbers["w"] = sf_integer(policy[2])
    if state[2] is not None:
        numbers["t"] = sf_integer(state[2])
    for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
        if name in fields:
            numbers[name] = sf_integer(fields[name])
    return numbers


class TestHeaderRanges:
    def policy(self, registry=None):
        return Policy("default", registry or BucketRegistry(Rule(1, 1)), "")

    def test_slow_refill_reset_is_clamped_to_15_digits(self):
        """Rule(1000, 1e-13), emptied: 1e16 s to full; t and X-RateLimit-Reset stay 15 digits."""
        registry = BucketRegistry(Rule(1000, 1e-13), clock=ManualClock())
        decision = registry.consume("k", 1000)
        assert decision.reset_after == 1e16
        numbers = header_values(decision, self.policy())
        assert numbers["t"] == numbers["X-RateLimit-Reset"] == 999_999_999_999_999
        denied = registry.consume("k", 1000)
        assert not denied.allowed
        numbers = header_values(denied, self.policy())
        assert numbers["t"] == retry_after_seconds(denied) == 999_999_999_999_999
        one = registry.consume("k")  # 1e13 s: in range, written as it is
        assert header_values(one, self.policy())["t"] == retry_after_seconds(one) == 10**13

    def test_fractional_capacity_reports_a_quota_of_at_least_one(self):
        """Capacity 0.5: q and X-RateLimit-Limit say 1, not 0 (no quota at all)."""
        registry = BucketRegistry(Rule(0.5, 1), clock=ManualClock())
        numbers = header_values(registry.consume("k", 0.25), self.policy())
        assert numbers["q"] == numbers["X-RateLimit-Limit"] == 1
        assert numbers["r"] == numbers["X-RateLimit-Remaining"] == 0
        registry = BucketRegistry(Rule(10.5, 1), clock=ManualClock())
        assert header_values(registry.consume("k"), self.policy())["q"] == 10

    @given(
        capacity=st.floats(1e-6, 1e12),
        rate=st.one_of(st.just(0.0), st.floats(1e-300, 1e12)),
        first=st.floats(1e-3, 1.0),
        elapsed=st.floats(0.0, 1e9),
        second=st.floats(1e-3, 2.0),
    )
    def test_every_field_is_an_rfc_9651_integer(self, capacity, rate, first, elapsed, second):
        """Any valid rule, any decision: every header number is a 15-digit Integer, and t on a
        denial equals Retry-After."""
        clock = ManualClock()
        registry = BucketRegistry(Rule(capacity, rate), clock=clock)
        registry.consume("k", first * capacity)
        clock.advance(elapsed)
        decision = registry.consume("k", second * capacity)
        numbers = header_values(decision, self.policy(registry))
        # w is the refill from empty, rounded up: q / w never exceeds the refill rate
        assert ("w" in numbers) == (rate > 0)
        if rate > 0 and numbers["q"] / rate < 999_999_999_999_999:  # else w is clamped
            assert numbers["w"] >= 1
            assert numbers["q"] / numbers["w"] <= rate
        wait = retry_after_seconds(decision)
        if not decision.allowed:
            assert numbers.get("t") == wait
            if wait is not None:
                assert sf_integer(str(wait)) >= 1


class TestSweeps:
    def in_debt(self, count, **options):
        store = MemoryStore(clock=ManualClock(), **options)
        registry = BucketRegistry(Rule(10, 0.001), store=store)
        for i in range(count):
            assert registry.try_consume(f"k{i}", 5)
        return registry, store

    def test_a_sweep_does_not_wait_for_every_stripe(self):
        """A sweep step takes a stripe lock only to delete a full bucket: while another thread
        holds one stripe, a new key on another stripe is decided (the old sweep took all 64)."""
        registry, store = self.in_debt(100, stripes=2)
        store._until_sweep = 0  # the next new key sweeps
        key = next(f"new{i}" for i in range(100) if hash(f"new{i}") & 1)
        results = []
        busy = store._stripes[0]
        busy.acquire()
        try:
            worker = threading.Thread(target=lambda: results.append(registry.try_consume(key)))
            worker.start()
            worker.join(5)
            assert results == [True]
        finally:
            busy.release()
            worker.join()

    def test_states_are_not_tracked_by_the_garbage_collector(self):
        """Bucket states hold only numbers, so full collections never visit them."""
        registry, store = self.in_debt(1000)
        registry.update_rule("k1", capacity=20)  # overridden, and rebased, states too
        registry.consume("k2", 0.5)
        gc.collect()  # untracks the rules' shapes (tuples of numbers), then the states with them
        gc.collect()
        states = [state for shard, _ in store._shards for state in shard.values()]
        assert len(states) == 1000
        assert not any(gc.is_tracked(state) for state in states)

    def test_a_step_visits_a_bounded_slice(self):
        """With 5,000 buckets in debt, each new key's sweep step visits at most 1,024 keys,
        and every key is visited once per pass (nothing in debt is forgotten)."""
        _, store = self.in_debt(5000)
        registry = BucketRegistry(Rule(10, 0.001), store=store)
        visited = []
        for i in range(3000):
            before = store._read
            store._until_sweep = 0
            registry.try_consume(f"n{i}", 5)
            after = store._read
            visited.append(after - before if after >= before else None)
        assert max(v for v in visited if v is not None) <= 1024
        assert visited.count(None) >= 1  # passes complete
        assert len(store) == 8000
        tracked = sorted(key for shard, _ in store._shards for key in shard)
        assert sorted(store._keys) == tracked  # one entry per tracked key
