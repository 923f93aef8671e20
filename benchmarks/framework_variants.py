"""The framework integrations for benchmarks/middleware.py: each framework's bare app, the same
app behind the generic middleware, and with the integration (FastAPI's dependency, the Flask
extension, Django's settings middleware), every request allowed.

Each framework also has a row with an empty hook of the integration's kind (an async
dependency taking the request and response, ``before_request`` and ``after_request`` hooks
that return at once, a middleware that only calls the next one): what the framework itself
charges for running any integration of that idiom, before it does any work."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict

from tokenbucket import BucketRegistry, Rule

# Never empties: every request takes the allowed path.
LIMIT = Rule(capacity=1e9, refill_rate=1e9)
RATE = "1000000000/second"
GENERIC = "tokenbucket"  # the reference row: the generic middleware
EMPTY = "empty hook (the framework's own cost)"


class EmptyMiddleware:
    """A Django middleware doing nothing: Django's own cost of one more middleware."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        return self.get_response(request)


def fastapi_variants() -> Dict[str, Any]:
    from fastapi import Depends, FastAPI, Request, Response
    from fastapi.responses import PlainTextResponse

    from tokenbucket.asgi import RateLimitMiddleware
    from tokenbucket.fastapi import RateLimit

    def app(dependencies: Any = None) -> Any:
        made = FastAPI(dependencies=dependencies)

        # An async endpoint: a plain ``def`` runs in the thread pool, whose hand-off costs
        # more than everything measured here and varies from run to run.
        @made.get("/", response_class=PlainTextResponse)
        async def home() -> str:
            return "ok"

        return made

    async def nothing(request: Request, response: Response) -> None:
        return None

    # The module's annotations are strings, and these names are local: give FastAPI the types.
    nothing.__annotations__ = {"request": Request, "response": Response, "return": None}

    generic = app()
    generic.add_middleware(RateLimitMiddleware, registry=BucketRegistry(LIMIT))
    return {
        "bare FastAPI": app(),
        GENERIC: generic,
        EMPTY: app([Depends(nothing)]),
        "tokenbucket.fastapi.RateLimit": app([Depends(RateLimit(BucketRegistry(LIMIT)))]),
    }


def flask_variants(flask_app: Callable[[], Any]) -> Dict[str, Any]:
    from tokenbucket.flask import Limiter
    from tokenbucket.wsgi import RateLimitMiddleware

    extended = flask_app()
    Limiter(extended, default=BucketRegistry(LIMIT))
    hooked = flask_app()
    hooked.before_request(lambda: None)
    hooked.after_request(lambda response: response)
    return {
        "bare Flask": flask_app().wsgi_app,
        GENERIC: RateLimitMiddleware(flask_app().wsgi_app, registry=BucketRegistry(LIMIT)),
        EMPTY: hooked.wsgi_app,
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
    settings.MIDDLEWARE = [f"{__name__}.EmptyMiddleware"]
    empty = WSGIHandler()
    settings.MIDDLEWARE = ["tokenbucket.django.RateLimitMiddleware"]
    return {
        "bare Django": bare,
        GENERIC: generic,
        EMPTY: empty,
        "tokenbucket.django.RateLimitMiddleware": WSGIHandler(),
    }
