"""Where features meet (issue 22): shadow limits with settling and the key cap, shared rules
with every call, the decisions of charges and refunds. Each test failed before its fix."""

from __future__ import annotations

import asyncio
import json

import pytest

from tokenbucket import (
    BucketRegistry,
    Decision,
    ManualClock,
    MemoryStore,
    RateLimitExceeded,
    Rule,
    rate_limit,
)
from tokenbucket._registry.admission import Admission
from tokenbucket._registry.limits import limit_key


def shadowed():
    """Enforced burst 10 (no refill), shadow daily 2 (no refill): daily runs out first."""
    clock = ManualClock(100.0)
    limits = {"burst": Rule(10, 0), "daily": Rule(2, 0)}
    return BucketRegistry(limits, clock=clock, shadow={"daily"}), clock


def spend_daily(registry, key="k"):
    """Two admissions empty the shadow daily bucket; the third is shadow-denied."""
    assert registry.consume(key).shadow_denied == ()
    assert registry.consume(key).shadow_denied == ()
    assert registry.tokens(key, limit="daily") == 0


# -- item 6: refunds give back only what the admission took -------------------------------------


@pytest.mark.parametrize("how", ["cancel", "settle", "acancel", "asettle"])
def test_settling_a_reservation_credits_only_the_buckets_it_charged(how):
    registry, _ = shadowed()
    spend_daily(registry)
    reservation = registry.reserve("k", 3)
    assert reservation
    assert reservation.decision.shadow_denied == ("daily",)
    assert reservation.admission == Admission("k", 3, ("burst",))
    if how == "cancel":
        reservation.cancel()
    elif how == "settle":
        reservation.settle(1)
    else:
        asyncio.run(reservation.acancel() if how == "acancel" else reservation.asettle(1))
    assert registry.tokens("k", limit="daily") == 0  # the shadow bucket was never charged
    assert registry.tokens("k", limit="burst") == (10 - 2 if "cancel" in how else 10 - 3)
    registry.set_shadow("daily", False)
    assert not registry.consume("k")  # enforcing daily: its 2 tokens are spent


def test_a_settled_extra_cost_charges_only_the_buckets_the_admission_charged():
    registry, _ = shadowed()
    spend_daily(registry)
    registry.reserve("k", 1).settle(4)
    assert registry.tokens("k", limit="burst") == 10 - 2 - 4
    daily = registry.store.level(limit_key("k", "daily"), Rule(2, 0))
    assert daily == 0  # not driven into a debt it never took


def test_the_decorator_settles_only_what_its_call_took():
    registry, _ = shadowed()
    spend_daily(registry, "job")

    @rate_limit(registry, key=lambda: "job", cost=2, settle=lambda result: result)
    def work():
        return 0  # it cost nothing after all

    assert work() == 0
    assert registry.tokens("job", limit="burst") == 8
    assert registry.tokens("job", limit="daily") == 0


# -- item 7: a shadow limit at the key cap does not refuse ---------------------------------------


def test_a_shadow_bucket_that_cannot_be_tracked_at_the_cap_does_not_refuse():
    store = MemoryStore(clock=ManualClock(), max_keys=2)
    limits = {"user": Rule(5, 1.0), "org": Rule(5, 1.0)}
    registry = BucketRegistry(limits, store=store, shadow={"org"})
    assert registry.consume({"user": "alice", "org": "acme"})
    assert len(store) == 2
    decision = registry.consume({"user": "alice", "org": "other"})  # org bucket: no room
    assert decision.allowed
    assert decision.shadow_denied == ("org",)
    assert registry.tokens("alice", limit="user") == 3
    assert registry.peek({"user": "alice", "org": "third"}).allowed
    assert len(store) == 2
    # an enforced bucket without room still refuses: it is an empty bucket
    assert not registry.consume({"user": "bob", "org": "acme"})


# -- item 8: every call that decides follows the shared rules ------------------------------------


def two_sharing(default):
    store = MemoryStore(clock=ManualClock())
    clock = ManualClock()
    writer, follower = (BucketRegistry(default, store=store) for _ in range(2))
    for registry in (writer, follower):
        registry.share_rules(interval=1.0, clock=clock)
    return writer, follower, clock


@pytest.mark.parametrize("call", ["charge", "refund", "acharge", "arefund"])
def test_charge_and_refund_follow_the_shared_rules(call):
    writer, follower, clock = two_sharing(Rule(5, 1.0))
    writer.update_default(capacity=50)
    clock.advance(1)
    method = getattr(follower, call)
    decision = asyncio.run(method("k", 1)) if call.startswith("a") else method("k", 1)
    assert decision.limit == 50
    assert follower.default == Rule(50, 1.0)


@pytest.mark.parametrize("default", [Rule(5, 1.0), {"a": Rule(5, 1.0), "b": Rule(5, 1.0)}])
def test_acquire_follows_the_shared_rules(default):
    writer, follower, clock = two_sharing(default)
    limit = None if isinstance(default, Rule) else "a"
    writer.update_default(capacity=50, limit=limit)
    if limit is not None:
        writer.update_default(capacity=50, limit="b")
    clock.advance(1)
    assert follower.acquire("k", 20, max_wait=0) == 0  # over the old capacity of 5
    assert asyncio.run(follower.aacquire("k2", 20, max_wait=0)) == 0
    with pytest.raises(RateLimitExceeded):
        follower.acquire("k", 31, max_wait=0)


def test_settling_follows_the_shared_rules():
    writer, follower, clock = two_sharing({"a": Rule(5, 1.0), "b": Rule(5, 1.0)})
    reservation = follower.reserve("k", 1)
    writer.update_default(capacity=50, limit="a")
    clock.advance(1)
    assert reservation.settle(2).remaining == 3  # b: 5 - 2; a: 50 - 2
    assert follower.defaults["a"] == Rule(50, 1.0)


# -- item 19: the decisions of charges and refunds are whole -------------------------------------


def whole(decision):
    assert isinstance(decision, Decision)
    assert len(decision) == len(Decision._fields)
    assert decision.shadow_denied == ()
    assert repr(decision).startswith("Decision(allowed=True")
    return decision


@pytest.mark.parametrize("several", [False, True])
def test_decisions_after_charges_refunds_and_settling_are_whole(several):
    default = {"a": Rule(10, 1.0), "b": Rule(10, 1.0)} if several else Rule(10, 1.0)
    registry = BucketRegistry(default, clock=ManualClock())
    whole(registry.refund("k", 1))  # full: the early return of `after`
    assert whole(registry.charge("k", 3)).remaining == 7
    assert whole(registry.refund("k", 1)).remaining == 8
    assert whole(registry.charge("k", 20)).remaining == 0  # in debt
    assert whole(registry.reserve("j", 4).settle(5)).remaining == 5
    assert whole(registry.reserve("i", 4).settle(0)).remaining == 10
    assert whole(asyncio.run(registry.acharge("h", 1))).remaining == 9


# -- item 11 in memory: a document no registry could have written is ignored --------------------


def test_a_shared_document_with_unpaired_surrogates_is_ignored(caplog):
    store = MemoryStore(clock=ManualClock())
    registry = BucketRegistry(Rule(5, 1.0), store=store)
    registry.share_rules(clock=ManualClock())
    document = json.dumps({"version": 1, "limits": {"default": {"capacity": 9, "refill_rate": 1}}})
    store.set_shared("default", document[:-1] + ',"x":"\udcff"}')
    assert registry.consume("k").limit == 5
    assert "not UTF-8" in caplog.text
