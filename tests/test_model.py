"""Property tests: the real bucket and registry against the exact (Fraction) models.

They use the same tools users get (tokenbucket.testing): one source of truth.
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tokenbucket import BucketRegistry, ManualClock, TokenBucket
from tokenbucket.testing import ExactRegistry
from tokenbucket.testing.stateful import LimiterMachine
from tokenbucket.testing.strategies import amounts, capacities, refill_rates, rules, steps

TOLERANCE = 1e-9


class BucketMachine(LimiterMachine):
    """TokenBucket under the shared machine, plus decisions, retries and rule updates."""

    def create(self, rule, clock):
        self.last_denial = None
        return TokenBucket(rule.capacity, rule.refill_rate, clock=clock)

    def attempt(self, bucket, amount):
        return bucket.try_consume(amount)

    @rule(amount=amounts())
    def consume(self, amount):
        decision = self.limiter.consume(amount)
        self.record(amount, decision.allowed)
        if not decision.allowed:
            self.last_denial = (amount, decision, self.clock(), self.admitted)

    @precondition(lambda self: self.last_denial is not None)
    @rule()
    def advance_to_retry(self):
        """At the first clock reading at or after a denied request's due instant, it passes."""
        amount, decision, at, admitted = self.last_denial
        self.last_denial = None
        assume(self.clock() == at and self.admitted == admitted)  # nothing changed since
        exact_wait = self.model.retry_after(at, amount)
        if exact_wait < 0:
            assert decision.retry_after == math.inf
            return
        assert abs(Fraction(decision.retry_after) - exact_wait) <= 1e-9 * max(1, exact_wait)
        due = Fraction(at) + exact_wait
        reading = float(due)
        while Fraction(reading) < due:
            reading = math.nextafter(reading, math.inf)
        self.clock.set(reading)
        allowed = self.limiter.try_consume(amount)
        assert allowed, (decision, self.limiter, self.model)
        self.record(amount, allowed)

    @rule(capacity=st.none() | capacities(), rate=st.none() | refill_rates())
    def update(self, capacity, rate):
        assume(capacity is not None or rate is not None)
        self.note_rule(self.limiter.update(capacity=capacity, refill_rate=rate))
        self.last_denial = None

    @invariant()
    def level_matches_model(self):
        tokens = self.limiter.tokens
        exact = max(self.model.advance(self.clock()), Fraction(0))  # a debt is reported as 0
        assert abs(Fraction(tokens) - exact) <= TOLERANCE
        assert 0 <= tokens <= self.limiter.capacity


KEYS = st.sampled_from(["a", "b", "c"])


class RegistryMachine(RuleBasedStateMachine):
    """A registry with overrides, default changes, resets and sweeps, against ExactRegistry."""

    @initialize(rule=rules())
    def start(self, rule):
        self.clock = ManualClock(1000.0)
        self.registry = BucketRegistry(rule, clock=self.clock)
        self.registry.store._until_sweep = 3  # sweep often: forgetting must be invisible
        self.model = ExactRegistry(rule)

    @rule(seconds=steps())
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(key=KEYS, amount=amounts(), decision=st.booleans())
    def consume(self, key, amount, decision):
        if decision:
            allowed = self.registry.consume(key, amount).allowed
        else:
            allowed = self.registry.try_consume(key, amount)
        self.model.bucket(key, self.clock()).follow(self.clock(), amount, allowed)

    @rule(key=KEYS, amount=amounts())
    def peek(self, key, amount):
        allowed = self.registry.peek(key, amount).allowed
        self.model.bucket(key, self.clock(), commit=False).follow(self.clock(), amount, allowed)

    @rule(key=KEYS, capacity=st.none() | capacities(), rate=st.none() | refill_rates())
    def update_rule(self, key, capacity, rate):
        assume(capacity is not None or rate is not None)
        new = self.registry.update_rule(key, capacity=capacity, refill_rate=rate)
        assert new == self.model.rule_for(key).replace(capacity=capacity, refill_rate=rate)
        self.model.set_override(key, self.clock(), new)

    @rule(key=KEYS)
    def remove_rule(self, key):
        removed = self.registry.remove_rule(key)
        assert removed == self.model.overrides.get(key)
        if removed is not None:
            self.model.set_override(key, self.clock(), None)

    @rule(capacity=st.none() | capacities(), rate=st.none() | refill_rates())
    def update_default(self, capacity, rate):
        assume(capacity is not None or rate is not None)
        self.model.set_default(self.registry.update_default(capacity=capacity, refill_rate=rate))

    @rule(key=KEYS)
    def reset(self, key):
        self.registry.reset(key)
        self.model.reset(key)

    @invariant()
    def levels_match(self):
        for key in ("a", "b", "c"):
            tokens = self.registry.tokens(key)
            level = self.model.bucket(key, self.clock(), commit=False).advance(self.clock())
            assert abs(Fraction(tokens) - max(level, 0)) <= TOLERANCE, key
            assert 0 <= tokens <= self.registry.rule_for(key).capacity
            assert self.registry.rule_for(key) == self.model.rule_for(key)


TestBucketModel = BucketMachine.TestCase
TestRegistryModel = RegistryMachine.TestCase
