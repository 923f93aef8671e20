import math

import pytest

from tokenbucket import EPSILON, Decision, ManualClock, Rule, TokenBucket
from tokenbucket.testing import ExactBucket


def make(capacity=10, refill_rate=1.0, start=0.0):
    clock = ManualClock(start)
    return TokenBucket(capacity, refill_rate, clock=clock), clock


class TestSteps:
    """Step tables: (time, amount, allowed, remaining after)."""

    @pytest.mark.parametrize(
        ("capacity", "rate", "steps"),
        [
            # A full bucket of 3 refilled at 1/s.
            (
                3,
                1.0,
                [
                    (0.0, 1, True, 2),
                    (0.0, 1, True, 1),
                    (0.0, 1, True, 0),
                    (0.0, 1, False, 0),
                    (0.5, 1, False, 0.5),
                    (1.0, 1, True, 0),
                    (1.0, 1, False, 0),
                    (10.0, 3, True, 0),  # refill is capped at capacity, not 9
                    (10.0, 4, False, 0),
                    (12.0, 2, True, 0),
                ],
            ),
            # Fractional rate and amounts.
            (
                2,
                0.25,
                [
                    (0.0, 1.5, True, 0.5),
                    (1.0, 1, False, 0.75),
                    (2.0, 1, True, 0),
                    (2.0, 0.001, False, 0),
                    (6.0, 1, True, 0),
                ],
            ),
            # A request bigger than capacity never passes, and takes nothing.
            (
                5,
                1.0,
                [
                    (0.0, 6, False, 5),
                    (0.0, 5, True, 0),
                    (100.0, 6, False, 5),
                ],
            ),
            # refill_rate 0: the bucket never refills.
            (
                2,
                0,
                [
                    (0.0, 2, True, 0),
                    (1e6, 1, False, 0),
                ],
            ),
        ],
    )
    def test_steps(self, capacity, rate, steps):
        """Each step's decision and remaining level match the table."""
        bucket, clock = make(capacity, rate)
        for at, amount, allowed, remaining in steps:
            clock.set(at)
            decision = bucket.consume(amount)
            assert (decision.allowed, decision.remaining) == (allowed, remaining), (at, amount)
            assert bucket.tokens == remaining


class TestDecision:
    def test_allowed_fields(self):
        """An allowed decision: retry_after 0, reset_after = deficit / rate, limit = capacity."""
        bucket, _ = make(10, 2.0)
        decision = bucket.consume(4)
        assert decision == Decision(True, 6.0, 0.0, 2.0, 10)
        assert bool(decision) is True
        assert type(decision.remaining) is float

    def test_denied_fields(self):
        """A denied decision says how long until this request would pass."""
        bucket, _ = make(10, 2.0)
        bucket.consume(9)
        decision = bucket.consume(4)
        assert decision == Decision(False, 1.0, 1.5, 4.5, 10)
        assert bool(decision) is False

    def test_retry_after_is_exactly_enough(self):
        """Waiting exactly retry_after makes the same request pass."""
        bucket, clock = make(7, 0.3)
        bucket.consume(7)
        for amount in (1, 2.5, 7):
            decision = bucket.peek(amount)
            assert not decision.allowed
            clock.advance(decision.retry_after)
            assert bucket.consume(amount).allowed
            assert bucket.tokens == pytest.approx(0, abs=1e-9)

    def test_never_cases_are_infinite(self):
        """More than capacity, or an empty non-refilling bucket: retry_after is inf."""
        bucket, _ = make(5, 1.0)
        assert bucket.consume(6).retry_after == math.inf
        empty, _ = make(1, 0)
        empty.consume()
        decision = empty.consume()
        assert (decision.retry_after, decision.reset_after) == (math.inf, math.inf)

    def test_full_bucket_resets_now(self):
        """reset_after is 0 for a full bucket, even one that never refills."""
        bucket, _ = make(3, 0)
        assert bucket.consume(4) == Decision(False, 3.0, math.inf, 0.0, 3)

    def test_peek_takes_nothing(self):
        """peek() answers like consume() but leaves the level alone."""
        bucket, _ = make(2, 1.0)
        assert bucket.peek(2) == Decision(True, 0.0, 0.0, 2.0, 2)
        assert bucket.tokens == 2.0


class TestAmounts:
    @pytest.mark.parametrize(
        ("amount", "error", "message"),
        [
            (0, ValueError, "'amount' must be a finite number > 0, got 0"),
            (-1, ValueError, "'amount' must be a finite number > 0, got -1"),
            (-0.0, ValueError, "'amount' must be a finite number > 0, got -0.0"),
            (math.nan, ValueError, "'amount' must be a finite number > 0, got nan"),
            (math.inf, ValueError, "'amount' must be a finite number > 0, got inf"),
            (True, TypeError, "'amount' must be a number, got True (bool)"),
            ("1", TypeError, "'amount' must be a number, got '1' (str)"),
            (None, TypeError, "'amount' must be a number, got None (NoneType)"),
        ],
    )
    @pytest.mark.parametrize("method", ["try_consume", "consume", "peek"])
    def test_rejected_and_never_adds_tokens(self, amount, error, message, method):
        """Invalid amounts raise a clear error and leave the level unchanged."""
        bucket, _ = make(10, 1.0)
        bucket.consume(4)
        with pytest.raises(error) as info:
            getattr(bucket, method)(amount)
        assert str(info.value) == message
        assert bucket.tokens == 6.0

    def test_huge_integer_is_just_too_big(self):
        """An integer beyond any capacity is denied forever, not an overflow."""
        bucket, _ = make(10, 1.0)
        decision = bucket.consume(10**400)
        assert (decision.allowed, decision.retry_after, decision.remaining) == (False, math.inf, 10)

    @pytest.mark.parametrize("method", ["try_consume", "consume", "peek"])
    def test_huge_integer_on_a_partly_used_bucket(self, method):
        """With a fractional level, a huge integer is still denied (no OverflowError)."""
        bucket, _ = make(10, 1.0)
        bucket.consume(0.5)
        result = getattr(bucket, method)(10**400)
        assert not result
        assert bucket.tokens == 9.5


class TestClock:
    def test_starts_full(self):
        """A new bucket holds its capacity."""
        bucket, _ = make(7, 1.0, start=12345.0)
        assert bucket.tokens == 7.0

    def test_backwards_clock_never_adds_tokens(self):
        """A clock that jumps back neither raises nor refills."""
        bucket, clock = make(10, 1.0, start=100.0)
        bucket.consume(10)
        clock.set(105.0)
        assert bucket.tokens == 5.0
        for back in (104.0, 50.0, -1e9):
            clock.set(back)
            assert bucket.tokens <= 5.0
            assert bucket.consume(6).allowed is False
        clock.set(105.0)
        assert bucket.tokens == 5.0
        clock.set(110.0)
        assert bucket.consume(10).allowed

    def test_backwards_clock_then_update_earns_nothing_either(self):
        """A rule change while the clock is behind does not turn that gap into refill time."""
        bucket, clock = make(10, 1.0, start=100.0)
        model = ExactBucket(10, 1.0, 100.0)
        assert bucket.consume(10).allowed
        assert model.consume(100.0, 10)
        clock.set(50.0)
        bucket.update(capacity=12)
        model.update(50.0, capacity=12)
        clock.set(60.0)  # ten seconds later, still before the last reading (100)
        assert bucket.tokens == float(model.advance(60.0)) == 2.0
        assert not bucket.consume(5).allowed
        clock.set(103.0)
        assert bucket.tokens == float(model.advance(103.0)) == 5.0

    def test_clock_read_once_per_decision(self):
        """Each decision reads the clock exactly once, while holding the lock."""
        reads = []

        def clock():
            reads.append(1)
            return 0.0

        bucket = TokenBucket(5, 1.0, clock=clock)
        bucket.try_consume()
        bucket.consume()
        assert len(reads) == 2


class TestNoDrift:
    def test_due_token_available_at_its_instant_despite_polling(self):
        """Rate 0.1/s drained at t0, polled 1,000 times: one token at exactly t0 + 10 s."""
        t0 = 0.1
        bucket, clock = make(1, 0.1, start=t0)
        assert bucket.try_consume()
        for i in range(1, 1001):
            clock.set(t0 + i * 0.00999)
            assert not bucket.try_consume()
        clock.set(t0 + 10)
        assert bucket.try_consume()
        assert not bucket.try_consume()

    def test_long_run_admits_exactly_capacity_plus_rate_times_time(self):
        """1,000 s at 3 tokens/s, polled every 3 ms: exactly capacity + 3000 admitted."""
        bucket, clock = make(5, 3.0)
        admitted = 0
        step = 0.003
        i = 0
        while True:
            now = i * step
            if now > 1000.0:
                break
            clock.set(now)
            admitted += bucket.try_consume()
            i += 1
        clock.set(1000.0)
        admitted += bucket.try_consume()
        assert admitted == 5 + 3000

    def test_fractional_rate_lands_on_integers(self):
        """At rate 1/3 s, token k arrives at exactly 3k seconds, for 10,000 tokens."""
        bucket, clock = make(1, 1 / 3)
        bucket.consume()
        for k in range(1, 10_001):
            clock.set(3.0 * k - 1e-6)
            assert not bucket.try_consume(), k
            clock.set(3.0 * k)
            assert bucket.try_consume(), k

    def test_tolerance_is_below_a_billionth(self):
        """A request short by more than EPSILON is denied; by less, allowed."""
        bucket, clock = make(1, 1.0)
        bucket.consume()
        clock.set(1.0 - 2 * EPSILON)
        assert not bucket.try_consume()
        clock.set(1.0 - EPSILON / 2)
        assert bucket.try_consume()


class TestUpdate:
    def test_settles_old_rate_first(self):
        """update() credits tokens earned at the old rate before switching."""
        bucket, clock = make(10, 1.0)
        bucket.consume(10)
        clock.set(4.0)
        bucket.update(refill_rate=0.0)
        assert bucket.tokens == 4.0
        clock.set(100.0)
        assert bucket.tokens == 4.0

    def test_full_bucket_stays_full(self):
        """Raising the capacity of a full bucket gives the full new capacity."""
        bucket, _ = make(10, 1.0)
        assert bucket.update(capacity=50) == Rule(50, 1.0)
        assert bucket.tokens == 50.0
        assert bucket.try_consume(50)

    def test_deficit_carries_over(self):
        """The tokens missing from full stay missing under the new capacity."""
        bucket, _ = make(10, 1.0)
        bucket.consume(7)
        bucket.update(capacity=50)
        assert bucket.tokens == 43.0
        bucket.update(capacity=5)
        assert bucket.tokens == 0.0  # 7 missing of 5: 2 tokens in debt
        decision = bucket.consume()
        assert (decision.allowed, decision.retry_after, decision.reset_after) == (False, 3.0, 7.0)
        bucket.update(capacity=20)
        assert bucket.tokens == 13.0

    def test_both_fields_and_properties(self):
        """update() can change both fields; the bucket reports its new rule."""
        bucket, _ = make(10, 1.0)
        bucket.update(capacity=3, refill_rate=0.5)
        assert (bucket.capacity, bucket.refill_rate, bucket.rule) == (3, 0.5, Rule(3, 0.5))

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({}, ValueError),
            ({"capacity": 0}, ValueError),
            ({"capacity": 20, "refill_rate": -1}, ValueError),
            ({"capacity": math.nan, "refill_rate": 2.0}, ValueError),
            ({"capacity": "20"}, TypeError),
            ({"refill_rate": True}, TypeError),
        ],
    )
    def test_invalid_update_changes_nothing(self, kwargs, error):
        """A rejected update leaves rule and level exactly as they were."""
        bucket, clock = make(10, 1.0)
        bucket.consume(6)
        with pytest.raises(error):
            bucket.update(**kwargs)
        assert bucket.rule == Rule(10, 1.0)
        assert bucket.tokens == 4.0
        clock.advance(2.0)
        assert bucket.tokens == 6.0

    def test_reset_refills(self):
        """reset() makes the bucket full again."""
        bucket, _ = make(4, 0)
        bucket.consume(4)
        bucket.reset()
        assert bucket.tokens == 4.0

    def test_repr(self):
        """repr shows the rule and the current level."""
        bucket, _ = make(4, 0.5)
        bucket.consume(1)
        assert repr(bucket) == "TokenBucket(capacity=4, refill_rate=0.5, tokens=3.0)"


class TestFractionalAmounts:
    def test_a_million_fractional_requests_do_not_drift(self):
        """999,999 requests of 0.1 from 100,000 tokens: the level is exact to 1e-9 tokens."""
        from fractions import Fraction

        bucket, _ = make(100_000, 0)
        for _ in range(999_999):
            bucket.try_consume(0.1)
        exact = 100_000 - 999_999 * Fraction(0.1)
        assert abs(Fraction(bucket.tokens) - exact) <= Fraction(1, 10**9)
        # Just under the exact level passes, just over does not.
        assert bucket.peek(float(exact) - 1e-8).allowed
        assert not bucket.peek(float(exact) + 1e-8).allowed
