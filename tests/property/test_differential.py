"""The in-memory store, the Redis store and the exact model, on the same random operations.

Each example builds a registry of one or two limits on a MemoryStore and one on a RedisStore
(a real redis-server running the store's script on a clock the test sets: see ``conftest.py``),
and replays one random sequence of consume, try_consume, peek, charge, refund, update_rule,
remove_rule and reset on two keys, with the clock stepping forwards and **backwards** (whole
1/64 s, so that both stores read it exactly). Amounts include huge ones (1.7e308, 10**400).

Checked after every operation:

* memory and Redis agree: the same ``allowed``, and levels, ``retry_after`` and
  ``reset_after`` equal within 1e-9 (relative beyond 1 token or second), the levels of every
  bucket too;
* both agree with the exact (Fraction) model wherever the model's semantics apply: while the
  clock is not behind a bucket's latest write, decisions match up to the 1e-9-token slack at a
  boundary, ``retry_after`` within 1e-9 (relative) and levels within 1e-9 tokens; behind it, a
  store may be stricter than the model, never more generous. A bucket that a refund or a rule
  change leaves full at or after its latest write is forgotten, in the stores as in the model
  here. A refund or rule change made while behind moves a store's instant to the clock
  reading, not to the model's (later) one, so from then on only memory and Redis are compared
  for that bucket, until a reset makes it new in all three;
* a Redis key expires only once its bucket is full and the clock is at or past its instant.

Neither store forgets a full bucket on its own here (no sweep, no expiry while the test runs):
that is checked by the expiry instants above and by tests/property/test_edges.py.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Dict, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbucket import Decision, RateLimitExceeded, Rule
from tokenbucket._registry.limits import limit_key
from tokenbucket.testing import SLACK, ExactBucket

TICK = 15_625  # µs: 1/64 s, exact in binary
START = 1000 * 1_000_000
TOLERANCE = 1e-9

CAPACITIES = st.sampled_from([1, 2, 5, 10, 0.5, 2.5, 7.25])
RATES = st.sampled_from([0, 0.25, 0.5, 1, 2, 4, 64, 0.1])
RULES = st.builds(Rule, CAPACITIES, RATES)
AMOUNTS = st.sampled_from([1, 2, 3, 0.5, 0.25, 1.5, 0.1, 7, 12, 1, 2, 1.7e308, 10**400, 2**60])
KEYS = st.sampled_from(["x", "y"])
LIMIT = st.sampled_from(["a", "b"])


def sized(kind: str) -> st.SearchStrategy:
    return st.tuples(st.just(kind), KEYS, AMOUNTS)


OPERATIONS = st.one_of(
    st.tuples(st.just("forward"), st.integers(0, 640) | st.integers(641, 64 * 600)),
    st.tuples(st.just("back"), st.integers(1, 64 * 20)),
    *(sized(kind) for kind in ("consume", "consume", "try_consume", "peek", "charge", "refund")),
    st.tuples(st.just("acquire"), KEYS, AMOUNTS, st.sampled_from([0, 1, 5, 100, math.inf])),
    st.tuples(st.just("update_rule"), KEYS, LIMIT, st.none() | CAPACITIES, st.none() | RATES),
    st.tuples(st.just("remove_rule"), KEYS, LIMIT),
    st.tuples(st.just("reset"), KEYS, st.none() | LIMIT),
)


def no_sleep(seconds: float) -> None:
    """``acquire``'s sleep: the test does not wait (it moves the clock itself)."""


def close(mine: float, theirs: float) -> bool:
    """Equal, or within TOLERANCE (relative beyond 1)."""
    if mine == theirs:
        return True
    if math.isinf(mine) or math.isinf(theirs) or mine != mine or theirs != theirs:
        return False
    return abs(mine - theirs) <= TOLERANCE * max(1.0, abs(mine), abs(theirs))


def near(value: float, exact: Fraction) -> bool:
    """``value`` within TOLERANCE of the exact ``exact`` (relative beyond 1)."""
    return abs(Fraction(value) - exact) <= TOLERANCE * max(1, abs(exact))


class Run:
    """One example: the two registries, the model, and the checks after each operation."""

    def __init__(self, twins, several: bool, rules: Tuple[Rule, Rule]) -> None:
        self.twins = twins
        self.names = ("a", "b") if several else ("default",)
        self.defaults: Dict[str, Rule] = dict(zip(self.names, rules))
        default = self.defaults if several else rules[0]
        self.memory, self.redis, self.clock = twins.pair(default, START)
        self.buckets: Dict[Tuple[str, str], ExactBucket] = {}
        self.overrides: Dict[Tuple[str, str], Rule] = {}
        self.diverged: set = set()  # (name, key) the model no longer speaks for

    # -- the model -----------------------------------------------------------------------------

    @property
    def now(self) -> Fraction:
        return Fraction(self.clock.us, 1_000_000)

    def rule(self, name: str, key: str) -> Rule:
        return self.overrides.get((name, key), self.defaults[name])

    def bucket(self, name: str, key: str, commit: bool) -> ExactBucket:
        """The model's bucket (a copy unless ``commit``; a new one if untracked)."""
        found = self.buckets.get((name, key))
        if found is None:
            rule = self.rule(name, key)
            found = ExactBucket(rule.capacity, rule.refill_rate, self.now)
            if commit:
                self.buckets[(name, key)] = found
            return found
        return found if commit else found.copy()

    def behind(self, key: str) -> bool:
        """Whether the clock is behind one of ``key``'s buckets' latest write (or the model no
        longer speaks for one)."""
        return any(
            (name, key) in self.diverged
            or ((name, key) in self.buckets and self.now < self.buckets[(name, key)].last)
            for name in self.names
        )

    def forget_if_full(self, pairs) -> None:
        """A bucket left full at or after its latest write is forgotten, as the stores do."""
        for name, key in pairs:
            found = self.buckets.get((name, key))
            full = found is not None and found.copy().advance(self.now) >= found.capacity
            if full and self.now >= found.last:
                del self.buckets[(name, key)]

    def lose_track_if_behind(self, pairs) -> None:
        for name, key in pairs:
            found = self.buckets.get((name, key))
            if found is not None and self.now < found.last:
                self.diverged.add((name, key))

    # -- the operations ------------------------------------------------------------------------

    def apply(self, operation) -> None:
        kind = operation[0]
        if kind == "forward":
            self.clock.set_us(self.clock.us + operation[1] * TICK)
        elif kind == "back":
            self.clock.set_us(max(0, self.clock.us - operation[1] * TICK))
        elif kind in ("consume", "peek", "try_consume"):
            self.decide(kind, operation[1], operation[2])
        elif kind in ("charge", "refund"):
            self.adjust(kind, operation[1], operation[2])
        elif kind == "acquire":
            self.acquire(*operation[1:])
        elif kind == "update_rule":
            self.update_rule(*operation[1:])
        elif kind == "remove_rule":
            self.remove_rule(*operation[1:])
        else:
            self.reset(*operation[1:])
        assert self.twins.policies == [], "the Redis store followed its failure policy"
        self.check_levels()
        self.check_expiry()

    def decide(self, kind: str, key: str, amount) -> None:
        behind = self.behind(key)
        if kind == "try_consume":
            allowed = self.memory.try_consume(key, amount)
            assert self.redis.try_consume(key, amount) == allowed
            decision: Optional[Decision] = None
        else:
            decision = getattr(self.memory, kind)(key, amount)
            same(decision, getattr(self.redis, kind)(key, amount))
            allowed = decision.allowed
        wanted = Fraction(amount)
        levels = [self.bucket(name, key, False).advance(self.now) for name in self.names]
        lost = any((name, key) in self.diverged for name in self.names)
        if allowed and not lost:  # never more generous than the model, behind or not
            assert all(level >= wanted - SLACK for level in levels), (levels, amount)
        if allowed and kind != "peek":
            for name in self.names:
                found = self.bucket(name, key, True)
                found.advance(self.now)
                found.consume(self.now, amount, force=True)
        if not allowed and not behind:
            assert any(level < wanted for level in levels), (levels, amount)
            if decision is not None:
                waits = [
                    self.bucket(n, key, False).retry_after(self.now, amount) for n in self.names
                ]
                if Fraction(-1) in waits:
                    assert decision.retry_after == math.inf, (tuple(decision), waits)
                else:
                    assert near(decision.retry_after, max(waits)), (tuple(decision), waits)

    def adjust(self, kind: str, key: str, amount) -> None:
        decision = getattr(self.memory, kind)(key, amount)
        same(decision, getattr(self.redis, kind)(key, amount))
        assert decision.allowed
        pairs = [(name, key) for name in self.names]
        if kind == "charge":
            for name in self.names:
                self.bucket(name, key, True).charge(self.now, amount)
        else:
            self.lose_track_if_behind(pairs)
            for name in self.names:
                if (name, key) in self.buckets:  # an untracked bucket is full already
                    self.buckets[(name, key)].refund(self.now, amount)
            self.forget_if_full(pairs)

    def acquire(self, key: str, amount, max_wait: float) -> None:
        """A reservation: charged only if the wait it implies fits ``max_wait`` (no sleeping)."""
        behind = self.behind(key)
        answers = []
        for registry in (self.memory, self.redis):
            try:
                answers.append(registry.acquire(key, amount, max_wait=max_wait, sleep=no_sleep))
            except RateLimitExceeded as refused:
                answers.append(refused.decision)
        if isinstance(answers[0], Decision):
            assert isinstance(answers[1], Decision), answers[1]
            same(answers[0], answers[1])
        else:
            assert not isinstance(answers[1], Decision), tuple(answers[1])
            assert close(answers[0], answers[1]), answers
        waits = [
            self.bucket(name, key, False).reservation_wait(self.now, amount) for name in self.names
        ]
        exact = Fraction(-1) if Fraction(-1) in waits else max(waits)
        margin = Fraction(1, 10**6) * max(1, min(max_wait, 10**6))
        if not isinstance(answers[0], Decision):  # charged
            if not behind:
                assert 0 <= exact <= max_wait + margin, (exact, max_wait)
                assert near(answers[0], exact), (answers[0], exact)
            for name in self.names:
                self.bucket(name, key, True).charge(self.now, amount)
        elif not behind:
            assert exact < 0 or exact >= max_wait - margin, (exact, max_wait)

    def update_rule(self, key: str, name: str, capacity, rate) -> None:
        if capacity is None and rate is None:
            return
        limit = name if len(self.names) > 1 else None
        name = name if limit else "default"
        new = self.memory.update_rule(key, capacity=capacity, refill_rate=rate, limit=limit)
        assert self.redis.update_rule(key, capacity=capacity, refill_rate=rate, limit=limit) == new
        assert new == self.rule(name, key).replace(capacity=capacity, refill_rate=rate)
        self.lose_track_if_behind([(name, key)])
        self.overrides[(name, key)] = new
        if (name, key) in self.buckets:
            self.buckets[(name, key)].update(self.now, new.capacity, new.refill_rate)
            self.forget_if_full([(name, key)])

    def remove_rule(self, key: str, name: str) -> None:
        limit = name if len(self.names) > 1 else None
        name = name if limit else "default"
        removed = self.memory.remove_rule(key, limit=limit)
        assert self.redis.remove_rule(key, limit=limit) == removed
        assert removed == self.overrides.get((name, key))
        if removed is None:
            return
        self.lose_track_if_behind([(name, key)])
        del self.overrides[(name, key)]
        if (name, key) in self.buckets:
            rule = self.defaults[name]
            self.buckets[(name, key)].update(self.now, rule.capacity, rule.refill_rate)
            self.forget_if_full([(name, key)])

    def reset(self, key: str, name: Optional[str]) -> None:
        limit = name if len(self.names) > 1 else None
        self.memory.reset(key, limit=limit)
        self.redis.reset(key, limit=limit)
        for each in self.names if limit is None else (limit,):
            self.buckets.pop((each, key), None)  # new again, in all three
            self.diverged.discard((each, key))

    # -- the checks after each operation -------------------------------------------------------

    def check_levels(self) -> None:
        for key in ("x", "y"):
            for name in self.names:
                limit = name if len(self.names) > 1 else None
                tokens = self.memory.tokens(key, limit=limit)
                assert close(tokens, self.redis.tokens(key, limit=limit)), (key, name)
                assert self.memory.rule_for(key, limit=limit) == self.rule(name, key)
                assert self.redis.rule_for(key, limit=limit) == self.rule(name, key)
                level = max(self.bucket(name, key, False).advance(self.now), Fraction(0))
                if (name, key) in self.diverged:
                    continue
                found = self.buckets.get((name, key))
                if found is not None and self.now < found.last:
                    assert tokens <= level + TOLERANCE, (key, name, tokens, level)
                else:
                    assert abs(Fraction(tokens) - level) <= TOLERANCE, (key, name, tokens, level)

    def check_expiry(self) -> None:
        """A key expires only once its bucket is full, and never before its instant."""
        for key in ("x", "y"):
            for name in self.names:
                stored = key if len(self.names) == 1 else limit_key(key, name)
                deadline = self.twins.deadline(self.redis, stored)
                if deadline is None:
                    continue
                state = self.twins.state(self.redis, stored)
                assert "C" not in state  # an override never expires
                base = int(state["t"])
                assert deadline >= base
                owed = Fraction(float(state["u"])) + Fraction(float(state.get("l", "0")))
                rate = Fraction(float(state["r"]))
                assert owed <= Fraction(deadline - base, 1_000_000) * rate, (state, deadline)


def same(mine: Decision, theirs: Decision) -> None:
    """Memory's and Redis's decisions agree (floats within TOLERANCE)."""
    pair = (tuple(mine), tuple(theirs))
    assert mine.allowed == theirs.allowed, pair
    assert (mine.limit, mine.policy) == (theirs.limit, theirs.policy), pair
    for field in ("remaining", "retry_after", "reset_after"):
        assert close(getattr(mine, field), getattr(theirs, field)), (field, pair)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    several=st.booleans(),
    rules=st.tuples(RULES, RULES),
    operations=st.lists(OPERATIONS, min_size=8, max_size=40),
)
def test_memory_redis_and_the_model_agree(twins, several, rules, operations):
    """Random operations, the clock stepping back too: the two stores and the model agree."""
    twins.policies.clear()
    run = Run(twins, several, rules)
    for operation in operations:
        run.apply(operation)
