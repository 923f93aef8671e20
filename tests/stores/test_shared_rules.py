"""Default rules shared through the store: every registry adopts a change within its interval."""

from __future__ import annotations

import asyncio
import json

import pytest

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore


def pair(store, default=None, interval=1.0):
    """Two registries on one store, as two processes would be, on one manual clock."""
    clock = ManualClock()
    default = Rule(5, 1.0) if default is None else default
    registries = [BucketRegistry(default, store=store) for _ in range(2)]
    for registry in registries:
        registry.share_rules(interval=interval, clock=clock)
    return clock, registries


def test_other_registry_adopts_the_change_at_its_next_refresh():
    clock, (a, b) = pair(MemoryStore(clock=ManualClock()))
    assert b.consume("k").limit == 5  # its first decision read the (absent) document
    assert a.update_default(capacity=50) == Rule(50, 1.0)
    assert a.consume("k2").limit == 50  # the writer at once
    clock.advance(0.999)
    assert b.consume("k3").limit == 5  # the other not before its deadline
    clock.advance(0.001)
    assert b.consume("k4").limit == 50
    assert b.default == Rule(50, 1.0)


def test_update_reads_the_latest_before_changing_one_field():
    clock, (a, b) = pair(MemoryStore(clock=ManualClock()))
    a.update_default(capacity=50)
    assert b.update_default(refill_rate=2.0) == Rule(50, 2.0)  # b had not refreshed yet
    clock.advance(1)
    assert a.rule_for("x") == Rule(50, 2.0)


def test_several_limits_share_every_limit():
    clock, (a, b) = pair(
        MemoryStore(clock=ManualClock()), {"burst": Rule(10, 1.0), "daily": Rule(100, 0.01)}
    )
    a.update_default(capacity=3, limit="daily")
    clock.advance(1)
    assert b.tokens("x", limit="daily") == 3  # a read refreshes; reading 'defaults' does not
    assert b.defaults == {"burst": Rule(10, 1.0), "daily": Rule(3, 0.01)}


def test_a_document_of_other_limits_or_garbage_is_ignored(caplog):
    store = MemoryStore(clock=ManualClock())
    clock, (a, _) = pair(store)
    store.set_shared(
        "default", json.dumps({"limits": {"other": {"capacity": 1, "refill_rate": 1}}})
    )
    assert a.consume("x").limit == 5
    store.set_shared("default", "{not json")
    clock.advance(1)
    assert a.consume("y").limit == 5
    assert "ignoring shared rules" in caplog.text


def test_registries_not_sharing_are_unaffected():
    store = MemoryStore(clock=ManualClock())
    _, (a, _) = pair(store)
    plain = BucketRegistry(Rule(5, 1.0), store=store)
    a.update_default(capacity=50)
    assert plain.consume("x").limit == 5
    assert plain.sharing is None
    assert a.sharing == "default"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"interval": 0}, ValueError),
        ({"interval": float("inf")}, ValueError),
        ({"interval": "1"}, TypeError),
        ({"name": ""}, TypeError),
        ({"clock": 3}, TypeError),
    ],
)
def test_bad_options_name_the_field(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        BucketRegistry(Rule(1, 1.0)).share_rules(**kwargs)


def test_a_store_that_cannot_share_is_refused():
    class Bare:
        def take(self, key, amount, default):  # pragma: no cover - never called
            raise AssertionError

    with pytest.raises(TypeError, match="cannot share rules"):
        BucketRegistry(Rule(1, 1.0), store=Bare()).share_rules()


def test_redis_workers_adopt_a_change_and_survive_an_outage(own_redis, caplog):
    stores = [RedisStore.from_url(own_redis.url) for _ in range(2)]
    clock = ManualClock()
    a, b = (BucketRegistry(Rule(5, 1.0), store=store) for store in stores)
    for registry in (a, b):
        registry.share_rules(interval=1.0, clock=clock)
    assert b.consume("k").limit == 5
    a.update_default(capacity=40, refill_rate=4.0)
    clock.advance(1)
    assert b.consume("k").limit == 40
    raw = stores[0].client.get(b"tokenbucket:\xffrules:default")
    assert json.loads(raw)["limits"] == {"default": {"capacity": 40, "refill_rate": 4.0}}
    own_redis.stop()
    clock.advance(1)
    assert b.consume("k").limit == 40  # the read failed: the rules it had stay
    assert "cannot read shared rules" in caplog.text
    assert not stores[1].available  # that decision failed too: the breaker is open
    caplog.clear()
    clock.advance(1)
    assert b.consume("k").limit == 40
    assert "cannot read shared rules" not in caplog.text  # no read (and no timeout) meanwhile
    with pytest.raises(ConnectionError):
        a.update_default(capacity=1)
    assert a.default == Rule(40, 4.0)  # nothing half-applied
    for store in stores:
        store.close()


def test_async_redis_shares_through_aupdate_default(redis_url):
    async def main():
        stores = [AsyncRedisStore.from_url(redis_url) for _ in range(2)]
        clock = ManualClock()
        a, b = (BucketRegistry(Rule(5, 1.0), store=store) for store in stores)
        for registry in (a, b):
            registry.share_rules(interval=0.5, clock=clock)
        with pytest.raises(TypeError, match="async store"):
            a.update_default(capacity=9)
        await a.aupdate_default(capacity=9)
        clock.advance(0.5)
        limits = [(await b.aconsume("k")).limit, (await a.aconsume("k")).limit]
        for store in stores:
            await store.aclose()
        return limits

    assert asyncio.run(main()) == [9, 9]


def test_middleware_routes_share_their_rules_too():
    from tokenbucket.asgi import RateLimitMiddleware

    store = MemoryStore(clock=ManualClock())
    clock = ManualClock()
    apps = []
    for _ in range(2):
        registry = BucketRegistry(Rule(5, 1.0), store=store)
        registry.share_rules(interval=1.0, clock=clock)
        apps.append(
            RateLimitMiddleware(lambda *a: None, registry=registry, routes={"/login": Rule(2, 0.1)})
        )
    first, second = (app._options.routes["/login"].registry for app in apps)
    assert second.sharing == "default/login"
    first.update_default(capacity=7)
    clock.advance(1)
    assert second.rule_for("x") == Rule(7, 0.1)
    assert apps[1]._options.default.registry.rule_for("x") == Rule(5, 1.0)


@pytest.mark.parametrize("decode_responses", [False, True])
def test_a_document_that_is_not_utf8_is_ignored_not_raised(redis_url, decode_responses, caplog):
    """Bytes no registry wrote (not UTF-8) in the shared key: an invalid document, logged and
    ignored; every decision goes on under the rules the registry has (issue 22 item 11)."""
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=decode_responses)
    registry = BucketRegistry(Rule(5, 1.0), store=RedisStore(client))
    clock = ManualClock()
    registry.share_rules(clock=clock)
    valid = b'{"version":1,"limits":{"default":{"capacity":9,"refill_rate":1}}}'
    client.set(b"tokenbucket:\xffrules:default", valid[:-1] + b',"x":"\xff\xfe"}')
    assert registry.consume("k").limit == 5
    assert registry.charge("k", 1).limit == 5
    clock.advance(1)
    assert registry.update_default(capacity=7) == Rule(7, 1.0)  # rewritten, valid again
    clock.advance(1)
    assert registry.consume("k").limit == 7
    assert "not UTF-8" in caplog.text


def test_an_async_store_ignores_a_document_that_is_not_utf8(redis_url, caplog):
    async def main():
        store = AsyncRedisStore.from_url(redis_url)
        registry = BucketRegistry(Rule(5, 1.0), store=store)
        registry.share_rules(clock=ManualClock())
        await store.client.set(b"tokenbucket:\xffrules:default", b"\xc3\x28")
        try:
            return (await registry.aconsume("k")).limit
        finally:
            await store.aclose()

    assert asyncio.run(main()) == 5
    assert "not UTF-8" in caplog.text
