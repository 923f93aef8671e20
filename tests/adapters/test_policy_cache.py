"""The several-limit ``RateLimit-Policy`` value is built once per set of limits and binding
rule, and follows every change of the limits (new defaults, a limit put in or out of shadow)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, Decision, ManualClock, Rule
from tokenbucket._http.headers import RAW, TEXT, PolicyFields

DAY = 86400


def test_the_value_follows_new_defaults_and_shadow(make):
    clock = ManualClock()
    registry = BucketRegistry({"burst": Rule(2, 1.0), "daily": Rule.per(5, DAY)}, clock=clock)
    h = make(registry=registry)
    assert h.request().header("RateLimit-Policy") == '"burst";q=2;w=2, "daily";q=5;w=86400'
    registry.update_default(limit="daily", capacity=50)
    assert h.request().header("RateLimit-Policy") == '"burst";q=2;w=2, "daily";q=50;w=864000'
    registry.set_shadow("burst", True)
    assert h.request().header("RateLimit-Policy") == '"daily";q=50;w=864000'
    registry.set_shadow("burst", False)
    registry.update_default(limit="burst", refill_rate=0.5)
    assert h.request().header("RateLimit-Policy") == '"burst";q=2;w=4, "daily";q=50;w=864000'


def test_the_value_is_built_once_for_equal_limits():
    """The same value object comes back for equal limits (a fresh dict per request), in both
    forms; other limits get their own value."""
    fields = PolicyFields("p", limits=dict)
    decision = Decision(True, 1.0, 0.0, 1.0, 2.0, "burst")
    first = fields.several_values(decision, {"burst": Rule(2, 1), "daily": Rule(5, 1)}, TEXT)
    again = fields.several_values(decision, {"burst": Rule(2, 1), "daily": Rule(5, 1)}, TEXT)
    assert first == ('"burst";q=2;w=2, "daily";q=5;w=5', '"burst"')
    assert again[0] is first[0]
    raw = fields.several_values(decision, {"burst": Rule(2, 1), "daily": Rule(5, 1)}, RAW)
    assert raw == (b'"burst";q=2;w=2, "daily";q=5;w=5', b'"burst"')
    other = fields.several_values(decision, {"burst": Rule(2, 1), "daily": Rule(6, 1)}, TEXT)
    assert other[0] == '"burst";q=2;w=2, "daily";q=6;w=6'


rules = st.builds(
    Rule, st.sampled_from([1, 2, 5, 10.5]), st.sampled_from([0.0, 0.5, 1.0, 1 / 3, 2.0])
)
calls = st.tuples(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), rules, min_size=1),
    st.sampled_from(["a", "b", "c"]),
    st.booleans(),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([0.0, 0.5, 1.0, 4.0, math.inf]),
    st.sampled_from([1.0, 2.0, 5.0, 10.5, 20.0]),
    st.sampled_from([TEXT, RAW]),
)


@given(st.lists(calls, min_size=1, max_size=30))
def test_a_kept_value_is_the_one_a_fresh_build_gives(sequence):
    """Whatever came before, the kept value equals the one built without any kept value."""
    kept = PolicyFields("p", limits=dict)
    for limits, binding, allowed, remaining, reset_after, limit, form in sequence:
        decision = Decision(allowed, min(remaining, limit), 0.0, reset_after, limit, binding)
        fresh = PolicyFields("p", limits=dict).several_values(decision, dict(limits), form)
        assert kept.several_values(decision, dict(limits), form) == fresh
