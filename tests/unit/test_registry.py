import asyncio
import math

import pytest

from tokenbucket import BucketRegistry, Decision, ManualClock, MemoryStore, Rule

IP = "203.0.113.7"
OTHER = "198.51.100.1"


def make(capacity=10, refill_rate=1.0, **options):
    clock = ManualClock()
    return BucketRegistry(Rule(capacity, refill_rate), clock=clock, **options), clock


class TestKeys:
    def test_keys_are_independent(self):
        """Each key has its own bucket under the default rule."""
        registry, _ = make(2, 1.0)
        assert [registry.try_consume(IP) for _ in range(3)] == [True, True, False]
        assert registry.try_consume(OTHER)
        assert registry.tokens(OTHER) == 1.0
        assert registry.tokens("never-seen") == 2.0

    def test_consume_and_peek(self):
        """consume() returns a Decision; peek() returns the same without taking tokens."""
        registry, _ = make(5, 0.5)
        assert registry.consume(IP, 2) == Decision(True, 3.0, 0.0, 4.0, 5)
        assert registry.peek(IP, 4) == Decision(False, 3.0, 2.0, 4.0, 5)
        assert registry.tokens(IP) == 3.0

    def test_amount_is_positional(self):
        """try_consume(key, 2) takes two tokens."""
        registry, _ = make(3, 0)
        assert registry.try_consume(IP, 2)
        assert not registry.try_consume(IP, 2)

    @pytest.mark.parametrize("key", [None, 1, b"ip", ("a",)])
    def test_key_must_be_str(self, key):
        """Non-str keys raise TypeError naming 'key'."""
        registry, _ = make()
        with pytest.raises(TypeError, match=r"^'key' must be a str, got "):
            registry.try_consume(key)
        with pytest.raises(TypeError, match=r"^'key' must be a str"):
            registry.consume(key)

    def test_bad_amount_changes_nothing(self):
        """An invalid amount raises and the bucket is untouched."""
        registry, _ = make()
        registry.consume(IP, 3)
        for bad in (0, -2, math.nan, True):
            with pytest.raises((ValueError, TypeError), match="'amount'"):
                registry.try_consume(IP, bad)
        assert registry.tokens(IP) == 7.0

    @pytest.mark.parametrize("method", ["try_consume", "consume", "peek"])
    def test_huge_integer_amount_is_denied_not_an_overflow(self, method):
        """An int too large for a float is denied on a fractional level, never OverflowError."""
        registry, _ = make()
        registry.consume(IP, 0.5)
        assert not getattr(registry, method)(IP, 10**400)
        assert registry.tokens(IP) == 9.5

    def test_default_rule_validated(self):
        """The default must be a Rule."""
        with pytest.raises(
            TypeError, match="'default' must be a Rule, a mapping of limit names to Rules, or a"
        ):
            BucketRegistry(10)  # type: ignore[arg-type]

    def test_store_options_need_default_store(self):
        """clock/max_keys go to the store you pass, not next to it."""
        with pytest.raises(TypeError, match="configure the default store"):
            BucketRegistry(Rule(1, 1), store=MemoryStore(), clock=ManualClock())

    def test_default_keyword_and_repr(self):
        """default= works as a keyword; repr names the default rule."""
        registry = BucketRegistry(default=Rule(4, 2.0))
        assert registry.default == Rule(4, 2.0)
        assert repr(registry).startswith("BucketRegistry(Rule(capacity=4, refill_rate=2.0), store=")


class TestOverrides:
    def test_update_rule_for_a_new_key_is_a_full_new_bucket(self):
        """Raising a fresh client's capacity to 50 lets it make 50 requests at once."""
        registry, _ = make(10, 1.0)
        assert registry.update_rule(IP, capacity=50, refill_rate=10.0) == Rule(50, 10.0)
        assert sum(registry.try_consume(IP) for _ in range(60)) == 50
        assert registry.rule_for(IP) == Rule(50, 10.0)
        assert registry.rule_for(OTHER) == Rule(10, 1.0)

    def test_update_rule_settles_then_switches(self):
        """Tokens earned at the old rate are credited; the deficit carries over."""
        registry, clock = make(10, 1.0)
        registry.consume(IP, 10)
        clock.set(3.0)
        registry.update_rule(IP, capacity=50, refill_rate=10.0)
        assert registry.tokens(IP) == 43.0  # 7 missing at t=3, still 7 missing of 50
        clock.set(3.5)
        assert registry.tokens(IP) == 48.0

    def test_partial_update_keeps_current_fields(self):
        """An omitted field keeps the key's current value (override or default)."""
        registry, _ = make(10, 1.0)
        assert registry.update_rule(IP, capacity=20) == Rule(20, 1.0)
        assert registry.update_rule(IP, refill_rate=5) == Rule(20, 5)

    def test_remove_rule_returns_to_default(self):
        """remove_rule drops the override, settles, and returns the dropped rule."""
        registry, clock = make(10, 1.0)
        registry.update_rule(IP, capacity=50, refill_rate=10.0)
        registry.consume(IP, 45)
        clock.set(1.0)  # 35 missing of 50
        assert registry.remove_rule(IP) == Rule(50, 10.0)
        assert registry.rule_for(IP) == Rule(10, 1.0)
        assert registry.tokens(IP) == 0.0  # 35 missing of 10: in debt by 25
        assert registry.peek(IP).retry_after == 26.0
        assert registry.remove_rule(IP) is None

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({}, ValueError, "at least one of 'capacity' or 'refill_rate' is required"),
            ({"capacity": 0}, ValueError, "'capacity' must be a finite number > 0, got 0"),
            ({"capacity": 5, "refill_rate": -1}, ValueError, "'refill_rate' must be a finite"),
            ({"capacity": math.inf}, ValueError, "'capacity' must be a finite number > 0, got inf"),
            ({"capacity": "50"}, TypeError, "'capacity' must be a number, got '50' (str)"),
            ({"capacity": 5, "refill_rate": "x"}, TypeError, "'refill_rate' must be a number"),
        ],
    )
    def test_invalid_update_changes_nothing(self, kwargs, error, message):
        """A rejected update_rule leaves the override, the level and the rate untouched."""
        registry, clock = make(10, 1.0)
        registry.update_rule(IP, capacity=20)
        registry.consume(IP, 5)
        with pytest.raises(error) as info:
            registry.update_rule(IP, **kwargs)
        assert str(info.value).startswith(message)
        assert registry.rule_for(IP) == Rule(20, 1.0)
        assert registry.tokens(IP) == 15.0
        clock.advance(1)
        assert registry.tokens(IP) == 16.0

    def test_reset_refills_but_keeps_override(self):
        """reset() makes the key's bucket full; its override stays."""
        registry, _ = make(10, 1.0)
        registry.update_rule(IP, capacity=3)
        registry.consume(IP, 3)
        registry.reset(IP)
        assert registry.tokens(IP) == 3.0
        assert registry.rule_for(IP) == Rule(3, 1.0)


class TestDefaultChanges:
    def test_new_default_applies_to_new_and_full_keys(self):
        """Keys without a bucket, or full ones, are full under the new default."""
        registry, _ = make(10, 1.0)
        registry.try_consume(IP)  # 9 left
        assert registry.update_default(capacity=20) == Rule(20, 1.0)
        assert registry.default == Rule(20, 1.0)
        assert registry.tokens(OTHER) == 20.0
        assert registry.tokens(IP) == 19.0  # deficit of 1 carried over

    def test_settled_at_old_rule_until_first_read(self):
        """A bucket is settled under the rule it was written with when next read."""
        registry, clock = make(10, 1.0)
        registry.consume(IP, 10)
        clock.set(2.0)
        registry.update_default(refill_rate=0.0)
        clock.set(4.0)
        # Written under rate 1 at t=0 and first read at t=4: 4 tokens, then no more.
        assert registry.consume(IP).remaining == 3.0
        clock.set(100.0)
        assert registry.tokens(IP) == 3.0

    @pytest.mark.parametrize("change", ["update_rule", "remove_rule", "update_default"])
    def test_rule_change_while_the_clock_is_behind_earns_nothing(self, change):
        """Settling at a clock reading before the bucket's last one keeps that last reading.

        Without any rule change the bucket earns nothing until the clock is past its last
        reading again; a rule change in between must not turn the gap into refill time.
        """
        registry, clock = make(10, 1.0)
        clock.set(100.0)
        if change == "remove_rule":
            registry.update_rule(IP, capacity=10)
        registry.consume(IP, 10)
        clock.set(50.0)
        if change == "update_rule":
            registry.update_rule(IP, refill_rate=1.0)
        elif change == "remove_rule":
            registry.remove_rule(IP)
        else:
            registry.update_default(capacity=10)
            assert not registry.consume(IP, 0.5).allowed  # the first read settles it
        clock.set(60.0)
        assert registry.tokens(IP) == 0.0
        assert not registry.consume(IP).allowed
        clock.set(101.0)
        assert registry.tokens(IP) == 1.0

    def test_overrides_ignore_default_changes(self):
        """A key with an override is not affected by the default changing."""
        registry, _ = make(10, 1.0)
        registry.update_rule(IP, capacity=5)
        registry.update_default(capacity=100, refill_rate=100.0)
        assert registry.rule_for(IP) == Rule(5, 1.0)
        assert registry.tokens(IP) == 5.0

    def test_update_default_needs_a_field(self):
        """update_default() with no field raises and changes nothing."""
        registry, _ = make(10, 1.0)
        with pytest.raises(ValueError, match="at least one"):
            registry.update_default()
        with pytest.raises(ValueError, match="'capacity'"):
            registry.update_default(capacity=-5, refill_rate=2.0)
        assert registry.default == Rule(10, 1.0)


class TestForgetting:
    def test_full_buckets_are_forgotten(self):
        """Buckets that refilled are dropped by the sweep; active ones stay."""
        registry, clock = make(2, 1.0)
        store = registry.store
        assert isinstance(store, MemoryStore)
        for i in range(100):
            registry.try_consume(f"old-{i}")
        assert len(store) == 100
        clock.advance(1.0)  # every old bucket is full again
        registry.try_consume("active", 2)
        for i in range(1100):  # enough new keys for a sweep (every 1,024 at the least)
            registry.try_consume(f"new-{i}")
        assert len(store) <= 1101
        assert not any(key.startswith("old-") for key in store._keys)
        assert registry.tokens("active") == 0.0

    def test_a_step_after_one_that_forgot_moves_its_keys_down(self):
        """Every tracked key stays listed once when a pass's first step forgets keys and the
        next forgets none (the second step must still move its keys down over the gap)."""
        clock = ManualClock(0.0)
        store = MemoryStore(clock=clock)
        store._until_sweep = 10**6  # no step while the keys come in
        full = [f"full-{index}" for index in range(512)]  # one step's slice: all full by t=10
        busy = [f"busy-{index}" for index in range(512)]  # never full again
        for key in full:
            store.take(key, 1, Rule(2, 1.0))
        clock.set(10.0)
        for key in busy:
            store.take(key, 1, Rule(2, 1e-9))
        for _ in range(2):  # two steps: the whole pass
            store._until_sweep = 0
            store._sweep()
        assert (store._read, len(store)) == (0, 512)
        assert sorted(store._keys) == sorted(busy)
        assert len(store._kinds) == 512

    def test_keys_in_use_are_kept_until_idle(self, monkeypatch):
        """A full bucket used since the last sweep survives the next one, then goes if idle."""
        monkeypatch.setattr("tokenbucket._stores.memory.sweep._MIN_SWEEP_INTERVAL", 10)
        registry, clock = make(1, 100.0)  # refills within 0.01 s
        store = registry.store

        def sweep_with_new_keys(tag):
            for i in range(10):
                registry.try_consume(f"{tag}-{i}")
            clock.advance(1.0)
            registry.try_consume(f"{tag}-trigger")  # the 11th new key sweeps first

        registry.try_consume("regular")
        clock.advance(1.0)
        sweep_with_new_keys("a")  # first sweep: every full bucket goes, "regular" too
        assert "regular" not in store
        registry.try_consume("regular")  # used again after that sweep
        clock.advance(1.0)
        sweep_with_new_keys("b")  # full, but used since the last sweep: kept
        assert "regular" in store
        sweep_with_new_keys("c")  # idle since: forgotten
        assert "regular" not in store

    def test_forgetting_never_changes_a_decision(self, monkeypatch):
        """The same traffic gives the same decisions whether or not buckets are swept."""
        monkeypatch.setattr(
            "tokenbucket._stores.memory.sweep._MIN_SWEEP_INTERVAL", 8
        )  # sweep often
        rule = Rule(3, 0.5)
        clocks = [ManualClock(), ManualClock()]
        swept = BucketRegistry(rule, store=MemoryStore(clock=clocks[0]))
        kept = BucketRegistry(rule, store=MemoryStore(clock=clocks[1]))
        kept.store._until_sweep = 10**12  # type: ignore[union-attr]
        decisions = ([], [])
        for step in range(3000):
            key = f"k{(step * 7919) % 150}"
            for clock in clocks:
                clock.advance(0.05)
            for registry, out in zip((swept, kept), decisions):
                out.append(registry.consume(key, 1 + step % 2))
        assert decisions[0] == decisions[1]
        assert len(swept.store) < len(kept.store)  # type: ignore[arg-type]

    def test_max_keys_is_a_hard_cap_and_new_keys_are_denied(self):
        """At the cap an untracked key is an empty bucket; refilled buckets free room."""
        registry, clock = make(1, 1.0, max_keys=100)
        for i in range(100):
            assert registry.try_consume(f"k{i}")
        assert registry.peek("late") == Decision(False, 0.0, 1.0, 1.0, 1)  # what consume says
        assert registry.tokens("late") == 0.0
        decision = registry.consume("late")
        assert decision == Decision(False, 0.0, 1.0, 1.0, 1)
        assert len(registry.store) == 100  # type: ignore[arg-type]
        assert registry.try_consume("k0") is False  # tracked keys keep their state
        clock.advance(1.0)  # all refilled: the next sweep reclaims them
        admitted = [registry.try_consume(f"n{i}") for i in range(200)]
        assert len(registry.store) == 100  # type: ignore[arg-type]
        assert admitted == [True] * 100 + [False] * 100  # the refilled 100 made room for 100

    def test_at_the_cap_refilled_buckets_are_reclaimed_by_time(self):
        """After a flood, a lone client retrying once a second gets in as soon as the flood's
        buckets have refilled, without needing many other new keys to trigger a sweep."""
        registry, clock = make(10, 1.0, max_keys=1000)
        for i in range(1000):
            registry.try_consume(f"flood-{i}")  # 9 of 10 left: full again 1 s later
        attempts = []
        for second in range(1, 4):
            clock.set(second - 0.5)
            attempts.append(registry.try_consume("lone-client"))
        assert attempts == [False, True, True]  # denied at t=0.5, in at t=1.5
        assert len(registry.store) <= 1000  # type: ignore[arg-type]

    def test_time_reclaim_is_rate_limited(self):
        """At the cap, new keys trigger a time sweep only when a bucket is due to be full."""
        sweeps = []

        class Counting(MemoryStore):
            __slots__ = ()

            def _sweep(self):
                sweeps.append(self._clock())
                super()._sweep()

        clock = ManualClock()
        registry = BucketRegistry(Rule(2, 1.0), store=Counting(clock=clock, max_keys=100))
        for i in range(100):
            registry.try_consume(f"k{i}", 2)  # empty: full again 2 s later
        for i in range(50):  # 0.5 s of arrivals at the cap with nothing due
            clock.advance(0.01)
            assert not registry.try_consume(f"late-{i}")
        # One sweep on reaching the cap found nothing due before t=2; none per arrival after.
        assert sweeps == [pytest.approx(0.01)]
        clock.set(2.0)  # every flood bucket is full now
        assert registry.try_consume("on-time")
        assert sweeps[-1] == 2.0

    @pytest.mark.parametrize(
        ("options", "error"),
        [
            ({"max_keys": 0}, ValueError),
            ({"max_keys": 1.5}, TypeError),
            ({"max_keys": True}, TypeError),
            ({"stripes": 3}, ValueError),
            ({"stripes": 0}, ValueError),
            ({"stripes": "8"}, TypeError),
            ({"clock": 5}, TypeError),
        ],
    )
    def test_store_options_validated(self, options, error):
        """MemoryStore rejects bad options with the field named."""
        with pytest.raises(error, match=f"'{next(iter(options))}'"):
            MemoryStore(**options)


class TestAsync:
    def test_awaitable_counterparts_share_state(self):
        """The a-methods run the same logic against the same buckets."""
        registry, _ = make(3, 1.0)

        async def scenario():
            assert await registry.atry_consume(IP)
            decision = await registry.aconsume(IP, 2)
            assert decision == Decision(True, 0.0, 0.0, 3.0, 3)
            assert (await registry.apeek(IP)).retry_after == 1.0
            assert await registry.aupdate_rule(IP, capacity=5) == Rule(5, 1.0)
            assert await registry.arule_for(IP) == Rule(5, 1.0)
            assert await registry.atokens(IP) == 2.0
            assert await registry.aremove_rule(IP) == Rule(5, 1.0)
            await registry.areset(IP)
            assert await registry.atokens(IP) == 3.0

        asyncio.run(scenario())
        assert registry.tokens(IP) == 3.0

    def test_async_store_requires_await(self):
        """With an async store the sync methods explain what to call instead."""

        class AsyncMemory:
            def __init__(self):
                self.inner = MemoryStore(clock=ManualClock())

            async def take(self, key, amount, default):
                return self.inner.take(key, amount, default)

            async def peek(self, key, amount, default):
                return self.inner.peek(key, amount, default)

            async def level(self, key, default):
                return self.inner.level(key, default)

            async def get_rule(self, key):
                return self.inner.get_rule(key)

            async def update_rule(self, key, default, capacity, refill_rate):
                return self.inner.update_rule(key, default, capacity, refill_rate)

            async def remove_rule(self, key, default):
                return self.inner.remove_rule(key, default)

            async def reset(self, key):
                self.inner.reset(key)

        registry = BucketRegistry(Rule(2, 1.0), store=AsyncMemory())
        assert registry.is_async
        assert not BucketRegistry(Rule(2, 1.0)).is_async
        with pytest.raises(TypeError, match="is an async store: use the awaitable"):
            registry.try_consume(IP)
        with pytest.raises(TypeError, match=r"await registry\.aconsume"):
            registry.update_rule(IP, capacity=3)

        async def scenario():
            return [await registry.atry_consume(IP) for _ in range(3)]

        assert asyncio.run(scenario()) == [True, True, False]
