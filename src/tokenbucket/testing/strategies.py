"""Hypothesis strategies for rate-limit tests: valid rules and schedules, and invalid values.

Importing this module imports hypothesis (``pip install 'tokenbucket-ratelimit[testing]'``).

The valid strategies stay inside the ranges where float arithmetic resolves the library's
1e-9-token precision with a wide margin, so an exact model agrees with any correct limiter.
"""

from __future__ import annotations

import math
from typing import Any, List, Tuple

from hypothesis import strategies as st

from .._core.rule import Rule

__all__ = [
    "amounts",
    "capacities",
    "invalid_amounts",
    "invalid_capacities",
    "invalid_refill_rates",
    "refill_rates",
    "rules",
    "schedules",
    "steps",
]

_NOT_NUMBERS: st.SearchStrategy[Any] = st.one_of(
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.complex_numbers(allow_nan=False, allow_infinity=False).filter(lambda z: z.imag != 0),
)


def _positive(max_value: float, min_float: float) -> st.SearchStrategy[float]:
    return st.one_of(
        st.integers(1, min(20, max(1, int(max_value)))),  # the small values people configure
        st.integers(1, max(1, int(max_value))),
        st.floats(min_float, max_value, allow_nan=False, allow_infinity=False),
    )


def capacities(*, max_value: float = 1000.0) -> st.SearchStrategy[float]:
    """Valid capacities: integers and floats in [0.01, ``max_value``]."""
    return _positive(max_value, 0.01)


def refill_rates(*, max_value: float = 1000.0, zero: bool = True) -> st.SearchStrategy[float]:
    """Valid refill rates in [0.001, ``max_value``], and 0 (never refills) unless ``zero=False``."""
    rates = _positive(max_value, 0.001)
    return st.one_of(st.just(0), rates) if zero else rates


def rules(
    *, max_capacity: float = 1000.0, max_rate: float = 1000.0, zero_rate: bool = True
) -> st.SearchStrategy[Rule]:
    """Valid [`Rule`][tokenbucket.Rule] objects."""
    return st.builds(
        Rule, capacities(max_value=max_capacity), refill_rates(max_value=max_rate, zero=zero_rate)
    )


def amounts(*, max_value: float = 50.0) -> st.SearchStrategy[float]:
    """Valid request sizes: integers and floats in [0.001, ``max_value``]."""
    return _positive(max_value, 0.001)


def steps(*, max_value: float = 2000.0) -> st.SearchStrategy[float]:
    """Clock advances in seconds: zero, tiny (near a boundary), ordinary and long ones."""
    return st.one_of(
        st.just(0.0),
        st.floats(1e-12, 1e-6),
        st.floats(0.0, 5.0),
        st.floats(5.0, max_value),
    )


def schedules(
    *, min_size: int = 0, max_size: int = 50, max_amount: float = 50.0
) -> st.SearchStrategy[List[Tuple[float, float]]]:
    """Request schedules: lists of ``(seconds since the previous request, amount)``."""
    return st.lists(
        st.tuples(steps(), amounts(max_value=max_amount)), min_size=min_size, max_size=max_size
    )


def invalid_capacities() -> st.SearchStrategy[Any]:
    """Values ``Rule(capacity=...)`` must reject (TypeError or ValueError)."""
    return st.one_of(
        _NOT_NUMBERS,
        st.sampled_from([0, 0.0, -0.0, math.nan, math.inf, -math.inf]),
        st.integers(max_value=0),
        st.floats(max_value=0.0),
        st.floats(min_value=1e12, exclude_min=True),
    )


def invalid_refill_rates() -> st.SearchStrategy[Any]:
    """Values ``Rule(refill_rate=...)`` must reject (TypeError or ValueError)."""
    return st.one_of(
        _NOT_NUMBERS,
        st.sampled_from([math.nan, math.inf, -math.inf]),
        st.integers(max_value=-1),
        st.floats(max_value=0.0, exclude_max=True),
        st.floats(min_value=1e12, exclude_min=True),
    )


def invalid_amounts() -> st.SearchStrategy[Any]:
    """Values ``try_consume(amount=...)`` must reject (TypeError or ValueError)."""
    return st.one_of(
        _NOT_NUMBERS,
        st.sampled_from([0, 0.0, -0.0, math.nan, math.inf, -math.inf]),
        st.integers(max_value=0),
        st.floats(max_value=0.0),
    )
