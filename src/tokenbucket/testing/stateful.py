"""A ready hypothesis state machine that checks a limiter against the exact model.

Importing this module imports hypothesis (``pip install 'tokenbucket-ratelimit[testing]'``).

Subclass [`LimiterMachine`][tokenbucket.testing.stateful.LimiterMachine], say how to build your
limiter on a manual clock and how to make one request, and hypothesis searches for a schedule
of requests and clock moves where it admits more, or less, than exact arithmetic allows:

    from tokenbucket.testing.stateful import LimiterMachine

    class MyClientMachine(LimiterMachine):
        def create(self, rule, clock):
            return MyApiClient(rule=rule, clock=clock)

        def attempt(self, client, amount):
            return client.try_send(cost=amount)

    TestMyClient = MyClientMachine.TestCase

With ``several = True`` the machine draws two or three rules, and `create` gets them as a
mapping of limit names to rules (``{"l0": ..., "l1": ...}``), as
[`BucketRegistry`][tokenbucket.BucketRegistry] takes them: every decision is checked against
[`ExactRegistry`][tokenbucket.testing.ExactRegistry], all limits or none.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Dict, List, Mapping, Union

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from .._core.clock import ManualClock
from .._core.rule import Rule
from ._model import ExactBucket, ExactRegistry
from .strategies import amounts, rules, steps

__all__ = ["LimiterMachine"]


class LimiterMachine(RuleBasedStateMachine):
    """Base state machine: advance a manual clock, make requests, compare with ExactBucket.

    Implement `create` and `attempt`. After each step it checks that every decision agrees with
    exact arithmetic (a real limiter may admit up to 1e-9 tokens early) and that the total
    admitted never exceeds ``capacity + refill_rate * elapsed``. Subclasses may add rules: call
    `record` with each decision they make and `note_rule` when they change the limiter's rule.

    Attributes:
        several: a class attribute: True to test several limits at once (see the module).
        clock: the [`ManualClock`][tokenbucket.ManualClock] the limiter was built on.
        limiter: what `create` returned.
        model: the [`ExactBucket`][tokenbucket.testing.ExactBucket] kept in step (with
            ``several``: the [`ExactRegistry`][tokenbucket.testing.ExactRegistry], key ``"k"``).
        admitted: total tokens admitted so far (exact).
    """

    several = False

    def create(self, rule: Any, clock: ManualClock) -> Any:
        """Build the limiter under test for ``rule`` (a mapping with ``several``) on ``clock``."""
        raise NotImplementedError("subclasses build their limiter in create(rule, clock)")

    def attempt(self, limiter: Any, amount: float) -> bool:
        """Make one request of ``amount`` tokens; return whether it was admitted."""
        raise NotImplementedError("subclasses make one request in attempt(limiter, amount)")

    @initialize(
        rule=rules(), more=st.lists(rules(), min_size=1, max_size=2), start=st.floats(0, 1e6)
    )
    def start(self, rule: Rule, more: List[Rule], start: float) -> None:
        """Build the limiter and the model at the same instant."""
        self.clock = ManualClock(start)
        self.model: Any
        self._limits: Dict[str, Rule] = {"default": rule}
        given: Union[Rule, Mapping[str, Rule]] = rule
        if self.several:
            self._limits = {f"l{index}": each for index, each in enumerate([rule, *more])}
            given = self._limits
            self.model = ExactRegistry(self._limits)
        else:
            self.model = ExactBucket(rule.capacity, rule.refill_rate, start)
        self.limiter = self.create(given, self.clock)
        self.admitted = Fraction(0)
        self._start = Fraction(start)
        #: Per limit: the largest capacity and rate it has had (for the over-admission bound).
        self._bounds = {
            name: (Fraction(each.capacity), Fraction(each.refill_rate))
            for name, each in self._limits.items()
        }

    def _level(self) -> Fraction:
        """The model's level now: the least over the limits."""
        now = self.clock()
        if not self.several:
            level: Fraction = self.model.advance(now)
            return level
        levels: Dict[str, Fraction] = self.model.consume("k", now, 0, commit=False)[1]
        return min(levels.values())

    @rule(seconds=steps())
    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.clock.advance(seconds)

    @rule(fraction=st.floats(0.01, 0.99))
    def advance_partly(self, fraction: float) -> None:
        """Move the clock by a fraction of the time a full refill takes (partial refills)."""
        first = next(iter(self._limits.values()))
        if first.refill_rate:
            self.clock.advance(float(fraction * first.capacity / first.refill_rate))

    @rule(offset=st.sampled_from([-1.0, -1e-3, -1e-7, 0.0, 1e-7, 1e-3, 1.0]))
    def request_near_level(self, offset: float) -> None:
        """Request just under, exactly at or just over the current level (boundary probing)."""
        amount = float(self._level()) + offset
        if amount > 0:
            self.request(amount)

    @rule(amount=amounts())
    def request(self, amount: float) -> None:
        """Make a request through `attempt` and check the decision against the model."""
        self.record(amount, self.attempt(self.limiter, amount))

    def record(self, amount: float, allowed: bool) -> None:
        """Check a decision the limiter made now against the model, and keep the totals."""
        if self.several:
            self.model.consume("k", self.clock(), amount, allowed)
        else:
            self.model.follow(self.clock(), amount, allowed)
        if allowed:
            self.admitted += Fraction(amount)

    def note_rule(self, rule: Rule, limit: str = "default") -> None:
        """Record that the limiter now runs ``rule`` (for ``limit``, with ``several``)."""
        if self.several:
            self.model.set_override("k", self.clock(), rule, limit=limit)
        else:
            self.model.update(self.clock(), rule.capacity, rule.refill_rate)
        capacity, rate = self._bounds[limit]
        self._bounds[limit] = (
            max(capacity, Fraction(rule.capacity)),
            max(rate, Fraction(rule.refill_rate)),
        )

    @invariant()
    def never_over_admits(self) -> None:
        """Total admitted <= the largest capacity + the largest rate * elapsed time.

        With ``several``, every limit bounds what all of them admit: the least bound holds.
        """
        elapsed = Fraction(self.clock()) - self._start
        bound = min(capacity + rate * elapsed for capacity, rate in self._bounds.values())
        bound += Fraction(1, 10**9)
        assert self.admitted <= bound, (float(self.admitted), float(bound))
