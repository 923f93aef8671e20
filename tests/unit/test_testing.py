"""tokenbucket.testing: the tools users test their own limits with."""

import math
import subprocess
import sys

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from tokenbucket import BucketRegistry, Rule, TokenBucket
from tokenbucket.testing import ExactBucket, ManualClock, manual_registry
from tokenbucket.testing.stateful import LimiterMachine
from tokenbucket.testing.strategies import (
    amounts,
    capacities,
    invalid_amounts,
    invalid_capacities,
    invalid_refill_rates,
    refill_rates,
    rules,
    schedules,
    steps,
)

pytest_plugins = ["pytester"]


class TestStrategies:
    @given(capacities(), refill_rates())
    def test_valid_values_make_rules(self, capacity, rate):
        """Generated capacities and rates are always accepted, unchanged."""
        rule = Rule(capacity, rate)
        assert (rule.capacity, rule.refill_rate) == (capacity, rate)

    @given(rules())
    def test_rules_are_rules(self, rule):
        """rules() builds valid Rule objects within the documented ranges."""
        assert isinstance(rule, Rule)
        assert 0 < rule.capacity <= 1000
        assert 0 <= rule.refill_rate <= 1000

    @given(refill_rates(zero=False))
    def test_zero_can_be_excluded(self, rate):
        """zero=False never yields a rate of 0."""
        assert rate > 0

    @given(amounts(), steps())
    def test_amounts_and_steps(self, amount, seconds):
        """Amounts are accepted by the registry; steps are finite and >= 0."""
        registry, clock = manual_registry()
        registry.peek("k", amount)
        assert math.isfinite(seconds)
        assert seconds >= 0
        clock.advance(seconds)

    @given(schedules(min_size=1, max_size=5))
    def test_schedules(self, schedule):
        """Schedules are non-empty lists of (seconds, amount) pairs in bounds."""
        assert 1 <= len(schedule) <= 5
        for seconds, amount in schedule:
            assert seconds >= 0
            assert 0 < amount <= 50

    @given(invalid_capacities())
    def test_invalid_capacities_are_rejected(self, value):
        """Every invalid capacity raises TypeError or ValueError naming 'capacity'."""
        with pytest.raises((TypeError, ValueError), match="'capacity'"):
            Rule(value, 1.0)

    @given(invalid_refill_rates())
    def test_invalid_rates_are_rejected(self, value):
        """Every invalid rate raises TypeError or ValueError naming 'refill_rate'."""
        with pytest.raises((TypeError, ValueError), match="'refill_rate'"):
            Rule(1, value)

    @given(invalid_amounts())
    def test_invalid_amounts_are_rejected(self, value):
        """Every invalid amount raises and leaves the bucket full."""
        bucket = TokenBucket(5, 1.0, clock=ManualClock())
        with pytest.raises((TypeError, ValueError), match="'amount'"):
            bucket.try_consume(value)
        assert bucket.tokens == 5.0


class TestModel:
    def test_follow_accepts_agreement_and_rejects_disagreement(self):
        """follow() checks a real decision: early admission only within EPSILON."""
        model = ExactBucket(1, 1.0)
        model.follow(0.0, 1, True)
        model.follow(0.5, 1, False)
        with pytest.raises(AssertionError, match=r"admitted 1 at 0\.6"):
            model.follow(0.6, 1, True)
        with pytest.raises(AssertionError, match=r"denied 1 at 2\.0"):
            model.follow(2.0, 1, False)

    def test_manual_registry(self):
        """manual_registry gives a registry and the clock that drives it."""
        registry, clock = manual_registry(Rule(2, 0.5), start=10.0, max_keys=5)
        assert isinstance(registry, BucketRegistry)
        assert clock() == 10.0
        assert registry.store.max_keys == 5  # type: ignore[union-attr]
        assert [registry.try_consume("k") for _ in range(3)] == [True, True, False]
        clock.advance(2.0)
        assert registry.try_consume("k")


class BrokenLimiter:
    """Forgets to refill at the right rate: twice as generous."""

    def __init__(self, rule, clock):
        self.bucket = TokenBucket(rule.capacity, rule.refill_rate * 2, clock=clock)

    def allow(self, amount):
        return self.bucket.try_consume(amount)


class BrokenMachine(LimiterMachine):
    def create(self, rule, clock):
        return BrokenLimiter(rule, clock)

    def attempt(self, limiter, amount):
        return limiter.allow(amount)


# Finding the bug is what is tested; shrinking it would only cost time. Derandomized so the
# search is the same on every run.
HUNT = settings(
    max_examples=300, phases=[Phase.generate], derandomize=True, database=None, deadline=None
)


def test_state_machine_catches_an_over_admitting_limiter():
    """The ready LimiterMachine finds the bug in a limiter that refills too fast."""
    with pytest.raises(AssertionError, match="admitted"):
        run_state_machine_as_test(BrokenMachine, settings=HUNT)


class TestPlugin:
    def test_fixtures_in_a_user_test_file(self, pytester):
        """A user's test file gets tokenbucket_clock/tokenbucket_registry and the marker."""
        pytester.makepyfile(
            """
            import pytest

            def test_default_rule(tokenbucket_registry, tokenbucket_clock):
                assert tokenbucket_registry.default.capacity == 10
                assert sum(tokenbucket_registry.try_consume("k") for _ in range(12)) == 10
                tokenbucket_clock.advance(3)
                assert tokenbucket_registry.tokens("k") == 3.0

            @pytest.mark.tokenbucket_rule(capacity=5, refill_rate=0.1)
            def test_login_lockout(tokenbucket_registry, tokenbucket_clock):
                assert sum(tokenbucket_registry.try_consume("alice") for _ in range(9)) == 5
                assert tokenbucket_registry.consume("alice").retry_after == 10.0
                tokenbucket_clock.advance(10)
                assert tokenbucket_registry.try_consume("alice")

            def test_clock_is_fresh(tokenbucket_clock):
                assert tokenbucket_clock() == 0.0
            """
        )
        result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
        result.assert_outcomes(passed=3)

    def test_plugin_is_registered_by_entry_point(self, pytester):
        """pytest lists the plugin without any configuration in the user's project."""
        result = pytester.runpytest("--fixtures")
        result.stdout.fnmatch_lines(["*tokenbucket_registry*"])

    def test_plugin_loads_nothing_until_used(self):
        """Importing the plugin imports neither tokenbucket nor hypothesis."""
        code = (
            "import sys, pytest_tokenbucket; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tokenbucket', 'hypothesis')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "[]"

    def test_testing_package_is_stdlib_only(self):
        """tokenbucket.testing does not import hypothesis; its strategies module does."""
        code = (
            "import sys, tokenbucket.testing; a = 'hypothesis' in sys.modules; "
            "import tokenbucket.testing.strategies; b = 'hypothesis' in sys.modules; "
            "print(a, b)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        assert out.split() == ["False", "True"]


def test_hypothesis_settings_are_usable_with_strategies():
    """The strategies compose with st.data() as in a user's test."""

    @given(st.data())
    def check(data):
        rule = data.draw(rules(max_capacity=10, max_rate=5, zero_rate=False))
        assert rule.refill_rate > 0
        assert rule.capacity <= 10

    check()


class EarlyLimiter(BrokenLimiter):
    """Admits a request when it is a millionth of a token short."""

    def __init__(self, rule, clock):
        self.bucket = TokenBucket(rule.capacity, rule.refill_rate, clock=clock)

    def allow(self, amount):
        if self.bucket.tokens >= amount - 1e-6 and amount <= self.bucket.capacity:
            self.bucket.update(capacity=self.bucket.capacity)  # no-op settle
            return self.bucket.try_consume(min(amount, self.bucket.tokens) or amount)
        return False


class EarlyMachine(BrokenMachine):
    def create(self, rule, clock):
        return EarlyLimiter(rule, clock)


def test_state_machine_catches_admission_before_the_boundary():
    """Boundary probing finds a limiter that admits 1e-6 tokens early."""
    with pytest.raises(AssertionError, match="admitted"):
        run_state_machine_as_test(EarlyMachine, settings=HUNT)
