"""Arithmetic at the edges, in memory and in Redis alike (issue 22, items 4 and 5).

Huge amounts: a request size above ``MAX_AMOUNT`` (2**53) decides as that size, and a charge
saturates the debt at ``MAX_DEBT`` (2**53 tokens), so no state ever becomes ``inf`` or NaN (two
charges of 1.7e308 used to make a NaN state that admitted everything forever in memory, and a
``-nan`` field in Redis). Invalid amounts raise, naming the field and the value.

A clock that steps back: a full state ahead of the clock is kept (not swept, not deleted, not
expired) until the clock is back at its instant, and a reset makes a bucket new whatever the
clock does; memory and Redis decide alike. Both stores run on one clock the test sets (see
``conftest.py``).
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from tokenbucket import Rule
from tokenbucket._core import validate as _validate
from tokenbucket.testing import ExactBucket

MAX_AMOUNT = 2**53  # the documented bound on amounts and debts
S = 1_000_000  # µs per second
BACKENDS = ["memory", "redis"]
HUGE = [1.7e308, 10**400, 2**1100 + 1, 2**60, float(2**53) * 4]
HUGE_IDS = ["1.7e308", "10**400", "2**1100+1", "2**60", "2.0**55"]
DEBT = 10 - MAX_AMOUNT  # the level of a bucket of 10 that owes the most it can


def pick(twins, backend, default=None):
    """One registry on ``backend`` (and its clock), on Rule(10, 1) unless said."""
    memory, redis_registry, clock = twins.pair(default or Rule(10, 1), 1000 * S)
    return (memory if backend == "memory" else redis_registry), clock


@pytest.fixture
def no_policy(twins):
    """Fails a test in which the Redis store's failure policy decided (a script error)."""
    twins.policies.clear()
    yield
    assert twins.policies == []


pytestmark = pytest.mark.usefixtures("no_policy")


class TestHugeAmounts:
    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("amount", HUGE, ids=HUGE_IDS)
    def test_huge_charges_saturate_the_debt(self, twins, backend, amount):
        """Two huge charges leave the bucket 2**53 short, not NaN: it admits nothing, and says
        when it will (finite), in memory and in Redis."""
        registry, _ = pick(twins, backend)
        first = registry.charge("k", amount)
        second = registry.charge("k", amount)
        assert first.allowed
        assert second.allowed
        assert (first.remaining, second.remaining) == (0.0, 0.0)
        assert second.retry_after == 1 - DEBT  # 1 token at 1/s, after the debt
        denied = registry.consume("k")
        assert not denied.allowed
        assert denied.retry_after == 1 - DEBT
        assert registry.tokens("k") == 0.0
        assert not registry.try_consume("k", 0.5)
        if backend == "redis":
            state = twins.state(registry, "k")
            assert (state["u"], state["l"]) == (str(MAX_AMOUNT), "0")

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_saturated_debt_refills_and_refunds(self, twins, backend):
        """A saturated bucket refills at its rate from there, and a huge refund fills it."""
        registry, clock = pick(twins, backend)
        registry.charge("k", 10**400)
        clock.set_us(clock.us + 4 * S)
        assert registry.peek("k").retry_after == 1 - DEBT - 4
        after = registry.refund("k", 10**400)
        assert (after.allowed, after.remaining, after.retry_after) == (True, 10.0, 0.0)
        assert registry.consume("k", 10).allowed

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_charge_into_saturation_from_debt(self, twins, backend):
        """A bucket already in debt saturates exactly at the bound: level 10 - 2**53."""
        registry, _ = pick(twins, backend)
        registry.charge("k", 2**52)
        assert registry.peek("k").retry_after == 1 + 2**52 - 10
        after = registry.charge("k", 2**52 + 12)
        assert after.retry_after == 1 - DEBT
        assert registry.charge("k", 1).retry_after == 1 - DEBT  # no further

    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("amount", HUGE, ids=HUGE_IDS)
    def test_huge_consume_and_peek_are_denied_and_change_nothing(self, twins, backend, amount):
        registry, _ = pick(twins, backend)
        registry.consume("k", 2.5)
        for decision in (registry.consume("k", amount), registry.peek("k", amount)):
            assert (decision.allowed, decision.remaining, decision.retry_after) == (
                False,
                7.5,
                math.inf,
            )
        assert not registry.try_consume("k", amount)
        assert registry.tokens("k") == 7.5

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_reservation_against_a_saturated_debt_is_refused(self, twins, backend):
        registry, _ = pick(twins, backend)
        registry.charge("k", 1.7e308)
        done, level, _ = registry.store.charge("k", 1, registry.default, 1e15)  # 9e15 s due
        assert not done
        assert level == DEBT

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_settle_with_a_huge_actual_saturates(self, twins, backend):
        """A settle= callback reporting an absurd cost (client-influenced) charges the most a
        bucket can owe: no OverflowError, no NaN."""
        registry, _ = pick(twins, backend)
        for actual in (10**400, 1.7e308):
            spend = registry.reserve("k", 2.5)
            assert spend
            after = spend.settle(actual)
            assert after.allowed
            assert math.isfinite(after.retry_after)
            registry.refund("k", 10**400)
        spend = registry.reserve("k", 2.5)
        spend.settle(10**400)
        assert registry.peek("k").retry_after > 2**52

    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize(
        ("amount", "error", "message"),
        [
            (math.inf, ValueError, "'amount' must be a finite number > 0, got inf"),
            (-math.inf, ValueError, "'amount' must be a finite number > 0, got -inf"),
            (math.nan, ValueError, "'amount' must be a finite number > 0, got nan"),
            (0, ValueError, "'amount' must be a finite number > 0, got 0"),
            (-(10**400), ValueError, "'amount' must be a finite number > 0, got -1000000"),
            (True, TypeError, "'amount' must be a number, got True (bool)"),
            ("1e308", TypeError, "'amount' must be a number, got '1e308' (str)"),
        ],
    )
    @pytest.mark.parametrize("method", ["consume", "peek", "charge", "refund"])
    def test_invalid_amounts_are_refused(self, twins, backend, amount, error, message, method):
        """Invalid input raises, naming the field and the value, and changes nothing."""
        registry, _ = pick(twins, backend)
        registry.consume("k", 3)
        with pytest.raises(error) as info:
            getattr(registry, method)("k", amount)
        assert str(info.value).startswith(message)
        assert registry.tokens("k") == 7.0

    def test_check_amount_bounds(self):
        """The bound is 2**53: below it sizes pass as given (ints stay exact ints)."""
        check_amount = _validate.check_amount
        assert _validate.MAX_AMOUNT == MAX_AMOUNT
        assert check_amount(2**53) == 2**53
        assert type(check_amount(2**53)) is int
        assert check_amount(2**53 + 1) == float(2**53)
        assert check_amount(1.7e308) == float(2**53)
        assert check_amount(10**400) == float(2**53)
        assert check_amount(0.1) == 0.1

    def test_the_model_saturates_too(self):
        model = ExactBucket(10, 1)
        model.charge(0, 10**400)
        model.charge(0, 1.7e308)
        assert model.level == 10 - Fraction(2**53)


class TestUnsoundRedisState:
    @pytest.mark.parametrize("value", ["-nan", "nan", "inf", "-inf"])
    def test_a_non_finite_state_reads_as_empty(self, twins, value):
        """A state an older version left ('-nan' after huge charges) is an empty bucket: it
        admits nothing now and refills from now, never reads as full."""
        _, registry, clock = twins.pair(Rule(10, 1), 1000 * S)
        twins.client.hset(
            twins.name(registry, "k"),
            mapping={"t": 1000 * S, "u": value, "l": "0", "c": 10, "r": 1},
        )
        assert registry.tokens("k") == 0.0
        assert not registry.consume("k").allowed
        clock.set_us(1003 * S)
        assert registry.consume("k", 3).allowed  # refilled from 1000 s
        assert not registry.try_consume("k")
        state = twins.state(registry, "k")  # repaired by the first denial
        assert (state["t"], state["u"]) == (str(1000 * S), "13")

    def test_a_non_finite_carry_reads_as_empty(self, twins):
        _, registry, _ = twins.pair(Rule(10, 1), 1000 * S)
        twins.client.hset(
            twins.name(registry, "k"),
            mapping={"t": 1000 * S, "u": "2", "l": "-nan", "c": 10, "r": 1},
        )
        assert not registry.consume("k").allowed

    def test_a_rule_change_on_a_non_finite_state_keeps_it_empty(self, twins):
        _, registry, _ = twins.pair(Rule(10, 1), 1000 * S)
        twins.client.hset(
            twins.name(registry, "k"),
            mapping={"t": 1000 * S, "u": "-nan", "c": 10, "r": 1},
        )
        registry.update_rule("k", capacity=20)
        assert registry.tokens("k") == 10.0  # 10 short of 20: the deficit of an empty bucket


class TestClockBackThenForget:
    """A full state ahead of a clock that stepped back is frozen until the clock is back at its
    instant: forgetting it (the sweep, a DEL, an expiry) let a new bucket refill from the
    earlier reading, so the same requests got different answers."""

    @staticmethod
    def full_ahead(registry, clock):
        """A bucket emptied at 1010 s, then refunded to full with the clock back at 1000 s."""
        clock.set_us(1010 * S)
        registry.consume("k", 10)
        clock.set_us(1000 * S)
        registry.refund("k", 10)

    @staticmethod
    def check_frozen(registry, clock):
        """Full, and what it takes at 1000 s comes back from 1010 s on (not from 1000 s)."""
        assert registry.consume("k", 10).allowed
        clock.set_us(1005 * S)
        assert registry.tokens("k") == 0.0
        assert registry.consume("k").retry_after == 6.0
        clock.set_us(1014 * S)
        assert registry.tokens("k") == 4.0

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_full_state_ahead_of_the_clock_is_kept(self, twins, backend):
        registry, clock = pick(twins, backend)
        self.full_ahead(registry, clock)
        if backend == "memory":  # a sweep pass now: its first forgets every full bucket...
            registry.store._until_sweep = 0
            registry.consume("another key")
            assert "k" in registry.store  # ...but this one, ahead of the clock
        else:  # kept, and it expires only once the clock is back at its instant
            assert twins.state(registry, "k")["t"] == str(1010 * S)
            assert twins.deadline(registry, "k") == 1010 * S + 1000
        self.check_frozen(registry, clock)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_bucket_refunded_to_full_at_its_instant_is_forgotten(self, twins, backend):
        """At or after its instant a full bucket is new again: the clock stepping back after
        that finds a new bucket, in memory as in Redis (the key is deleted)."""
        registry, clock = pick(twins, backend)
        clock.set_us(1010 * S)
        registry.consume("k", 10)
        registry.refund("k", 10)
        if backend == "redis":
            assert twins.state(registry, "k") == {}
        clock.set_us(1000 * S)
        assert registry.consume("k", 10).allowed
        clock.set_us(1005 * S)
        assert registry.tokens("k") == 5.0

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_full_state_is_still_forgotten_once_the_clock_is_there(self, twins, backend):
        registry, clock = pick(twins, backend)
        self.full_ahead(registry, clock)
        clock.set_us(1010 * S)
        if backend == "memory":
            registry.store._until_sweep = 0
            registry.consume("another key")
            assert "k" not in registry.store
        else:
            assert twins.deadline(registry, "k") == 1010 * S + 1000
        assert registry.tokens("k") == 10.0

    @pytest.mark.parametrize("backend", BACKENDS)
    @pytest.mark.parametrize("change", ["update_rule", "remove_rule", "new_default"])
    def test_a_rule_change_keeps_a_full_state_ahead(self, twins, backend, change):
        """Settling a full state ahead of the clock (on a rule change) keeps it, in Redis too
        (the script deleted it), whether the request is then admitted or not."""
        registry, clock = pick(twins, backend)
        if change == "remove_rule":
            registry.update_rule("k", capacity=10)
        self.full_ahead(registry, clock)
        if change == "update_rule":
            registry.update_rule("k", refill_rate=1)
        elif change == "remove_rule":
            registry.remove_rule("k")
        else:
            registry.update_default(capacity=9)
            assert not registry.consume("k", 10).allowed  # settles, denied: still kept
            registry.update_default(capacity=10)
            registry.consume("k", 11)  # settles again under 10, denied
        self.check_frozen(registry, clock)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_full_state_ahead_at_rate_0_expires_at_its_instant(self, twins, backend):
        """At rate 0 the kept full state still goes once the clock is at its instant (Redis
        made it persistent: a full bucket kept forever)."""
        registry, clock = pick(twins, backend, Rule(10, 0))
        self.full_ahead(registry, clock)
        if backend == "redis":
            assert twins.deadline(registry, "k") == 1010 * S + 1000
        assert registry.consume("k", 10).allowed
        assert registry.tokens("k") == 0.0

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_reset_makes_the_bucket_new_whatever_the_clock(self, twins, backend):
        """reset forgets: the bucket is new at the next reading, even behind its old instant
        (memory kept the old instant, and refilled 10 s later than Redis)."""
        registry, clock = pick(twins, backend)
        clock.set_us(1010 * S)
        registry.consume("k", 10)
        clock.set_us(1000 * S)
        registry.reset("k")
        assert registry.consume("k", 10).allowed
        clock.set_us(1005 * S)
        assert registry.tokens("k") == 5.0
        if backend == "memory":  # and the sweep forgets it
            registry.reset("k")
            registry.store._until_sweep = 0
            registry.consume("another key")
            assert "k" not in registry.store


class TestChargeDecisions:
    """A charge's or refund's decision is a whole Decision (it lacked ``shadow_denied``: its
    repr raised, and a charge on several limits raised TypeError in ``_replace``)."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_charge_and_refund_decisions_are_whole(self, twins, backend):
        registry, _ = pick(twins, backend)
        for decision in (
            registry.charge("k", 12),
            registry.refund("k", 1),
            registry.refund("k", 99),
        ):
            assert decision.shadow_denied == ()
            assert repr(decision).startswith("Decision(allowed=True, ")

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_charge_on_several_limits(self, twins, backend):
        memory, redis_registry, _ = twins.pair({"a": Rule(1, 0.25), "b": Rule(2.5, 0)}, 1000 * S)
        registry = memory if backend == "memory" else redis_registry
        decision = registry.charge("x", 2)
        assert tuple(decision) == (True, 0.0, math.inf, math.inf, 2.5, "b", ())  # b never refills
