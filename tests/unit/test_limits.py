"""Several named limits on one request, all or nothing (issue 12): registry, decision, keys."""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from tokenbucket import BucketRegistry, Decision, ManualClock, MemoryStore, Rule
from tokenbucket._core.keys import bucket_key
from tokenbucket._registry.limits import limit_key

DAY = 86400


def several(clock: ManualClock, **options: object) -> BucketRegistry:
    return BucketRegistry(
        {"burst": Rule(10, 1.0), "daily": Rule.per(1000, DAY)}, clock=clock, **options
    )


class TestContract:
    def test_the_issue_example(self) -> None:
        clock = ManualClock()
        limits = several(clock)
        decision = limits.consume("alice")
        assert decision == Decision(True, 9.0, 0.0, 1.0, 10, "burst")
        assert limits.tokens("alice", limit="daily") == 999.0
        daily = Rule.per(1000, DAY).replace(capacity=5000)
        assert limits.update_rule("alice", capacity=5000, limit="daily") == daily
        assert limits.rule_for("alice", limit="daily") == daily
        assert limits.tokens("alice", limit="daily") == 4999.0  # the deficit carried over
        assert limits.rules_for("alice") == {"burst": Rule(10, 1.0), "daily": daily}
        assert limits.limits == ("burst", "daily")

    def test_one_rule_is_one_limit_named_default(self) -> None:
        limits = BucketRegistry(Rule(2, 1.0), clock=ManualClock())
        assert limits.consume("a").policy == "default"
        assert limits.limits == ("default",)
        assert limits.rules_for("a") == {"default": Rule(2, 1.0)}
        assert limits.tokens("a", limit="default") == 1.0
        with pytest.raises(ValueError, match=r"unknown limit 'daily'.*'default'"):
            limits.tokens("a", limit="daily")

    def test_a_one_limit_registry_keeps_the_bare_store_keys(self) -> None:
        store = MemoryStore(clock=ManualClock())
        BucketRegistry(Rule(2, 1.0), store=store).consume("alice")
        BucketRegistry({"only": Rule(2, 1.0)}, store=store).consume("bob")
        assert "alice" in store
        assert "bob" in store

    @pytest.mark.parametrize(
        "call",
        [
            lambda r: r.tokens("a"),
            lambda r: r.rule_for("a"),
            lambda r: r.update_rule("a", capacity=3),
            lambda r: r.remove_rule("a"),
            lambda r: r.update_default(capacity=3),
        ],
    )
    def test_limit_is_required_with_several(self, call: object) -> None:
        limits = several(ManualClock())
        with pytest.raises(ValueError, match=r"pass limit= one of \['burst', 'daily'\]"):
            call(limits)  # type: ignore[operator]
        with pytest.raises(ValueError, match="several limits"):
            limits.default  # noqa: B018

    def test_unknown_names_and_bad_defaults(self) -> None:
        limits = several(ManualClock())
        with pytest.raises(ValueError, match=r"unknown limit 'hourly'.*\['burst', 'daily'\]"):
            limits.update_rule("a", capacity=5, limit="hourly")
        with pytest.raises(ValueError, match="at least one limit"):
            BucketRegistry({})
        with pytest.raises(TypeError, match="limit 'x' must be a Rule"):
            BucketRegistry({"x": 5, "y": Rule(1, 1)})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match="limit names must be non-empty str"):
            BucketRegistry({"": Rule(1, 1), "y": Rule(1, 1)})
        with pytest.raises(TypeError, match="'default' must be a Rule, a mapping"):
            BucketRegistry(5)  # type: ignore[arg-type]

    @pytest.mark.parametrize("name", ["bürst", "a\r\nSet-Cookie: x", "tab\t", "nul\0", "\x7f"])
    def test_a_name_a_header_cannot_carry_is_refused(self, name: str) -> None:
        """Issue 22 item 13: a non-ASCII or control character in a limit name made every
        request through the middleware a 500 (or put CR/LF into a header field). Refused
        when the registry is built, naming the name."""
        with pytest.raises(ValueError, match=re.escape(f"limit name {name!r}")):
            BucketRegistry({name: Rule(1, 1), "daily": Rule(5, 1)})
        with pytest.raises(ValueError, match="printable ASCII"):
            BucketRegistry({"burst": Rule(1, 1), name: Rule(5, 1)})
        names = {"x" + chr(code): Rule(1, 1) for code in range(0x20, 0x7F)}
        assert BucketRegistry(names).limits == tuple(names)  # every printable one is fine

    def test_an_invalid_update_changes_nothing(self) -> None:
        limits = several(ManualClock())
        limits.consume("a")
        with pytest.raises(ValueError, match="capacity"):
            limits.update_rule("a", capacity=-1, limit="daily")
        with pytest.raises(ValueError, match="unknown limit"):
            limits.update_rule("a", capacity=5, limit="nope")
        assert limits.rules_for("a") == {"burst": Rule(10, 1.0), "daily": Rule.per(1000, DAY)}


class TestAllOrNothing:
    def test_a_denial_charges_no_limit(self) -> None:
        clock = ManualClock()
        limits = several(clock)
        admitted = sum(limits.try_consume("alice") for _ in range(50))
        assert admitted == 10
        assert limits.tokens("alice", limit="daily") == 990.0  # denials took nothing

    def test_the_daily_limit_binds_once_spent(self) -> None:
        clock = ManualClock()
        limits = BucketRegistry({"burst": Rule(10, 10.0), "daily": Rule(20, 0)}, clock=clock)
        for _ in range(20):
            assert limits.consume("k")
            clock.advance(1)
        decision = limits.consume("k")
        assert decision == Decision(False, 0.0, math.inf, math.inf, 20, "daily")
        assert limits.tokens("k", limit="burst") == 10.0

    def test_keys_at_different_levels(self) -> None:
        clock = ManualClock()
        limits = BucketRegistry({"user": Rule(3, 0), "org": Rule(5, 0)}, clock=clock)
        assert [limits.try_consume({"user": "alice", "org": "acme"}) for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        assert [limits.try_consume({"user": "bob", "org": "acme"}) for _ in range(3)] == [
            True,
            True,
            False,
        ]
        decision = limits.consume({"user": "carol", "org": "acme"})
        assert decision == Decision(False, 0.0, math.inf, math.inf, 5, "org")
        assert limits.tokens("carol", limit="user") == 3.0  # the org's denial charged nothing
        with pytest.raises(ValueError, match="map every limit"):
            limits.consume({"user": "alice"})
        with pytest.raises(TypeError, match="the key of limit 'org' must be a str"):
            limits.consume({"user": "alice", "org": 7})  # type: ignore[dict-item]


class TestDecision:
    def test_retry_after_is_the_longest_wait_and_names_its_limit(self) -> None:
        clock = ManualClock()
        limits = BucketRegistry({"a": Rule(2, 1.0), "b": Rule(2, 0.5)}, clock=clock)
        limits.consume("k", 2)
        decision = limits.consume("k")
        assert decision == Decision(False, 0.0, 2.0, 4.0, 2, "b")
        clock.advance(1)
        assert limits.peek("k") == Decision(False, 0.5, 1.0, 3.0, 2, "b")
        clock.advance(1)
        assert limits.consume("k") == Decision(True, 0.0, 0.0, 4.0, 2, "b")

    def test_ties_go_to_the_first_declared(self) -> None:
        limits = BucketRegistry({"x": Rule(5, 1), "y": Rule(5, 1)}, clock=ManualClock())
        assert limits.consume("k").policy == "x"
        assert limits.consume("k", 9).policy == "x"  # both never: the first

    def test_never_if_any_limit_can_never_admit(self) -> None:
        limits = BucketRegistry({"x": Rule(5, 1), "y": Rule(3, 1)}, clock=ManualClock())
        decision = limits.consume("k", 4)
        assert (decision.retry_after, decision.policy, decision.remaining) == (math.inf, "y", 3.0)

    def test_least_remaining_binds_an_admission(self) -> None:
        limits = BucketRegistry({"x": Rule(5, 1), "y": Rule(100, 1)}, clock=ManualClock())
        limits.update_rule("k", capacity=2, limit="y")
        assert limits.consume("k") == Decision(True, 1.0, 0.0, 1.0, 2, "y")


class TestRuntimeUpdates:
    def test_update_default_of_one_limit(self) -> None:
        clock = ManualClock()
        limits = several(clock)
        limits.consume("k", 4)
        assert limits.update_default(capacity=2, limit="burst") == Rule(2, 1.0)
        assert limits.defaults["burst"] == Rule(2, 1.0)
        assert limits.tokens("k", limit="burst") == 0.0  # 4 used of 2: in debt
        assert not limits.try_consume("k")
        clock.advance(3)
        assert limits.tokens("k", limit="burst") == 1.0

    def test_remove_and_reset(self) -> None:
        limits = several(ManualClock())
        limits.update_rule("k", capacity=3, limit="burst")
        limits.consume("k", 3)
        assert limits.remove_rule("k", limit="burst") == Rule(3, 1.0)
        assert limits.tokens("k", limit="burst") == 7.0
        limits.reset("k", limit="daily")
        assert limits.tokens("k", limit="daily") == 1000.0
        limits.reset("k")
        assert limits.tokens("k", limit="burst") == 10.0


def test_the_awaitable_forms() -> None:
    asyncio.run(awaitable_forms())


async def awaitable_forms() -> None:
    limits = several(ManualClock())
    assert (await limits.aconsume("k", 10)).remaining == 0.0
    assert not await limits.atry_consume("k")
    assert (await limits.apeek("k")).policy == "burst"
    assert await limits.atokens("k", limit="daily") == 990.0
    await limits.aupdate_rule("k", capacity=20, limit="burst")
    assert await limits.arule_for("k", limit="burst") == Rule(20, 1.0)
    assert await limits.arules_for("k") == {"burst": Rule(20, 1.0), "daily": Rule.per(1000, DAY)}
    assert await limits.aremove_rule("k", limit="burst") == Rule(20, 1.0)
    await limits.areset("k")
    assert await limits.atokens("k", limit="burst") == 10.0


names = st.text(min_size=1, max_size=8)
keys = st.text(max_size=12)


class TestStoreKeys:
    @given(keys, names, keys, names)
    def test_distinct_pairs_give_distinct_store_keys(
        self, key: str, name: str, other: str, other_name: str
    ) -> None:
        if (key, name) != (other, other_name):
            assert limit_key(key, name) != limit_key(other, other_name)

    @given(keys, names, st.text(alphabet="/abc{}", max_size=6), keys)
    def test_no_one_limit_store_key_looks_like_a_named_one(
        self, key: str, name: str, route: str, raw: str
    ) -> None:
        named = limit_key(key, name)
        assert named != bucket_key("", raw)
        assert named != bucket_key("/" + route + "\0", raw)

    @given(st.text(alphabet="{}\0\1\2ab", max_size=12), names, names, st.sampled_from(["", "tb:"]))
    def test_every_limit_of_a_key_is_in_its_hash_slot(
        self, key: str, name: str, other: str, prefix: str
    ) -> None:
        def slot(store_key: str) -> int:
            return key_slot((prefix + store_key).encode("utf-8", "surrogatepass"))

        assert slot(limit_key(key, name)) == slot(limit_key(key, other))
