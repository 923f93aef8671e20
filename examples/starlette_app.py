"""Starlette: rate limiting with legacy X-RateLimit-* headers and a denial counter.

From the root of a clone, in a virtualenv (python3 -m venv .venv && . .venv/bin/activate):

    pip install -e . starlette uvicorn
    uvicorn examples.starlette_app:app --port 8000

(Once tokenbucket-ratelimit is on PyPI: pip install tokenbucket-ratelimit starlette uvicorn.)
"""

from collections import Counter

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from tokenbucket import BucketRegistry, Rule
from tokenbucket.asgi import RateLimitMiddleware

registry = BucketRegistry(Rule.parse("10/minute"))
denials: Counter = Counter()  # path -> requests refused


def count_denials(request, key, decision):
    if not decision.allowed:
        denials[request.path] += 1


async def index(request):
    return JSONResponse({"message": "hello"})


async def stats(request):
    return JSONResponse(dict(denials))


app = Starlette(
    routes=[Route("/", index), Route("/stats", stats)],
    middleware=[
        Middleware(
            RateLimitMiddleware,
            registry=registry,
            headers="legacy",
            exempt=["/stats"],
            on_decision=count_denials,
        )
    ],
)
