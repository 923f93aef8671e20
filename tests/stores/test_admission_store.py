"""Settling acts on the admission's record on every store (issue 22 item 6): a reservation a
shadow limit would have refused is settled and cancelled on the limits it charged only."""

from __future__ import annotations

import asyncio

import pytest

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore

LIMITS = {"burst": Rule(10, 0), "daily": Rule(2, 0)}


async def scenario(registry, awaited):
    """Spend daily (in shadow), reserve 3 (daily would refuse), settle at ``1`` then cancel
    another; return the levels of burst and daily."""

    async def call(name, *args):
        if awaited:
            return await getattr(registry, "a" + name)(*args)
        return getattr(registry, name)(*args)

    for _ in range(2):
        assert (await call("consume", "k", 1)).shadow_denied == ()
    first = await call("reserve", "k", 3)
    assert first.decision.shadow_denied == ("daily",)
    after = (await first.asettle(1)) if awaited else first.settle(1)
    assert after.policy == "burst"  # only the limits it charged are reported
    second = await call("reserve", "k", 2)
    if awaited:
        await second.acancel()
    else:
        second.cancel()
    return [await call("tokens", "k", name) for name in LIMITS]


@pytest.mark.parametrize("kind", ["memory", "redis", "async-redis"])
def test_settling_a_reservation_leaves_an_uncharged_shadow_bucket_alone(kind, request):
    async def main():
        store = None
        if kind == "redis":
            store = RedisStore.from_url(request.getfixturevalue("redis_url"))
        elif kind == "async-redis":
            store = AsyncRedisStore.from_url(request.getfixturevalue("redis_url"))
        registry = BucketRegistry(LIMITS, store=store, shadow={"daily"})
        try:
            return await scenario(registry, awaited=kind == "async-redis")
        finally:
            if kind == "redis":
                store.close()
            elif kind == "async-redis":
                await store.aclose()

    assert asyncio.run(main()) == [10 - 2 - 1, 0]
