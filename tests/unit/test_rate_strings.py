"""Rate strings ("10/second", "5/minute;100/day") wherever a Rule is accepted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, RateLimitExceeded, Rule, rate_limit
from tokenbucket.wsgi import RateLimitMiddleware

limits = pytest.importorskip("limits")


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("10/second", Rule(10, 10.0)),
        ("10/s", Rule(10, 10.0)),
        ("10/sec", Rule(10, 10.0)),
        ("10/min", Rule.per(10, 60)),
        ("10/m", Rule.per(10, 60)),
        ("5 per minute", Rule.per(5, 60)),
        ("10 per 2 minutes", Rule.per(10, 120)),
        ("10/5m", Rule.per(10, 300)),
        ("100/day", Rule.per(100, 86400)),
        ("100/d", Rule.per(100, 86400)),
        ("3/h", Rule.per(3, 3600)),
        ("1000/month", Rule.per(1000, 30 * 86400)),
        ("1000/mo", Rule.per(1000, 30 * 86400)),
        ("2/year", Rule.per(2, 360 * 86400)),
        ("10PER2MINUTES", Rule.per(10, 120)),
    ],
)
def test_parse_spellings(text, rule):
    assert Rule.parse(text) == rule


@pytest.mark.parametrize(
    "text", ["10/ms", "10/fortnight", "5/minute;100/day", "10 per", "-1/second", "10/0s"]
)
def test_parse_refuses_with_the_grammar(text):
    with pytest.raises(ValueError, match="rate string") as caught:
        Rule.parse(text)
    assert repr(text) in str(caught.value)


def test_parse_many_names_are_canonical():
    parsed = Rule.parse_many("5/min; 100 per day, 10 per 2 minutes | 1000/mo;")
    assert parsed == {
        "5/minute": Rule.per(5, 60),
        "100/day": Rule.per(100, 86400),
        "10/2minutes": Rule.per(10, 120),
        "1000/month": Rule.per(1000, 30 * 86400),
    }


def test_parse_many_refuses_a_name_twice_and_nothing():
    with pytest.raises(ValueError, match="names the limit '5/minute' twice"):
        Rule.parse_many("5/min;5/minute")
    with pytest.raises(ValueError, match="rate string"):
        Rule.parse_many(" ; ")
    with pytest.raises(TypeError, match="'text' must be a str"):
        Rule.parse_many(5)  # type: ignore[arg-type]


_UNITS = ["second", "minute", "hour", "day", "month", "year"]


@given(
    st.lists(
        st.tuples(
            st.integers(1, 10**6),
            st.sampled_from(["/", " per ", "per", " / "]),
            st.one_of(st.none(), st.integers(1, 100)),
            st.sampled_from(_UNITS),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda item: (item[0], item[2] or 1, item[3]),
    ),
    st.sampled_from([";", ",", "|", " ; "]),
)
def test_accepts_what_limits_parse_many_accepts(parts, separator):
    """Every string limits.parse_many reads, we read as the same amounts per the same periods."""
    text = separator.join(
        f"{amount}{slash}{'' if count is None else count}{' ' if count else ''}{unit}"
        f"{'s' if plural else ''}"
        for amount, slash, count, unit, plural in parts
    )
    theirs = limits.parse_many(text)
    ours = Rule.parse_many(text)
    assert len(ours) == len(theirs)
    for rule, item in zip(ours.values(), theirs):
        assert rule == Rule.per(item.amount, item.get_expiry())


def test_registry_takes_a_string():
    clock = ManualClock()
    one = BucketRegistry("2/second", clock=clock)
    assert one.default == Rule(2, 2.0)
    assert [one.try_consume("k") for _ in range(3)] == [True, True, False]
    several = BucketRegistry("5/minute;100/day", clock=clock)
    assert several.defaults == {"5/minute": Rule.per(5, 60), "100/day": Rule.per(100, 86400)}
    decisions = [several.consume("k") for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].policy == "5/minute"
    mapped = BucketRegistry({"burst": "10/s", "daily": Rule.per(1000, 86400)}, clock=clock)
    assert mapped.defaults["burst"] == Rule(10, 10.0)


def test_wrong_types_name_rule_parse_and_the_grammar():
    for attempt in (
        lambda: BucketRegistry(10),  # type: ignore[arg-type]
        lambda: BucketRegistry({"a": 10}),  # type: ignore[dict-item]
        lambda: rate_limit(10),  # type: ignore[arg-type]
        lambda: RateLimitMiddleware(
            lambda e, s: [],
            registry=BucketRegistry("1/s"),
            routes={"/login": 3},  # type: ignore[dict-item]
        ),
    ):
        with pytest.raises(TypeError, match=r"Rule\.parse") as caught:
            attempt()
        assert "'10/second'" in str(caught.value)
        assert "'5/minute;100/day'" in str(caught.value)
        assert "'10 per 2 minutes'" in str(caught.value)


def test_rate_limit_and_routes_take_strings():
    clock = ManualClock()

    @rate_limit(BucketRegistry("2/second", clock=clock))
    def ping():
        return "pong"

    assert ping() == ping() == "pong"
    with pytest.raises(RateLimitExceeded):
        ping()

    @rate_limit("1/minute;5/day")
    def once():
        return 1

    assert once() == 1
    with pytest.raises(RateLimitExceeded) as caught:
        once()
    assert caught.value.decision.policy == "1/minute"

    statuses = []

    def app(environ, start_response):
        start_response("200 OK", [])
        return [b""]

    middleware = RateLimitMiddleware(
        app, registry=BucketRegistry("100/s", clock=clock), routes={"/login": "3/minute"}
    )
    for _ in range(4):
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/login", "REMOTE_ADDR": "192.0.2.1"}
        middleware(environ, lambda status, headers, exc=None: statuses.append(status))
    assert statuses == ["200 OK"] * 3 + ["429 Too Many Requests"]
