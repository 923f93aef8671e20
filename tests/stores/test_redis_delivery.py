"""Delivery to Redis: every store call is applied once, however often the client sends it.

A client retries a call whose reply it did not get: ``from_url``'s clients once after a broken
connection, a user's own ``redis.Redis(socket_timeout=...)`` after timeouts too. Redis may have
run the first send all the same. Three real faults, against a real redis-server: a TCP proxy
that forwards a command and loses its reply (tests/redis_proxy.py), a Redis kept busy past the
client's ``socket_timeout`` by a Lua loop from another connection, and a redis-server stopped
with SIGSTOP. Buckets have no refill (rate 0), so every level is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.backoff
import redis.cluster
import redis.retry
from hypothesis import example, given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket._core.keys import limit_key
from tokenbucket.redis import AsyncRedisStore, RedisStore

from ..redis_proxy import ReplyDropper

RULE = Rule(10, 0)
BOTH = [[("k", (("a", RULE), ("b", RULE)))]]  # limits a and b of key k: a hash each
LA, LB = limit_key("k", "a"), limit_key("k", "b")


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])


# Each case: what runs before (not lost), the call whose reply may be lost, the levels after.
CASES = {
    "take": ([], ("take", "a", 2, RULE), {"a": 8.0}),
    "charge": ([], ("charge", "a", 3, RULE, None), {"a": 7.0}),
    "reserve": ([], ("charge", "a", 3, RULE, 0.0), {"a": 7.0}),
    "refund": ([("take", "a", 9, RULE)], ("refund", "a", 3, RULE), {"a": 4.0}),
    "take_all": ([], ("take_all", BOTH[0], 2), {LA: 8.0, LB: 8.0}),
    "charge_all": ([], ("charge_all", BOTH[0], 3, None), {LA: 7.0, LB: 7.0}),
    "refund_all": (
        [("take_all", BOTH[0], 9)],
        ("refund_all", BOTH[0], 3),
        {LA: 4.0, LB: 4.0},
    ),
}


class Calls:
    """Makes store calls on a sync store; `AsyncCalls` on an async one, in its own loop."""

    def __init__(self, make):
        self.store = make()

    def __call__(self, name, *args):
        return getattr(self.store, name)(*args)

    def close(self):
        self.store.client.close()


class AsyncCalls(Calls):
    def __init__(self, make):
        self.loop = asyncio.new_event_loop()

        async def build():
            return make()

        self.store = self.loop.run_until_complete(build())

    def __call__(self, name, *args):
        return self.loop.run_until_complete(getattr(self.store, name)(*args))

    def close(self):
        self.loop.run_until_complete(self.store.client.aclose())
        self.loop.close()


def sync_client(port, **options):
    """A user's own client: socket timeouts, and redis-py retrying timeouts and broken sockets."""
    retry = redis.retry.Retry(redis.backoff.ConstantBackoff(0.05), 12)
    return redis.Redis(port=port, socket_timeout=0.25, retry=retry, **options)


def async_client(port, **options):
    retry = redis.asyncio.retry.Retry(redis.backoff.ConstantBackoff(0.05), 12)
    return redis.asyncio.Redis(port=port, socket_timeout=0.25, retry=retry, **options)


def levels(url, keys, rule=RULE):
    with redis.Redis.from_url(url) as client:
        store = RedisStore(client)
        return {key: store.level(key, rule) for key in keys}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", [Calls, AsyncCalls], ids=["sync", "async"])
def test_a_lost_reply_is_not_applied_twice(redis_url, redis_server, kind, case):
    """The proxy forwards the call, loses its reply and closes the connection; from_url's
    client retries once: the call is applied once, and its answer is the first run's."""
    before, call, expected = CASES[case]
    cls = RedisStore if kind is Calls else AsyncRedisStore
    with ReplyDropper(redis_server.port) as proxy:
        calls = kind(lambda: cls.from_url(proxy.url, on_error="deny"))
        try:
            for each in before:
                calls(*each)
            calls("peek", "warm-up", 1, RULE)  # connected, the script loaded
            proxy.drop()
            answer = calls(*call)
            assert proxy.dropped == 1
            assert calls.store.available
        finally:
            calls.close()
    assert levels(redis_url, expected) == expected
    outcomes = [answer] if case in ("take", "charge", "reserve", "refund") else answer[1]
    assert [level for _, level, _ in outcomes] == list(expected.values())


def test_a_lost_pipeline_reply_is_not_applied_twice(redis_url, redis_server):
    """Ten concurrent decisions: one alone, nine in one pipeline whose replies are lost; the
    client sends the pipeline again: each decision is applied once, and each gets its answer."""

    async def scenario(url):
        store = AsyncRedisStore.from_url(url, on_error="deny")
        limits = BucketRegistry(Rule(100, 0), store=store)
        await limits.atokens("k")
        decisions = await asyncio.gather(*(limits.aconsume("k") for _ in range(10)))
        await store.aclose()
        return decisions

    with ReplyDropper(redis_server.port) as proxy:
        proxy.drop(match=lambda chunk: chunk.upper().count(b"EVALSHA") > 1)
        decisions = asyncio.run(scenario(proxy.url))
        assert proxy.dropped == 1
    assert sorted(d.remaining for d in decisions) == [float(n) for n in range(90, 100)]
    assert levels(redis_url, ["k"], Rule(100, 0)) == {"k": 90.0}


@pytest.mark.parametrize("kind", [Calls, AsyncCalls], ids=["sync", "async"])
def test_a_lost_acquire_reply_still_gives_the_slot(redis_url, redis_server, kind):
    """An in-flight slot whose reply was lost: the retry finds the slot already taken (its
    own), answers it, and releasing it frees the key."""
    cls = RedisStore if kind is Calls else AsyncRedisStore
    with ReplyDropper(redis_server.port) as proxy:
        calls = kind(lambda: cls.from_url(proxy.url, on_error="deny"))
        try:
            assert calls("slots_held", "k") == 0  # connected, the script loaded
            proxy.drop()
            slot = calls("acquire_slot", "k", 1, 60.0)
            assert proxy.dropped == 1
            assert slot is not None
            assert calls("slots_held", "k") == 1
            calls("release_slot", slot)
            assert calls("slots_held", "k") == 0
        finally:
            calls.close()


# -- a server that does not answer in time: busy, or stopped ------------------------------------

_BUSY = (
    "local s = redis.call('TIME') local start = s[1] * 1000000 + s[2] "
    "repeat local t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= tonumber(ARGV[1]) "
    "return 1"
)


def _command(*parts):
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@contextlib.contextmanager
def busy(port, seconds):
    """Keep the server busy for ``seconds``: a Lua loop sent from a connection of its own."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(_command("EVAL", _BUSY, "0", str(int(seconds * 1e6))))
        time.sleep(0.05)  # the server has read it and is looping
        yield
        assert connection.recv(64) == b":1\r\n"


@contextlib.contextmanager
def stopped(server, seconds):
    """Stop the redis-server process (SIGSTOP) now; let it go on (SIGCONT) after ``seconds``."""
    pid = server.process.pid
    os.kill(pid, signal.SIGSTOP)
    wake = threading.Timer(seconds, os.kill, (pid, signal.SIGCONT))
    wake.start()
    try:
        yield
    finally:
        wake.join()


FAULTS = {
    "busy": lambda server: busy(server.port, 0.8),
    "sigstop": lambda server: stopped(server, 0.8),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", [Calls, AsyncCalls], ids=["sync", "async"])
@pytest.mark.parametrize("case", ["take", "refund", "take_all"])
def test_a_call_retried_after_timeouts_is_applied_once(own_redis, kind, fault, case):
    """A user's client with a 0.25 s socket timeout that retries timeouts: the server answers
    nothing for 0.8 s, the client sends the call again and again; each send runs once the
    server is back, and the call is applied once."""
    before, call, expected = CASES[case]
    if kind is Calls:
        calls = kind(lambda: RedisStore(sync_client(own_redis.port), on_error="deny"))
    else:
        calls = kind(lambda: AsyncRedisStore(async_client(own_redis.port), on_error="deny"))
    try:
        for each in before:
            calls(*each)
        calls("peek", "warm-up", 1, RULE)  # connected, the script loaded
        with FAULTS[fault](own_redis):
            answer = calls(*call)
        assert calls.store.available
    finally:
        calls.close()
    assert levels(own_redis.url, expected) == expected
    outcomes = [answer] if case in ("take", "refund") else answer[1]
    assert [level for _, level, _ in outcomes] == list(expected.values())


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", [Calls, AsyncCalls], ids=["sync", "async"])
def test_an_acquire_retried_after_timeouts_takes_one_slot(own_redis, kind, fault):
    """The last slot of a key, acquired while the server answers nothing for 0.8 s through a
    user's client that retries timeouts: every send runs once the server is back; the first
    takes the slot, the others find it taken by this very call and answer it too."""
    if kind is Calls:
        calls = kind(lambda: RedisStore(sync_client(own_redis.port), on_error="deny"))
    else:
        calls = kind(lambda: AsyncRedisStore(async_client(own_redis.port), on_error="deny"))
    try:
        assert calls("slots_held", "k") == 0  # connected, the script loaded
        with FAULTS[fault](own_redis):
            slot = calls("acquire_slot", "k", 1, 60.0)
        assert slot is not None
        assert calls("slots_held", "k") == 1
        calls("release_slot", slot)
        assert calls("slots_held", "k") == 0
    finally:
        calls.close()


# -- a cancelled waiter, and slots released during an outage -------------------------------------


@pytest.mark.parametrize("limits", ["one", "several"])
def test_aacquire_cancelled_during_its_reservation_gives_the_tokens_back(own_redis, limits):
    """aacquire (of one limit, or of several: one charge_all) is cancelled while its reserving
    call waits on a stopped server; the server runs that call once it goes on: the tokens come
    back all the same."""
    rules = RULE if limits == "one" else {"a": RULE, "b": Rule(20, 0)}

    async def scenario():
        store = AsyncRedisStore.from_url(own_redis.url, socket_timeout=5, on_error="deny")
        registry = BucketRegistry(rules, store=store)
        await registry.apeek("k")  # connected, the script loaded
        with stopped(own_redis, 0.4):
            task = asyncio.ensure_future(registry.aacquire("k", 3))
            await asyncio.sleep(0.2)  # its EVALSHA is sent; the server sleeps
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.3)  # whatever the server still had to run, it has run
        names = [None] if limits == "one" else ["a", "b"]
        left = [await registry.atokens("k", limit=name) for name in names]
        await store.aclose()
        return left

    assert asyncio.run(scenario()) == ([10.0] if limits == "one" else [10.0, 20.0])


@pytest.mark.parametrize("kind", [Calls, AsyncCalls], ids=["sync", "async"])
@pytest.mark.parametrize("when", ["breaker open", "zrem lost"])
def test_a_slot_released_during_an_outage_is_removed_once_redis_answers(
    redis_url, redis_server, own_redis, kind, when
):
    """A slot released while its ZREM cannot reach Redis (the breaker open after a stall, or
    the ZREM itself lost on its way, twice: the client's retry too) is removed as soon as
    Redis answers again, not at the end of its 60 s lease: the key is not shut out."""
    cls = RedisStore if kind is Calls else AsyncRedisStore
    server = own_redis if when == "breaker open" else redis_server
    with ReplyDropper(server.port) as proxy:
        calls = kind(
            lambda: cls.from_url(proxy.url, socket_timeout=0.2, on_error="deny", retry_interval=60)
        )
        clock = ManualClock()
        calls.store._logic.breaker.clock = clock
        try:
            slot = calls("acquire_slot", "k", 1, 60.0)
            assert slot is not None
            if when == "breaker open":
                with stopped(own_redis, 0.5):
                    calls("take", "other", 1, RULE)  # times out: the breaker opens
                assert not calls.store.available
                calls("release_slot", slot)  # skips Redis while the breaker is open
            else:
                proxy.drop(2, match=lambda chunk: b"ZREM" in chunk.upper(), lose="command")
                calls("release_slot", slot)
                assert proxy.dropped == 2
                assert not calls.store.available
            assert not slot.held
            clock.advance(61)
            again = calls("acquire_slot", "k", 1, 60.0)
            assert again is not None
            assert calls("slots_held", "k") == 1
            calls("release_slot", again)
            assert calls("slots_held", "k") == 0
        finally:
            calls.close()


@pytest.mark.parametrize("mode", ["sync", "async", "async pipeline"])
def test_a_lost_cluster_reply_is_not_applied_twice(redis_cluster_url, redis_cluster, mode):
    """On a Redis Cluster, through a proxy in front of every node (the client maps each node's
    address to its proxy). Alone (sync or async): a decision whose reply is lost is sent again
    by the cluster client, and applied once. Pipelined: ten concurrent decisions on two keys of
    one master, nine in one pipeline whose replies are lost; whether the client sends the
    pipeline again (redis-py's cluster pipeline, as the store uses it, does not: those
    decisions follow on_error), each decision is applied once."""
    keys = ["{user-1}a", "{user-1}b"]
    master = redis_cluster.master_for(keys[0])
    rule = Rule(100, 0)
    proxies = {node.port: ReplyDropper(node.port) for node in redis_cluster.nodes if node.running}
    dropper = proxies[master.port]

    def remap(address):
        port = address[1]
        return ("127.0.0.1", proxies[port].port) if port in proxies else address

    options = {"host": "127.0.0.1", "port": master.port, "address_remap": remap}

    def alone():
        client = redis.cluster.RedisCluster(socket_timeout=5, **options)
        limits = BucketRegistry(rule, store=RedisStore(client, on_error="deny"))
        limits.tokens(keys[0])  # connected, the script loaded
        dropper.drop()
        decisions = [limits.consume(key, 5) for key in keys]
        client.close()
        return decisions

    async def scenario():
        client = redis.asyncio.cluster.RedisCluster(socket_timeout=5, **options)
        store = AsyncRedisStore(client, on_error="deny", pipeline=mode == "async pipeline")
        limits = BucketRegistry(rule, store=store)
        await limits.atokens(keys[0])  # connected, the script loaded
        if store.pipeline:
            dropper.drop(match=lambda chunk: chunk.upper().count(b"EVALSHA") > 1)
            decisions = await asyncio.gather(*(limits.aconsume(keys[i % 2]) for i in range(10)))
        else:
            dropper.drop()
            decisions = [await limits.aconsume(key, 5) for key in keys]
        await client.aclose()
        return decisions

    try:
        decisions = alone() if mode == "sync" else asyncio.run(scenario())
        assert dropper.dropped == 1
    finally:
        for proxy in proxies.values():
            proxy.close()
    if mode != "async pipeline":
        assert [d.remaining for d in decisions] == [95.0, 95.0]
    with redis.cluster.RedisCluster(host="127.0.0.1", port=master.port) as client:
        store = RedisStore(client)
        assert [store.level(key, rule) for key in keys] == [95.0, 95.0]


def test_undo_takes_a_charge_back_once_whichever_arrives_first(redis_url):
    """The script's undo, in both orders: after the charge, it refunds it (once, however often
    it is sent); before the charge (the cancelled call still on its way), it refunds nothing
    and the charge, when it arrives, changes nothing."""
    from tokenbucket._stores.redis.failure import _RESERVE
    from tokenbucket._stores.redis.once import new_call

    with redis.Redis.from_url(redis_url) as client:
        store = RedisStore(client)
        logic = store._logic
        store.level("a", RULE)  # the script loaded

        def charge(key, call):
            return client.evalsha(*logic._take_args(key, 3, RULE, _RESERVE, call), b"0")

        def undo(key, call):
            store._run(logic.undo(((key, RULE),), 3, call))
            return store.level(key, RULE)

        first = new_call()
        assert charge("a", first) == b"17"  # applied: 7 left
        assert charge("a", first) == b"17"  # sent again: the same answer, nothing more
        assert store.level("a", RULE) == 7.0
        assert [undo("a", first), undo("a", first)] == [10.0, 10.0]
        assert charge("a", first) == b""  # taken back: it changes nothing any more
        assert store.level("a", RULE) == 10.0

        second = new_call()
        assert undo("b", second) == 10.0  # before the call: nothing to give back
        assert charge("b", second) == b""
        assert store.level("b", RULE) == 10.0


def test_the_script_answers_a_call_sent_again_from_its_marker(redis_url):
    """The script alone, each call sent twice: the second send gets the first reply and changes
    nothing; a denial keeps nothing (sent again, it decides afresh)."""
    from tokenbucket._stores.redis.failure import _TAKE
    from tokenbucket._stores.redis.logic import _SCRIPT

    with redis.Redis.from_url(redis_url) as client:
        sha = client.script_load(_SCRIPT)
        logic = RedisStore(client)._logic

        def send(amount, call):
            args = logic._take_args("k", amount, RULE, _TAKE, call)
            return client.evalsha(sha, *args[1:])

        assert [send(3, b"c1"), send(3, b"c1")] == [b"17", b"17"]
        assert [send(8, b"c2"), send(8, b"c2")] == [b"07", b"07"]  # denied: nothing kept
        assert [send(7, b"c3"), send(7, b"c3")] == [b"10", b"10"]
        assert client.hget("tokenbucket:k", "u") == b"10"
        assert client.get(logic._markers.of(b"tokenbucket:k", b"c2")) is None
        assert client.get(logic._markers.of(b"tokenbucket:k", b"c3")) == b"10"


@given(
    prefix=st.sampled_from(["tokenbucket:", "", "{app}:", "a{b}c{", "x}y:"]),
    key=st.text(max_size=12) | st.sampled_from(["{", "}", "{}", "}{", "{t}k", "a{b", "{}x"]),
)
@example(prefix="", key="{}")
def test_a_cluster_marker_shares_its_buckets_slot(prefix, key):
    """On a Cluster the marker hashes to its bucket's slot, whatever the key (braces, empty
    tags, any text), for any prefix the store accepts, and still starts with the prefix."""
    from redis.crc import key_slot

    from tokenbucket._stores.redis.once import Markers, new_call

    markers = Markers(prefix, cluster=True)
    name = (prefix + key).encode("utf-8", "surrogatepass")
    marker = markers.of(name, new_call())
    assert key_slot(marker) == key_slot(name)
    assert marker.startswith(prefix.encode() + b"\xffonce")


@pytest.mark.parametrize("prefix", ["a{", "{}", "x{y", "{}{z}"])
def test_a_cluster_store_refuses_a_prefix_whose_brace_would_move_markers(prefix):
    """A prefix with a '{' that opens no whole tag in it would put markers in other slots than
    their buckets: a Cluster store refuses it, naming the field; a single server takes it."""
    from tokenbucket._stores.redis.once import Markers

    with pytest.raises(ValueError, match=r"'prefix' must hold no '\{' or a whole non-empty"):
        Markers(prefix, cluster=True)
    assert Markers(prefix, cluster=False).base == prefix.encode() + b"\xffonce:"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_draws_call_ids_of_its_own():
    """Workers forked from one parent (gunicorn --preload) never share call ids: a child's
    next id is not its parent's, though both count on from the same number."""
    from tokenbucket._stores.redis.once import new_call

    new_call()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id and leave at once
        os.write(write, new_call())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64)
    os.close(read)
    parent = new_call()
    assert child[12:] == parent[12:]  # the same count after the fork...
    assert child[:12] != parent[:12]  # ...but another token: another id
