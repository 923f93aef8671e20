"""The framework integrations on a real Redis: FastAPI awaits AsyncRedisStore (and runs the
blocking RedisStore in its thread pool), Flask and Django use RedisStore; 10 of 12 admitted."""

from __future__ import annotations

import contextlib
from types import ModuleType

import pytest

from tokenbucket import BucketRegistry
from tokenbucket.redis import AsyncRedisStore, RedisStore


def test_fastapi_async_and_blocking_redis(redis_url):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from tokenbucket.fastapi import RateLimit

    stores = {"async": AsyncRedisStore.from_url(redis_url), "sync": RedisStore.from_url(redis_url)}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await stores["async"].aclose()  # in the loop its connections were made in

    app = FastAPI(lifespan=lifespan)
    for kind, store in stores.items():
        limit = RateLimit("10/hour", store=store)

        @app.get(f"/{kind}", dependencies=[Depends(limit)])
        def endpoint():
            return "ok"

    with TestClient(app) as client:  # one event loop for the async client's connections
        for kind in stores:
            responses = [client.get(f"/{kind}") for _ in range(12)]
            assert [r.status_code for r in responses] == [200] * 10 + [429] * 2, kind
            assert responses[-1].headers["ratelimit"].startswith('"10/hour";r=0;t=')
    stores["sync"].close()


def test_flask_on_redis(redis_url):
    from flask import Flask

    from tokenbucket.flask import Limiter

    app = Flask(__name__)
    Limiter(app, default="10/hour", store=RedisStore.from_url(redis_url))

    @app.get("/")
    def index():
        return "ok"

    client = app.test_client()
    codes = [client.get("/").status_code for _ in range(12)]
    assert codes == [200] * 10 + [429] * 2


def test_flask_refuses_an_async_store(redis_url):
    from tokenbucket.flask import Limiter

    with pytest.raises(TypeError, match="Flask cannot await"):
        Limiter(default=BucketRegistry("1/s", store=AsyncRedisStore.from_url(redis_url)))


def test_django_on_redis(redis_url):
    django = pytest.importorskip("django")
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import Client, override_settings
    from django.urls import path

    if not settings.configured:  # alone in a run; else tests/adapters/test_django.py did it
        settings.configure(SECRET_KEY="tests-not-secret", ALLOWED_HOSTS=["*"], TOKENBUCKET={})
        django.setup()
    urls = ModuleType("redis_urls")
    urls.urlpatterns = [path("", lambda request: HttpResponse("ok"))]
    middleware = ["tokenbucket.django.RateLimitMiddleware"]
    store = RedisStore.from_url(redis_url)
    limits = {"DEFAULT": "10/hour", "STORE": store}
    with override_settings(ROOT_URLCONF=urls, MIDDLEWARE=middleware, TOKENBUCKET=limits):
        responses = [Client().get("/") for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 10 + [429] * 2
    assert responses[-1]["RateLimit"].startswith('"default";r=0;t=')
