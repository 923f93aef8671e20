"""A charge at a MemoryStore's ``max_keys`` cap (issue 22): a key without a bucket is an empty
bucket there, and a charge on it is recorded (tracked past the cap), so that its debt is not
forgotten once there is room again. Each test failed before its fix."""

from __future__ import annotations

import pytest

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, RateLimitExceeded, Rule

LIMITS = {"one": Rule(2, 1.0), "two": Rule(2, 1.0)}


def at_cap(default):
    """A store at its cap of 2 keys, a and x (a key counts once, whatever its limits; full
    again in 1 s)."""
    clock = ManualClock(100.0)
    store = MemoryStore(clock=clock, max_keys=2)
    registry = BucketRegistry(default, store=store)
    assert registry.consume("a")
    assert registry.consume("x")
    assert len(store) == 2
    return registry, store, clock


@pytest.mark.parametrize("default", [Rule(2, 1.0), LIMITS], ids=["one limit", "several"])
def test_a_charge_at_the_cap_is_recorded_and_its_debt_kept(default):
    registry, _, clock = at_cap(default)
    after = registry.charge("b", 5)
    assert (after.remaining, after.retry_after) == (0, 6.0)  # an empty bucket, 5 in debt
    names = ["one", "two"] if default is LIMITS else [None]
    assert [registry.tokens("b", limit=name) for name in names] == [0] * len(names)
    clock.advance(2)  # a and x are full again (forgettable); b is still 3 in debt
    # A new key at the cap: a sweep step drops the full keys, a and x: room again.
    assert registry.consume("c").allowed
    assert not registry.consume("b")  # its debt was kept: no fresh bucket
    clock.advance(4)  # b at 1
    assert not registry.consume("b", 1.5)
    assert registry.consume("b", 1)


def test_a_reservation_at_the_cap_is_still_refused():
    """A reservation (acquire) of an untracked key at the cap is refused, as a take is."""
    registry, store, _ = at_cap(Rule(2, 1.0))
    with pytest.raises(RateLimitExceeded):
        registry.acquire("b", max_wait=100)
    assert "b" not in store
    assert len(store) == 2


def test_a_settle_at_the_cap_keeps_its_extra_cost():
    """A reservation whose bucket was forgotten (full again) before it was settled at the cap:
    the settle's extra charge is recorded, not lost."""
    clock = ManualClock(100.0)
    store = MemoryStore(clock=clock, max_keys=1)
    registry = BucketRegistry(Rule(2, 1.0), store=store)
    reservation = registry.reserve("b", 1)
    clock.advance(5)
    store.reset("b")
    store._sweep()  # b is full, and forgotten
    assert "b" not in store
    assert registry.consume("a")  # the cap binds again
    assert reservation.settle(4).remaining == 0  # 3 more: recorded on an empty bucket
    assert "b" in store
    assert store.level("b", Rule(2, 1.0)) == -3
