"""Property tests: the real bucket and registry against an exact (Fraction) model."""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tokenbucket import EPSILON, BucketRegistry, ManualClock, Rule, TokenBucket
from tokenbucket.testing import ExactBucket

# Where float error could reach EPSILON the comparison would be meaningless, so capacities and
# rates stay where rounding is far below it (the arithmetic rounds once, relative 2**-52).
capacities = st.one_of(
    st.integers(1, 1000), st.floats(0.01, 1000, allow_nan=False, allow_infinity=False)
)
rates = st.one_of(
    st.just(0), st.integers(1, 100), st.floats(0.001, 1000, allow_nan=False, allow_infinity=False)
)
amounts = st.one_of(st.integers(1, 50), st.floats(0.001, 50, allow_nan=False))
steps = st.one_of(
    st.just(0.0),
    st.floats(1e-12, 1e-6),
    st.floats(0.0, 5.0),
    st.floats(5.0, 2000.0),
)

TOLERANCE = 1e-9


def check_decision(real_allowed: bool, model: ExactBucket, now: float, amount: float) -> None:
    """Real and exact agree, except that the real bucket may admit within EPSILON of the edge."""
    level = model.advance(now)
    if real_allowed:
        assert level >= Fraction(amount) - Fraction(EPSILON) - Fraction(1e-12), (level, amount)
    else:
        assert level < Fraction(amount), (level, amount)
    model.consume(now, amount, force=real_allowed)


class BucketMachine(RuleBasedStateMachine):
    """One TokenBucket: consume, advance, update; levels and totals checked against the model."""

    @initialize(capacity=capacities, rate=rates, start=st.floats(0, 1e6))
    def start(self, capacity, rate, start):
        self.clock = ManualClock(start)
        self.bucket = TokenBucket(capacity, rate, clock=self.clock)
        self.model = ExactBucket(capacity, rate, start)
        self.start_at = Fraction(start)
        self.admitted = Fraction(0)
        self.max_capacity = Fraction(capacity)
        self.max_rate = Fraction(rate)
        self.last_denial = None

    @rule(dt=steps)
    def advance(self, dt):
        self.clock.advance(dt)
        self.last_denial = None

    @precondition(lambda self: self.last_denial is not None)
    @rule()
    def advance_to_retry(self):
        """At the first clock reading at or after a denied request's due instant, it passes."""
        amount, decision = self.last_denial
        self.last_denial = None
        now = self.clock()
        exact_wait = self.model.retry_after(now, amount)
        if exact_wait < 0:
            assert decision.retry_after == float("inf")
            return
        assert abs(Fraction(decision.retry_after) - exact_wait) <= 1e-9 * max(1, exact_wait)
        due = Fraction(now) + exact_wait
        reading = float(due)
        while Fraction(reading) < due:
            reading = math.nextafter(reading, math.inf)
        self.clock.set(reading)
        assert self.bucket.consume(amount).allowed, (decision, self.bucket, self.model)
        check_decision(True, self.model, reading, amount)
        self.admitted += Fraction(amount)

    @rule(amount=amounts, use_decision=st.booleans())
    def consume(self, amount, use_decision):
        self.last_denial = None
        if use_decision:
            decision = self.bucket.consume(amount)
            allowed = decision.allowed
            if not allowed:
                self.last_denial = (amount, decision)
        else:
            allowed = self.bucket.try_consume(amount)
        check_decision(allowed, self.model, self.clock(), amount)
        if allowed:
            self.admitted += Fraction(amount)

    @rule(capacity=st.none() | capacities, rate=st.none() | rates)
    def update(self, capacity, rate):
        assume(capacity is not None or rate is not None)
        self.bucket.update(capacity=capacity, refill_rate=rate)
        self.model.update(self.clock(), capacity, rate)
        self.max_capacity = max(self.max_capacity, Fraction(self.bucket.capacity))
        self.max_rate = max(self.max_rate, Fraction(self.bucket.refill_rate))
        self.last_denial = None

    @invariant()
    def level_matches_model(self):
        tokens = self.bucket.tokens
        exact = max(self.model.advance(self.clock()), Fraction(0))  # a debt is reported as 0
        assert abs(Fraction(tokens) - exact) <= TOLERANCE
        assert 0 <= tokens <= self.bucket.capacity

    @invariant()
    def never_over_admits(self):
        elapsed = Fraction(self.clock()) - self.start_at
        assert self.admitted <= self.max_capacity + self.max_rate * elapsed + TOLERANCE


class ExactRegistry:
    """The registry's documented semantics, by key, in exact arithmetic."""

    def __init__(self, default: Rule):
        self.default = default
        self.version = 0
        self.overrides: dict[str, Rule] = {}
        self.buckets: dict[str, tuple[ExactBucket, object]] = {}

    def tag(self, key):
        return ("override", self.overrides[key]) if key in self.overrides else self.version

    def rule(self, key):
        return self.overrides.get(key, self.default)

    def bucket(self, key, now, commit):
        """The key's model bucket at ``now``, settled if its rule changed (stored if commit)."""
        current = self.rule(key)
        if key in self.buckets:
            bucket, tag = self.buckets[key]
            if tag != self.tag(key):
                bucket = _copy(bucket)
                bucket.update(now, current.capacity, current.refill_rate)
                if commit:
                    self.buckets[key] = (bucket, self.tag(key))
            return bucket
        bucket = ExactBucket(current.capacity, current.refill_rate, now)
        if commit:
            self.buckets[key] = (bucket, self.tag(key))
        return bucket

    def change(self, key, now, new_rule):
        """Settle ``key`` under its recorded rule at ``now``, then move it to ``new_rule``."""
        if key in self.buckets:
            bucket, _ = self.buckets[key]
            bucket.update(now, new_rule.capacity, new_rule.refill_rate)
        if new_rule is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = new_rule
        if key in self.buckets:
            self.buckets[key] = (self.buckets[key][0], self.tag(key))


def _copy(bucket):
    clone = ExactBucket(bucket.capacity, bucket.refill_rate, bucket.last)
    clone.level = bucket.level
    return clone


KEYS = st.sampled_from(["a", "b", "c"])


class RegistryMachine(RuleBasedStateMachine):
    """A registry with overrides, default changes and resets, against ExactRegistry."""

    @initialize(capacity=capacities, rate=rates)
    def start(self, capacity, rate):
        self.clock = ManualClock(1000.0)
        self.registry = BucketRegistry(Rule(capacity, rate), clock=self.clock)
        self.registry.store._until_sweep = 3  # sweep often, to prove forgetting is invisible
        self.model = ExactRegistry(Rule(capacity, rate))

    @rule(dt=steps)
    def advance(self, dt):
        self.clock.advance(dt)

    @rule(key=KEYS, amount=amounts)
    def consume(self, key, amount):
        allowed = self.registry.consume(key, amount).allowed
        check_decision(allowed, self.model.bucket(key, self.clock(), True), self.clock(), amount)

    @rule(key=KEYS, amount=amounts)
    def peek(self, key, amount):
        decision = self.registry.peek(key, amount)
        model = _copy(self.model.bucket(key, self.clock(), False))
        check_decision(decision.allowed, model, self.clock(), amount)

    @rule(key=KEYS, capacity=st.none() | capacities, rate=st.none() | rates)
    def update_rule(self, key, capacity, rate):
        assume(capacity is not None or rate is not None)
        new = self.registry.update_rule(key, capacity=capacity, refill_rate=rate)
        assert new == self.model.rule(key).replace(capacity=capacity, refill_rate=rate)
        self.model.change(key, self.clock(), new)

    @rule(key=KEYS)
    def remove_rule(self, key):
        removed = self.registry.remove_rule(key)
        assert removed == self.model.overrides.get(key)
        if removed is not None:
            if key in self.model.buckets:
                self.model.buckets[key][0].update(
                    self.clock(), self.model.default.capacity, self.model.default.refill_rate
                )
            del self.model.overrides[key]
            if key in self.model.buckets:
                self.model.buckets[key] = (self.model.buckets[key][0], self.model.tag(key))

    @rule(capacity=st.none() | capacities, rate=st.none() | rates)
    def update_default(self, capacity, rate):
        assume(capacity is not None or rate is not None)
        self.model.default = self.registry.update_default(capacity=capacity, refill_rate=rate)
        self.model.version += 1

    @rule(key=KEYS)
    def reset(self, key):
        self.registry.reset(key)
        self.model.buckets.pop(key, None)

    @invariant()
    def levels_match(self):
        for key in ("a", "b", "c"):
            tokens = self.registry.tokens(key)
            exact = max(self.model.bucket(key, self.clock(), False).advance(self.clock()), 0)
            assert abs(Fraction(tokens) - exact) <= TOLERANCE, key
            assert 0 <= tokens <= self.registry.rule_for(key).capacity
            assert self.registry.rule_for(key) == self.model.rule(key)


TestBucketModel = BucketMachine.TestCase
TestRegistryModel = RegistryMachine.TestCase
