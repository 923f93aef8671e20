"""Listing overrides page by page: in memory and in Redis, through the registry."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore


def every_page(registry, count, namespace=""):
    """All entries, following cursors to the end; also the number of pages."""
    cursor, entries, pages = None, [], 0
    while True:
        cursor, page = registry.list_rules(cursor, count, namespace=namespace)
        entries += page
        pages += 1
        if cursor is None:
            return entries, pages


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryStore(clock=ManualClock())
        return
    store = RedisStore.from_url(request.getfixturevalue("redis_url"))
    yield store
    store.close()


def test_lists_every_override_once_across_pages(store):
    registry = BucketRegistry(Rule(10, 1.0), store=store)
    for index in range(25):
        registry.update_rule(f"client-{index:02}", capacity=100 + index)
    registry.consume("no-override")  # a bucket without an override is not listed
    entries, pages = every_page(registry, 7)
    assert sorted(entries) == [
        (f"client-{index:02}", "default", Rule(100 + index, 1.0)) for index in range(25)
    ]
    assert pages >= 2


def test_skips_route_keys_and_lists_a_route_namespace(store):
    registry = BucketRegistry(Rule(10, 1.0), store=store)
    registry.update_rule("alice", capacity=1)
    registry.update_rule("/login\0bob", capacity=2)
    assert every_page(registry, 10)[0] == [("alice", "default", Rule(1, 1.0))]
    assert every_page(registry, 10, "/login\0")[0] == [("bob", "default", Rule(2, 1.0))]


def test_several_limits_name_the_limit(store):
    registry = BucketRegistry({"burst": Rule(10, 1.0), "daily": Rule(100, 0.01)}, store=store)
    registry.update_rule("a}b", capacity=5, limit="daily")
    registry.update_rule("", capacity=6, limit="burst")
    assert sorted(every_page(registry, 10)[0]) == [
        ("", "burst", Rule(6, 1.0)),
        ("a}b", "daily", Rule(5, 0.01)),
    ]


def test_empty_store_is_one_page(store):
    assert BucketRegistry(Rule(1, 1.0), store=store).list_rules() == (None, [])


@pytest.mark.parametrize(
    ("cursor", "count", "error"),
    [(None, 0, ValueError), (None, 1001, ValueError), (None, True, TypeError), (5, 10, TypeError)],
)
def test_bad_page_arguments_name_the_field(cursor, count, error):
    with pytest.raises(error, match=r"cursor|count"):
        BucketRegistry(Rule(1, 1.0)).list_rules(cursor, count)


def test_a_foreign_cursor_is_a_value_error(store):
    with pytest.raises(ValueError, match="cursor"):
        BucketRegistry(Rule(1, 1.0), store=store).list_rules("zzz")


def test_async_store_lists(redis_url):
    async def main():
        store = AsyncRedisStore.from_url(redis_url)
        registry = BucketRegistry(Rule(10, 1.0), store=store)
        await registry.aupdate_rule("x", refill_rate=3)
        with pytest.raises(TypeError, match="async store"):
            registry.list_rules()
        page = await registry.alist_rules()
        await store.aclose()
        return page

    assert asyncio.run(main()) == (None, [("x", "default", Rule(10, 3.0))])


@settings(max_examples=50, deadline=None)
@given(
    keys=st.sets(st.text(max_size=6), max_size=30),
    removed=st.sets(st.text(max_size=6), max_size=10),
    count=st.integers(1, 8),
)
def test_memory_pages_list_what_stayed_exactly_once(keys, removed, count):
    registry = BucketRegistry(Rule(10, 1.0), clock=ManualClock())
    for key in keys:
        registry.update_rule(key, capacity=1)
    cursor, seen = None, []
    while True:  # remove some keys between pages: the others are each listed once
        cursor, page = registry.list_rules(cursor, count)
        seen += [key for key, _, _ in page]
        for key in removed:
            registry.remove_rule(key)
        if cursor is None:
            break
    stayed = {
        key for key in keys if key not in removed and not (key.startswith("/") and "\0" in key)
    }
    stayed = {key for key in stayed if not key.startswith("{") or "}\0" not in key}
    assert len(seen) == len(set(seen))
    assert stayed <= set(seen) <= set(keys)
