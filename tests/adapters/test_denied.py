"""The ``denied=`` option of both middlewares, and the built-in RFC 9457 problem details."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.asgi import RateLimitMiddleware as Asgi
from tokenbucket.asgi import Response, problem_details
from tokenbucket.wsgi import RateLimitMiddleware as Wsgi

IP = "203.0.113.7"
QUOTA = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def get(kind, middleware, path="/", times=1):
    """``times`` GETs of ``path``; the last response as (status, headers, body)."""
    if kind == "wsgi":
        client = httpx.Client(
            transport=httpx.WSGITransport(app=middleware, remote_addr=IP), base_url="http://t"
        )
        for _ in range(times):
            response = client.get(path)
        return response.status_code, response.headers, response.content

    async def go():
        transport = httpx.ASGITransport(app=middleware, client=(IP, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for _ in range(times):
                response = await client.get(path)
        return response.status_code, response.headers, response.content

    return asyncio.run(go())


def make(kind, **options):
    app, cls = (wsgi_app, Wsgi) if kind == "wsgi" else (asgi_app, Asgi)
    registry = BucketRegistry(Rule(2, 1.0), clock=ManualClock())
    return cls(app, registry=registry, **options)


KINDS = pytest.mark.parametrize("kind", ["wsgi", "asgi"])


@KINDS
def test_problem_details(kind):
    status, headers, body = get(kind, make(kind, denied=problem_details), times=3)
    assert status == 429
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {
        "type": QUOTA,
        "title": "Request cannot be satisfied as assigned quota has been exceeded",
        "status": 429,
        "detail": "Retry after 1 second.",
        "violated-policies": ["default"],
    }
    assert headers["retry-after"] == "1"
    assert headers["ratelimit"] == '"default";r=0;t=1'
    assert headers["ratelimit-policy"] == '"default";q=2;w=2'


@KINDS
def test_problem_details_names_the_route_and_the_binding_limit(kind):
    middleware = make(
        kind,
        denied=problem_details,
        routes={"/login": "1/minute", "/search": "5/minute;1/day"},
    )
    status, headers, body = get(kind, middleware, "/login/", times=2)
    assert status == 429
    assert json.loads(body)["violated-policies"] == ["/login"]
    assert headers["ratelimit"] == '"/login";r=0;t=60'
    status, headers, body = get(kind, middleware, "/search", times=2)
    assert json.loads(body)["violated-policies"] == ["1/day"]
    assert headers["ratelimit"].startswith('"1/day";r=0')


@KINDS
def test_a_denial_of_the_users_own_keeps_the_fields(kind):
    seen = []

    def denied(request, decision):
        seen.append((request.path, decision.allowed))
        body = b"<h1>Slow down</h1>"
        return Response(429, [("Content-Type", "text/html"), ("Retry-After", "99")], body)

    status, headers, body = get(kind, make(kind, denied=denied), "/page", times=3)
    assert (status, body) == (429, b"<h1>Slow down</h1>")
    assert headers["content-type"] == "text/html"
    assert headers["retry-after"] == "99"  # its own, not replaced
    assert headers["ratelimit"] == '"default";r=0;t=1'
    assert seen == [("/page", False)]
    # A response that is not a 429 is the user's choice too (a 503, a redirect).
    redirect = make(kind, denied=lambda r, d: (303, [("Location", "/wait")], b""))
    status, headers, _ = get(kind, redirect, times=3)
    assert (status, headers["location"], headers["retry-after"]) == (303, "/wait", "1")


@KINDS
@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("nope", "a Response"),
        ((429, [], "text"), "a bytes body"),
        ((429, {"a": "b"}, b""), "headers as a list"),
        ((1000, [], b""), "a status from 100 to 599"),
        ((True, [], b""), "a status from 100 to 599"),
    ],
)
def test_a_bad_denial_is_a_type_error_naming_it(kind, answer, problem):
    def bad(request, decision):
        return answer

    with pytest.raises(TypeError, match=f"'denied' .*bad.* must return {problem}"):
        get(kind, make(kind, denied=bad), times=3)


@KINDS
def test_denied_must_be_callable(kind):
    with pytest.raises(TypeError, match="'denied' must be a callable"):
        make(kind, denied="429.html")


@KINDS
def test_without_denied_the_json_429_is_unchanged(kind):
    status, headers, body = get(kind, make(kind), times=3)
    assert status == 429
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"] == "Rate limit exceeded"
