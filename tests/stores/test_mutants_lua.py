"""Values of the Lua script that mutation testing found unpinned (see scripts/mutate.py).

Redis time cannot be injected, so each test writes a bucket state whose instant ``t`` is
placed relative to the server's clock (read just before), far enough in the past or the future
that the time the test itself takes (milliseconds on a loaded machine) moves the answer by far
less than the tolerance, while a one-token change to the script (a constant moved, ``+`` for
``-``, a comparison moved) moves it by a token or more. A state refilled to full is exact.
"""

from __future__ import annotations

import pytest
import redis

from tokenbucket import BucketRegistry, RateLimitExceeded, Rule
from tokenbucket.redis import RedisStore

PREFIX = "tokenbucket:"
#: A million seconds, in the script's microseconds: far enough that a millisecond is nothing.
FAR = 10**12


@pytest.fixture
def admin(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def make(redis_url):
    stores = []

    def registry(default, **options):
        store = RedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
        stores.append(store)
        # Connected and the script loaded before the registry is handed out: a state written
        # just before is then read milliseconds later, not after a connection on a busy machine
        # (0.3 s once, past the tolerance). A level changes nothing in Redis.
        store.level("warm-up", Rule(1, 1.0))
        return BucketRegistry(default, store=store, **options)

    yield registry
    for store in stores:
        assert store.available, "a Redis call failed during the test"
        store.close()


def server_us(admin):
    seconds, micros = admin.time()
    return seconds * 1_000_000 + micros


def write(admin, key, offset_us, used, rule, carry=None):
    """Write ``key``'s state: ``used`` short at server time + ``offset_us``, under ``rule``."""
    state = {
        "t": server_us(admin) + offset_us,
        "u": repr(used),
        "c": repr(rule.capacity),
        "r": repr(rule.refill_rate),
    }
    if carry is not None:
        state["l"] = repr(carry)
    admin.hset(PREFIX + key, mapping=state)


def close(value, expected, tolerance=0.1):
    return abs(value - expected) <= tolerance


class TestRefill:
    def test_a_bucket_refilled_to_full_is_at_its_capacity(self, admin, make):
        """5 short 100 s ago at 1/s: full again, so a peek of 1 leaves exactly 9 of 10."""
        rule = Rule(10, 1.0)
        write(admin, "k", -100_000_000, 5, rule)
        assert tuple(make(rule).peek("k", 1))[:4] == (True, 9.0, 0.0, 1.0)

    def test_a_take_from_a_full_bucket_restarts_it_at_now(self, admin, make):
        """5 short 1,000 s ago at 0.01/s (full now): a take of 1 restarts the bucket at now
        with 1 used, so a second take leaves 8 (not 9 from the old instant, nor 7)."""
        rule = Rule(10, 0.01)
        write(admin, "k", -1_000_000_000, 5, rule)
        limits = make(rule)
        assert limits.consume("k", 1).remaining == 9.0
        assert close(limits.consume("k", 1).remaining, 8.0)

    def test_a_million_seconds_of_refill_at_two_per_second(self, admin, make):
        """2,000,005 short a million seconds ago at 2/s: 5 short now, a peek of 1 leaves 4."""
        rule = Rule(10, 2.0)
        write(admin, "k", -FAR, 2_000_005, rule)
        decision = make(rule).peek("k", 1)
        assert decision.allowed
        assert close(decision.remaining, 4.0), decision

    def test_a_take_after_a_refill_restarts_from_the_level_now(self, admin, make):
        """3 short 10 s ago at 0.1/s: 2 short now; a take of 1 then leaves 7, and a second 6."""
        rule = Rule(10, 0.1)
        write(admin, "k", -10_000_000, 3, rule)
        limits = make(rule)
        assert close(limits.consume("k", 1).remaining, 7.0)
        assert close(limits.consume("k", 1).remaining, 6.0)


class TestClockBehind:
    def test_a_charge_behind_the_clock_reports_the_refill_line_at_now(self, admin, make):
        """2 short, the state a million seconds ahead, 2/s: the level on the refill line is
        8 - 2,000,000; a charge of 1 leaves one token 999,997 s away, full 1,000,001.5 s away."""
        rule = Rule(10, 2.0)
        write(admin, "k", FAR, 2, rule)
        decision = make(rule).charge("k", 1)
        assert decision.remaining == 0.0
        assert close(decision.retry_after, 999_997.0), decision
        assert close(decision.reset_after, 1_000_001.5), decision

    def test_a_refund_to_full_behind_the_clock(self, admin, make):
        """A refund to full while the state is a million seconds ahead at 2/s: the level is the
        capacity less what the refill line lacks, so full only 1,000,000 s from now."""
        rule = Rule(10, 2.0)
        write(admin, "k", FAR, 2, rule)
        decision = make(rule).refund("k", 5)
        assert close(decision.reset_after, 1_000_000.0), decision


class TestReserve:
    def test_a_reservation_of_the_whole_level_at_rate_zero_waits_nothing(self, make):
        """At rate 0, reserving exactly the 10 there are waits 0 s (not forever)."""
        limits = make(Rule(10, 0))
        assert limits.acquire("k", 10, max_wait=0, sleep=lambda s: None) == 0.0
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", 1, sleep=lambda s: None)

    def test_a_wait_of_ten_thousand_seconds_fits_an_infinite_max_wait(self, make):
        """Reserving 10 at 0.001/s after draining waits 10,000 s: within max_wait=inf."""
        limits = make(Rule(10, 0.001))
        limits.consume("k", 10)
        naps = []
        assert close(limits.acquire("k", 10, sleep=naps.append), 10_000.0, 0.1)
        assert len(naps) == 1

    def test_a_wait_beyond_max_wait_is_refused_and_within_it_reserved(self, make):
        """1 token at 0.5/s is 2 s away: refused within max_wait=1, reserved within 2.5."""
        limits = make(Rule(10, 0.5))
        limits.consume("k", 10)
        with pytest.raises(RateLimitExceeded):
            limits.acquire("k", 1, max_wait=1, sleep=lambda s: None)
        assert close(limits.acquire("k", 1, max_wait=2.5, sleep=lambda s: None), 2.0)

    def test_a_reservation_of_exactly_the_ceiling_is_admitted(self, make):
        """Reserving capacity + EPSILON (the ceiling) on a full bucket is admitted."""
        limits = make(Rule(1, 1.0))
        assert close(limits.acquire("k", Rule(1, 1.0)._ceiling, sleep=lambda s: None), 0.0)


class TestExpiry:
    def test_a_bucket_expires_when_it_is_full_again(self, admin, make):
        """2,000,005 short a million seconds ago at 2/s, then 1 taken: 6 short, full in 3 s."""
        rule = Rule(10, 2.0)
        write(admin, "k", -FAR, 2_000_005, rule)
        assert make(rule).consume("k", 1)
        assert 2_900 <= admin.pttl(PREFIX + "k") <= 3_001

    def test_a_bucket_full_only_after_1e15_ms_never_expires(self, admin, make):
        """A charge of 1e9 at 0.001/s is repaid in exactly 1e12 s (1e15 ms): no expiry."""
        rule = Rule(10, 0.001)
        make(rule).charge("k", 10**9)
        assert admin.ttl(PREFIX + "k") == -1
        make(rule).refund("k", 10**9 - 10**6)  # 1e6 left: repaid in 1e9 s, so it expires
        assert 0 < admin.ttl(PREFIX + "k") <= 10**9


class TestRuleChanged:
    def test_a_new_refill_rate_settles_the_state_under_the_old_one(self, admin, make):
        """10 short 10 s ago at 1/s (full now); read under (10, 0.5/s), the rate alone changed:
        settled under 1/s the bucket is full, so a peek of 1 leaves 9 (not 10 - 5 - 1)."""
        write(admin, "k", -10_000_000, 10, Rule(10, 1.0))
        assert close(make(Rule(10, 0.5)).peek("k", 1).remaining, 9.0)

    def test_a_denial_writes_the_state_settled_under_the_new_rule(self, admin, make):
        """10 short 2 s ago under (10, 1/s), denied 9 under (10, 0.1/s): 8 short, written back
        at now under the new rate, so it no longer depends on the old one."""
        write(admin, "k", -2_000_000, 10, Rule(10, 1.0))
        assert not make(Rule(10, 0.1)).consume("k", 9)
        state = admin.hgetall(PREFIX + "k")
        assert (float(state["c"]), float(state["r"])) == (10.0, 0.1)
        assert close(float(state["u"]), 8.0)


class TestDenialsAndRebase:
    def test_a_denial_behind_the_clock_reports_the_refill_line(self, admin, make):
        """2 short, the state a million seconds ahead, 2/s: a peek of 9 is denied with the
        level on the refill line, 8 - 2,000,000, so retry_after is 1,000,000.5 s."""
        rule = Rule(10, 2.0)
        write(admin, "k", FAR, 2, rule)
        decision = make(rule).peek("k", 9)
        assert not decision.allowed
        assert close(decision.retry_after, 1_000_000.5), decision

    def test_a_denial_keeps_a_settled_debt_below_one_token(self, admin, make):
        """Half a token short under (1, 0.002/s), denied 1 under (1, 0.001/s): the half token
        is kept (settled, carry 0), so 0.4 more leaves 0.1, not a full bucket nor a token less."""
        write(admin, "k", 0, 0.5, Rule(1, 0.002))
        limits = make(Rule(1, 0.001))
        assert not limits.consume("k", 1)
        assert close(limits.tokens("k"), 0.5, 0.01)
        assert limits.consume("k", 0.4)
        assert close(limits.tokens("k"), 0.1, 0.01)

    def test_an_update_keeps_a_debt_below_one_token(self, admin, make):
        """Half a token short, then an override of the same numbers: still half a token
        short (not forgotten), and 0.4 more leaves 0.1 (no carry of 1 written)."""
        rule = Rule(1, 0.001)
        write(admin, "k", 0, 0.5, rule)
        limits = make(rule)
        assert limits.update_rule("k", capacity=1) == rule  # the rate kept
        assert close(limits.tokens("k"), 0.5, 0.01)
        assert limits.consume("k", 0.4)
        assert close(limits.tokens("k"), 0.1, 0.01)

    def test_an_update_restarts_the_state_at_now(self, admin, make):
        """15 short 10 s ago at 1/s (5 short now); an override of the same numbers settles it
        at now: still 5 short, not refilled again from 10 s ago."""
        rule = Rule(10, 1.0)
        write(admin, "k", -10_000_000, 15, rule)
        limits = make(rule)
        assert limits.update_rule("k", refill_rate=1.0) == rule  # the capacity kept
        assert close(limits.tokens("k"), 5.0)

    def test_removing_an_override_lets_the_key_expire_again(self, admin, make):
        """A key with an override never expires; once the override is removed, its state
        (5 short at 1/s) expires when full again, within 5 s."""
        rule = Rule(10, 1.0)
        limits = make(rule)
        limits.update_rule("k", capacity=10, refill_rate=1.0)
        assert limits.consume("k", 5)
        assert admin.ttl(PREFIX + "k") == -1
        limits.remove_rule("k")
        assert 0 < admin.pttl(PREFIX + "k") <= 5_001


def test_fractional_takes_add_error_free(make):
    """0.2, 0.7 and 0.2 taken from 2 (no refill): exactly 2 - 1.1 left (TwoSum in the script)."""
    limits = make(Rule(2, 0))
    for amount in (0.2, 0.7, 0.2):
        assert limits.consume("k", amount)
    assert limits.tokens("k") == 2 - 1.1  # not 2 - 1.0999999999999999


def test_an_admission_under_a_new_rule_writes_the_whole_state(admin, make):
    """8 short under (10, 1/s), read and taken from under (10, 0.1/s): the state is written
    whole (instant, rule), so the next read does not settle it under 1/s again: 1 left."""
    write(admin, "k", -2_000_000, 10, Rule(10, 1.0))
    limits = make(Rule(10, 0.1))
    assert limits.consume("k", 1)
    assert close(limits.tokens("k"), 1.0)


def test_an_update_of_a_full_bucket_leaves_only_the_override(admin, make):
    """A bucket full again (5 short 100 s ago at 1/s): an update forgets its state, so the
    hash holds the override alone (a full bucket has no state)."""
    rule = Rule(10, 1.0)
    write(admin, "k", -100_000_000, 5, rule)
    make(rule).update_rule("k", capacity=20)
    assert admin.hgetall(PREFIX + "k") == {"C": "20", "R": "1.0"}


def test_a_denial_keeps_the_rounding_carry(make):
    """0.2 and 0.7 taken from 2 (no refill), 5 denied, 0.2 taken: exactly 2 - 1.1 left (the
    denial leaves the state, carry included, as it was)."""
    limits = make(Rule(2, 0))
    assert limits.consume("k", 0.2)
    assert limits.consume("k", 0.7)
    assert not limits.consume("k", 5)
    assert limits.consume("k", 0.2)
    assert limits.tokens("k") == 2 - 1.1


def test_several_limits_reservation_reads_max_wait(make):
    """Two limits, 'b' drained at 0.5/s: a reservation of 1 waits 2 s, within max_wait 10;
    half a token more than the capacity is refused whatever the wait."""
    limits = make({"a": Rule(10, 1.0), "b": Rule(4, 0.5)})
    assert limits.consume("k", 4)
    assert close(limits.acquire("k", 1, max_wait=10, sleep=lambda s: None), 2.0)
    with pytest.raises(RateLimitExceeded):
        limits.acquire("j", 4.5, sleep=lambda s: None)


def test_a_bucket_expires_one_millisecond_after_it_is_full(admin, make):
    """A new bucket 1 short at 1/s is full 1 s after its instant t: it expires 1 ms after
    that (the expiry rounds up, so it never comes before full)."""
    assert make(Rule(10, 1.0)).consume("k", 1)
    base_us = int(admin.hget(PREFIX + "k", "t"))
    expires_ms = admin.execute_command("PEXPIRETIME", PREFIX + "k")
    assert 1_000_000 <= expires_ms * 1000 - base_us <= 1_001_000


def test_undo_gives_back_only_to_the_buckets_the_call_charged(redis_url):
    """A reservation of 3 on 'a' (10) and a shadow 's' (1 of 2 left: not charged), then its
    undo: 'a' is back at 10, 's' stays at 1; sent again after 'a' is charged 3, it gives
    nothing more."""
    from tokenbucket._stores.redis.groups import flat
    from tokenbucket._stores.redis.once import new_call

    store = RedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
    try:
        big, small = Rule(10, 0.001), Rule(2, 0.001)
        groups = [("k", (("a", big), ("s", small)))]
        (a, _), (s, _) = buckets = flat(groups)
        assert store.charge(s, 1, small, None)[0]
        logic = store._logic
        call = new_call()
        allowed, outcomes = store._run(logic.charge_all(groups, 3, 0.0, call, (False, True)))
        assert allowed
        assert [outcome[0] for outcome in outcomes] == [True, False]
        assert close(store.level(a, big), 7.0, 0.01)
        store._run(logic.undo(buckets, 3, call))
        assert close(store.level(a, big), 10.0, 0.01)
        assert close(store.level(s, small), 1.0, 0.01)
        assert store.charge(a, 3, big, None)[0]
        store._run(logic.undo(buckets, 3, call))
        assert close(store.level(a, big), 7.0, 0.01)
        assert close(store.level(s, small), 1.0, 0.01)
        assert store.available
    finally:
        store.close()


def test_undo_before_the_call_gives_nothing_back(redis_url):
    """An undo that arrives before its call refunds nothing (the bucket stays 4 short) and
    answers without an error."""
    from tokenbucket._stores.redis.groups import flat
    from tokenbucket._stores.redis.once import new_call

    store = RedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
    try:
        rule = Rule(10, 0.001)
        groups = [("j", (("a", rule),))]
        buckets = flat(groups)
        logic = store._logic
        store._run(logic.charge_all(groups, 4, None, new_call()))
        store._run(logic.undo(buckets, 3, new_call()))
        assert close(store.level(buckets[0][0], rule), 6.0, 0.01)
        assert store.available
    finally:
        store.close()


@pytest.mark.parametrize(
    ("field", "value"), [("u", "nan"), ("u", "-nan"), ("u", "inf"), ("u", "-inf"), ("l", "nan")]
)
def test_a_state_with_a_non_finite_field_is_an_empty_bucket_at_its_instant(
    admin, make, field, value
):
    """A state 1,000 s ahead whose u or l is NaN or +-inf reads as empty at its instant:
    one token (at 1/s) is 1,001 s away, the full bucket 1,010 s."""
    rule = Rule(10, 1.0)
    write(admin, "k", 1_000_000_000, 0, rule)
    admin.hset(PREFIX + "k", field, value)
    decision = make(rule).peek("k", 1)
    assert not decision.allowed
    assert close(decision.retry_after, 1001.0), decision
    assert close(decision.reset_after, 1010.0), decision


def test_a_state_with_a_non_finite_instant_is_an_empty_bucket_from_now(admin, make):
    """A state whose t is inf reads as an empty bucket from now: one token 1 s away."""
    rule = Rule(10, 1.0)
    write(admin, "k", 0, 0, rule)
    admin.hset(PREFIX + "k", "t", "inf")
    decision = make(rule).peek("k", 1)
    assert not decision.allowed
    assert close(decision.retry_after, 1.0), decision


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_a_full_bucket_ahead_of_the_clock_expires_at_its_instant(admin, make, rate):
    """5 short, its instant 100 s ahead, refunded to full: kept until its instant, so it
    expires in 100,000 ms (+1), at rate 0 too."""
    rule = Rule(10, rate)
    write(admin, "k", 100_000_000, 5, rule)
    assert make(rule).refund("k", 5)
    assert 99_950 < admin.pttl(PREFIX + "k") <= 100_001


def test_a_full_bucket_kept_ahead_of_the_clock_has_no_rounding_carry(admin, make):
    """At rate 0, 5 short 100 s ahead, refunded to full: takes of 1 then leave exactly 9
    and 8 (nothing carried over from before)."""
    rule = Rule(10, 0)
    write(admin, "k", 100_000_000, 5, rule, carry=0.25)
    limits = make(rule)
    assert limits.refund("k", 5).remaining == 10.0
    assert limits.consume("k", 1).remaining == 9.0
    assert limits.consume("k", 1).remaining == 8.0


def test_a_charge_on_an_unsound_state_owes_from_empty_at_its_instant(admin, make):
    """u NaN, instant 1,000 s ahead, 1/s: a charge of 2 owes from empty there, so one token
    is 1,003 s away (nothing carried over)."""
    rule = Rule(10, 1.0)
    write(admin, "k", 1_000_000_000, 0, rule)
    admin.hset(PREFIX + "k", "u", "nan")
    limits = make(rule)
    assert limits.charge("k", 2)
    decision = limits.peek("k", 1)
    assert close(decision.retry_after, 1003.0), decision


def test_a_charge_on_a_state_with_an_infinite_instant_rewrites_it_whole(admin, make):
    """t inf: a charge of 2 owes from empty now and writes t = now, so one token is 3 s away
    (not 1 s, as if the state were still unsound)."""
    rule = Rule(10, 1.0)
    write(admin, "k", 0, 0, rule)
    admin.hset(PREFIX + "k", "t", "inf")
    limits = make(rule)
    assert limits.charge("k", 2)
    decision = limits.peek("k", 1)
    assert close(decision.retry_after, 3.0), decision


def test_a_denial_on_an_unsound_state_writes_the_empty_bucket(admin, make):
    """u NaN: a consume is denied (an empty bucket) and the empty state is written then, u
    10 of 10 owed from now, so the hash is sound again."""
    rule = Rule(10, 1.0)
    write(admin, "k", -3_000_000, 0, rule)
    admin.hset(PREFIX + "k", "u", "nan")
    before = server_us(admin)
    assert not make(rule).consume("k", 1).allowed
    assert admin.hget(PREFIX + "k", "u") == "10"
    assert before <= float(admin.hget(PREFIX + "k", "t")) <= server_us(admin)


def test_a_reservation_refused_by_one_bucket_charges_none(make):
    """A reservation of 3 on 'a' (10) and 'b' (2): 'b' refuses it, so 'a' keeps its 10."""
    limits = make({"a": Rule(10, 0.001), "b": Rule(2, 0.001)})
    with pytest.raises(RateLimitExceeded):
        limits.acquire("k", 3, max_wait=0, sleep=lambda seconds: None)
    assert close(limits.tokens("k", "a"), 10.0, 0.01)
    assert close(limits.tokens("k", "b"), 2.0, 0.01)


def test_a_charge_beyond_the_largest_debt_saturates_there(admin, make):
    """2**53 + 1,000 owed since 1,000,000 s ago at 0.001/s (2**53 now): a charge of 4
    saturates at 2**53 owed from now; a refund of 5 then leaves 2**53 - 5 (refills of
    less than half a token round away at this size)."""
    rule = Rule(10, 0.001)
    write(admin, "k", -FAR, 2**53 + 1000, rule)
    limits = make(rule)
    assert limits.charge("k", 4).reset_after == 2.0**53 / 0.001
    assert limits.refund("k", 5).reset_after == (2.0**53 - 5) / 0.001
    assert limits.peek("k", 1).reset_after == (2.0**53 - 5) / 0.001


def test_a_rule_written_otherwise_is_the_same_rule(admin, make):
    """A state written under '10' and '0' and read under the default Rule(10.0, 0.0) (sent as
    '10.0' and '0.0'): the same numbers, so the state is not settled again; its instant and its
    rounding carry stay, and a take of 1 leaves 5 short plus the carry 0.25 (6.25), where a
    settle would have dropped the carry (6) and moved t to now."""
    write(admin, "k", -FAR, 5, Rule(10, 0), carry=0.25)
    before = admin.hgetall(PREFIX + "k")
    assert make(Rule(10.0, 0.0)).try_consume("k")
    after = admin.hgetall(PREFIX + "k")
    assert (after["t"], after["u"], after["c"], after["r"]) == (before["t"], "6.25", "10", "0")
