"""Costs known only afterwards in the adapters: the middlewares' ``settle`` and the
decorator's ``settle``, an LLM-style proxy settling on the usage its upstream reports."""

from __future__ import annotations

import asyncio
import io
import wsgiref.util

import httpx
import pytest

from tokenbucket import BucketRegistry, ManualClock, RateLimitExceeded, Rule, rate_limit
from tokenbucket.asgi import RateLimitMiddleware as ASGIMiddleware
from tokenbucket.wsgi import RateLimitMiddleware as WSGIMiddleware

IP = "203.0.113.7"


def usage(request, status, headers):
    """The real cost: what the upstream says it used."""
    return int(headers["x-usage-tokens"]) if "x-usage-tokens" in headers else None


def limits():
    clock = ManualClock(100.0)
    return BucketRegistry(Rule(1000, 10.0), clock=clock), clock


async def upstream(scope, receive, send):
    """An LLM-style upstream: the tokens it used are in the query string, reported back."""
    used = scope["query_string"].decode() or "0"
    headers = [(b"x-usage-tokens", used.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"completion"})


def upstream_wsgi(environ, start_response):
    used = environ.get("QUERY_STRING") or "0"
    start_response("200 OK", [("X-Usage-Tokens", used)])
    return [b"completion"]


def client_for(app):
    if isinstance(app, ASGIMiddleware):
        transport = httpx.ASGITransport(app=app, client=(IP, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")
    return httpx.Client(transport=httpx.WSGITransport(app=app, remote_addr=IP), base_url="http://t")


def get(app, path):
    """GET ``path`` through a real HTTP client, sync or async as the app's protocol is."""
    client = client_for(app)
    if isinstance(client, httpx.Client):
        with client:
            return client.get(path)

    async def main():
        async with client:
            return await client.get(path)

    return asyncio.run(main())


@pytest.fixture(params=["asgi", "wsgi"])
def proxy(request):
    registry, clock = limits()
    if request.param == "asgi":
        app = ASGIMiddleware(upstream, registry=registry, cost=100, settle=usage)
    else:
        app = WSGIMiddleware(upstream_wsgi, registry=registry, cost=100, settle=usage)
    return app, registry, clock


class TestLLMProxy:
    def test_overspending_client_is_refused_until_its_debt_is_repaid(self, proxy):
        app, registry, clock = proxy
        assert get(app, "/v1/chat?1500").status_code == 200  # admitted on 100, used 1500
        assert registry.store.level(IP, registry.default) == -500
        refused = get(app, "/v1/chat?10")
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "60"  # (100 + 500) / 10 per second, exactly
        clock.advance(59.9)
        assert get(app, "/v1/chat?10").status_code == 429
        clock.advance(0.1)
        assert get(app, "/v1/chat?10").status_code == 200
        assert registry.tokens(IP) == 90  # 100 earned back, 100 estimated, 10 used

    def test_underspending_client_gets_the_rest_back(self, proxy):
        app, registry, _ = proxy
        assert get(app, "/v1/chat?20").status_code == 200
        assert registry.tokens(IP) == 980

    def test_zero_usage_refunds_the_estimate(self, proxy):
        app, registry, _ = proxy
        assert get(app, "/v1/chat").status_code == 200  # used 0: all 100 back
        assert registry.tokens(IP) == 1000


async def call_asgi(app, scope):
    sent = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    return sent


def scope(query=b"1500"):
    return {
        "type": "http",
        "method": "GET",
        "path": "/",
        "query_string": query,
        "headers": [],
        "client": (IP, 1),
        "scheme": "http",
    }


class TestStreamed:
    def test_settles_after_the_last_body_message(self):
        registry, _ = limits()
        levels = []

        async def stream(scope, receive, send):
            headers = [(b"x-usage-tokens", b"400")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for _ in range(2):
                await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
                levels.append(registry.tokens(IP))
            await send({"type": "http.response.body", "body": b""})
            levels.append(registry.tokens(IP))

        app = ASGIMiddleware(stream, registry=registry, cost=100, settle=usage, settle_at="end")
        asyncio.run(call_asgi(app, scope()))
        assert levels == [900, 900, 600]

    @pytest.mark.parametrize("settle_at", ["start", "end"])
    def test_a_response_never_finished_still_settles_what_it_said(self, settle_at):
        registry, _ = limits()

        async def broken(scope, receive, send):
            headers = [(b"x-usage-tokens", b"700")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"chunk", "more_body": True})
            raise RuntimeError("upstream went away")

        app = ASGIMiddleware(broken, registry=registry, cost=100, settle=usage, settle_at=settle_at)
        with pytest.raises(RuntimeError):
            asyncio.run(call_asgi(app, scope()))
        assert registry.tokens(IP) == 300  # settled once: 700 in all

    def test_wsgi_iterable_closed_early_still_settles(self):
        registry, _ = limits()

        def streaming(environ, start_response):
            start_response("200 OK", [("X-Usage-Tokens", "250")])
            yield b"one"
            yield b"two"

        app = WSGIMiddleware(streaming, registry=registry, cost=100, settle=usage, settle_at="end")
        environ = {"REMOTE_ADDR": IP, "wsgi.input": io.BytesIO()}
        wsgiref.util.setup_testing_defaults(environ)
        result = app(environ, lambda status, headers, exc_info=None: None)
        assert next(iter(result)) == b"one"
        assert registry.tokens(IP) == 900  # not yet: the response is not over
        result.close()  # the client went away
        assert registry.tokens(IP) == 750
        result.close()
        assert registry.tokens(IP) == 750  # once


class TestBadSettle:
    @pytest.mark.parametrize("returned", ["12", -1, float("nan"), True])
    def test_a_bad_answer_is_named_in_the_log_and_refused(self, returned, caplog):
        registry, _ = limits()
        app = ASGIMiddleware(upstream, registry=registry, settle=lambda *a: returned)
        asyncio.run(call_asgi(app, scope()))  # delivered: no 500 (see test_settle_seams.py)
        assert "'settle' function returned" in caplog.text
        assert registry.tokens(IP) == 999  # the cost taken at admission stands

    def test_bad_options(self):
        registry, _ = limits()
        with pytest.raises(TypeError, match="'settle'"):
            ASGIMiddleware(upstream, registry=registry, settle=3)
        with pytest.raises(ValueError, match="'settle_at'"):
            WSGIMiddleware(upstream_wsgi, registry=registry, settle=usage, settle_at="later")
        with pytest.raises(TypeError, match="'settle'"):
            rate_limit(registry, settle="usage")


class Reply:
    def __init__(self, tokens):
        self.total_tokens = tokens


class TestDecorator:
    def test_sync_charges_from_the_result(self):
        registry, _ = limits()

        @rate_limit(registry, key=lambda tokens: "k", cost=100, settle=lambda r: r.total_tokens)
        def complete(tokens):
            return Reply(tokens)

        complete(1200)
        assert registry.store.level("k", registry.default) == -200
        with pytest.raises(RateLimitExceeded, match=r"retry after 30\.000 s"):
            complete(1)

    def test_waiting_calls_settle_too(self):
        registry, _ = limits()
        naps = []

        @rate_limit(
            registry,
            key=lambda tokens: "k",
            cost=100,
            wait=True,
            sleep=naps.append,
            settle=lambda r: r.total_tokens,
        )
        def complete(tokens):
            return Reply(tokens)

        complete(1050)  # 50 in debt
        complete(0)  # waits for 100 more: 15 s, then gives them back
        assert naps == [15.0]
        assert registry.store.level("k", registry.default) == -50

    def test_async(self):
        registry, _ = limits()

        @rate_limit(registry, key=lambda tokens: "k", cost=100, settle=lambda r: r.total_tokens)
        async def complete(tokens):
            return Reply(tokens)

        asyncio.run(complete(30))
        assert registry.tokens("k") == 970


def test_asgi_settles_through_an_async_redis_store(redis_url):
    """The awaited path: admission and settlement are each one EVALSHA on AsyncRedisStore."""
    from tokenbucket.redis import AsyncRedisStore

    async def main():
        store = AsyncRedisStore.from_url(redis_url)
        registry = BucketRegistry(Rule(1000, 0), store=store)
        app = ASGIMiddleware(upstream, registry=registry, cost=100, settle=usage)
        transport = httpx.ASGITransport(app=app, client=(IP, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = await client.get("/?1500")
            second = await client.get("/?1")
        level = await store.level(IP, registry.default)
        await store.aclose()
        return first.status_code, second.status_code, second.headers.get("retry-after"), level

    assert asyncio.run(main()) == (200, 429, None, -500)
