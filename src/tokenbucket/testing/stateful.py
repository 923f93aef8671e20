"""A ready hypothesis state machine that checks a limiter against the exact model.

Importing this module imports hypothesis (``pip install 'tokenbucket-ratelimit[testing]'``).

Subclass [`LimiterMachine`][tokenbucket.testing.stateful.LimiterMachine], say how to build your
limiter on a manual clock and how to make one request, and hypothesis searches for a schedule
of requests and clock moves where it admits more, or less, than exact arithmetic allows::

    from tokenbucket.testing.stateful import LimiterMachine

    class MyClientMachine(LimiterMachine):
        def create(self, rule, clock):
            return MyApiClient(rule=rule, clock=clock)

        def attempt(self, client, amount):
            return client.try_send(cost=amount)

    TestMyClient = MyClientMachine.TestCase
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from .._clock import ManualClock
from .._rule import Rule
from ._model import ExactBucket
from .strategies import amounts, rules, steps

__all__ = ["LimiterMachine"]


class LimiterMachine(RuleBasedStateMachine):
    """Base state machine: advance a manual clock, make requests, compare with ExactBucket.

    Implement `create` and `attempt`. After each step it checks that every decision agrees with
    exact arithmetic (a real limiter may admit up to 1e-9 tokens early) and that the total
    admitted never exceeds ``capacity + refill_rate * elapsed``. Subclasses may add rules: call
    `record` with each decision they make and `note_rule` when they change the limiter's rule.

    Attributes:
        clock: the [`ManualClock`][tokenbucket.ManualClock] the limiter was built on.
        limiter: what `create` returned.
        model: the [`ExactBucket`][tokenbucket.testing.ExactBucket] kept in step.
        admitted: total tokens admitted so far (exact).
    """

    def create(self, rule: Rule, clock: ManualClock) -> Any:
        """Build the limiter under test for ``rule`` on ``clock``."""
        raise NotImplementedError("subclasses build their limiter in create(rule, clock)")

    def attempt(self, limiter: Any, amount: float) -> bool:
        """Make one request of ``amount`` tokens; return whether it was admitted."""
        raise NotImplementedError("subclasses make one request in attempt(limiter, amount)")

    @initialize(rule=rules(), start=st.floats(0, 1e6))
    def start(self, rule: Rule, start: float) -> None:
        """Build the limiter and the model at the same instant."""
        self.clock = ManualClock(start)
        self.limiter = self.create(rule, self.clock)
        self.model = ExactBucket(rule.capacity, rule.refill_rate, start)
        self.admitted = Fraction(0)
        self._start = Fraction(start)
        self._max_capacity = Fraction(rule.capacity)
        self._max_rate = Fraction(rule.refill_rate)

    @rule(seconds=steps())
    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.clock.advance(seconds)

    @rule(fraction=st.floats(0.01, 0.99))
    def advance_partly(self, fraction: float) -> None:
        """Move the clock by a fraction of the time a full refill takes (partial refills)."""
        if self.model.refill_rate:
            self.clock.advance(float(fraction * self.model.capacity / self.model.refill_rate))

    @rule(offset=st.sampled_from([-1.0, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 1.0]))
    def request_near_level(self, offset: float) -> None:
        """Request just under, exactly at or just over the current level (boundary probing)."""
        amount = float(self.model.advance(self.clock())) + offset
        if amount > 0:
            self.request(amount)

    @rule(amount=amounts())
    def request(self, amount: float) -> None:
        """Make a request through `attempt` and check the decision against the model."""
        self.record(amount, self.attempt(self.limiter, amount))

    def record(self, amount: float, allowed: bool) -> None:
        """Check a decision the limiter made now against the model, and keep the totals."""
        self.model.follow(self.clock(), amount, allowed)
        if allowed:
            self.admitted += Fraction(amount)

    def note_rule(self, rule: Rule) -> None:
        """Record that the limiter now runs ``rule`` (a subclass changed it)."""
        self.model.update(self.clock(), rule.capacity, rule.refill_rate)
        self._max_capacity = max(self._max_capacity, Fraction(rule.capacity))
        self._max_rate = max(self._max_rate, Fraction(rule.refill_rate))

    @invariant()
    def never_over_admits(self) -> None:
        """Total admitted <= the largest capacity + the largest rate * elapsed time."""
        elapsed = Fraction(self.clock()) - self._start
        bound = self._max_capacity + self._max_rate * elapsed + Fraction(1, 10**9)
        assert self.admitted <= bound, (float(self.admitted), float(bound))
