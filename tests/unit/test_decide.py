"""`decide` writes out `wait` and `clamp` (it builds every consume's decision): it must give
exactly what they give, for any outcome a store can report."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import Decision, Rule
from tokenbucket._core.arith import wait
from tokenbucket._core.decision import clamp, decide

levels = st.one_of(
    st.floats(min_value=-1e6, max_value=1e12, allow_nan=False),
    st.integers(min_value=-1000, max_value=10**12),
    st.sampled_from([0, 0.0, -0.0, 5e-324, -5e-324]),
)
rules = st.builds(
    Rule,
    st.sampled_from([1e-3, 0.5, 1, 3, 10.5, 1e12]),
    st.sampled_from([0, 0.0, 1e-9, 1 / 3, 1, 7.5, 1e12]),
)


@given(st.booleans(), levels, st.sampled_from([1, 2, 0.25, 10.0, 2**53]), rules)
def test_decide_is_wait_and_clamp_written_out(allowed, level, amount, rule):
    got = decide(allowed, level, amount, rule, "p")
    if allowed:
        retry_after = 0.0
    elif amount > rule.capacity:
        retry_after = math.inf
    else:
        retry_after = wait(amount - level, rule.refill_rate)
    reset_after = wait(rule.capacity - level, rule.refill_rate)
    want = Decision(allowed, clamp(level), retry_after, reset_after, rule.capacity, "p", ())
    assert got == want
    assert type(got) is Decision
    assert [type(field) for field in got[1:4]] == [type(field) for field in want[1:4]]
