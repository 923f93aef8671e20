"""The demo gateway: a rate-limited FastAPI app with the runtime rule API, served by uvicorn.

    pip install 'tokenbucket[demo]'
    python -m tokenbucket.demo [--host 127.0.0.1] [--port 8000] [--capacity 10] [--refill-rate 1]
                               [--workers N] [--redis redis://127.0.0.1:6379/0]

Every client IP gets a bucket of ``--capacity`` tokens refilled at ``--refill-rate`` per second:
ten quick ``curl http://localhost:8000/`` succeed and the eleventh gets 429. The admin API is on at
``/admin/update-rule``; its token comes from the environment variable ``TOKENBUCKET_ADMIN_TOKEN``
or is generated and printed at start-up, with curl lines to try.

With ``--workers N`` uvicorn runs N processes. Without Redis each one limits alone (a client gets
up to N times its limit); with ``--redis URL`` (or ``TOKENBUCKET_REDIS_URL``) they share every
bucket and every rule override through Redis, so the limit is the same as with one process:
``python -m tokenbucket.demo --workers 4 --redis redis://127.0.0.1:6379/0``.

To serve the same app another way, build it with [`create_app`][tokenbucket.demo.create_app].
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, TextIO, Union

from fastapi import FastAPI, Request

from . import __version__
from ._registry import BucketRegistry
from ._rule import Rule
from .asgi import RateLimitMiddleware

#: The environment variable the admin token is read from.
TOKEN_VARIABLE = "TOKENBUCKET_ADMIN_TOKEN"
#: The environment variable naming the Redis server to share limits through.
REDIS_VARIABLE = "TOKENBUCKET_REDIS_URL"
# How main() hands the rule to the worker processes, which build the app with app_factory().
_RULE_VARIABLE = "TOKENBUCKET_DEMO_RULE"


def create_app(registry: BucketRegistry, admin_token: Optional[str]) -> FastAPI:
    """Return the gateway app: ``GET /`` limited per client IP by ``registry``.

    Args:
        registry: the buckets; its default rule is every client's limit.
        admin_token: enables the admin API at ``/admin/update-rule`` (None disables it).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        close = getattr(registry.store, "aclose", None)  # a Redis store's connections
        if close is not None:
            await close()

    app = FastAPI(title="tokenbucket demo gateway", version=__version__, lifespan=lifespan)

    @app.get("/")
    async def root(request: Request) -> Dict[str, Any]:
        client = request.client.host if request.client else None
        return {
            "message": "Hello from the tokenbucket demo gateway",
            "client": client,
            "worker": os.getpid(),  # which uvicorn worker answered
        }

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        return {"status": "ok", "worker": os.getpid()}

    app.add_middleware(
        RateLimitMiddleware,
        registry=registry,
        admin_token=admin_token,
        exempt=["/health"],
    )
    return app


def _number(text: str) -> Union[int, float]:
    try:
        return int(text)
    except ValueError:
        return float(text)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (extend it to add options)."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenbucket.demo",
        description="A rate-limited demo gateway: a token bucket per client IP, with an admin API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--capacity", type=_number, default=10, help="bucket size (burst)")
    parser.add_argument("--refill-rate", type=_number, default=1.0, help="tokens added per second")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(REDIS_VARIABLE) or None,
        help=f"share limits between workers and hosts through Redis (default: ${REDIS_VARIABLE})",
    )
    return parser


def app_factory() -> FastAPI:
    """Build the gateway from the environment ``main`` prepared; uvicorn calls it per worker.

    Each worker builds its own store here, inside its own event loop: a Redis store's
    connections belong to the loop that made them.
    """
    capacity, refill_rate = (_number(part) for part in os.environ[_RULE_VARIABLE].split(","))
    rule = Rule(capacity, refill_rate)
    url = os.environ.get(REDIS_VARIABLE)
    if url:
        from .redis import AsyncRedisStore

        registry = BucketRegistry(rule, store=AsyncRedisStore.from_url(url))
    else:
        registry = BucketRegistry(rule)
    return create_app(registry, os.environ[TOKEN_VARIABLE])


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def banner(
    host: str,
    port: int,
    rule: Rule,
    token: str,
    generated: bool,
    workers: int = 1,
    redis: Optional[str] = None,
) -> str:
    """Return what the demo prints at start-up: the limit, the token and curl lines to try."""
    base = f"http://{_url_host(host)}:{port}"
    where = (
        f"generated; set {TOKEN_VARIABLE} to choose it" if generated else f"from {TOKEN_VARIABLE}"
    )
    body = '{"client_id": "127.0.0.1", "capacity": 50, "refill_rate": 10.0}'
    if redis:
        sharing = f"  {workers} worker(s) sharing limits and overrides through {_hide(redis)}"
    elif workers > 1:
        sharing = (
            f"  {workers} workers WITHOUT a shared store: each limits alone "
            "(pass --redis URL to share)"
        )
    else:
        sharing = "  1 process, limits in memory"
    return "\n".join(
        [
            f"tokenbucket demo gateway on {base}/",
            f"  limit: {rule.capacity} requests of burst, refilled at {rule.refill_rate}/s, "
            "per client IP",
            sharing,
            f"  admin token ({where}): {token}",
            "",
            "Try:",
            f"  for i in $(seq 11); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/; done",
            f"  curl -X POST {base}/admin/update-rule -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            f"  curl '{base}/admin/update-rule?client_id=127.0.0.1' "
            f"-H 'Authorization: Bearer {token}'",
            "",
        ]
    )


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> None:
    """Parse ``argv``, print the banner to ``out`` and serve the gateway until interrupted."""
    import uvicorn

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rule = Rule(args.capacity, args.refill_rate)
    except (TypeError, ValueError) as exc:
        parser.error(
            str(exc).replace("'capacity'", "--capacity").replace("'refill_rate'", "--refill-rate")
        )
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    token = os.environ.get(TOKEN_VARIABLE) or None
    generated = token is None
    if token is None:
        token = secrets.token_urlsafe(24)
    try:
        create_app(BucketRegistry(rule), token)  # check the token before starting anything
    except ValueError as exc:
        parser.error(f"{TOKEN_VARIABLE}: {exc}")
    if args.redis:
        _check_redis(parser, args.redis)
    os.environ.update(
        {_RULE_VARIABLE: f"{rule.capacity!r},{rule.refill_rate!r}", TOKEN_VARIABLE: token}
    )
    os.environ.pop(REDIS_VARIABLE, None)
    if args.redis:
        os.environ[REDIS_VARIABLE] = args.redis
    print(
        banner(args.host, args.port, rule, token, generated, args.workers, args.redis),
        file=out,
        flush=True,
    )
    # proxy_headers=False: the client address is the peer's, never a forwarded header.
    uvicorn.run(
        "tokenbucket.demo:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
    )


def _check_redis(parser: argparse.ArgumentParser, url: str) -> None:
    """Fail at start-up, with a clear message, if Redis is not there (rather than fall back)."""
    try:
        from .redis import RedisStore

        store = RedisStore.from_url(url)
    except (ImportError, ValueError) as exc:
        parser.error(f"--redis: {exc}")
    try:
        store.client.ping()
    except Exception as exc:  # any failure to reach it is reported the same way
        parser.error(f"--redis: cannot reach {_hide(url)}: {exc}")
    finally:
        store.close()


def _hide(url: str) -> str:
    """The URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


if __name__ == "__main__":
    main()
