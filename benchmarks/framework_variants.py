"""The framework integrations for benchmarks/middleware.py: each framework's bare app, the same
app behind the generic middleware, and with the integration (FastAPI's dependency, the Flask
extension, Django's settings middleware), every request allowed."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict

from tokenbucket import BucketRegistry, Rule

# Never empties: every request takes the allowed path.
LIMIT = Rule(capacity=1e9, refill_rate=1e9)
RATE = "1000000000/second"
GENERIC = "tokenbucket"  # the reference row: the generic middleware


def fastapi_variants() -> Dict[str, Any]:
    from fastapi import Depends, FastAPI
    from fastapi.responses import PlainTextResponse

    from tokenbucket.asgi import RateLimitMiddleware
    from tokenbucket.fastapi import RateLimit

    def app(dependencies: Any = None) -> Any:
        made = FastAPI(dependencies=dependencies)

        @made.get("/", response_class=PlainTextResponse)
        def home() -> str:
            return "ok"

        return made

    generic = app()
    generic.add_middleware(RateLimitMiddleware, registry=BucketRegistry(LIMIT))
    return {
        "bare FastAPI": app(),
        GENERIC: generic,
        "tokenbucket.fastapi.RateLimit": app([Depends(RateLimit(BucketRegistry(LIMIT)))]),
    }


def flask_variants(flask_app: Callable[[], Any]) -> Dict[str, Any]:
    from tokenbucket.flask import Limiter
    from tokenbucket.wsgi import RateLimitMiddleware

    extended = flask_app()
    Limiter(extended, default=BucketRegistry(LIMIT))
    return {
        "bare Flask": flask_app().wsgi_app,
        GENERIC: RateLimitMiddleware(flask_app().wsgi_app, registry=BucketRegistry(LIMIT)),
        "tokenbucket.flask.Limiter": extended.wsgi_app,
    }


def django_variants() -> Dict[str, Any]:
    import django
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.http import HttpResponse
    from django.urls import path

    from tokenbucket.wsgi import RateLimitMiddleware

    def home(request: Any) -> HttpResponse:
        return HttpResponse("ok", content_type="text/plain")

    urls = ModuleType("bench_urls")
    urls.urlpatterns = [path("", home)]  # type: ignore[attr-defined]
    settings.configure(
        SECRET_KEY="bench-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=urls,
        MIDDLEWARE=[],
        TOKENBUCKET={"DEFAULT": BucketRegistry(LIMIT)},
    )
    django.setup()
    bare = WSGIHandler()
    generic = RateLimitMiddleware(WSGIHandler(), registry=BucketRegistry(LIMIT))
    settings.MIDDLEWARE = ["tokenbucket.django.RateLimitMiddleware"]
    return {
        "bare Django": bare,
        GENERIC: generic,
        "tokenbucket.django.RateLimitMiddleware": WSGIHandler(),
    }
