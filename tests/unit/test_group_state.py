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
from tokenbucket._core.keys import limit_key, split_limit_key

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


def test_a_state_with_a_fraction_carries_a_twin_of_the_layout():
    """A fraction puts the state under a twin layout (equal, another object): the hot path's
    one ``is`` then sends it to take_all, which adds an int to the (used, carry) pair; once
    every limit is back to an int sum, the state is under the registry's layout again."""
    clock = ManualClock(0.0)
    limits = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(20, 1.0)}, clock=clock)
    store = limits.store
    layout = limits._group[1]

    def state():
        return store._grouped[hash("k") & store._mask][0]["k"]

    assert limits.try_consume("k", 2)
    assert state()[0] is layout
    assert limits.try_consume("k", 0.5)
    assert state()[0] == layout
    assert state()[0] is not layout
    assert state()[2] == (2.5, 0.0)  # a's used: the pair (used, carry)
    assert limits.try_consume("k", 3)  # an int after a fraction: the general path
    assert [limits.tokens("k", limit=name) for name in "ab"] == [4.5, 14.5]
    assert state()[0] is not layout
    assert limits.consume("k", 1).remaining == 3.5  # the general path again
    clock.advance(100.0)  # both full: the next take restarts them at an int
    assert limits.try_consume("k", 1)
    assert state() == (layout, 100.0, 1, 100.0, 1)
    assert limits.try_consume("k", 1)  # the hot path, under the registry's layout
    assert state() == (layout, 100.0, 2, 100.0, 2)


def test_threads_that_make_a_twin_at_once_share_one_kept_twin(monkeypatch):
    """Three threads all miss a layout's twin, then make it: one twin is kept and handed to all,
    and every id `_TWINNED` knows is a kept twin's.

    Regression: each thread kept its own twin in `_TWINNED`; the middle one was held by no
    table, so once its states were gone its id could be a new tuple's, which `_packed` then
    read as a twin of an unrelated layout (a state written under other limits' names).
    """
    import threading

    from tokenbucket._stores.memory import layout as module

    class Missing(dict):
        """The twins table, whose first three lookups wait until all three have missed."""

        meet = threading.Barrier(3)
        counting = threading.Lock()
        waits = 3

        def get(self, key, default=None):
            found = dict.get(self, key, default)
            with self.counting:
                wait = found is None and self.waits > 0
                self.waits -= wait
            if wait:
                self.meet.wait(timeout=10)
            return found

    monkeypatch.setattr(module, "_FRACTIONAL", Missing())
    monkeypatch.setattr(module, "_TWINNED", {})
    layout = (("x", Rule(1_000_003, 1)._shape), ("y", Rule(7, 1)._shape))
    twins: list = []
    threads = [
        threading.Thread(target=lambda: twins.append(module._fractional(tuple(layout))))
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(twins) == 3
    assert all(twin == layout for twin in twins)
    assert len({id(twin) for twin in twins}) == 1
    kept = {id(twin) for twin in module._FRACTIONAL.values()}
    assert set(module._TWINNED) == kept == {id(twins[0])}


@pytest.mark.parametrize("amount", [2, 3])
def test_the_hot_path_of_several_limits_compares_the_whole_amount(amount):
    """A tracked key one token short of ``amount`` in one limit: denied, nothing charged."""
    limits = BucketRegistry({"a": Rule(9, 0), "b": Rule(2 * amount - 1, 0)}, clock=ManualClock(0))
    assert limits.try_consume("k", amount)
    assert not limits.try_consume("k", amount)  # b has amount - 1 left
    assert limits.consume("k", amount - 1).allowed
    assert [limits.tokens("k", limit=name) for name in "ab"] == [10 - 2 * amount, 0]


def test_a_call_on_several_keys_locks_each_of_their_stripes_once_in_order():
    """take_all's locks: every stripe of the call's keys, each once, in index order."""
    store = MemoryStore(clock=ManualClock(0.0))
    limit = (("a", Rule(1, 1.0)),)
    keys = [f"k{index}" for index in range(40)]
    stripes = sorted({hash(key) & store._mask for key in keys})
    assert 1 < len(stripes) < len(keys)  # keys on several stripes, some sharing one
    apart = next(key for key in keys if hash(key) & store._mask != hash(keys[0]) & store._mask)
    calls = [(key, limit) for key in keys], [(keys[0], limit), (apart, limit)], [(keys[0], limit)]
    for call in calls:
        locked = store._lock_groups(call)
        try:
            assert locked == sorted({hash(key) & store._mask for key, _ in call})
            assert all(store._grouped[index][1].locked() for index in locked)
        finally:
            store._unlock(locked)
        assert not any(lock.locked() for _, lock in store._grouped)
    with pytest.raises(ValueError, match="distinct keys"):
        store._lock_groups([("k", limit), ("k", limit)])


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
    assert split_limit_key(store_key) == expected


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


# The hot path of a key's limits, pinned: it answers (not None) where it should, and the state
# it writes is exactly the general path's.


def hot(limits, clock):
    store = MemoryStore(clock=clock)
    return BucketRegistry(limits, store=store), store


def state_of(store, key):
    return store._grouped[hash(key) & store._mask][0][key]


def test_the_hot_path_restarts_a_full_limit_and_adds_to_the_other():
    """a (2, 1/s) full again at 2.0 exactly (restarted at 2.0), b (10, no refill) 2 used: the
    hot path answers, and writes (layout, 2.0, 1, 0.0, 3); then the other way round."""
    clock = ManualClock(0.0)
    limits, store = hot({"a": Rule(2, 1.0), "b": Rule(10, 0)}, clock)
    assert limits.try_consume("k", 2)
    clock.set(2.0)  # a: 2 - 2.0 * 1.0 = 0.0 missing, exactly full
    layout = limits._group[1]
    assert store._try_take_group("k", limits._group, 1) is True
    assert state_of(store, "k") == (layout, 2.0, 1, 0.0, 3)
    limits2, store2 = hot({"b": Rule(10, 0), "a": Rule(2, 1.0)}, ManualClock(0.0))
    assert limits2.try_consume("k", 2)
    store2._clock.set(2.0)
    assert store2._try_take_group("k", limits2._group, 1) is True
    assert state_of(store2, "k") == (limits2._group[1], 0.0, 3, 2.0, 1)


def test_the_hot_path_admits_up_to_the_ceiling_and_no_further():
    """Capacity 10**12: its ceiling is 1e12 as a float, and a request of exactly that passes,
    on a full bucket restarted and on a bucket in use alike; 3 of 2 never does."""
    clock = ManualClock(0.0)
    limits, _ = hot({"a": Rule(10**12, 10**12), "b": Rule(10**12, 0)}, clock)
    assert limits.try_consume("k", 1)
    clock.advance(1)  # a full again (restarts); b 1 used
    assert not limits.try_consume("k", 10**12)  # b: 1 + 1e12 > its ceiling
    assert limits.try_consume("k", 10**12 - 1)  # b: 1.0 + (1e12 - 1) == its ceiling: passes
    pair, _ = hot({"a": Rule(2, 1.0), "b": Rule(2, 1.0)}, ManualClock(0.0))
    assert pair.try_consume("k", 1)
    pair.store._clock.advance(5)  # both full: the restart path
    assert pair.try_consume("k", 3) is False
    assert pair.consume("k", 3).allowed is False
    big, _ = hot({"a": Rule(10**12, 1.0), "b": Rule(10**12, 1.0)}, ManualClock(0.0))
    assert big.try_consume("k", 1)
    big.store._clock.advance(5)  # full: a request of exactly the capacity passes
    assert big.try_consume("k", 10**12) is True


def test_a_denied_first_touch_gives_back_its_room_under_the_cap():
    """max_keys 2: a new key's request above a limit's capacity is denied and takes no room:
    two keys still fit, a third does not; consume on a new key answers allowed."""
    store = MemoryStore(clock=ManualClock(0.0), max_keys=2)
    limits = BucketRegistry({"a": Rule(5, 0), "b": Rule(5, 0)}, store=store)
    assert not limits.try_consume("x", 6)
    assert limits.consume("y").allowed
    assert limits.try_consume("z")
    assert not limits.try_consume("w")
    assert len(store) == 2


def test_keys_charged_or_used_in_shadow_count_once_under_the_cap():
    """max_keys 2, s in shadow: k's second request (s out of tokens) takes no more room, so j
    still fits; then the cap binds."""
    store = MemoryStore(clock=ManualClock(0.0), max_keys=2)
    limits = BucketRegistry({"a": Rule(10, 0), "s": Rule(1, 0)}, store=store, shadow={"s"})
    assert limits.consume("k").allowed
    assert limits.consume("k").shadow_denied == ("s",)
    assert limits.consume("j").allowed
    assert not limits.consume("i").allowed


def test_charges_of_new_keys_count_under_the_cap_and_past_it():
    """max_keys 2: charges of two new keys take the room; a third new key is refused. At the
    cap a charge is tracked past it, and holds its place until the sweep frees it."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock, max_keys=2)
    limits = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(2, 0.001)}, store=store)
    assert limits.charge("x", 1).allowed
    assert limits.charge("y", 1).allowed
    assert not limits.consume("z").allowed
    assert limits.charge("k", 1).allowed  # at the cap: tracked past it, counted once
    assert len(store) == 3
    clock.advance(1500)  # x and y full again (1,000 s); k, charged from empty, 3 short of 2
    store._until_sweep = 0
    store._sweep()
    assert len(store) == 1
    assert limits.consume("z").allowed  # k and z: the cap
    assert not limits.consume("w").allowed

    store = MemoryStore(clock=clock, max_keys=1)
    limits = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(2, 0.001)}, store=store)
    assert limits.consume("x")
    assert limits.charge("k", 2).allowed  # past the cap: k 4 short of b's 2 (4,000 s)
    clock.advance(1500)  # x full again (1,000 s), k not
    store._until_sweep = 0
    store._sweep()
    assert len(store) == 1
    assert not limits.consume("y").allowed  # k holds the cap


def test_a_shadow_reservation_is_decided_by_the_enforced_limits():
    """charge_all with a reservation: the watched limit cannot fit, the enforced one can: the
    call is allowed, and charges the enforced limit only."""
    store = MemoryStore(clock=ManualClock(0.0))
    groups = [("k", (("a", Rule(10, 1.0)), ("s", Rule(1, 0))))]
    assert store.charge_all(groups, 2, 0.0, (False, True)) == (
        True,
        ((True, 8, Rule(10, 1.0)), (False, 1, Rule(1, 0))),
    )
    assert store.charge_all(groups, 2, 0.0, (True, False)) == (
        False,
        ((True, 8, Rule(10, 1.0)), (False, 1, Rule(1, 0))),
    )


def test_a_tracked_key_beside_a_new_one_takes_no_more_room():
    """max_keys 3: alice and acme tracked, then bob (new) with acme (tracked): one more key,
    admitted; a fourth key does not fit."""
    store = MemoryStore(clock=ManualClock(0.0), max_keys=3)
    limits = BucketRegistry({"user": Rule(5, 0), "org": Rule(50, 0)}, store=store)
    assert limits.try_consume({"user": "alice", "org": "acme"})
    assert limits.try_consume({"user": "bob", "org": "acme"})
    assert len(store) == 3
    assert not limits.try_consume({"user": "carol", "org": "acme"})
    assert limits.tokens("acme", limit="org") == 48


def test_a_request_on_two_keys_sweeps_first_when_one_is_new_and_a_step_is_due():
    """After 256 new keys, a request on two tracked keys does not sweep; one with a new key
    does, first (forgetting the full buckets, then deciding)."""
    clock = ManualClock(100.0)
    store = MemoryStore(clock=clock)
    limits = BucketRegistry({"user": Rule(1, 1.0), "org": Rule(2, 1.0)}, store=store)
    for index in range(128):
        assert limits.consume({"user": f"u{index}", "org": f"o{index}"})
    clock.advance(2)  # every bucket full again
    assert limits.consume({"user": "u0", "org": "o0"})  # tracked: no sweep
    assert len(store) == 256
    assert limits.consume({"user": "u1", "org": "new"})
    assert len(store) == 4  # u0 and o0 (in use), u1 (forgotten, then made again) and new


def test_bad_groups_raise_before_anything_is_taken():
    """Repeated keys, or names within a key (two of them or more), raise ValueError; no groups
    admit."""
    store = MemoryStore(clock=ManualClock(0.0))
    rule = Rule(5, 0)
    with pytest.raises(ValueError, match="distinct keys"):
        store.take_all([("k", (("a", rule),)), ("k", (("b", rule),))], 1)
    with pytest.raises(ValueError, match="distinct names"):
        store.take_all([("k", (("a", rule), ("a", rule)))], 1)
    assert len(store) == 0
    assert store.take_all([], 1) == (True, ())


def test_new_defaults_for_every_limit_give_the_state_their_layout():
    """Both limits' defaults changed: the next decision settles both and writes the state
    under the new layout (the hot path's again), not the old one."""
    limits = BucketRegistry({"a": Rule(10, 0), "b": Rule(10, 0)}, clock=ManualClock(0.0))
    assert limits.try_consume("k", 4)
    limits.update_default(capacity=20, limit="a")
    limits.update_default(capacity=30, limit="b")
    assert limits.try_consume("k", 1)
    state = limits.store._grouped[hash("k") & limits.store._mask][0]["k"]
    assert state[0] is limits._group[1]
    assert (limits.tokens("k", limit="a"), limits.tokens("k", limit="b")) == (15, 25)


def test_a_request_on_two_keys_at_the_cap_steps_by_time():
    """Four keys fill the cap; all full again 2 s later, a request on two new keys steps the
    sweep by time (no count is due), frees room and is admitted."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock, max_keys=4)
    limits = BucketRegistry({"user": Rule(1, 1.0), "org": Rule(1, 1.0)}, store=store)
    assert limits.consume({"user": "u0", "org": "o0"}).allowed
    assert limits.consume({"user": "u1", "org": "o1"}).allowed
    clock.advance(2)
    assert limits.consume({"user": "u2", "org": "o2"}).allowed
    assert len(store) == 2


def test_a_request_on_two_keys_with_one_new_at_255_does_not_sweep_yet():
    """255 new keys so far: a request on a tracked key and a new one does not call the sweep
    (one key is left before a step is due)."""
    calls = []

    class Counting(MemoryStore):
        __slots__ = ()

        def _sweep(self):
            calls.append(len(self))
            super()._sweep()

    clock = ManualClock(100.0)
    store = Counting(clock=clock)
    limits = BucketRegistry({"user": Rule(1, 1.0), "org": Rule(2, 1.0)}, store=store)
    for index in range(127):
        assert limits.consume({"user": f"u{index}", "org": f"o{index}"})
    assert limits.consume("x")  # one key for both limits: 255 keys
    assert len(store) == 255
    clock.advance(1)  # u0 has its token again
    assert limits.consume({"user": "u0", "org": "new"})
    assert len(store) == 256
    assert calls == []


def test_only_limit_keys_of_tracked_limits_are_in_the_store():
    store = MemoryStore(clock=ManualClock(0.0))
    limits = BucketRegistry({"a": Rule(5, 1.0), "b": Rule(5, 1.0)}, store=store)
    assert limits.try_consume({"a": "k", "b": "j"})
    assert limit_key("k", "a") in store
    assert limit_key("k", "b") not in store  # k is tracked, with a only
    assert limit_key("nobody", "a") not in store
    assert 12 not in store


def test_a_first_touch_of_exactly_the_capacity_passes():
    """Capacity 10**12: its ceiling is 1e12 as a float; a new key's request of it passes."""
    limits = BucketRegistry(Rule(10**12, 1.0), clock=ManualClock(0.0))
    assert limits.try_consume("k", 10**12) is True
    assert limits.try_consume("k", 1) is False


def test_the_sweep_keeps_a_bucket_that_is_not_full():
    """At clock 100, 5 of 10 taken, 1 s later 4 short: a sweep pass keeps it, level intact."""
    clock = ManualClock(100.0)
    store = MemoryStore(clock=clock)
    single = BucketRegistry(Rule(10, 1.0), store=store)
    several = BucketRegistry({"a": Rule(10, 1.0), "b": Rule(10, 2.0)}, store=store)
    assert single.consume("k", 5)
    assert several.consume("g", 5)
    clock.advance(1)
    store._until_sweep = 0
    store._sweep()
    assert len(store) == 2
    assert single.tokens("k") == 6
    assert several.tokens("g", limit="b") == 7


def test_at_the_cap_a_step_that_freed_nothing_waits_for_a_group_to_be_full():
    """max_keys 1, k's limits full again in 1 s and 10 s: a new key at the cap steps, frees
    nothing, and the next step by time waits until k is full, at 10 s."""
    clock = ManualClock(0.0)
    store = MemoryStore(clock=clock, max_keys=1)
    limits = BucketRegistry({"a": Rule(1, 1.0), "b": Rule(1, 0.1)}, store=store)
    assert limits.consume("k").allowed
    assert not limits.consume("j").allowed
    assert store._reclaim_at == 10.0
