"""Shadow limits (issue 15 item 4) against the exact model: the enforced limits decide, all
or nothing; a watched limit is charged exactly when it would admit an admitted request, and
its verdicts are reported in ``shadow_denied``; switching at runtime keeps every level."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tokenbucket import BucketRegistry, ManualClock
from tokenbucket.testing import ExactRegistry
from tokenbucket.testing.strategies import amounts, rules, steps

TOLERANCE = 1e-9
NAMES = ("burst", "hourly", "daily")


class ShadowLimitsMachine(RuleBasedStateMachine):
    """Three limits, some in shadow, switched at random, against ExactRegistry."""

    @initialize(
        limits=st.tuples(rules(), rules(), rules()),
        shadow=st.sets(st.sampled_from(NAMES)),
    )
    def start(self, limits, shadow):
        self.clock = ManualClock(1000.0)
        defaults = dict(zip(NAMES, limits))
        self.registry = BucketRegistry(defaults, clock=self.clock, shadow=shadow)
        self.registry.store._until_sweep = 3  # sweep often: forgetting must be invisible
        self.model = ExactRegistry(defaults)

    @rule(seconds=steps())
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(key=st.sampled_from(["a", "b"]), amount=amounts())
    def consume(self, key, amount):
        decision = self.registry.consume(key, amount)
        shadow = self.registry.shadow
        assert set(decision.shadow_denied) <= shadow
        if not decision.allowed:
            assert decision.shadow_denied == ()
        if shadow != set(NAMES):
            assert decision.policy not in shadow  # a watched limit never binds
        self.model.consume(
            key,
            self.clock(),
            amount,
            decision.allowed,
            shadow=shadow,
            shadow_denied=decision.shadow_denied,
        )

    @rule(limit=st.sampled_from(NAMES), watch=st.booleans())
    def switch(self, limit, watch):
        shadow = set(self.registry.shadow)
        after = self.registry.set_shadow(limit, watch)
        assert after == (shadow | {limit} if watch else shadow - {limit})

    @invariant()
    def levels_match(self):
        for key in ("a", "b"):
            levels = self.model.consume(key, self.clock(), 0, commit=False)[1]
            for name, level in levels.items():
                tokens = self.registry.tokens(key, limit=name)
                assert abs(Fraction(tokens) - max(level, Fraction(0))) <= TOLERANCE, name


TestShadowLimitsModel = ShadowLimitsMachine.TestCase
