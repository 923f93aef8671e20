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
from tokenbucket._core.keys import limit_key
from tokenbucket.testing import SLACK, ExactBucket, ExactRegistry
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


#: A registry's store key may be a limit's of another registry's several (key "g"'s limits
#: a, b, c): then its calls address that limit, which take_all's groups name too.
LIMIT_KEYS = {name: limit_key("g", name) for name in "abc"}
KEYS = st.sampled_from(["a", "b", "c", *LIMIT_KEYS.values()])


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

    @rule(
        keys=st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True),
        amount=amounts(),
        commit=st.booleans(),
    )
    def take_all(self, keys, amount, commit):
        """All or nothing over several limits of key g, straight on the store (as a registry
        of several does); the registry's calls on their store keys address the same buckets."""
        store, default = self.registry.store, self.registry.default
        call = store.take_all if commit else store.peek_all
        allowed, outcomes = call([("g", tuple((name, default) for name in keys))], amount)
        keys = [LIMIT_KEYS[name] for name in keys]
        assert allowed == all(outcome[0] for outcome in outcomes)
        assert [outcome[2] for outcome in outcomes] == [self.model.rule_for(k) for k in keys]
        now = self.clock()
        _, levels = self.model.take_all(keys, now, amount, allowed, commit=commit)
        for (_, level, _), exact in zip(outcomes, levels):
            if allowed:  # the level after; a denial's level is checked by levels_match
                assert abs(Fraction(level) - exact) <= TOLERANCE

    @rule(key=KEYS, amount=amounts(), max_wait=st.none() | st.floats(0, 100))
    def charge(self, key, amount, max_wait):
        """A charge always happens (into debt); a reservation (``max_wait``) only if the wait
        it implies fits, exactly as the model says (up to rounding at the boundary)."""
        now, default = self.clock(), self.registry.default
        bucket = self.model.bucket(key, now)
        if max_wait is None:
            decision = self.registry.charge(key, amount)
            assert decision.allowed
            bucket.charge(now, amount)
            self.check_after(key, decision, bucket)
            return
        exact = bucket.reservation_wait(now, amount)
        done, level, rule = self.registry.store.charge(key, amount, default, max_wait)
        assert rule == self.model.rule_for(key)
        margin = 1e-6 * max(1, max_wait)
        if done:
            assert 0 <= exact <= max_wait + margin or amount <= rule.capacity + SLACK, exact
            bucket.charge(now, amount)
        else:
            assert exact < 0 or exact >= max_wait - margin, exact
        assert abs(Fraction(level) - bucket.advance(now)) <= TOLERANCE * max(1, amount)

    @rule(key=KEYS, amount=amounts())
    def refund(self, key, amount):
        """A refund gives back at most what is missing: never above full."""
        now = self.clock()
        decision = self.registry.refund(key, amount)
        bucket = self.model.bucket(key, now)
        bucket.refund(now, amount)
        assert decision.allowed
        assert decision.remaining <= decision.limit
        self.check_after(key, decision, bucket)

    def check_after(self, key, decision, bucket):
        """A charge's or refund's decision: the level, and the wait until one token is there."""
        level, rule = bucket.advance(self.clock()), self.model.rule_for(key)
        assert abs(Fraction(decision.remaining) - max(level, 0)) <= TOLERANCE * max(1, -level)
        unit = min(Fraction(1), bucket.capacity)
        if level >= unit:
            assert decision.retry_after == 0
        elif not rule.refill_rate:
            assert decision.retry_after == math.inf
        else:
            exact = (unit - level) / bucket.refill_rate
            assert abs(Fraction(decision.retry_after) - exact) <= 1e-9 * max(1, exact)

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
        for key in ("a", "b", "c", *LIMIT_KEYS.values()):
            tokens = self.registry.tokens(key)
            level = self.model.bucket(key, self.clock(), commit=False).advance(self.clock())
            assert abs(Fraction(tokens) - max(level, 0)) <= TOLERANCE, key
            assert 0 <= tokens <= self.registry.rule_for(key).capacity
            assert self.registry.rule_for(key) == self.model.rule_for(key)


class SeveralLimitsMachine(LimiterMachine):
    """A registry of two or three limits under the shared machine (all or nothing), with
    decisions, per-limit overrides and default changes checked against ExactRegistry."""

    several = True

    def create(self, limits, clock):
        registry = BucketRegistry(limits, clock=clock)
        registry.store._until_sweep = 3  # sweep often: forgetting must be invisible
        return registry

    def attempt(self, registry, amount):
        return registry.try_consume("k", amount)

    @rule(amount=amounts())
    def consume(self, amount):
        now = self.clock()
        wait = self.model.retry_after("k", now, amount)
        decision = self.limiter.consume("k", amount)
        self.record(amount, decision.allowed)
        assert decision.policy in self.limiter.limits
        if not decision.allowed:
            if wait < 0:
                assert decision.retry_after == math.inf
            else:
                assert abs(Fraction(decision.retry_after) - wait) <= 1e-9 * max(1, wait)
        levels = self.model.consume("k", now, 0, commit=False)[1]
        least = max(min(levels.values()), Fraction(0))
        assert abs(Fraction(decision.remaining) - least) <= TOLERANCE

    @rule(data=st.data(), capacity=capacities())
    def update_rule(self, data, capacity):
        limit = data.draw(st.sampled_from(self.limiter.limits))
        self.note_rule(self.limiter.update_rule("k", capacity=capacity, limit=limit), limit)

    @rule(data=st.data(), capacity=capacities())
    def update_default(self, data, capacity):
        limit = data.draw(st.sampled_from(self.limiter.limits))
        rule_ = self.limiter.update_default(capacity=capacity, limit=limit)
        self.model.set_default(rule_, limit=limit)
        capacity_, rate = self._bounds[limit]
        self._bounds[limit] = (max(capacity_, Fraction(capacity)), rate)

    @invariant()
    def levels_match(self):
        levels = self.model.consume("k", self.clock(), 0, commit=False)[1]
        for name, level in levels.items():
            tokens = self.limiter.tokens("k", limit=name)
            assert abs(Fraction(tokens) - max(level, Fraction(0))) <= TOLERANCE, name
            assert self.limiter.rule_for("k", limit=name) == self.model.rule_for("k", name)


class KeysAtTwoLevelsMachine(RuleBasedStateMachine):
    """Users of two organisations (a key per limit), against ExactRegistry: all or nothing."""

    @initialize(user=rules(), org=rules())
    def start(self, user, org):
        self.clock = ManualClock(1000.0)
        self.registry = BucketRegistry({"user": user, "org": org}, clock=self.clock)
        self.model = ExactRegistry({"user": user, "org": org})

    @rule(seconds=steps())
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(user=KEYS, org=st.sampled_from(["acme", "initech"]), amount=amounts())
    def consume(self, user, org, amount):
        keys = {"user": user, "org": org}
        allowed = self.registry.try_consume(keys, amount)
        self.model.consume(keys, self.clock(), amount, allowed)

    @rule(key=KEYS | st.sampled_from(["acme", "initech"]), limit=st.sampled_from(["user", "org"]))
    def reset(self, key, limit):
        self.registry.reset(key, limit=limit)
        self.model.reset(key, limit=limit)

    @invariant()
    def levels_match(self):
        for limit, keys in (("user", ["a", "b", "c"]), ("org", ["acme", "initech"])):
            for key in keys:
                tokens = self.registry.tokens(key, limit=limit)
                level = self.model.bucket(key, self.clock(), commit=False, limit=limit)
                exact = max(level.advance(self.clock()), Fraction(0))
                assert abs(Fraction(tokens) - exact) <= TOLERANCE, (limit, key)


TestBucketModel = BucketMachine.TestCase
TestRegistryModel = RegistryMachine.TestCase
TestSeveralLimitsModel = SeveralLimitsMachine.TestCase
TestKeysAtTwoLevelsModel = KeysAtTwoLevelsMachine.TestCase


class BackwardsClockMachine(RuleBasedStateMachine):
    """A clock that jumps back never adds tokens and never raises; once it has caught up with
    the latest reading a request was admitted at, the bucket agrees with the exact model again.

    A bucket's time is that of the requests it admitted (a full bucket keeps no state and a
    denial writes nothing), so the model starts at the first admission and "latest" is the
    latest admission's reading.
    """

    @initialize(rule=rules(), start=st.floats(0, 1e6))
    def start(self, rule, start):
        self.clock = ManualClock(start)
        self.rule = rule
        self.bucket = TokenBucket(rule.capacity, rule.refill_rate, clock=self.clock)
        self.model = None
        self.latest = self.first = None
        self.admitted = Fraction(0)

    @rule(seconds=steps())
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(seconds=st.floats(1e-9, 100))
    def jump_back(self, seconds):
        self.clock.set(self.clock() - seconds)

    @rule(amount=amounts(), decision=st.booleans())
    def consume(self, amount, decision):
        now = self.clock()
        if decision:
            allowed = self.bucket.consume(amount).allowed
        else:
            allowed = self.bucket.try_consume(amount)
        if self.model is None:  # a full bucket: only a request above capacity is denied
            assert allowed == (amount <= self.rule.capacity)
            if allowed:
                self.model = ExactBucket(self.rule.capacity, self.rule.refill_rate, now)
                self.model.consume(now, amount)
                self.latest = self.first = now
        elif now >= self.latest:
            if allowed:
                self.model.follow(now, amount, allowed)
                self.latest = now
            else:  # a denial writes nothing: check it on a copy
                self.model.copy().follow(now, amount, allowed)
        else:  # behind: the bucket may be stricter than the model, never more generous
            if allowed:
                assert self.model.level >= Fraction(amount) - SLACK
                self.model.consume(now, amount, force=True)
        if allowed:
            self.admitted += Fraction(amount)

    @rule(amount=amounts())
    def wait_retry_after(self, amount):
        """Whatever the clock did, waiting exactly retry_after admits, and a little less not."""
        now = self.clock()
        decision = self.bucket.peek(amount)
        if decision.allowed or self.model is None:
            return
        exact = self.model.copy().retry_after(now, amount)  # asking moves no model time
        if exact < 0:
            assert decision.retry_after == math.inf
            return
        rate = self.model.refill_rate
        wait = Fraction(decision.retry_after)
        if exact > 0:
            assert abs(wait - exact) * rate <= Fraction(1, 10**6)
        else:  # behind the latest admission the bucket may be stricter (see consume)
            assert now < self.latest
            assert wait <= Fraction(self.latest) - Fraction(now) + Fraction(1, 10**6) / rate
            exact = wait
        due = Fraction(now) + exact
        early = float(due - Fraction(1, 10**4) / rate)  # 1e-4 tokens short
        if early > now:
            self.clock.set(early)
            assert not self.bucket.try_consume(amount)
        reading = float(due)
        while Fraction(reading) < due:
            reading = math.nextafter(reading, math.inf)
        self.clock.set(reading)
        assert self.bucket.try_consume(amount), (decision, self.model)
        if reading >= self.latest:
            self.model.follow(reading, amount, True)
            self.latest = reading
        else:
            assert self.model.level >= Fraction(amount) - SLACK
            self.model.consume(reading, amount, force=True)
        self.admitted += Fraction(amount)

    @invariant()
    def never_more_than_the_model(self):
        tokens = Fraction(self.bucket.tokens)
        if self.model is None:
            assert tokens == self.rule.capacity
            return
        exact = max(self.model.copy().advance(self.clock()), Fraction(0))
        assert tokens <= exact + TOLERANCE
        if self.clock() >= self.latest:
            assert abs(tokens - exact) <= TOLERANCE
        elapsed = Fraction(max(self.latest, self.clock())) - Fraction(self.first)
        bound = self.model.capacity + self.model.refill_rate * elapsed + TOLERANCE
        assert self.admitted <= bound


TestBackwardsClock = BackwardsClockMachine.TestCase
