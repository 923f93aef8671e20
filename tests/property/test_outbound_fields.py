"""Reading a server's rate-limit fields: exact values, hostile values, and the waits they plan."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket._edges.outbound.fields import (
    MAX_SERVER_WAIT,
    ServerLimit,
    parse_items,
    pause_for,
    read_fields,
    retry_wait,
)
from tokenbucket._edges.outbound.follow import Follower

NOW = 1_800_000_000.0  # a Unix time in 2027


def test_draft_fields_give_quota_window_remaining_and_reset():
    limit = read_fields(
        [("RateLimit-Policy", '"default";q=20;w=1'), ("RateLimit", '"default";r=19;t=1')], NOW
    )
    assert limit == ServerLimit(20.0, 1.0, 19.0, 1.0, None)
    assert limit.rate == 20.0


def test_several_policies_give_the_smallest_quota_and_the_slowest_rate():
    """burst 10 per 10 s and 1000 per day: following them must exceed neither."""
    limit = read_fields(
        [
            ("ratelimit-policy", '"burst";q=10;w=10, "daily";q=1000;w=86400'),
            ("ratelimit", '"daily";r=0;t=52'),
        ],
        NOW,
    )
    assert limit.limit == 10
    assert limit.rate == pytest.approx(1000 / 86400)
    assert (limit.remaining, limit.reset) == (0, 52)


def test_structured_names_may_hold_commas_and_semicolons():
    assert parse_items('"a,b;c";q=3;w=4, tok;q=1') == {
        "a,b;c": {"q": "3", "w": "4"},
        "tok": {"q": "1"},
    }


def test_legacy_fields_reset_as_seconds_or_as_a_unix_time():
    seconds = read_fields(
        [("X-RateLimit-Limit", "60"), ("X-RateLimit-Remaining", "0"), ("X-RateLimit-Reset", "30")],
        NOW,
    )
    assert seconds == ServerLimit(60.0, None, 0.0, 30.0, None)
    epoch = read_fields([("x-ratelimit-reset", str(int(NOW) + 1800))], NOW)
    assert epoch.reset == 1800


def test_draft_fields_win_over_legacy_ones():
    limit = read_fields(
        [
            ("X-RateLimit-Limit", "500"),
            ("RateLimit-Policy", '"p";q=5;w=5'),
            ("RateLimit", '"p";r=3;t=2'),
            ("X-RateLimit-Remaining", "400"),
        ],
        NOW,
    )
    assert (limit.limit, limit.remaining, limit.reset) == (5, 3, 2)


def test_retry_after_as_seconds_as_a_date_and_in_milliseconds():
    assert read_fields([("Retry-After", "7")], NOW).retry_after == 7
    date = format_datetime(datetime.fromtimestamp(NOW + 120, timezone.utc), usegmt=True)
    assert read_fields([("Retry-After", date)], NOW).retry_after == 120
    both = read_fields([("Retry-After", "2"), ("retry-after-ms", "150")], NOW)
    assert both.retry_after == 0.15  # the finer one


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Retry-After", "-5")], ServerLimit()),
        ([("Retry-After", "nan")], ServerLimit()),
        ([("retry-after-ms", "inf")], ServerLimit(retry_after=MAX_SERVER_WAIT)),
        ([("Retry-After", "1e308")], ServerLimit(retry_after=MAX_SERVER_WAIT)),
        ([("Retry-After", "Thu, 01 Jan 1970 00:00:00 GMT")], ServerLimit(retry_after=0.0)),
        (
            [("Retry-After", "Tue, 01 Jan 3000 00:00:00 GMT")],
            ServerLimit(retry_after=MAX_SERVER_WAIT),
        ),
        ([("Retry-After", "Mon, 99 Foo 99999 99:99:99 GMT")], ServerLimit()),
        ([("X-RateLimit-Reset", "32503680000")], ServerLimit(reset=MAX_SERVER_WAIT)),
        ([("X-RateLimit-Reset", "1000000000")], ServerLimit(reset=0.0)),  # in the past
        ([("RateLimit", '"p";r=-3;t=-1')], ServerLimit()),
        ([("RateLimit-Policy", '"p";q=10;w=0')], ServerLimit(limit=10.0)),
        ([("RateLimit-Policy", '"p";q=NaN;w=1')], ServerLimit()),
        ([("RateLimit-Policy", 'garbage=;;,,"')], ServerLimit()),
        ([("X-RateLimit-Limit", "9" * 400)], ServerLimit()),
    ],
)
def test_hostile_values_are_ignored_or_clamped(headers, expected):
    assert read_fields(headers, NOW) == expected


def test_pause_for_a_refilling_bucket_is_one_request_s_worth():
    """q=20 per w=1 s, r=0 and t=1: the level is >= 20 - 20 * 1 = 0; one token in 0.05 s."""
    assert pause_for(ServerLimit(20, 1, 0, 1)) == pytest.approx(0.05)
    assert pause_for(ServerLimit(20, 1, 3, 1)) == 0  # room left: no pause


def test_pause_for_a_fixed_window_or_an_unknown_one_is_the_whole_reset():
    """q=100 per 60 s with t=40 and r=0 cannot be a bucket (it would hold >= 33): a window."""
    assert pause_for(ServerLimit(100, 60, 0, 40)) == 40
    assert pause_for(ServerLimit(5000, None, 0, 1800)) == 1800


def test_retry_wait_only_for_429_and_503_that_say_when():
    assert retry_wait(429, ServerLimit(retry_after=2)) == 2
    assert retry_wait(503, ServerLimit(retry_after=2)) == 2
    assert retry_wait(503, ServerLimit(remaining=0, reset=5)) is None
    assert retry_wait(429, ServerLimit(remaining=0, reset=5)) == 5
    assert retry_wait(429, ServerLimit()) is None
    assert retry_wait(500, ServerLimit(retry_after=1)) is None


_NAMES = st.sampled_from(
    [
        "RateLimit",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Retry-After",
        "retry-after-ms",
        "Other",
    ]
)
_NUMBERS = st.one_of(
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(
        ["nan", "-inf", "1e309", "0x10", "1_000", " 5 ", "", "Tue, 01 Jan 3000 00:00:00 GMT"]
    ),
)
_ITEMS = st.builds(
    lambda name, q, w, r, t: f'"{name}";q={q};w={w}, x;r={r};t={t}',
    st.text(max_size=5),
    _NUMBERS,
    _NUMBERS,
    _NUMBERS,
    _NUMBERS,
)
_VALUES = st.one_of(_NUMBERS, _ITEMS, st.text(max_size=40))


@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    status=st.sampled_from([200, 429, 503]),
    now=st.floats(0, 4e10),
)
def test_any_header_values_never_raise_and_never_plan_an_unbounded_wait(headers, status, now):
    """Whatever the server sends: no exception, every number finite and >= 0, every duration
    and every planned wait at most MAX_SERVER_WAIT."""
    limit = read_fields(headers, now)
    for value in limit:
        assert value is None or (math.isfinite(value) and value >= 0)
    for duration in (limit.window, limit.reset, limit.retry_after):
        assert duration is None or duration <= MAX_SERVER_WAIT
    assert 0 <= pause_for(limit) <= MAX_SERVER_WAIT
    wait = retry_wait(status, limit)
    assert wait is None or 0 <= wait <= MAX_SERVER_WAIT
    rate = limit.rate
    assert rate is None or (math.isfinite(rate) and rate >= 0)


@given(
    headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
    status=st.sampled_from([200, 429, 503, 500]),
    elapsed=st.floats(0, 100),
    local=st.sampled_from([Rule(1, 1e-6), Rule(20, 20.0), Rule(1e12, 1e12), Rule(1.5, 3.0)]),
)
def test_any_header_values_leave_a_valid_budget(headers, status, elapsed, local):
    """Following any response never raises: the adopted rule is a valid Rule no looser than
    the local one, and the key's next wait is at most the longest pause a field can ask."""
    clock = ManualClock()
    follower = Follower(BucketRegistry(local, clock=clock))
    plan = follower.plan("k", status, headers, elapsed)
    follower.apply("k", plan)
    rule = follower.registry.rule_for("k")
    assert 1 <= rule.capacity <= local.capacity  # a request (one token) always fits
    assert rule.refill_rate <= local.refill_rate
    wait = follower.registry.peek("k").retry_after
    assert wait <= MAX_SERVER_WAIT * (1 + 1e-9) + 1 / rule.refill_rate
