"""ASGI-only behaviour: real frameworks in-process, lifespan, WebSockets, async stores."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket.asgi import RateLimitMiddleware

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"


def run(coroutine):
    return asyncio.run(coroutine)


def client_for(app, ip=IP):
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


class AsyncMemoryStore:
    """An async store (as a Redis store would be) over MemoryStore, to drive the a-methods."""

    def __init__(self, clock):
        self.inner = MemoryStore(clock=clock)
        self.calls = 0

    async def take(self, key, amount, default, /):
        self.calls += 1
        await asyncio.sleep(0)
        return self.inner.take(key, amount, default)

    async def peek(self, key, amount, default, /):
        self.calls += 1
        await asyncio.sleep(0)
        return self.inner.peek(key, amount, default)

    async def level(self, key, default, /):
        self.calls += 1
        await asyncio.sleep(0)
        return self.inner.level(key, default)

    async def get_rule(self, key, /):
        return self.inner.get_rule(key)

    async def update_rule(self, key, default, capacity, refill_rate, /):
        return self.inner.update_rule(key, default, capacity, refill_rate)

    async def remove_rule(self, key, default, /):
        return self.inner.remove_rule(key, default)

    async def reset(self, key, /):
        self.inner.reset(key)


class TestFrameworks:
    def test_fastapi_through_asgi_transport(self):
        """FastAPI behind the middleware: 200s with headers, then 429 with Retry-After."""
        from fastapi import FastAPI

        app = FastAPI()

        @app.get("/items/{item}")
        async def item(item: int):
            return {"item": item}

        registry = BucketRegistry(Rule(2, 0.5), clock=ManualClock())
        app.add_middleware(RateLimitMiddleware, registry=registry, headers="both")

        async def scenario():
            async with client_for(app) as client:
                first = await client.get("/items/1")
                second = await client.get("/items/2")
                third = await client.get("/items/3")
            return first, second, third

        first, second, third = run(scenario())
        assert (first.status_code, first.json()) == (200, {"item": 1})
        assert first.headers["ratelimit"] == '"default";r=1;t=2'
        assert first.headers["x-ratelimit-remaining"] == "1"
        assert second.headers["ratelimit"] == '"default";r=0;t=4'
        assert third.status_code == 429
        assert third.headers["retry-after"] == "2"
        assert third.json()["error"] == "Rate limit exceeded"
        assert registry.tokens(IP) == 0.0

    def test_starlette_admin_api_over_httpx(self):
        """Starlette app: the admin API updates a limited client's rule; it can go on."""
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def home(request):
            return PlainTextResponse(f"hello {request.client.host}")

        registry = BucketRegistry(Rule(1, 0.01), clock=ManualClock())
        app = Starlette(routes=[Route("/", home)])
        app.add_middleware(RateLimitMiddleware, registry=registry, admin_token=TOKEN)

        async def scenario():
            async with client_for(app) as client:
                statuses = [(await client.get("/")).status_code for _ in range(2)]
                update = await client.post(
                    "/admin/update-rule",
                    json={"client_id": IP, "capacity": 3},
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
                after = [(await client.get("/")).status_code for _ in range(3)]
            return statuses, update, after

        statuses, update, after = run(scenario())
        assert statuses == [200, 429]
        assert update.status_code == 200
        assert update.json()["capacity"] == 3
        assert after == [200, 200, 429]


async def _call(app, scope, incoming):
    """Call ``app`` with ``scope``; feed ``incoming`` messages; return what it sent."""
    queue = list(incoming)
    sent = []

    async def receive():
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)  # a real server would wait for the client
        raise AssertionError("the app waited for a message that never came")

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return sent


def _ws_scope(path="/ws", client=(IP, 1), extensions=None):
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": client,
        "subprotocols": [],
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


async def echo_socket(scope, receive, send):
    """Accepts, echoes one message, closes."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": message.get("text")})
    await send({"type": "websocket.close", "code": 1000})


class TestWebSocket:
    def make(self, **options):
        registry = BucketRegistry(Rule(1, 1.0), clock=ManualClock())
        return RateLimitMiddleware(echo_socket, registry=registry, **options), registry

    def test_allowed_handshake_passes_through(self):
        """An allowed handshake reaches the app unchanged and takes a token."""
        app, registry = self.make()
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
        sent = run(_call(app, _ws_scope(), incoming))
        assert [m["type"] for m in sent] == [
            "websocket.accept",
            "websocket.send",
            "websocket.close",
        ]
        assert sent[1]["text"] == "hi"
        assert registry.tokens(IP) == 0.0

    def test_denied_with_http_response_extension(self):
        """With websocket.http.response, a denied handshake gets the 429 response."""
        app, registry = self.make()
        registry.consume(IP)
        scope = _ws_scope(extensions={"websocket.http.response": {}})
        sent = run(_call(app, scope, [{"type": "websocket.connect"}]))
        assert [m["type"] for m in sent] == [
            "websocket.http.response.start",
            "websocket.http.response.body",
        ]
        assert sent[0]["status"] == 429
        headers = dict(sent[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        assert headers[b"ratelimit"] == b'"default";r=0;t=1'
        assert json.loads(sent[1]["body"])["error"] == "Rate limit exceeded"

    def test_denied_without_extension_closes_before_accept(self):
        """Without the extension, a denied handshake is closed before accept (server: 403)."""
        app, registry = self.make()
        registry.consume(IP)
        sent = run(_call(app, _ws_scope(), [{"type": "websocket.connect"}]))
        assert sent == [{"type": "websocket.close", "code": 1008, "reason": "Rate limit exceeded"}]

    def test_exempt_websocket_path(self):
        """Exempt paths apply to WebSockets too."""
        app, registry = self.make(exempt=["/ws"])
        registry.consume(IP)
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "x"}]
        sent = run(_call(app, _ws_scope(), incoming))
        assert sent[0]["type"] == "websocket.accept"

    def test_view_scheme_and_method_for_websocket(self):
        """Key functions see scheme 'ws' and method 'GET' for a handshake."""
        views = []
        app, _ = self.make(key=lambda request: views.append(request) or "k")
        incoming = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "x"}]
        run(_call(app, _ws_scope(), incoming))
        assert (views[0].scheme, views[0].method, views[0].path) == ("ws", "GET", "/ws")

    def test_client_left_before_handshake(self):
        """A denied client that disconnects first gets nothing sent."""
        app, registry = self.make()
        registry.consume(IP)
        sent = run(_call(app, _ws_scope(), [{"type": "websocket.disconnect", "code": 1001}]))
        assert sent == []


class TestProtocol:
    def test_lifespan_passes_through_untouched(self):
        """lifespan reaches the app as it is, and nothing is counted."""
        seen = []

        async def app(scope, receive, send):
            seen.append(scope["type"])
            message = await receive()
            seen.append(message["type"])
            await send({"type": "lifespan.startup.complete"})

        registry = BucketRegistry(Rule(1, 1.0), clock=ManualClock())
        middleware = RateLimitMiddleware(app, registry=registry)
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        sent = run(_call(middleware, scope, [{"type": "lifespan.startup"}]))
        assert seen == ["lifespan", "lifespan.startup"]
        assert sent == [{"type": "lifespan.startup.complete"}]
        assert registry.tokens("unknown") == 1.0

    def test_response_without_headers_key(self):
        """An app that sends no 'headers' key still gets the rate-limit fields."""

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})

        middleware = RateLimitMiddleware(app, registry=BucketRegistry(Rule(5, 1.0)))
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
        sent = run(_call(middleware, scope, [{"type": "http.request"}]))
        assert dict(sent[0]["headers"])[b"ratelimit-policy"] == b'"default";q=5;w=5'

    @pytest.mark.parametrize("container", [list, tuple, iter, lambda pairs: (p for p in pairs)])
    def test_app_headers_as_any_iterable_are_kept(self, container):
        """The app's headers may be any iterable of pairs (ASGI allows it): all are sent, ours
        follow, and a field of ours the app set is not added twice."""
        app_headers = [(b"content-type", b"text/plain"), (b"x-app", b"1")]

        def app_sending(fields):
            async def app(scope, receive, send):
                await send(
                    {"type": "http.response.start", "status": 200, "headers": container(fields)}
                )
                await send({"type": "http.response.body", "body": b""})

            return app

        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
        registry = BucketRegistry(Rule(5, 1.0), clock=ManualClock())
        middleware = RateLimitMiddleware(app_sending(app_headers), registry=registry)
        sent = run(_call(middleware, scope, [{"type": "http.request"}]))
        assert list(sent[0]["headers"]) == [
            *app_headers,
            (b"ratelimit-policy", b'"default";q=5;w=5'),
            (b"ratelimit", b'"default";r=4;t=1'),
        ]
        own = [*app_headers, (b"RateLimit", b'"app";r=1')]
        middleware = RateLimitMiddleware(app_sending(own), registry=registry)
        sent = run(_call(middleware, scope, [{"type": "http.request"}]))
        assert list(sent[0]["headers"]) == [*own, (b"ratelimit-policy", b'"default";q=5;w=5')]

    def test_non_ascii_path_matches_wsgi_view(self):
        """ASGI decodes the path as UTF-8; the view shows it as it is."""
        views = []

        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        middleware = RateLimitMiddleware(
            app, registry=BucketRegistry(Rule(5, 1.0)), exempt=lambda r: views.append(r)
        )
        scope = {"type": "http", "method": "GET", "path": "/café", "headers": [], "client": None}
        sent = run(_call(middleware, scope, [{"type": "http.request"}]))
        assert sent[0]["status"] == 200
        assert views[0].path == "/café"
        assert views[0].client is None
        assert repr(views[0]) == (
            "RequestView(method='GET', path='/café', query_string='', client=None)"
        )

    def test_bad_content_length_is_400(self):
        """A Content-Length that is not a number is 400, before the body is read."""
        registry = BucketRegistry(Rule(5, 1.0))
        middleware = RateLimitMiddleware(echo_socket, registry=registry, admin_token=TOKEN)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/admin/update-rule",
            "headers": [
                (b"authorization", f"Bearer {TOKEN}".encode()),
                (b"content-length", b"12x"),
            ],
            "client": (IP, 1),
        }
        sent = run(_call(middleware, scope, []))
        assert sent[0]["status"] == 400
        assert json.loads(sent[1]["body"]) == {"error": "invalid Content-Length: '12x'"}

    def test_disconnect_while_reading_admin_body(self):
        """A client that leaves mid-body gets a 400, and nothing changes."""
        registry = BucketRegistry(Rule(5, 1.0))
        middleware = RateLimitMiddleware(echo_socket, registry=registry, admin_token=TOKEN)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/admin/update-rule",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
            "client": (IP, 1),
        }
        incoming = [
            {"type": "http.request", "body": b'{"client_id": "a", ', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent = run(_call(middleware, scope, incoming))
        assert sent[0]["status"] == 400
        assert registry.rule_for("a") == Rule(5, 1.0)

    def test_disconnect_after_a_valid_prefix_changes_nothing(self):
        """A body cut short is never acted on, even if what arrived parses as a request."""
        registry = BucketRegistry(Rule(5, 1.0))
        middleware = RateLimitMiddleware(echo_socket, registry=registry, admin_token=TOKEN)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/admin/update-rule",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
            "client": (IP, 1),
        }
        incoming = [
            {
                "type": "http.request",
                "body": b'{"client_id": "a", "capacity": 50}',
                "more_body": True,
            },
            {"type": "http.disconnect"},
        ]
        sent = run(_call(middleware, scope, incoming))
        assert sent[0]["status"] == 400
        assert json.loads(sent[1]["body"]) == {
            "error": "request body incomplete: the client disconnected"
        }
        assert registry.rule_for("a") == Rule(5, 1.0)


class TestAsyncStore:
    def test_async_store_is_awaited(self):
        """With an async store the middleware uses the awaitable registry methods."""
        clock = ManualClock()
        store = AsyncMemoryStore(clock)
        registry = BucketRegistry(Rule(2, 1.0), store=store)
        assert registry.is_async
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        async def home(request):
            return PlainTextResponse("ok")

        app = Starlette(routes=[Route("/", home)])
        app.add_middleware(RateLimitMiddleware, registry=registry, admin_token=TOKEN)
        auth = {"Authorization": f"Bearer {TOKEN}"}

        async def scenario():
            async with client_for(app) as client:
                statuses = [(await client.get("/")).status_code for _ in range(3)]
                update = await client.post(
                    "/admin/update-rule", json={"client_id": IP, "capacity": 4}, headers=auth
                )
                read = await client.get(f"/admin/update-rule?client_id={IP}", headers=auth)
                removed = await client.delete(f"/admin/update-rule?client_id={IP}", headers=auth)
                after = (await client.get("/")).status_code
            return statuses, update, read, removed, after

        statuses, update, read, removed, after = run(scenario())
        assert statuses == [200, 200, 429]
        assert update.json() == {
            "client_id": IP,
            "route": None,
            "capacity": 4,
            "refill_rate": 1.0,
            "tokens": 2.0,
            "override": True,
        }
        assert read.json()["tokens"] == 2.0
        assert removed.json()["removed"] is True
        assert after == 429  # back to capacity 2, with 2 used
        assert store.calls >= 5

    def test_update_without_numbers_is_400_with_an_async_store(self):
        """Neither capacity nor refill_rate: a 400 with an async store too, and nothing
        changes."""
        registry = BucketRegistry(Rule(2, 1.0), store=AsyncMemoryStore(ManualClock()))
        app = RateLimitMiddleware(echo_socket, registry=registry, admin_token=TOKEN)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/admin/update-rule",
            "headers": [(b"authorization", f"Bearer {TOKEN}".encode())],
            "client": (IP, 1),
        }
        body = {"type": "http.request", "body": json.dumps({"client_id": IP}).encode()}
        sent = run(_call(app, scope, [body]))
        assert sent[0]["status"] == 400
        assert json.loads(sent[1]["body"]) == {
            "error": "at least one of 'capacity' or 'refill_rate' is required"
        }
        assert run(registry.arule_for(IP)) == Rule(2, 1.0)


class TestBlockingStore:
    """A store that blocks (a sync RedisStore) would stall the event loop on every decision."""

    def test_sync_redis_store_is_refused(self):
        """TypeError at construction, naming the store and AsyncRedisStore; no connection."""
        redis_store = pytest.importorskip("tokenbucket.redis")
        store = redis_store.RedisStore.from_url("redis://127.0.0.1:1/0")
        registry = BucketRegistry(Rule(2, 1.0), store=store)
        with pytest.raises(TypeError) as info:
            RateLimitMiddleware(echo_socket, registry=registry)
        assert str(info.value) == (
            "RateLimitMiddleware (ASGI) needs a non-blocking store: RedisStore blocks the event "
            "loop on every decision; use tokenbucket.redis.AsyncRedisStore"
        )
        store.close()

    def test_any_store_declaring_blocking_is_refused(self):
        """The check reads the store's ``blocking`` attribute; absent or False is accepted."""

        class Blocking(MemoryStore):
            blocking = True

        class NonBlocking(MemoryStore):
            blocking = False

        with pytest.raises(TypeError, match=r"^RateLimitMiddleware \(ASGI\) needs a non-block"):
            RateLimitMiddleware(echo_socket, registry=BucketRegistry(Rule(2, 1), store=Blocking()))
        for store in (MemoryStore(), NonBlocking(), AsyncMemoryStore(ManualClock())):
            RateLimitMiddleware(echo_socket, registry=BucketRegistry(Rule(2, 1), store=store))

    def test_async_redis_store_is_accepted(self):
        redis_store = pytest.importorskip("tokenbucket.redis")

        async def build():
            store = redis_store.AsyncRedisStore.from_url("redis://127.0.0.1:1/0")
            registry = BucketRegistry(Rule(2, 1.0), store=store)
            middleware = RateLimitMiddleware(echo_socket, registry=registry)
            await store.aclose()
            return middleware

        assert isinstance(run(build()), RateLimitMiddleware)


class TestRootPath:
    """Issue 22 item 17: behind ``--root-path /api`` uvicorn sends ``path="/api/login"``,
    hypercorn and granian ``path="/login"``: rules, exemptions and the admin path matched
    under one server and not the other. They match the path without ``root_path``, as
    Starlette routes (it strips root_path when the path starts with it)."""

    @staticmethod
    def call(middleware, path, root_path, method="GET", headers=(), body=b""):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": root_path,
            "query_string": b"",
            "headers": [(b"content-length", str(len(body)).encode()), *headers],
            "client": (IP, 40000),
            "server": ("testserver", 80),
        }
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        run(middleware(scope, receive, send))
        return sent[0]["status"], dict(sent[0]["headers"])

    @staticmethod
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"app"})

    @pytest.mark.parametrize("server", ["uvicorn", "hypercorn"])
    def test_routes_exemptions_and_admin_path_match_without_root_path(self, server):
        middleware = RateLimitMiddleware(
            self.app,
            registry=BucketRegistry(Rule(100, 0.001), clock=ManualClock()),
            routes={"/login": Rule(1, 0.001)},
            exempt=["/health"],
            admin_token="s3cret-Token_123",
        )
        full = (lambda path: "/api" + path) if server == "uvicorn" else (lambda path: path)
        assert self.call(middleware, full("/login"), "/api")[0] == 200
        assert self.call(middleware, full("/login"), "/api")[0] == 429  # the route's rule
        for _ in range(3):
            status, headers = self.call(middleware, full("/health"), "/api")
            assert (status, b"ratelimit" in headers) == (200, False)  # exempt: not counted
        auth = [(b"authorization", b"Bearer s3cret-Token_123")]
        status, _ = self.call(
            middleware,
            full("/admin/update-rule"),
            "/api",
            "POST",
            auth,
            json.dumps({"client_id": IP, "capacity": 3, "route": "/login"}).encode(),
        )
        assert status == 200

    def test_a_path_merely_sharing_the_prefix_is_left_alone(self):
        """``/apiary`` is not under root_path ``/api``; ``/api`` itself is ``/``."""
        middleware = RateLimitMiddleware(
            self.app,
            registry=BucketRegistry(Rule(100, 0.001), clock=ManualClock()),
            routes={"/ary": Rule(1, 0.001), "/": Rule(2, 0.001)},
        )
        assert [self.call(middleware, "/apiary", "/api")[0] for _ in range(2)] == [200, 200]
        assert [self.call(middleware, "/api", "/api")[0] for _ in range(3)] == [200, 200, 429]
