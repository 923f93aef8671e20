"""The demo gateway: a rate-limited FastAPI app with the runtime rule API, served by uvicorn.

    pip install 'tokenbucket-ratelimit[demo]'
    python -m tokenbucket.demo [--host 127.0.0.1] [--port 8000] [--capacity 10] [--refill-rate 1]
                               [--workers N] [--redis redis://127.0.0.1:6379/0] [--max-keys N]
                               [--on-error fallback|deny|allow] [--rules FILE]

Every client IP gets a bucket of ``--capacity`` tokens refilled at ``--refill-rate`` per second:
ten quick ``curl http://localhost:8000/`` succeed and the eleventh gets 429. The admin API is on at
``/admin/update-rule``; its token comes from the environment variable ``TOKENBUCKET_ADMIN_TOKEN``
or is generated and printed at start-up, with curl lines to try (a token from the environment is
never printed).

Without Redis, the buckets are kept in memory, at most ``--max-keys`` of them (default 100,000, or
``TOKENBUCKET_DEMO_MAX_KEYS``): a flood of distinct clients cannot grow the process without bound.

With ``--workers N`` uvicorn runs N processes. Without Redis each one limits alone (a client gets
up to N times its limit); with ``--redis URL`` (or ``TOKENBUCKET_REDIS_URL``) they share every
bucket and every rule override through Redis, so the limit is the same as with one process:
``python -m tokenbucket.demo --workers 4 --redis redis://127.0.0.1:6379/0``. A gateway started
while Redis is down starts anyway (it says so) and decides by ``--on-error`` (default
``fallback``: limits in memory, per process; ``deny``: every request 429; ``allow``: no limit)
until Redis answers, then shares its limits through Redis, without a restart.

``--rules FILE`` loads an admin export (``GET /admin/update-rule/export``) at start, checked
first (a bad file exits 2 naming the entry). With ``--redis`` the workers share the default rule.

``GET /metrics`` serves the gateway's metrics in the Prometheus text format (decisions by
outcome, the store's time, tracked buckets, admin requests; see docs/observability.md). Each
worker counts its own: with ``--workers N`` a scrape is answered by whichever worker accepts
the connection, so it reflects that worker only (prometheus_client's multiprocess mode is not
used). Scrape a single-worker gateway, or sum per worker behind your own set-up.

To serve the same app another way, build it with [`create_app`][tokenbucket.demo.create_app].
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Dict, List, Optional, TextIO

from . import __version__
from ._core.rule import Rule
from ._edges.demo_cli import DefaultsHelp, max_keys_option, number, port_problem
from ._http.rules import load_rules
from ._registry.registry import BucketRegistry
from .asgi import RateLimitMiddleware

_EXTRA_HINT = (
    "the demo needs the 'demo' extra: pip install 'tokenbucket-ratelimit[demo]' "
    "(from a checkout: pip install -e '.[demo]')"
)

try:
    from fastapi import FastAPI, Request, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from uvicorn.protocols.http.auto import AutoHTTPProtocol
except ModuleNotFoundError as _missing:
    if __name__ == "__main__":  # python -m tokenbucket.demo: a message, not a traceback
        sys.exit(f"python -m tokenbucket.demo: {_missing.name} is not installed; {_EXTRA_HINT}")
    raise ModuleNotFoundError(f"{_missing}; {_EXTRA_HINT}", name=_missing.name) from _missing

#: The environment variable the admin token is read from.
TOKEN_VARIABLE = "TOKENBUCKET_ADMIN_TOKEN"
#: The environment variable naming the Redis server to share limits through.
REDIS_VARIABLE = "TOKENBUCKET_REDIS_URL"
#: Set by ``main`` for the workers: the ``--rules`` file, checked, to load at start.
RULES_VARIABLE = "TOKENBUCKET_DEMO_RULES"
#: The environment variable giving the default of ``--max-keys``.
MAX_KEYS_VARIABLE = "TOKENBUCKET_DEMO_MAX_KEYS"
#: How many buckets the in-memory store tracks at most, unless told otherwise: with about 200 bytes
#: per bucket, some 20 MB under a flood of distinct clients (see docs/deployment.md).
DEFAULT_MAX_KEYS = 100_000
# How main() hands the rule to the worker processes, which build the app with app_factory().
_RULE_VARIABLE = "TOKENBUCKET_DEMO_RULE"


def create_app(registry: BucketRegistry, admin_token: Optional[str]) -> FastAPI:
    """Return the gateway app: ``GET /`` limited per client IP by ``registry``.

    ``GET /metrics`` serves the app's metrics in the Prometheus text format (see
    docs/observability.md), from a registry of its own; like ``/health`` it is exempt from
    limiting, and it needs no token: it holds counts by policy, outcome and store, never a
    client address or a key.

    Args:
        registry: the buckets; its default rule is every client's limit.
        admin_token: enables the admin API at ``/admin/update-rule`` (None disables it).
    """
    from .metrics.prometheus import PrometheusMetrics  # here: the demo extra is checked by now

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rules = os.environ.get(RULES_VARIABLE)
        if rules:  # checked by main: each worker restores them (in Redis, the same values)
            await registry.aimport_rules(load_rules(rules, registry))
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

    scrape = CollectorRegistry()
    metrics = PrometheusMetrics(scrape)

    @app.get("/metrics")
    async def serve_metrics() -> Response:
        return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        RateLimitMiddleware,
        registry=registry,
        admin_token=admin_token,
        exempt=["/health", "/metrics"],
        metrics=metrics,
    )
    return app


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol, with ``TCP_NODELAY`` set on every connection.

    With ``--workers N`` uvicorn binds the listening socket itself, as ``socket.socket(family)``:
    its ``proto`` is 0, and so is that of every socket accepted from it. asyncio sets
    ``TCP_NODELAY`` on a new transport only when ``sock.proto == IPPROTO_TCP`` (a socket from
    ``getaddrinfo``, as one worker's ``create_server(host, port)`` makes), so under several
    workers Nagle's algorithm stays on: the response body, written after its head, waits for the
    client's delayed ACK, some 40 ms on every keep-alive request. Setting the option here, on
    the accepted socket, brings N workers back to one worker's latency.
    """

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set ``TCP_NODELAY`` on a TCP connection, then hand it to uvicorn."""
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # the connection may already be gone
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (extend it to add options)."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenbucket.demo",
        description="A rate-limited demo gateway: a token bucket per client IP, with an admin API.",
        formatter_class=DefaultsHelp,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--capacity", type=number, default=10, help="bucket size: the burst")
    parser.add_argument("--refill-rate", type=number, default=1.0, help="tokens added per second")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=os.environ.get(REDIS_VARIABLE) or None,
        help=f"share limits between workers and hosts through Redis (default: ${REDIS_VARIABLE})",
    )
    parser.add_argument(
        "--on-error",
        choices=("fallback", "deny", "allow"),
        default="fallback",
        help="with --redis, how requests are decided while Redis is unavailable, at start-up "
        "too: limits in memory per process (fallback), refuse all (deny), no limit (allow)",
    )
    parser.add_argument(
        "--max-keys",
        type=max_keys_option,
        default=None,
        metavar="N",
        help="most buckets kept in memory (without --redis); a new client beyond them is denied "
        f"until old buckets refill (default: ${MAX_KEYS_VARIABLE} or {DEFAULT_MAX_KEYS:,})",
    )
    parser.add_argument("--rules", metavar="FILE", help="load an admin API export at start")
    return parser


def app_factory() -> FastAPI:
    """Build the gateway from the environment ``main`` prepared; uvicorn calls it per worker.

    Each worker builds its own store here, inside its own event loop: a Redis store's
    connections belong to the loop that made them.
    """
    capacity, refill_rate, max_keys, *policy = os.environ[_RULE_VARIABLE].split(",")
    rule = Rule(number(capacity), number(refill_rate))
    url = os.environ.get(REDIS_VARIABLE)
    if url:
        from .redis import AsyncRedisStore

        # No connection here: the first request connects, so a gateway started while Redis
        # is down serves by on_error until Redis answers.
        store = AsyncRedisStore.from_url(url, on_error=policy[0] if policy else "fallback")
        registry = BucketRegistry(rule, store=store)
        registry.share_rules(interval=1.0)  # the default rule, the same in every worker
    else:
        registry = BucketRegistry(rule, max_keys=int(max_keys))
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
    max_keys: int = DEFAULT_MAX_KEYS,
) -> str:
    """Return what the demo prints at start-up: the limit, the token and curl lines to try.

    The token is printed only if the demo ``generated`` it: one taken from the environment is a
    secret someone chose, and start-up output ends up in logs. The curl lines then read it from
    the shell variable instead.
    """
    base = f"http://{_url_host(host)}:{port}"
    if generated:
        token_line = f"  admin token (generated; set {TOKEN_VARIABLE} to choose it): {token}"
        auth = f"-H 'Authorization: Bearer {token}'"
    else:
        token_line = f"  admin token: from {TOKEN_VARIABLE} (not shown)"
        auth = f'-H "Authorization: Bearer ${TOKEN_VARIABLE}"'
    body = '{"client_id": "127.0.0.1", "capacity": 50, "refill_rate": 10.0}'
    if redis:
        sharing = f"  {workers} worker(s) sharing limits and overrides through {_hide(redis)}"
    elif workers > 1:
        sharing = (
            f"  {workers} workers WITHOUT a shared store: each limits alone, "
            f"up to {max_keys:,} buckets each (pass --redis URL to share)"
        )
    else:
        sharing = f"  1 process, limits in memory (up to {max_keys:,} buckets)"
    return "\n".join(
        [
            f"tokenbucket demo gateway on {base}/",
            f"  limit: {rule.capacity} requests of burst, refilled at {rule.refill_rate}/s, "
            "per client IP",
            sharing,
            token_line,
            "",
            "Try:",
            f"  for i in $(seq 11); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/; done",
            f"  curl -X POST {base}/admin/update-rule {auth} "
            f"-H 'Content-Type: application/json' -d '{body}'",
            f"  curl '{base}/admin/update-rule?client_id=127.0.0.1' {auth}",
            f"  curl {base}/metrics"
            + ("   (each scrape: one worker's counts)" if workers > 1 else ""),
            "",
        ]
    )


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> None:
    """Parse ``argv``, print the banner to ``out`` and serve the gateway until interrupted."""
    import uvicorn  # present: the module's imports checked the demo extra

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
    max_keys = args.max_keys
    if max_keys is None:
        from_env = os.environ.get(MAX_KEYS_VARIABLE) or str(DEFAULT_MAX_KEYS)
        try:
            max_keys = max_keys_option(from_env)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"{MAX_KEYS_VARIABLE} {exc}")
    token = os.environ.get(TOKEN_VARIABLE) or None
    generated = token is None
    if token is None:
        token = secrets.token_urlsafe(24)
    try:
        create_app(BucketRegistry(rule), token)  # check the token before starting anything
    except ValueError as exc:
        parser.error(f"{TOKEN_VARIABLE}: {exc}")
    os.environ.pop(RULES_VARIABLE, None)
    if args.rules:
        try:
            load_rules(args.rules, BucketRegistry(rule))
        except (OSError, TypeError, ValueError) as exc:
            parser.error(f"--rules {args.rules}: {exc}")
        os.environ[RULES_VARIABLE] = os.path.abspath(args.rules)
    busy = port_problem(args.host, args.port)
    if busy:  # one line, not the banner then uvicorn's error
        sys.exit(
            f"python -m tokenbucket.demo: cannot listen on {args.host}:{args.port} ({busy}); "
            "choose another port with --port"
        )
    unreachable = _check_redis(parser, args.redis) if args.redis else None
    os.environ.update(
        {
            _RULE_VARIABLE: f"{rule.capacity!r},{rule.refill_rate!r},{max_keys},{args.on_error}",
            TOKEN_VARIABLE: token,
        }
    )
    os.environ.pop(REDIS_VARIABLE, None)
    if args.redis:
        os.environ[REDIS_VARIABLE] = args.redis
    print(
        banner(args.host, args.port, rule, token, generated, args.workers, args.redis, max_keys),
        file=out,
        flush=True,
    )
    if unreachable:
        print(
            f"warning: cannot reach {_hide(args.redis)} ({unreachable}); starting anyway: "
            f"requests are decided by --on-error={args.on_error} until it answers",
            file=out,
            flush=True,
        )
    # proxy_headers=False: the client address is the peer's, never a forwarded header. The
    # protocol class is taken from the imported module, not from __main__ (python -m), so that
    # worker processes can unpickle it by name.
    from tokenbucket.demo import NoDelayHTTPProtocol as protocol

    uvicorn.run(
        "tokenbucket.demo:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,
        http=protocol,
    )


def _check_redis(parser: argparse.ArgumentParser, url: str) -> Optional[str]:
    """Fail at start-up on a URL that can never work (redis-py missing, a bad URL).

    Return why Redis cannot be reached right now, or None. An unreachable Redis does not stop
    the demo: its workers decide by ``--on-error`` until Redis answers, as during any outage.
    """
    try:
        from .redis import RedisStore

        store = RedisStore.from_url(url)
    except (ImportError, ValueError) as exc:
        parser.error(f"--redis: {exc}")
    try:
        store.client.ping()
    except Exception as exc:  # any failure to reach it is reported the same way
        return f"{type(exc).__name__}: {exc}"
    finally:
        store.close()
    return None


def _hide(url: str) -> str:
    """The URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


if __name__ == "__main__":
    main()
