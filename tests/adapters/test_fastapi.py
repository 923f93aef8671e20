"""FastAPI: the RateLimit dependency through FastAPI's TestClient."""

from __future__ import annotations

import asyncio

import pytest

fastapi = pytest.importorskip("fastapi")

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tokenbucket import BucketRegistry, Decision, ManualClock, MemoryStore  # noqa: E402
from tokenbucket.fastapi import RateLimit  # noqa: E402
from tokenbucket.proxies import TrustedProxyKey  # noqa: E402


class AsyncStore:
    """An async store over MemoryStore (as AsyncRedisStore would be), to await the decision."""

    def __init__(self, clock):
        self._store = MemoryStore(clock=clock)
        self.awaited = 0

    def __getattr__(self, name):
        method = getattr(self._store, name)

        async def call(*args, **kwargs):
            self.awaited += 1
            await asyncio.sleep(0)
            return method(*args, **kwargs)

        return call


def make_app(limit, **route):
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(limit)], responses=limit.responses, **route)
    def search(q: str = ""):
        return {"q": q}

    @app.get("/left")
    def left(decision: Decision = Depends(limit)):  # noqa: B008 (FastAPI's idiom)
        return {"remaining": decision.remaining}

    return app


def test_exact_with_the_headers_and_fastapis_own_429():
    limit = RateLimit(BucketRegistry("10/second", clock=ManualClock()))
    client = TestClient(make_app(limit))
    responses = [client.get("/search") for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 10 + [429] * 2
    assert responses[0].headers["ratelimit-policy"] == '"default";q=10;w=1'
    assert responses[0].headers["ratelimit"] == '"default";r=9;t=1'
    denied = responses[-1]
    assert denied.json() == {"detail": "Rate limit exceeded"}  # FastAPI's HTTPException path
    assert denied.headers["retry-after"] == "1"
    assert denied.headers["ratelimit"] == '"default";r=0;t=1'
    # Each route counts apart: /left has its own bucket, and the endpoint reads the decision.
    assert client.get("/left").json() == {"remaining": 9.0}


def test_the_users_own_handler_runs_and_keeps_the_headers():
    limit = RateLimit("5/second;100/day", store=MemoryStore(clock=ManualClock()))
    app = make_app(limit)
    seen = []

    @app.exception_handler(HTTPException)
    async def handler(request: Request, exc: HTTPException):
        seen.append(exc.status_code)
        return JSONResponse({"slow": "down"}, status_code=exc.status_code, headers=exc.headers)

    client = TestClient(app)
    responses = [client.get("/search") for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert responses[-1].json() == {"slow": "down"}
    assert seen == [429]
    assert (
        responses[-1].headers["ratelimit-policy"] == '"5/second";q=5;w=1, "100/day";q=100;w=86400'
    )
    assert responses[-1].headers["ratelimit"] == '"5/second";r=0;t=1'


def test_the_429_is_in_the_openapi_document():
    limit = RateLimit("5/minute")
    schema = TestClient(make_app(limit)).get("/openapi.json").json()
    responses = schema["paths"]["/search"]["get"]["responses"]
    assert set(responses) == {"200", "422", "429"}
    assert set(responses["429"]["headers"]) == {"Retry-After", "RateLimit", "RateLimit-Policy"}


def test_on_a_router_every_route_counts_apart_unless_shared():
    clock = ManualClock()
    each = RateLimit("2/minute", store=MemoryStore(clock=clock))
    shared = RateLimit("2/minute", store=MemoryStore(clock=clock), shared=True)
    app = FastAPI()
    for prefix, limit in (("/each", each), ("/shared", shared)):
        router = APIRouter(prefix=prefix, dependencies=[Depends(limit)])

        @router.get("/a")
        def a():
            return "a"

        @router.get("/b/{item}")
        def b(item: int):
            return item

        app.include_router(router)
    client = TestClient(app)
    each_codes = [client.get(p).status_code for p in ["/each/a"] * 3 + ["/each/b/1", "/each/b/2"]]
    assert each_codes == [200, 200, 429, 200, 200]  # /b/{item} is one route
    shared_codes = [client.get(p).status_code for p in ["/shared/a", "/shared/b/1", "/shared/a"]]
    assert shared_codes == [200, 200, 429]


def test_an_async_store_is_awaited_and_keys_are_the_middlewares():
    store = AsyncStore(ManualClock())
    limit = RateLimit(BucketRegistry("1/minute", store=store), key=TrustedProxyKey(["127.0.0.0/8"]))
    client = TestClient(make_app(limit), client=("127.0.0.1", 5000))
    one = client.get("/search", headers={"x-forwarded-for": "198.51.100.1"})
    two = client.get("/search", headers={"x-forwarded-for": "198.51.100.2"})
    again = client.get("/search", headers={"x-forwarded-for": "198.51.100.1"})
    assert (one.status_code, two.status_code, again.status_code) == (200, 200, 429)
    assert store.awaited == 3


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"Rule\.parse"):
        RateLimit(5)
    with pytest.raises(ValueError, match="rate string"):
        RateLimit("5/fortnight")
    with pytest.raises(TypeError, match="'shared' must be a bool"):
        RateLimit("5/s", shared="yes")
    with pytest.raises(TypeError, match="'key' must be a callable"):
        RateLimit("5/s", key="ip")


def test_every_method_of_a_route_counts_in_one_bucket():
    """A HEAD of a GET-and-HEAD route takes from the route's bucket: no fresh bucket per method."""
    limit = RateLimit("2/minute", store=MemoryStore(clock=ManualClock()))
    app = FastAPI()

    @app.api_route("/page", methods=["GET", "HEAD"], dependencies=[Depends(limit)])
    def page():
        return "page"

    client = TestClient(app)
    codes = [client.get("/page").status_code, client.head("/page").status_code]
    assert codes == [200, 200]
    assert client.head("/page").status_code == 429
    assert client.get("/page").status_code == 429


def test_two_limits_on_one_route_keep_their_own_buckets_in_a_shared_store():
    # Regression: both counted under the route's namespace in the one store, so each request
    # took a token from one bucket twice.
    store = MemoryStore(clock=ManualClock())
    app = FastAPI()
    limits = [
        Depends(RateLimit("3/minute", store=store)),
        Depends(RateLimit("5/hour", store=store)),
    ]

    @app.get("/", dependencies=limits)
    def view():
        return {}

    client = TestClient(app)
    assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
