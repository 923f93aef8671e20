"""The middlewares' ``in_flight=`` option: slots taken before tokens, released however a request
ends (response sent, app raised, task cancelled, client gone), never more than N in flight."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from tokenbucket import BucketRegistry, InFlightLimit, Rule
from tokenbucket.asgi import RateLimitMiddleware as AsgiMiddleware
from tokenbucket.redis import AsyncRedisStore, RedisStore
from tokenbucket.wsgi import RateLimitMiddleware as WsgiMiddleware

IP = "203.0.113.7"  # the harness's client (conftest.IP)
BUSY = {"error": "Too many requests in flight", "limit": 1}


def test_refused_for_concurrency_with_429_and_no_token_taken(make):
    limit = InFlightLimit(1)
    harness = make(in_flight=limit)
    held = limit.acquire(IP)  # another request of this client is in progress
    refused = harness.request()
    assert refused.status == 429
    assert refused.json() == BUSY
    assert refused.header("Retry-After") is None  # no honest wait to announce
    assert refused.header("RateLimit-Policy") == '"in-flight";q=1;qu="concurrent-requests"'
    assert refused.header("RateLimit") == '"in-flight";r=0'
    assert harness.seen == []
    assert harness.registry.tokens(IP) == 3  # no token taken
    limit.release(held)
    allowed = harness.request()
    assert allowed.status == 200
    assert allowed.header("RateLimit") == '"default";r=2;t=1'
    assert limit.in_flight(IP) == 0


def test_rate_limited_request_gives_its_slot_back(make):
    limit = InFlightLimit(1)
    harness = make(in_flight=limit)
    assert [harness.request().status for _ in range(4)] == [200, 200, 200, 429]
    assert limit.in_flight(IP) == 0
    assert len(limit.store) == 0


def test_legacy_headers_only_leave_the_draft_fields_out(make):
    limit = InFlightLimit(1)
    harness = make(in_flight=limit, headers="legacy")
    limit.acquire(IP)
    refused = harness.request()
    assert refused.status == 429
    assert [name.lower() for name, _ in refused.headers] == ["content-type", "content-length"]


def test_dry_run_lets_it_through_holding_nothing(make):
    limit = InFlightLimit(1)
    harness = make(in_flight=limit, dry_run=True)
    held = limit.acquire(IP)
    result = harness.request()
    assert result.status == 200
    assert result.header("RateLimit") == '"default";r=2;t=1'
    limit.release(held)
    assert limit.in_flight(IP) == 0


def test_key_function_routes_and_exemptions(make):
    """The slot key is the key function's answer, across routes; exempt requests take none."""
    limit = InFlightLimit(1)
    harness = make(
        in_flight=limit,
        key=lambda view: view.header("x-api-key") or "anonymous",
        routes={"/login": Rule(5, 1.0)},
        exempt=["/health"],
    )
    held = limit.acquire("k1")
    assert harness.request(path="/login", headers={"X-API-Key": "k1"}).status == 429
    assert harness.request(path="/", headers={"X-API-Key": "k1"}).status == 429
    assert harness.request(path="/health", headers={"X-API-Key": "k1"}).status == 200
    assert harness.request(path="/login", headers={"X-API-Key": "k2"}).status == 200
    limit.release(held)
    assert harness.request(path="/login", headers={"X-API-Key": "k1"}).status == 200
    assert len(limit.store) == 0


def test_option_checked():
    with pytest.raises(TypeError, match=r"'in_flight' must be an InFlightLimit or None, got 4"):
        AsgiMiddleware(lambda *a: None, registry=BucketRegistry(Rule(1, 1)), in_flight=4)


def test_asgi_refuses_a_blocking_store_and_wsgi_an_async_one(redis_url):
    registry = BucketRegistry(Rule(1, 1))
    store = RedisStore.from_url(redis_url)
    with pytest.raises(TypeError, match="non-blocking 'in_flight' store: RedisStore"):
        AsgiMiddleware(lambda *a: None, registry=registry, in_flight=InFlightLimit(1, store=store))
    store.close()
    with pytest.raises(TypeError, match="'in_flight' uses an async store"):
        WsgiMiddleware(
            lambda *a: None,
            registry=registry,
            in_flight=InFlightLimit(1, store=AsyncRedisStore.from_url(redis_url)),
        )


# -- ASGI: concurrency, and every way a request can end --------------------------------------


def scope(client=IP, path="/"):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": (client, 40000),
        "server": ("testserver", 80),
    }


class Peak:
    """An ASGI app that records how many of its calls run at once per client, and ends as told."""

    def __init__(self):
        self.clients = {}
        self.peak = 0

    @property
    def inside(self):
        return sum(self.clients.values())

    async def __call__(self, scope, receive, send):
        client = scope["client"][0]
        self.clients[client] = inside = self.clients.get(client, 0) + 1
        self.peak = max(self.peak, inside)
        try:
            how = scope.get("how", "ok")
            for _ in range(scope.get("steps", 1)):
                await asyncio.sleep(0)
            if how == "raise":
                raise RuntimeError("app failed")
            if how == "disconnect":
                message = await receive()
                assert message["type"] == "http.disconnect"
                for _ in range(3):
                    await asyncio.sleep(0)  # the app goes on a little after the client left
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            if how == "stream":
                for _ in range(3):
                    await send({"type": "http.response.body", "body": b"x", "more_body": True})
                    await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"done"})
            if how == "linger":  # work after the response: the slot is already free
                for _ in range(3):
                    await asyncio.sleep(0)
        finally:
            self.clients[client] -= 1


async def call(middleware, scope, disconnect=False):
    """One request; return the status sent (None if none)."""
    sent = []

    async def receive():
        if disconnect:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await middleware(scope, receive, send)
    return sent[0]["status"] if sent else None


def test_asgi_never_more_than_n_in_flight():
    """50 concurrent requests of one client, N=4: 4 run, 46 get 429, the app saw at most 4."""
    app, limit = Peak(), InFlightLimit(4)
    middleware = AsgiMiddleware(app, registry=BucketRegistry(Rule(1000, 1)), in_flight=limit)

    async def main():
        requests = [dict(scope(), steps=20) for _ in range(50)]
        return await asyncio.gather(*(call(middleware, request) for request in requests))

    statuses = asyncio.run(main())
    assert app.peak == 4
    assert sorted(statuses).count(200) == 4
    assert statuses.count(429) == 46
    assert limit.in_flight(IP) == 0


def test_asgi_slot_free_once_the_response_is_sent():
    """Work an app does after its last body message (background tasks) holds no slot."""
    limit = InFlightLimit(1)
    seen = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        seen.append(limit.in_flight(IP))

    middleware = AsgiMiddleware(app, registry=BucketRegistry(Rule(5, 1)), in_flight=limit)
    assert asyncio.run(call(middleware, scope())) == 200
    assert seen == [0]


def run_mixed(middleware, requests, seed, cleanup=None):
    """Run ``requests`` with random endings, 100 at a time; return what happened to them."""
    rng = random.Random(seed)
    endings = ["ok", "stream", "linger", "raise", "disconnect"]
    counts = {}

    async def batch(size):
        tasks, cancels = [], []
        for _ in range(size):
            how = rng.choice(endings)
            request = dict(scope(client=f"10.0.0.{rng.randrange(40)}"), how=how)
            request["steps"] = rng.randrange(1, 6)
            if rng.random() < 0.1:
                request["path"] = "/limited"
            task = asyncio.ensure_future(call(middleware, request, disconnect=how == "disconnect"))
            tasks.append(task)
            cancels.append(rng.random() < 0.2)
        for _ in range(rng.randrange(1, 5)):
            await asyncio.sleep(0)
        for task, cancelled in zip(tasks, cancels):
            if cancelled:
                task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            name = outcome if isinstance(outcome, int) else type(outcome).__name__
            counts[name] = counts.get(name, 0) + 1

    async def main():
        for _ in range(requests // 100):
            await batch(100)
        if cleanup is not None:
            await cleanup()

    asyncio.run(main())
    return counts


@pytest.mark.parametrize("routes", [None, {"/limited": Rule(1, 0)}], ids=["fast", "routes"])
def test_asgi_10000_requests_with_random_endings_leave_no_slot(routes):
    """Cancellations, app errors, client disconnects, streams and rate-limit denials: 0 held."""
    app, limit = Peak(), InFlightLimit(4)
    registry = BucketRegistry(Rule(1e9, 1e9))
    middleware = AsgiMiddleware(app, registry=registry, in_flight=limit, routes=routes)
    counts = run_mixed(middleware, 10_000, seed=13)
    assert app.peak == 4
    assert counts.get("CancelledError", 0) > 1000
    assert counts.get("RuntimeError", 0) > 1000
    assert counts.get(429, 0) > 100
    assert app.inside == 0
    assert len(limit.store) == 0  # no key holds a slot


def test_asgi_on_redis_random_endings_leave_no_slot(redis_url):
    """The same on an AsyncRedisStore, 1,000 requests (some cancelled during their EVALSHA)."""
    app = Peak()
    # Connects on first use, in run_mixed's loop. A timeout long enough for a loaded machine:
    # a release that times out is kept and sent with the key's next call (none comes here).
    store = AsyncRedisStore.from_url(redis_url, socket_timeout=10)
    limit = InFlightLimit(4, store=store, lease=30)
    registry = BucketRegistry(Rule(1e9, 1e9))
    middleware = AsgiMiddleware(app, registry=registry, in_flight=limit)
    counts = run_mixed(middleware, 1000, seed=7, cleanup=store.aclose)
    assert counts.get("RuntimeError", 0) > 50
    assert app.peak == 4
    client = RedisStore.from_url(redis_url)
    assert client.client.keys("*") == []  # every sorted set emptied (and so deleted)
    client.close()


# -- a real server --------------------------------------------------------------------------

SLOW_APP = """
import asyncio
from tokenbucket import BucketRegistry, InFlightLimit, Rule
from tokenbucket.asgi import RateLimitMiddleware

state = {"inside": 0, "peak": 0}

async def slow(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/peak":
        body = str(state["peak"]).encode()
    else:
        state["inside"] += 1
        state["peak"] = max(state["peak"], state["inside"])
        await asyncio.sleep(0.5)
        state["inside"] -= 1
        body = b"slow"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

app = RateLimitMiddleware(
    slow, registry=BucketRegistry(Rule(1000, 1)), in_flight=InFlightLimit(4), exempt=["/peak"]
)
"""


def test_uvicorn_caps_concurrent_requests(tmp_path):
    """uvicorn, 20 concurrent httpx requests of one client: 4 served at a time, the rest 429."""
    (tmp_path / "slow_app.py").write_text(textwrap.dedent(SLOW_APP))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "uvicorn", "slow_app:app", "--port", str(port)]
    server = subprocess.Popen(
        [*args, "--log-level", "warning"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)

        async def main():
            limits = httpx.Limits(max_connections=20)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits) as c:
                first = await asyncio.gather(*(c.get("/", timeout=10) for _ in range(20)))
                second = await asyncio.gather(*(c.get("/", timeout=10) for _ in range(4)))
                peak = await c.get("/peak", timeout=10)
            return first, second, peak

        first, second, peak = asyncio.run(main())
        statuses = [response.status_code for response in first]
        assert statuses.count(200) >= 4
        assert statuses.count(429) >= 8  # 20 at once on a 2-core machine: most overlap
        refused = next(r for r in first if r.status_code == 429)
        assert json.loads(refused.text) == {"error": "Too many requests in flight", "limit": 4}
        assert refused.headers["ratelimit-policy"] == '"in-flight";q=4;qu="concurrent-requests"'
        assert [r.status_code for r in second] == [200] * 4  # every slot came back
        assert peak.text == "4"
    finally:
        server.terminate()
        server.wait(10)
        server.stdout.close()


def test_asgi_on_redis_one_round_trip_each_way(redis_url):
    """Per request on Redis: one EVALSHA for the slot, one for the bucket, one ZREM; no more."""
    requests = 50

    async def main():
        store = AsyncRedisStore.from_url(redis_url)
        limit = InFlightLimit(4, store=store)
        middleware = AsgiMiddleware(
            Peak(), registry=BucketRegistry(Rule(1000, 1), store=store), in_flight=limit
        )
        assert await call(middleware, scope()) == 200  # connects, loads both scripts
        await store.client.config_resetstat()
        statuses = [await call(middleware, scope()) for _ in range(requests)]
        stats = await store.client.info("commandstats")
        await store.aclose()
        return statuses, {name[len("cmdstat_") :]: s["calls"] for name, s in stats.items()}

    statuses, calls = asyncio.run(main())
    assert statuses == [200] * requests
    sent = {name: n for name, n in calls.items() if name in ("evalsha", "zrem", "eval")}
    # zrem: the client's, plus none from the scripts (which use ZADD and ZREMRANGEBYSCORE)
    assert sent == {"evalsha": 2 * requests, "zrem": requests}
    assert calls["zadd"] == requests  # inside the slot script
