"""Exact values that mutation testing of the core found unpinned (see scripts/mutate.py).

Each test pins one behaviour of the arithmetic, the in-memory store, its sweep, the decisions
or the several-limits logic that a one-token change (a comparison moved, ``+`` for ``-``, a
constant moved) would alter while the rest of the suite still passed. All run on a
`ManualClock`, so every value is exact.
"""

from __future__ import annotations

import math
import threading
from fractions import Fraction

import pytest

from tokenbucket import BucketRegistry, Decision, ManualClock, MemoryStore, RateLimitExceeded, Rule
from tokenbucket._registry.limits import limit_key


def one(capacity=10, rate=2.0, **options):
    clock = ManualClock(100.0)
    return BucketRegistry(Rule(capacity, rate), clock=clock, **options), clock


def several(**options):
    clock = ManualClock(100.0)
    limits = {"a": Rule(10, 2.0), "b": Rule(4, 1.0)}
    return BucketRegistry(limits, clock=clock, **options), clock


def fields(decision):
    return tuple(decision)[:5]


class TestChargeAndRefundDecisions:
    def test_charge_into_debt_reports_when_one_token_and_the_full_bucket_are_back(self):
        """A charge leaving -5 of 10 at 2/s: the next token in 3 s, full again in 7.5 s."""
        limits, _ = one()
        assert fields(limits.charge("k", 15)) == (True, 0.0, 3.0, 7.5, 10)

    def test_charge_leaving_at_least_one_token_has_no_retry_after(self):
        """A charge leaving exactly 1 (the unit) of 10: retry_after 0, full in 4.5 s."""
        limits, _ = one()
        assert fields(limits.charge("k", 9)) == (True, 1.0, 0.0, 4.5, 10)

    def test_charge_leaving_less_than_one_token_waits_for_the_rest(self):
        """A charge leaving 0.5 of 10 at 2/s: one token in 0.25 s, full in 4.75 s."""
        limits, _ = one()
        assert fields(limits.charge("k", 9.5)) == (True, 0.5, 0.25, 4.75, 10)

    def test_a_capacity_below_one_waits_for_the_capacity_not_one_token(self):
        """Capacity 0.5 at 1/s: after a charge of 0.5 the unit is 0.5, back in 0.5 s."""
        limits, _ = one(0.5, 1.0)
        assert fields(limits.charge("k", 0.5)) == (True, 0.0, 0.5, 0.5, 0.5)
        assert fields(limits.refund("k", 0.25)) == (True, 0.25, 0.25, 0.25, 0.5)

    def test_refund_to_full_reports_zero_waits(self):
        """A refund back to full: remaining the capacity, both waits exactly 0.0."""
        limits, _ = one()
        limits.consume("k", 6)
        decision = limits.refund("k", 6)
        assert fields(decision) == (True, 10.0, 0.0, 0.0, 10)
        assert type(decision.remaining) is float

    def test_partial_refund_reports_the_time_to_full(self):
        """From 4 of 10, a refund of 3 leaves 7: no retry, full again in 1.5 s."""
        limits, _ = one()
        limits.consume("k", 6)
        assert fields(limits.refund("k", 3)) == (True, 7.0, 0.0, 1.5, 10)

    def test_refund_of_a_bucket_in_debt_reports_its_remaining_debt(self):
        """From -5, a refund of 2 leaves -3: one token in 2 s, full in 6.5 s."""
        limits, _ = one()
        limits.charge("k", 15)
        assert fields(limits.refund("k", 2)) == (True, 0.0, 2.0, 6.5, 10)

    def test_several_limits_charge_binds_the_deepest_debt(self):
        """Charging 6 to a (10 at 2/s) and b (4 at 1/s): b at -2 binds, token in 3 s, full in 6."""
        limits, _ = several()
        decision = limits.charge("k", 6)
        assert tuple(decision)[:6] == (True, 0.0, 3.0, 6.0, 4, "b")

    def test_several_limits_refund_binds_the_least_level(self):
        """After 3 taken of each, a refund of 1: b (2 of 4) binds, full again in 2 s."""
        limits, _ = several()
        limits.consume("k", 3)
        assert tuple(limits.refund("k", 1))[:6] == (True, 2.0, 0.0, 2.0, 4, "b")


class TestReserveWaits:
    def test_a_wait_of_ten_thousand_seconds_is_within_an_infinite_max_wait(self):
        """acquire() with max_wait=inf reserves even a 10,000 s wait (only inf is refused)."""
        limits, _ = one(10, 0.001)
        limits.consume("k", 10)
        naps = []
        assert limits.acquire("k", 10, sleep=naps.append) == 10000.0
        assert naps == [10000.0]

    def test_a_wait_just_within_max_wait_is_reserved_and_just_beyond_is_not(self):
        """A wait of exactly max_wait is reserved; 0.5 s more is refused, taking nothing."""
        limits, _ = one(10, 2.0)
        limits.consume("k", 10)
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", 5, max_wait=2.0, sleep=lambda s: None)
        assert limits.tokens("k") == 0.0
        assert limits.acquire("k", 5, max_wait=2.5, sleep=lambda s: None) == 2.5
        assert limits.tokens("k") == 0.0  # in debt: 5 short, reported as 0

    def test_a_reservation_above_the_capacity_is_refused(self):
        """acquire() of more than the capacity raises at once, whatever max_wait."""
        limits, _ = one(10, 2.0)
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", 11, sleep=lambda s: None)
        assert limits.acquire("k", 10, sleep=lambda s: None) == 0.0


class TestKeyCapWithSeveralLimits:
    def test_peek_at_the_cap_answers_as_consume_would(self):
        """max_keys 1, two limits: one key (with both its limits) fills it, a new key does
        not fit."""
        limits, _ = several(max_keys=1)
        assert limits.consume("x", 1)
        peeked = limits.peek("y", 1)
        consumed = limits.consume("y", 1)
        # An empty bucket in each limit: 'b' (1/s) waits longest for a token and binds.
        assert tuple(peeked) == (False, 0.0, 1.0, 4.0, 4, "b", ())
        assert tuple(consumed) == (False, 0.0, 1.0, 4.0, 4, "b", ())

    def test_peek_within_the_cap_admits(self):
        """max_keys 2, two limits: a second key (both its limits) fits exactly, and peek says
        so."""
        limits, _ = several(max_keys=2)
        assert limits.consume("x", 1)
        assert limits.peek("y", 1).allowed
        assert limits.consume("y", 1).allowed


class TestSweepTrigger:
    def test_the_257th_new_key_sweeps_the_full_buckets(self):
        """After 256 new keys, the next new key (not a tracked one) sweeps: it forgets every
        full bucket of the first pass, and keeps the one just used."""
        clock = ManualClock(100.0)
        store = MemoryStore(clock=clock)
        limits = BucketRegistry(Rule(1, 1.0), store=store)
        for index in range(256):
            assert limits.consume(f"k{index}")
        clock.advance(1)  # every bucket full again
        assert len(store) == 256
        assert limits.consume("k0")  # a tracked key: no sweep
        assert limits.charge("k1", 1)
        assert len(store) == 256
        assert limits.consume("last")
        assert len(store) == 3  # k0, k1 (used, not full) and last
        # The next pass forgets the full buckets not used since this one began: those used
        # at its very instant (k0, k1, last) included.
        clock.advance(2)
        for index in range(255):
            assert limits.consume(f"n{index}")
        assert len(store) == 258
        assert limits.consume("trigger")
        assert len(store) == 256
        assert "last" not in store


def test_decision_fields_are_exact_for_a_denial():
    """A denial of 4 from 1 of 10 at 2/s: retry in 1.5 s, full in 4.5 s."""
    limits, _ = one()
    limits.consume("k", 9)
    assert limits.consume("k", 4) == Decision(False, 1.0, 1.5, 4.5, 10)
    assert math.isinf(limits.consume("k", 11).retry_after)


class TestUnitOfRetryAfter:
    def test_a_capacity_between_one_and_two_waits_for_one_token(self):
        """Capacity 1.5 at 1/s: a charge leaving 0.5 waits 0.5 s for one token, not 1 s."""
        limits, _ = one(1.5, 1.0)
        assert fields(limits.charge("k", 1)) == (True, 0.5, 0.5, 1.0, 1.5)

    def test_a_denial_of_exactly_the_capacity_waits_for_the_bucket_to_fill(self):
        """Asking for the whole capacity (10) with 5 left at 2/s: retry in 2.5 s, not never."""
        limits, _ = one()
        limits.consume("k", 5)
        assert fields(limits.consume("k", 10)) == (False, 5.0, 2.5, 2.5, 10)


class TestSeveralLimitsBinding:
    def test_equal_waits_bind_the_first_declared_limit(self):
        """Two equal limits both 2 short: the denial names the first declared, 'a'."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(4, 1.0), "b": Rule(4, 1.0)}, clock=clock)
        limits.consume("k", 4)
        assert tuple(limits.consume("k", 2)) == (False, 0.0, 2.0, 4.0, 4, "a", ())

    def test_a_request_of_one_limits_whole_capacity_still_waits_a_finite_time(self):
        """'a' (cap 2) lacks 1 token (1 s), 'b' lacks 2 at 0.1/s (20 s): 'b' binds, 20 s."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(10, 0.1)}, clock=clock)
        for index in range(5):
            assert limits.consume({"a": f"a{index}", "b": "kb"}, 2)
        assert limits.consume({"a": "ka", "b": "other"}, 1)
        decision = limits.consume({"a": "ka", "b": "kb"}, 2)
        assert tuple(decision)[:6] == (False, 0.0, 20.0, 100.0, 10, "b")

    def test_an_admission_binds_the_least_remaining_first_declared_on_ties(self):
        """Admitted with 'a' and 'b' both at 1 left: 'a' binds; with only 'b' lowest: 'b'."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(4, 1.0), "b": Rule(4, 2.0)}, clock=clock)
        assert tuple(limits.consume("k", 3))[:6] == (True, 1.0, 0.0, 3.0, 4, "a")
        limits = BucketRegistry({"a": Rule(9, 1.0), "b": Rule(4, 2.0)}, clock=clock)
        assert tuple(limits.consume("k", 3))[:6] == (True, 1.0, 0.0, 1.5, 4, "b")

    def test_refund_binds_the_least_level_when_it_is_declared_first(self):
        """'a' (2 of 4) and 'b' (8 of 10) after a refund: 'a', the least, binds."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(4, 1.0), "b": Rule(10, 2.0)}, clock=clock)
        limits.consume("k", 3)
        assert tuple(limits.refund("k", 1))[:6] == (True, 2.0, 0.0, 2.0, 4, "a")

    def test_equal_charges_bind_the_first_declared_limit(self):
        """'a' and 'b' alike, both at 5 after a charge: 'a' binds."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(10, 1.0)}, clock=clock)
        assert tuple(limits.charge("k", 5))[:6] == (True, 5.0, 0.0, 5.0, 10, "a")


class TestExactCarry:
    @pytest.mark.parametrize("way", ["consume", "try_consume", "several", "charge"])
    def test_integer_takes_after_a_fractional_one_keep_the_exact_sum(self, way):
        """1/3 then 1 and 1 taken (by each path): 10 less the correctly rounded 7/3 is left."""
        if way == "several":
            limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(20, 0)}, clock=ManualClock(0.0))
        else:
            limits, _ = one(10, 0)
        take = getattr(limits, "consume" if way == "several" else way)
        limits.consume("k", 1 / 3)
        take("k", 1)
        take("k", 1)
        assert limits.tokens("k", "a" if way == "several" else None) == 10 - 2.3333333333333335

    def test_fractional_takes_add_error_free(self):
        """0.2, 0.7 and 0.2 taken from 2: exactly 2 - 1.1 left, on one limit and on two."""
        limits, _ = one(2, 0)
        for amount in (0.2, 0.7, 0.2):
            assert limits.consume("k", amount)
        assert limits.tokens("k") == 2 - 1.1  # not 2 - 1.0999999999999999
        clock = ManualClock(0.0)
        pair = BucketRegistry({"a": Rule(2, 0), "b": Rule(3, 0)}, clock=clock)
        for amount in (0.2, 0.7, 0.2):
            assert pair.consume("k", amount)
        assert pair.tokens("k", "a") == 2 - 1.1


#: Sequences of (operation, amount) whose exact sums a float sum without its carry misses.
SEQUENCES = [
    [("take", 1), ("take", 1 / 3), ("take", 1)],
    [("take", 1 / 3), ("take", 1), ("take", 1)],
    [("take", 0.2), ("take", 0.7), ("take", 0.2)],
    [("charge", 1), ("charge", 1 / 3), ("charge", 1)],
    [("charge", 1 / 3), ("charge", 1), ("charge", 1)],
    [("take", 5), ("take", 1 / 3), ("refund", 1), ("refund", 1)],
    [("take", 5), ("refund", 1 / 3), ("refund", 1), ("refund", 1)],
    [("take", 0.2), ("take", 0.7), ("take", 2.2), ("refund", 0.2)],
    [("take", 1 / 3), ("try", 1), ("try", 1)],
    [("try", 1), ("take", 1 / 3), ("try", 1)],
]


@pytest.mark.parametrize("several_limits", [False, True], ids=["one", "several"])
@pytest.mark.parametrize("steps", SEQUENCES, ids=lambda steps: ",".join(str(a) for _, a in steps))
def test_mixed_int_and_fractional_sums_are_exact(steps, several_limits):
    """Takes, charges and refunds of ints and fractions leave 10 - the exact sum, rounded once."""
    if several_limits:
        limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(20, 0)}, clock=ManualClock(0.0))
    else:
        limits, _ = one(10, 0)
    exact = Fraction(0)
    for operation, amount in steps:
        sign = -1 if operation == "refund" else 1
        exact += sign * Fraction(amount)
        call = {"take": limits.consume, "charge": limits.charge, "refund": limits.refund}
        call["try"] = limits.try_consume
        assert call[operation]("k", amount)
    assert limits.tokens("k", "a" if several_limits else None) == 10 - float(exact)


class TestCeiling:
    def test_an_int_request_reaching_exactly_the_ceiling_is_admitted(self):
        """capacity 1.5: after ceiling - 1 taken, 1 more lands exactly on the ceiling: admitted
        by try_consume and, with two limits, by consume (their fast paths)."""
        rule = Rule(1.5, 0)
        rest = rule._ceiling - 1  # exact: the ceiling is in [1, 2)
        limits = BucketRegistry(rule, clock=ManualClock(0.0))
        assert limits.consume("k", rest)
        assert limits.try_consume("k", 1)
        pair = BucketRegistry({"a": rule, "b": Rule(5, 0)}, clock=ManualClock(0.0))
        assert pair.consume("k", rest)
        assert pair.consume("k", 1).allowed
        assert pair.consume("j", rest)
        assert pair.try_consume("j", 1)

    def test_an_int_request_of_exactly_the_ceiling_is_admitted_by_a_refilled_bucket(self):
        """capacity 2 - EPSILON has the ceiling 2.0: a request of the int 2 is admitted by a
        tracked bucket that has refilled (the fast path's restart), by try_consume and
        consume, as by a new bucket."""
        rule = Rule(2 - 1e-9, 1.0)
        assert rule._ceiling == 2
        clock = ManualClock(0.0)
        limits = BucketRegistry(rule, clock=clock)
        assert limits.try_consume("k", 2)
        assert limits.try_consume("j", 2)
        clock.advance(10.0)  # full again, still tracked
        assert limits.try_consume("k", 2)
        assert limits.consume("j", 2).allowed

    def test_a_request_of_exactly_the_ceiling_is_admitted(self):
        """A request of capacity + EPSILON (the ceiling) is admitted, on one limit and two."""
        limits, _ = one(1, 1.0)
        ceiling = Rule(1, 1.0)._ceiling
        assert limits.peek("k", ceiling).allowed
        assert limits.consume("k", ceiling).allowed
        pair = BucketRegistry({"a": Rule(1, 1.0), "b": Rule(5, 1.0)}, clock=ManualClock(0.0))
        assert pair.peek("k", ceiling).allowed
        assert pair.consume("k", ceiling).allowed
        assert not pair.consume("j", ceiling + 1e-9).allowed


class TestStoreOptions:
    def test_a_cap_of_one_key_tracks_one(self):
        """max_keys=1 is valid: one key gets a bucket, a second new key is an empty bucket."""
        store = MemoryStore(clock=ManualClock(0.0), max_keys=1)
        limits = BucketRegistry(Rule(5, 1.0), store=store)
        assert limits.consume("a").remaining == 4.0
        assert tuple(limits.consume("b"))[:2] == (False, 0.0)
        assert len(store) == 1

    def test_one_stripe_is_valid(self):
        """stripes=1 is a power of two: every key shares the one lock, and decides."""
        store = MemoryStore(clock=ManualClock(0.0), stripes=1)
        limits = BucketRegistry(Rule(5, 1.0), store=store)
        for key in ("a", "b", "c"):
            assert limits.consume(key, 2).remaining == 3.0
        assert limits.tokens("b") == 3.0


def test_try_consume_decides_under_the_rule_of_the_registry_that_asks():
    """Two registries share a store: 5 taken under (10, 1/s); under (2, 1/s) the bucket is
    still 5 short, so the other registry's try_consume is denied, not decided under (10, 1/s)."""
    store = MemoryStore(clock=ManualClock(0.0))
    wide = BucketRegistry(Rule(10, 1.0), store=store)
    narrow = BucketRegistry(Rule(2, 1.0), store=store)
    assert wide.consume("k", 5)
    assert not narrow.try_consume("k", 1)
    assert narrow.peek("k").retry_after == 4.0  # 3 short of empty, then 1 token


def test_several_limits_tracked_buckets_refill_from_their_own_instant():
    """a (10, 2/s) and b (4, 1/s) at clock 100: 3 taken, then 1 s later 3 more fit a (9 - 3)
    but not b (2 of 4): denied, b binding, 1 s to wait; nothing refilled from clock 0."""
    limits, clock = several()
    assert limits.consume("k", 3)
    clock.advance(1)
    assert tuple(limits.consume("k", 3))[:6] == (False, 2.0, 1.0, 2.0, 4, "b")
    assert limits.try_consume("k", 2)
    assert limits.tokens("k", "a") == 7  # 9 after the refill, less 2


def test_a_limit_exactly_at_its_ceiling_passes_and_another_binds_the_denial():
    """'a' (1.5, rate 0) lands exactly on its ceiling and passes; 'b' (drained, 1/s) denies:
    'b' binds with its 1 s wait (a failing 'a' would bind with a wait of never)."""
    rule = Rule(1.5, 0)
    pair = BucketRegistry({"a": rule, "b": Rule(5, 1.0)}, clock=ManualClock(0.0))
    assert pair.consume({"a": "ka", "b": "x"}, rule._ceiling - 1)
    for index in range(5):
        assert pair.consume({"a": f"y{index}", "b": "kb"}, 1)
    decision = pair.consume({"a": "ka", "b": "kb"}, 1)
    assert tuple(decision)[:6] == (False, 0.0, 1.0, 5.0, 5, "b")


class TestSweepSteps:
    @pytest.mark.parametrize("way", ["consume", "charge", "several", "several-charge"])
    def test_a_new_key_after_256_sweeps_whatever_the_call(self, way):
        """After 256 new keys, a new key's consume, charge or several-limits call sweeps
        first (forgetting the full buckets); the same calls on tracked keys do not. A key of
        several limits counts once."""
        clock = ManualClock(100.0)
        store = MemoryStore(clock=clock)
        if way.startswith("several"):
            limits = BucketRegistry({"a": Rule(1, 1.0), "b": Rule(2, 1.0)}, store=store)
        else:
            limits = BucketRegistry(Rule(1, 1.0), store=store)
        for index in range(256):
            assert limits.consume(f"k{index}")
        clock.advance(2)  # every bucket full again
        call = limits.charge if way.endswith("charge") else limits.consume
        assert call("k0", 1)  # tracked: no sweep
        assert len(store) == 256
        assert call("new", 1)
        assert len(store) == 2  # k0 and new

    @pytest.mark.parametrize("way", ["try_consume", "charge"])
    def test_denied_new_keys_at_the_cap_count_towards_the_next_step(self, way):
        """At the cap with nothing due, the first new key steps by time, then every 256th
        denied new key steps by count, and every 128th charged one (a charge at the cap is
        tracked past it, and counts twice): no sweep is called between."""
        arrivals = []
        at = [-1]

        class Counting(MemoryStore):
            __slots__ = ()

            def _sweep(self):
                arrivals.append(at[0])
                super()._sweep()

        clock = ManualClock()
        limits = BucketRegistry(Rule(2, 1.0), store=Counting(clock=clock, max_keys=100))
        for index in range(100):
            assert limits.try_consume(f"k{index}", 2)  # full again 2 s later
        assert arrivals == []
        for index in range(600):
            clock.advance(0.001)
            at[0] = index
            if way == "charge":
                assert limits.charge(f"late-{index}", 1).remaining == 0.0  # at -1
            else:
                assert not limits.try_consume(f"late-{index}")
        step = 128 if way == "charge" else 256
        assert arrivals == list(range(0, 600, step))

    def test_denied_new_keys_of_several_limits_count_once_each(self):
        """As above with two limits a key: every 256th denied new key steps by count (a key
        counts once, whatever its limits)."""
        arrivals = []
        at = [-1]

        class Counting(MemoryStore):
            __slots__ = ()

            def _sweep(self):
                arrivals.append(at[0])
                super()._sweep()

        clock = ManualClock()
        store = Counting(clock=clock, max_keys=100)
        single = BucketRegistry(Rule(2, 1.0), store=store)
        pair = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(4, 1.0)}, store=store)
        for index in range(100):
            assert single.try_consume(f"k{index}", 2)  # full again 2 s later
        for index in range(300):
            clock.advance(0.001)
            at[0] = index
            assert not pair.try_consume(f"late-{index}")
        assert arrivals == [0, 256]

    def test_a_step_visits_512_keys(self):
        """One step of the first pass visits exactly 512 keys, forgetting those full."""
        clock = ManualClock()
        store = MemoryStore(clock=clock)
        store._until_sweep = 10**9  # no step while the keys arrive
        limits = BucketRegistry(Rule(1, 1.0), store=store)
        for index in range(1000):
            assert limits.consume(f"k{index}")
        clock.advance(1)
        store._until_sweep = 0
        store._sweep()
        assert len(store) == 1000 - 512


class TestReserveCeiling:
    def test_a_reservation_of_exactly_the_ceiling_is_admitted(self):
        """acquire() of capacity + EPSILON (the ceiling) reserves; a hair more is refused."""
        limits, _ = one(1, 1.0)
        ceiling = Rule(1, 1.0)._ceiling
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", ceiling + 1e-9, sleep=lambda s: None)
        assert limits.acquire("k", ceiling, sleep=lambda s: None) == pytest.approx(1e-9)

    @pytest.mark.parametrize("way", ["consume", "charge", "several", "several-charge"])
    def test_a_new_key_at_255_does_not_sweep_yet(self, way):
        """With 255 new keys so far, a new key's call does not sweep yet (one is left), nor
        even call the sweep (a key of several limits counts once)."""
        calls = []

        class Counting(MemoryStore):
            __slots__ = ()

            def _sweep(self):
                calls.append(len(self))
                super()._sweep()

        clock = ManualClock(100.0)
        store = Counting(clock=clock)
        single = BucketRegistry(Rule(1, 1.0), store=store)
        for index in range(255):
            assert single.consume(f"k{index}")
        clock.advance(2)
        limits = single
        if way.startswith("several"):
            limits = BucketRegistry({"a": Rule(1, 1.0), "b": Rule(2, 1.0)}, store=store)
        call = limits.charge if way.endswith("charge") else limits.consume
        assert call("new", 1)
        assert len(store) == 256
        assert calls == []

    @pytest.mark.parametrize("several_limits", [False, True], ids=["one", "several"])
    def test_at_the_cap_a_charge_reclaims_refilled_buckets_by_time(self, several_limits):
        """Flooded to the cap, all refilled 1 s later: a new key's charge at 1.5 s steps by
        time, frees room and is tracked (9 of 10 left), rather than refused room."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock, max_keys=100)
        flood = BucketRegistry(Rule(10, 1.0), store=store)
        for index in range(100):
            assert flood.consume(f"flood-{index}")
        clock.set(1.5)
        limits = flood
        if several_limits:
            limits = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(20, 1.0)}, store=store)
        assert limits.charge("lone", 1).remaining == 9.0


def test_a_refused_reservation_writes_the_state_settled_under_the_new_rule():
    """Emptied at 0 under (10, 1/s); at 1 s a reservation under (10, 0.1/s) is refused, but
    the state is settled then (9 short); at 2 s it has refilled at 0.1/s since: 1.1 left."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock)
    fast = BucketRegistry(Rule(10, 1.0), store=store)
    slow = BucketRegistry(Rule(10, 0.1), store=store)
    assert fast.consume("k", 10)
    clock.set(1.0)
    with pytest.raises(RateLimitExceeded):
        slow.acquire("k", 10, max_wait=0, sleep=lambda s: None)
    clock.set(2.0)
    assert slow.tokens("k") == pytest.approx(1.1, abs=1e-12)  # not 2: the old rate to 2 s


class TestSweepGuards:
    def test_a_sweep_while_another_runs_returns_at_once(self):
        """One thread sweeps at a time: a sweep called while the sweep lock is held returns at
        once (it does not wait for the other), and steps nothing."""
        store = MemoryStore(clock=ManualClock(0.0))
        store._until_sweep = 0
        store._sweeping.acquire()
        try:
            done = threading.Event()
            thread = threading.Thread(target=lambda: (store._sweep(), done.set()))
            thread.start()
            assert done.wait(5)
            assert store._until_sweep == 0  # no step
        finally:
            store._sweeping.release()
            thread.join()

    def test_a_sweep_with_no_trigger_left_steps_nothing(self):
        """A sweep called when neither trigger holds (another thread just stepped: one new key
        is still to come) returns without a step."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock)
        limits = BucketRegistry(Rule(1, 1.0), store=store)
        assert limits.consume("k")
        clock.advance(1)
        store._until_sweep = 1
        store._sweep()
        assert (store._until_sweep, len(store)) == (1, 1)

    def test_at_the_cap_a_step_pauses_5_microseconds_per_key_it_visited(self):
        """At the cap (600 keys), a step visiting 512 keys pauses time steps 2.56 ms; the
        next, visiting the pass's last 88 (and freeing them), 0.44 ms."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock, max_keys=600)
        slow = BucketRegistry(Rule(1, 1.0), store=store)  # full again at 1 s
        fast = BucketRegistry(Rule(1, 1000.0), store=store)  # full again at 1 ms
        store._until_sweep = 10**9  # steps by time only
        for index in range(512):
            assert slow.consume(f"s{index}")
        for index in range(88):
            assert fast.consume(f"f{index}")
        clock.set(0.5)
        assert not slow.consume("x1")  # at the cap: a step, nothing full among the first 512
        assert store._reclaim_at == pytest.approx(0.5 + 512 * 5e-6, abs=1e-12)
        clock.set(0.503)
        assert slow.consume("x2")  # the next step frees the 88 fast buckets
        assert store._reclaim_at == pytest.approx(0.503 + 88 * 5e-6, abs=1e-12)
        assert len(store) == 513


class TestChargesAtTheEdges:
    def test_a_charge_of_half_a_token_on_a_refilled_bucket_takes_it(self):
        """5 taken, then 100 s: full. A charge of 0.5 restarts the bucket: 9.5 left, and a
        reservation of 0.5 beyond max_wait is refused."""
        limits, clock = one(10, 1.0)
        assert limits.consume("k", 5)
        clock.advance(100)
        assert fields(limits.charge("k", 0.5)) == (True, 9.5, 0.0, 0.5, 10)
        assert limits.tokens("k") == 9.5
        assert limits.consume("k", 9.5)
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", 0.5, max_wait=0.25, sleep=lambda s: None)

    @pytest.mark.parametrize("several_limits", [False, True], ids=["one", "several"])
    def test_at_the_cap_a_charge_reports_the_debt_and_a_reservation_is_refused(
        self, several_limits
    ):
        """Cap of 2 keys, both used: a new key's charge of 3 is an empty bucket charged
        (level -3: a token in 4 s, full in 13 s), tracked past the cap so that its debt is
        kept; another new key's reservation is refused as an empty bucket's would be (3 s to
        wait, 10 s to full). With two limits the slower one, 'b', binds both."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock, max_keys=2)
        if several_limits:
            limits = BucketRegistry({"a": Rule(10, 2.0), "b": Rule(10, 1.0)}, store=store)
        else:
            limits = BucketRegistry(Rule(10, 1.0), store=store)
        assert limits.consume("x")
        assert limits.consume("y")
        assert len(store) == 2
        assert fields(limits.charge("new", 3)) == (True, 0.0, 4.0, 13.0, 10)
        # tracked past the cap (one key more, with all its limits): its debt is kept
        assert len(store) == 3
        assert fields(limits.charge("other", 0.5)) == (True, 0.0, 1.5, 10.5, 10)
        with pytest.raises(RateLimitExceeded) as refused:
            limits.acquire("fresh", 3, sleep=lambda s: None)
        assert fields(refused.value.decision) == (False, 0.0, 3.0, 10.0, 10)


def test_several_limits_charge_less_than_a_token_to_a_new_key():
    """A charge of 0.5 to a new key of two limits is tracked: 9.5 of 10 and 3.5 of 4 left."""
    limits, _ = several()
    assert tuple(limits.charge("k", 0.5))[:5] == (True, 3.5, 0.0, 0.5, 4)
    assert (limits.tokens("k", "a"), limits.tokens("k", "b")) == (9.5, 3.5)


class TestLimitsSeams:
    def test_a_denial_binds_the_limit_with_the_longest_wait(self):
        """'a' (2 of 2 short at 1/s: 2 s) and 'b' (0.1 short at 0.1/s: 1 s): 'a' binds."""
        clock = ManualClock(0.0)
        limits = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(10, 0.1)}, clock=clock)
        assert limits.consume({"a": "ka", "b": "x"}, 2)
        assert limits.consume({"a": "y", "b": "kb"}, 1.5)
        for index in range(4):
            assert limits.consume({"a": f"z{index}", "b": "kb"}, 1.65)
        assert limits.tokens("kb", "b") == pytest.approx(1.9)
        decision = limits.consume({"a": "ka", "b": "kb"}, 2)
        assert tuple(decision)[:6] == (False, 0.0, 2.0, 2.0, 2, "a")

    def test_store_keys_escape_braces(self):
        """A '}' in a key is written '\\1\\3' in its store key, one key or a key per limit."""
        assert limit_key("a}b", "x") == "{a\1\3b}\0x"
        assert limit_key("ab", "x") == "{ab}\0x"
        rule = Rule(1, 1.0)
        store = MemoryStore(clock=ManualClock(0.0))
        assert store.take_all([("a}b", (("x", rule),)), ("ab", (("x", rule),))], 1)[0]
        assert "{a\1\3b}\0x" in store
        assert "{ab}\0x" in store

    def test_an_empty_limit_name_is_refused(self):
        """A limit named '' is refused with a TypeError naming the limit names."""
        with pytest.raises(TypeError, match="limit names"):
            BucketRegistry({"": Rule(1, 1.0)})

    def test_the_exception_names_a_limit_other_than_the_default(self):
        """RateLimitExceeded names the binding limit, unless it is the default one."""
        assert str(RateLimitExceeded(Decision(False, 0.0, 2.0, 2.0, 5))) == (
            "rate limit exceeded: retry after 2.000 s"
        )
        named = Decision(False, 0.0, 2.0, 2.0, 5, "user")
        assert str(RateLimitExceeded(named)) == "rate limit exceeded ('user'): retry after 2.000 s"

    def test_a_later_pass_that_frees_nothing_pauses_until_a_bucket_is_due(self):
        """At the cap, a second pass (not only the first) that frees nothing pauses time steps
        until the next bucket is due to be full, not 5 microseconds a key."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock, max_keys=10)
        limits = BucketRegistry(Rule(1, 1.0), store=store)
        for index in range(10):
            assert limits.consume(f"k{index}")  # full again at 1 s
        clock.set(0.001)
        assert not limits.consume("new-1")  # pass 1 frees nothing: pause until 1 s
        assert store._reclaim_at == 1.0
        clock.set(0.9)
        for index in range(10):
            assert limits.consume(f"k{index}", 0.5)  # 0.6 short: full again at 1.5 s
        clock.set(1.0)
        assert not limits.consume("new-2")  # pass 2 frees nothing either: until 1.5 s
        assert store._reclaim_at == pytest.approx(1.5)


def test_several_limits_refused_reservation_writes_the_settled_state():
    """As with one limit: 'a' emptied under 1/s, a reservation refused at 1 s under 0.1/s
    settles it then, so at 2 s 'a' has 1.1 (0.1/s since 1 s), not 2."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock)
    fast = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(10, 1.0)}, store=store)
    slow = BucketRegistry({"a": Rule(10, 0.1), "b": Rule(10, 1.0)}, store=store)
    assert fast.consume("k", 10)
    clock.set(1.0)
    with pytest.raises(RateLimitExceeded):
        slow.acquire("k", 10, max_wait=0, sleep=lambda s: None)
    clock.set(2.0)
    assert slow.tokens("k", "a") == pytest.approx(1.1, abs=1e-12)


def test_several_limits_charges_to_tracked_keys_take_no_room_under_the_cap():
    """max_keys 4, two limits: charging one key twice keeps 2 buckets, so a second key's 2
    still fit."""
    limits, _ = several(max_keys=4)
    assert limits.charge("k", 1)
    assert limits.charge("k", 1)
    assert limits.consume("j").allowed


def test_several_limits_refused_reservation_charges_nothing():
    """'b' (3 of 4 at 1/s) cannot give 4 within max_wait 0: refused, and neither limit is
    charged: 'a' keeps 9 and 'b' 3."""
    limits, _ = several()
    assert limits.consume("k", 1)
    with pytest.raises(RateLimitExceeded):
        limits.acquire("k", 4, max_wait=0, sleep=lambda s: None)
    assert (limits.tokens("k", "a"), limits.tokens("k", "b")) == (9, 3)


class TestForgottenStates:
    def test_a_reset_bucket_is_new_even_with_the_clock_far_below_zero(self):
        """Reset at -5000 s, a bucket emptied again refills from -5000: full 5 s later."""
        limits, clock = one()
        clock.set(-5000.0)
        assert limits.consume("k", 10).allowed
        limits.reset("k")
        assert limits.consume("k", 10).allowed
        clock.set(-4995.0)
        assert fields(limits.consume("k", 10)) == (True, 0.0, 0.0, 5.0, 10)

    def test_a_refund_to_full_at_the_buckets_instant_forgets_it(self):
        """Charged and refunded to full at 100 s, then the clock steps back to 90: the
        bucket is new there, so emptied at 90 it is full again at 95."""
        limits, clock = one()
        assert limits.charge("k", 5).remaining == 5.0
        assert limits.refund("k", 5).remaining == 10.0
        clock.set(90.0)
        assert limits.consume("k", 10).allowed
        clock.set(95.0)
        assert fields(limits.consume("k", 10)) == (True, 0.0, 0.0, 5.0, 10)


class TestChargesPastTheCap:
    def test_a_reservation_of_exactly_the_level_at_rate_zero_waits_nothing(self):
        """Rate 0, full at 10: reserving 10 with max_wait 0 needs no wait, so it is taken."""
        rule = Rule(10, 0.0)
        store = MemoryStore(clock=ManualClock(0.0))
        assert store.charge("k", 10, rule, 0.0) == (True, 0.0, rule)
        assert store.charge("k", 1, rule, 0.0) == (False, 0.0, rule)

    def test_a_charge_at_the_cap_reports_it_was_charged(self):
        """max_keys 1: a second key's charge is taken from an empty bucket: (True, -5)."""
        rule = Rule(10, 1.0)
        store = MemoryStore(clock=ManualClock(0.0), max_keys=1)
        assert store.charge("a", 1, rule, None) == (True, 9.0, rule)
        assert store.charge("b", 5, rule, None) == (True, -5.0, rule)
        assert len(store) == 2

    def test_a_key_charged_past_the_cap_counts_until_it_is_forgotten(self):
        """max_keys 1: 'a' tracked, 'b' charged past the cap; once both are full and swept,
        exactly one new key ('c') fits again and the next ('d') is an empty bucket."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock, max_keys=1)
        limits = BucketRegistry(Rule(10, 1.0), store=store)
        assert limits.consume("a").remaining == 9.0
        assert limits.charge("b", 5).remaining == 0.0
        clock.set(100.0)
        assert limits.consume("c").remaining == 9.0
        assert tuple(limits.consume("d"))[:2] == (False, 0.0)
        assert "c" in store
        assert "d" not in store


def test_the_sweep_forgets_a_full_bucket_once_the_clock_is_back_at_its_instant():
    """Refunded to full at 90 s while its instant is 100 s, a bucket is kept; the sweep at
    exactly 100 s forgets it (255 other keys, then a new one, start the first pass)."""
    clock = ManualClock(100.0)
    store = MemoryStore(clock=clock)
    limits = BucketRegistry(Rule(1, 1.0), store=store)
    assert limits.charge("k", 1)
    clock.set(90.0)
    assert limits.refund("k", 1)
    assert "k" in store
    clock.set(100.0)
    for index in range(255):
        assert limits.consume(f"k{index}")
    assert limits.consume("new")
    assert "k" not in store
    assert len(store) == 256


def test_a_charge_beyond_the_largest_debt_saturates_there():
    """Charged 2**53 twice at 1/s: the debt stays at 2**53, so 2**53 - 10 below empty, and
    the bucket is full 2**53 s later (not 2**54)."""
    rule = Rule(10, 1.0)
    store = MemoryStore(clock=ManualClock(100.0))
    assert store.charge("k", 2**53, rule, None) == (True, 10 - 2**53, rule)
    assert store.charge("k", 2**53, rule, None) == (True, 10 - 2**53, rule)
    limits = BucketRegistry(rule, store=store)
    assert fields(limits.peek("k", 1)) == (False, 0.0, 2.0**53 - 9, 2.0**53, 10)


def test_a_peek_at_the_cap_counts_each_shadow_key_that_would_fit():
    """max_keys 4, one key tracked, then one enforced limit and three shadow ones on a new key
    each: the enforced key and two shadow ones fit, so a peek reports the third denied, as
    consume."""
    rule = Rule(10, 1.0)
    store = MemoryStore(clock=ManualClock(100.0), max_keys=4)
    assert BucketRegistry(rule, store=store).consume("other")
    limits = BucketRegistry(
        {"a": rule, "s1": rule, "s2": rule, "s3": rule}, shadow={"s1", "s2", "s3"}, store=store
    )
    keys = {"a": "k", "s1": "k1", "s2": "k2", "s3": "k3"}
    assert limits.peek(keys).shadow_denied == ("s3",)
    assert len(store) == 1
    assert limits.consume(keys).shadow_denied == ("s3",)
    assert len(store) == 4


def test_the_cap_counts_a_key_of_several_limits_once():
    """max_keys 2: a key of three limits is one tracked key, so a second one still fits and a
    third is an empty bucket (denied, untracked)."""
    rule = Rule(10, 1.0)
    store = MemoryStore(clock=ManualClock(100.0), max_keys=2)
    limits = BucketRegistry({"a": rule, "b": rule, "c": rule}, store=store)
    assert limits.consume("k1")
    assert limits.consume("k2")
    assert len(store) == 2
    decision = limits.consume("k3")
    assert not decision.allowed
    assert decision.remaining == 0
    assert len(store) == 2
    assert "k3" not in store


class TestSeveralLimitsChargeOutcomes:
    def test_a_charge_reports_each_bucket_charged(self):
        """charge_all of 3 on two new buckets of 10: each outcome is (True, 7)."""
        rule = Rule(10, 1.0)
        store = MemoryStore(clock=ManualClock(100.0))
        outcomes = ((True, 7, rule), (True, 7, rule))
        assert store.charge_all([("k", (("a", rule), ("b", rule)))], 3, None) == (
            True,
            outcomes,
        )

    def test_a_charge_at_the_cap_reports_each_empty_bucket_charged(self):
        """max_keys 1, one key tracked: a new key's two buckets are charged from empty, each
        (True, -3), and tracked past the cap (one key more)."""
        rule = Rule(10, 1.0)
        store = MemoryStore(clock=ManualClock(100.0), max_keys=1)
        assert store.charge("x", 1, rule, None) == (True, 9, rule)
        outcomes = ((True, -3, rule), (True, -3, rule))
        assert store.charge_all([("k", (("a", rule), ("b", rule)))], 3, None) == (
            True,
            outcomes,
        )
        assert len(store) == 2
        assert store.level(limit_key("k", "b"), rule) == -3

    def test_a_reservation_at_the_cap_leaves_out_only_the_shadow_bucket_without_room(self):
        """max_keys 2, one key tracked: a reservation on two new keys takes the last room for the
        enforced limit's key (True, 9); the shadow one's key has none: (False, 0.0), untracked."""
        rule = Rule(10, 1.0)
        store = MemoryStore(clock=ManualClock(100.0), max_keys=2)
        assert store.charge("x", 1, rule, None) == (True, 9, rule)
        groups = [("k", (("a", rule),)), ("j", (("s", rule),))]
        assert store.charge_all(groups, 1, 0.0, (False, True)) == (
            True,
            ((True, 9, rule), (False, 0.0, rule)),
        )
        assert len(store) == 2
        assert "j" not in store
