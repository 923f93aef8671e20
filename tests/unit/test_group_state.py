"""One state per key for all of its limits (issue 18 item 1): the in-memory group state.

A key's limits live in one entry of a MemoryStore, decided under one lock; the store's calls on
a limit's store key (``limit_key(key, name)``) address that limit in its group; ``max_keys``
and ``len`` count keys; a request charged to several keys stays all or nothing; the outcomes
of a request whose keys group its limits out of order come back in the limits' order.
"""

from __future__ import annotations

import sys

import pytest

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket._core.keys import limit_key
from tokenbucket._stores.memory.layout import split

LIMITS = {"a": Rule(10, 1.0), "b": Rule(1, 0.001), "c": Rule(10, 1.0)}


def fields(decision):
    return tuple(decision)[:6]


def test_a_key_of_several_limits_is_one_entry():
    """Two limits of one key: one tracked key, both limits addressable by store key."""
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry({"burst": Rule(5, 1.0), "daily": Rule(100, 0.001)}, store=store)
    assert limits.try_consume("alice", 2)
    assert len(store) == 1
    assert limit_key("alice", "burst") in store
    assert limit_key("alice", "daily") in store
    assert "alice" not in store  # the key's single bucket is another bucket
    assert store.level(limit_key("alice", "daily"), Rule(100, 0.001)) == 98


def test_outcomes_come_back_in_the_limits_order_whatever_the_keys_group():
    """Limits a, b, c charged to x, y, x: the store decides the groups x (a, c) and y (b); the
    decision still names b, the limit that denies, and reports its numbers."""
    limits = BucketRegistry(LIMITS, clock=ManualClock(0.0))
    keys = {"a": "x", "b": "y", "c": "x"}
    assert limits.consume(keys).allowed
    assert fields(limits.consume(keys)) == (False, 0.0, 1000.0, 1000.0, 1, "b")
    assert limits.tokens("x", limit="a") == 9
    assert limits.tokens("y", limit="b") == 0
    assert limits.tokens("x", limit="c") == 9


def test_a_shadow_mask_follows_the_limits_out_of_order():
    """The same keys with b in shadow: b never refuses, and the decision says it would have."""
    limits = BucketRegistry(LIMITS, clock=ManualClock(0.0), shadow={"b"})
    keys = {"a": "x", "b": "y", "c": "x"}
    assert limits.consume(keys).shadow_denied == ()
    decision = limits.consume(keys)
    assert decision.allowed
    assert decision.shadow_denied == ("b",)
    assert limits.tokens("x", limit="c") == 8


def test_two_limits_on_one_key_of_a_mapping_share_its_state():
    """{a: k, b: j, c: k}: k holds a and c in one entry, j holds b; three limits, two keys."""
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry(LIMITS, store=store)
    assert limits.try_consume({"a": "k", "b": "j", "c": "k"})
    assert len(store) == 2
    # Then k for every limit: b of k is new (full), added to k's entry, which then takes the
    # hot path (its layout is the registry's again).
    assert limits.try_consume("k")
    assert len(store) == 2
    state = store._grouped[hash("k") & store._mask][0]["k"]
    assert state[0] is limits._group[1]
    assert [limits.tokens("k", limit=name) for name in "abc"] == [8, 0, 8]


def test_a_request_on_two_keys_is_all_or_nothing():
    """User alice (1 token) and org acme (10): alice's denial charges acme nothing."""
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry({"user": Rule(1, 0), "org": Rule(10, 0)}, store=store)
    assert limits.try_consume({"user": "alice", "org": "acme"})
    assert not limits.try_consume({"user": "alice", "org": "acme"})
    assert limits.tokens("acme", limit="org") == 9
    assert limits.try_consume({"user": "bob", "org": "acme"})
    assert limits.tokens("acme", limit="org") == 8


def test_a_changed_default_or_override_leaves_the_hot_path_and_settles():
    """After a default change and an override, decisions settle each limit under its rule."""
    clock = ManualClock(0.0)
    limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(10, 0)}, clock=clock)
    assert limits.try_consume("k", 4)
    limits.update_default(capacity=3, limit="a")  # a: 4 missing of 3, in debt
    assert not limits.try_consume("k", 1)
    assert limits.tokens("k", limit="a") == 0
    limits.update_rule("k", capacity=20, limit="a")  # a: 16 of 20
    assert limits.try_consume("k", 5)
    assert (limits.tokens("k", limit="a"), limits.tokens("k", limit="b")) == (11, 1)
    assert limits.remove_rule("k", limit="a") == Rule(20, 0)
    assert limits.tokens("k", limit="a") == 0  # 9 missing of 3: back in debt
    state = limits.store._grouped[hash("k") & limits.store._mask][0]["k"]
    assert state[0] is limits._group[1]  # under the defaults again: the hot path's layout


def test_reset_of_one_limit_keeps_the_others():
    limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(10, 0)}, clock=ManualClock(0.0))
    assert limits.try_consume("k", 4)
    limits.reset("k", limit="a")
    assert (limits.tokens("k", limit="a"), limits.tokens("k", limit="b")) == (10, 6)
    assert limits.try_consume("k", 1)
    assert (limits.tokens("k", limit="a"), limits.tokens("k", limit="b")) == (9, 5)


def test_the_sweep_forgets_a_key_only_when_all_its_limits_are_full():
    """a refills in 1 s, b in 100 s: the key stays tracked until both are full."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock)
    limits = BucketRegistry({"a": Rule(1, 1.0), "b": Rule(1, 0.01)}, store=store)
    assert limits.try_consume("k")
    clock.advance(2)  # a full, b not

    def sweep_pass():
        store._until_sweep = 0
        store._sweep()

    sweep_pass()
    assert len(store) == 1
    clock.advance(100)  # both full
    sweep_pass()
    assert len(store) == 0
    assert limits.tokens("k", limit="b") == 1


def test_a_first_touch_over_a_limit_is_denied_and_tracks_nothing():
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(2, 1.0)}, store=store)
    assert not limits.try_consume("k", 3)
    assert len(store) == 0
    assert limits.try_consume("k", 2)
    assert len(store) == 1


def test_fractional_sizes_keep_their_carry_in_a_group():
    """A million requests of 0.1 would drift without the error-free sums; ten do not round."""
    limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(20, 0)}, clock=ManualClock(0.0))
    for _ in range(10):
        assert limits.try_consume("k", 0.1)
    assert limits.try_consume("k", 1)  # an int after fractions: the pair (used, carry) path
    assert limits.tokens("k", limit="a") == 8
    assert limits.tokens("k", limit="b") == 18


@pytest.mark.parametrize(
    ("store_key", "expected"),
    [
        (limit_key("k", "a"), ("k", "a")),
        (limit_key("a}b", "x"), ("a}b", "x")),
        (limit_key("", "x"), ("", "x")),
        ("{a\1b}\0x", None),  # not what limit_key writes for any key: a single bucket's key
        ("{k}x", None),
        ("k", None),
        ("/route\0{k}\0x", None),
    ],
)
def test_only_a_limit_keys_canonical_form_names_a_limit(store_key, expected):
    assert split(store_key) == expected


def test_a_non_canonical_limit_like_key_is_a_single_bucket():
    """'{a\\1b}\\0x' is no limit's store key (limit_key never writes it): its own bucket."""
    store = MemoryStore(clock=ManualClock(0.0))
    assert store.take("{a\1b}\0x", 3, Rule(5, 0))[0]
    assert store.level("{a\1b}\0x", Rule(5, 0)) == 2
    assert len(store) == 1
    assert store.level(limit_key("a\1", "x"), Rule(5, 0)) == 5


def test_two_limits_take_little_more_memory_than_one():
    """A state of two limits: the 4-tuple of one bucket plus three slots (under 150 bytes)."""
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(10, 0.1)}, store=store)
    assert limits.try_consume("k")
    state = store._grouped[hash("k") & store._mask][0]["k"]
    assert len(state) == 5
    assert sys.getsizeof(state) == sys.getsizeof((1, 2, 3, 4)) + 8


@pytest.mark.parametrize(("interned", "same"), [(4095, True), (4096, False)])
def test_layouts_are_interned_up_to_4096(monkeypatch, interned, same):
    """Layouts are interned while fewer than 4,096 are (override shapes make more): past that a
    new one is a new object each time (the hot path misses; the general path decides)."""
    from tokenbucket._stores.memory import layout

    shape = Rule(1, 1.0)._shape
    known = {((f"n{index}", shape),): ((f"n{index}", shape),) for index in range(interned)}
    monkeypatch.setattr(layout, "_LAYOUTS", known)
    limits = (("a", Rule(7, 1.0)), ("b", Rule(8, 1.0)))
    assert (layout.layout_of(limits) is layout.layout_of(limits)) is same
    assert layout.layout_of(limits) == (("a", Rule(7, 1.0)._shape), ("b", Rule(8, 1.0)._shape))
