"""Differential tests: the in-memory store's fast paths decide exactly as its general path.

A registry whose store is exactly a `MemoryStore` decides ``try_consume`` and ``consume`` of an
int amount in ``MemoryStore._try_take`` (and, with several limits, ``_try_take_group``); one
whose store is a subclass goes through the protocol's ``take``/``take_all`` (the registry binds
the private fast paths only to the exact class). The two registries get the same calls on the
same clock readings, and every answer must be equal: bools, whole decisions, levels. The
operations cover what sends the fast paths elsewhere: overrides, default changes, a clock
stepped back, fractional amounts and charges (a carry), resets, and the ``max_keys`` cap.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule


class GeneralStore(MemoryStore):
    """A MemoryStore the registry does not recognise as one: every call takes the general path."""

    __slots__ = ()


KEYS = st.sampled_from(["a", "b", "c"])
INTS = st.integers(1, 12)
AMOUNTS = INTS | st.sampled_from([0.5, 1.25, 3.0, 7.75])
CAPACITIES = st.sampled_from([1, 2, 5, 10, 2.5, 7.5])
RATES = st.sampled_from([0, 0.5, 1, 3, 0.25])

OPERATIONS = st.one_of(
    st.tuples(st.just("try"), KEYS, AMOUNTS),
    st.tuples(st.just("consume"), KEYS, AMOUNTS),
    st.tuples(st.just("advance"), st.sampled_from([0.25, 0.5, 1.0, 3.0, -0.5, -2.0])),
    st.tuples(st.just("update"), KEYS, CAPACITIES, RATES),
    st.tuples(st.just("remove"), KEYS),
    st.tuples(st.just("default"), CAPACITIES, RATES),
    st.tuples(st.just("charge"), KEYS, AMOUNTS),
    st.tuples(st.just("reset"), KEYS),
)


def apply(registry: BucketRegistry, clock: ManualClock, operation: Tuple[Any, ...]) -> Any:
    """Run one operation; return what it answered (comparable with ==)."""
    kind, *args = operation
    if kind == "advance":
        clock.set(max(0.0, clock() + args[0]))
        return clock()
    if kind == "try":
        return registry.try_consume(args[0], args[1])
    if kind == "consume":
        return registry.consume(args[0], args[1])
    if kind == "update":
        key, capacity, rate = args
        if len(registry.limits) > 1:
            return registry.update_rule(key, capacity=capacity, refill_rate=rate, limit="y")
        return registry.update_rule(key, capacity=capacity, refill_rate=rate)
    if kind == "remove":
        limit = "y" if len(registry.limits) > 1 else None
        return registry.remove_rule(args[0], limit)
    if kind == "default":
        limit = "x" if len(registry.limits) > 1 else None
        return registry.update_default(capacity=args[0], refill_rate=args[1], limit=limit)
    if kind == "charge":
        return registry.charge(args[0], args[1])
    registry.reset(args[0])
    return None


def levels(registry: BucketRegistry) -> List[float]:
    """Every key's level in every limit."""
    return [registry.tokens(key, name) for key in "abc" for name in registry.limits]


def twins(
    default: Any, max_keys: Optional[int]
) -> Tuple[BucketRegistry, BucketRegistry, ManualClock, ManualClock]:
    """A registry on the fast paths and one on the general path, each with its clock."""
    fast_clock, general_clock = ManualClock(1.0), ManualClock(1.0)
    fast = BucketRegistry(default, store=MemoryStore(clock=fast_clock, max_keys=max_keys))
    general = BucketRegistry(default, store=GeneralStore(clock=general_clock, max_keys=max_keys))
    return fast, general, fast_clock, general_clock


@settings(max_examples=300, deadline=None)
@given(
    capacity=CAPACITIES,
    rate=RATES,
    max_keys=st.none() | st.integers(1, 3),
    operations=st.lists(OPERATIONS, max_size=40),
)
def test_one_limit_fast_path_decides_as_take(capacity, rate, max_keys, operations):
    """try_consume and consume on the fast path answer exactly what take answers."""
    fast, general, fast_clock, general_clock = twins(Rule(capacity, rate), max_keys)
    assert type(fast._fast) is MemoryStore
    assert type(general._fast) is not MemoryStore
    for operation in operations:
        assert apply(fast, fast_clock, operation) == apply(general, general_clock, operation), (
            operation
        )
        assert levels(fast) == levels(general)


@settings(max_examples=200, deadline=None)
@given(
    capacity=CAPACITIES,
    rate=RATES,
    max_keys=st.none() | st.integers(1, 3),
    operations=st.lists(OPERATIONS, max_size=40),
)
def test_two_limits_fast_path_decides_as_take_all(capacity, rate, max_keys, operations):
    """The same with two limits: try_consume and consume against take_all."""
    default = {"x": Rule(capacity, rate), "y": Rule(5, 1)}
    fast, general, fast_clock, general_clock = twins(default, max_keys)
    for operation in operations:
        assert apply(fast, fast_clock, operation) == apply(general, general_clock, operation), (
            operation
        )
        assert levels(fast) == levels(general)


def test_consume_on_the_fast_path_reports_the_outcome_of_take():
    """A hot key's consume (the fast path's outcome) reports the level, waits and limit."""
    clock = ManualClock(0.0)
    registry = BucketRegistry(Rule(5, 1.0), clock=clock)
    assert registry.consume("k", 2) == (True, 3.0, 0.0, 2.0, 5, "default", ())
    clock.advance(1.0)
    assert registry.consume("k") == (True, 3.0, 0.0, 2.0, 5, "default", ())
    assert registry.consume("k", 4) == (False, 3.0, 1.0, 2.0, 5, "default", ())
    clock.advance(10.0)  # full again: restarts
    assert registry.consume("k", 5) == (True, 0.0, 0.0, 5.0, 5, "default", ())
    clock.set(9.0)  # stepped back behind the bucket's instant: a denial waits for the clock
    assert registry.consume("k") == (False, 0.0, 3.0, 7.0, 5, "default", ())
    assert registry.consume("k", 6) == (False, 0.0, float("inf"), 7.0, 5, "default", ())
    registry.update_rule("k", capacity=8)
    clock.set(20.0)
    assert registry.consume("k", 3) == (True, 5.0, 0.0, 3.0, 8, "default", ())
