"""Per-request overhead of rate-limiting middleware, in-process (no network, no server).

ASGI: a bare Starlette app, the same app behind tokenbucket's middleware, and behind slowapi's
middleware (its pure-ASGI and its BaseHTTPMiddleware variants). WSGI: a bare Flask app, behind
tokenbucket's WSGI middleware, and with Flask-Limiter. Every limiter allows every request (the
allowed path) and adds its rate-limit headers where it can. Two last tables time tokenbucket's
middlewares around the smallest possible apps: their own cost, with warm CPU caches (inside a
framework the same code runs with colder caches and costs more), and with Prometheus metrics
attached (``metrics=PrometheusMetrics(...)``): what counting every decision adds. The last
three compare each framework integration (benchmarks/framework_variants.py) with the generic
middleware on the same app: FastAPI's dependency, the Flask extension, Django's middleware.

Each round runs every variant for ``--requests`` calls, in an order rotated per round, so drift
(CPU frequency, caches) spreads evenly, with garbage collection paused inside a timed batch (as
``timeit`` does); the table reports the median over rounds of the mean time per request, the
overhead added over the bare app (the median over rounds of the difference within a round, and
the difference of the best rounds: on a shared machine the best is the least disturbed figure)
and its ratio to tokenbucket's.

    pip install -e . --group test --group bench
    python benchmarks/middleware.py [--rounds 15] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import statistics
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from tokenbucket import BucketRegistry, InFlightLimit, Rule

CLIENT = "203.0.113.7"
# Never empties: every request takes the allowed path.
LIMIT = Rule(capacity=1e9, refill_rate=1e9)
SLOW_LIMIT = "1000000000/second"
#: tokenbucket with an in-flight limit as well: the row to compare with "tokenbucket".
IN_FLIGHT = "tokenbucket (in_flight=4)"


# ---------------------------------------------------------------------------------------- ASGI


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", home)])


def asgi_variants(peers: bool = True) -> Dict[str, Any]:
    from tokenbucket.asgi import RateLimitMiddleware

    variants: Dict[str, Any] = {"bare Starlette": starlette_app()}
    app = starlette_app()
    app.add_middleware(RateLimitMiddleware, registry=BucketRegistry(LIMIT))
    variants["tokenbucket"] = app
    app = starlette_app()
    app.add_middleware(RateLimitMiddleware, registry=BucketRegistry(LIMIT), headers="both")
    variants["tokenbucket (headers='both')"] = app
    app = starlette_app()
    app.add_middleware(
        RateLimitMiddleware, registry=BucketRegistry(LIMIT), in_flight=InFlightLimit(4)
    )
    variants[IN_FLIGHT] = app
    if not peers:
        return variants
    try:
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIASGIMiddleware, SlowAPIMiddleware
        from slowapi.util import get_remote_address
    except ImportError:
        print("slowapi not installed: pip install -e . --group bench", file=sys.stderr)
        return variants
    for name, middleware in (
        ("slowapi (pure ASGI)", SlowAPIASGIMiddleware),
        ("slowapi (BaseHTTPMiddleware)", SlowAPIMiddleware),
    ):
        app = starlette_app()
        app.state.limiter = Limiter(
            key_func=get_remote_address, default_limits=[SLOW_LIMIT], headers_enabled=True
        )
        app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)
        app.add_middleware(middleware)
        variants[name] = app
    return variants


def asgi_scope() -> Dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench.local"), (b"user-agent", b"bench")],
        "client": (CLIENT, 40000),
        "server": ("bench.local", 80),
        "state": {},
    }


async def asgi_batch(app: Any, requests: int) -> Tuple[float, int]:
    """Run ``requests`` calls; return seconds per request and the last status."""
    template = asgi_scope()
    status = 0

    async def receive() -> Dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    start = time.perf_counter()
    for _ in range(requests):
        scope = dict(template)
        scope["state"] = {}
        await app(scope, receive, send)
    return (time.perf_counter() - start) / requests, status


def check_asgi_headers(app: Any) -> List[str]:
    headers: List[str] = []

    async def run() -> None:
        async def receive() -> Dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers.extend(name.decode() for name, _ in message["headers"])

        await app(asgi_scope(), receive, send)

    asyncio.run(run())
    return [name for name in headers if "ratelimit" in name.lower()]


# ---------------------------------------------------------------------------------------- WSGI


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench")

    @app.route("/")
    def home() -> str:
        return "ok"

    return app


def wsgi_variants(peers: bool = True) -> Dict[str, Callable[..., Any]]:
    from tokenbucket.wsgi import RateLimitMiddleware

    variants: Dict[str, Callable[..., Any]] = {"bare Flask": flask_app().wsgi_app}
    variants["tokenbucket"] = RateLimitMiddleware(
        flask_app().wsgi_app, registry=BucketRegistry(LIMIT)
    )
    variants["tokenbucket (headers='both')"] = RateLimitMiddleware(
        flask_app().wsgi_app, registry=BucketRegistry(LIMIT), headers="both"
    )
    variants[IN_FLIGHT] = RateLimitMiddleware(
        flask_app().wsgi_app, registry=BucketRegistry(LIMIT), in_flight=InFlightLimit(4)
    )
    if not peers:
        return variants
    try:
        from flask_limiter import Limiter
        from flask_limiter.util import get_remote_address
    except ImportError:
        print("Flask-Limiter not installed: pip install -e . --group bench", file=sys.stderr)
        return variants
    app = flask_app()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "in-memory storage is not for production"
        Limiter(
            get_remote_address,
            app=app,
            default_limits=[SLOW_LIMIT],
            headers_enabled=True,
            storage_uri="memory://",
        )
    variants["Flask-Limiter"] = app.wsgi_app
    return variants


def wsgi_environ(remote: str = CLIENT, forwarded: Optional[str] = None) -> Dict[str, Any]:
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/",
        "QUERY_STRING": "",
        "SERVER_NAME": "bench.local",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": remote,
        "HTTP_HOST": "bench.local",
        "HTTP_USER_AGENT": "bench",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    return environ


def wsgi_batch(
    app: Callable[..., Any],
    requests: int,
    remote: str = CLIENT,
    forwarded: Optional[str] = None,
) -> Tuple[float, int]:
    template = wsgi_environ(remote, forwarded)
    status = ""

    def start_response(line: str, headers: Any, exc_info: Optional[Any] = None) -> Any:
        nonlocal status
        status = line
        return None

    start = time.perf_counter()
    for _ in range(requests):
        result = app(dict(template), start_response)
        for _chunk in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return (time.perf_counter() - start) / requests, int(status.split()[0])


def check_wsgi_headers(app: Callable[..., Any]) -> List[str]:
    headers: List[str] = []

    def start_response(line: str, fields: Any, exc_info: Optional[Any] = None) -> Any:
        headers.extend(name for name, _ in fields)

    result = app(wsgi_environ(), start_response)
    list(result)
    getattr(result, "close", lambda: None)()
    return [name for name in headers if "ratelimit" in name.lower()]


# ------------------------------------------------------------------------------- minimal apps


async def minimal_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def minimal_wsgi_app(environ: Any, start_response: Any) -> List[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _metrics() -> Any:
    from prometheus_client import CollectorRegistry

    from tokenbucket.metrics.prometheus import PrometheusMetrics

    return PrometheusMetrics(CollectorRegistry())


def minimal_asgi_variants() -> Dict[str, Any]:
    from tokenbucket.asgi import RateLimitMiddleware

    return {
        "minimal app": minimal_asgi_app,
        "tokenbucket": RateLimitMiddleware(minimal_asgi_app, registry=BucketRegistry(LIMIT)),
        IN_FLIGHT: RateLimitMiddleware(
            minimal_asgi_app, registry=BucketRegistry(LIMIT), in_flight=InFlightLimit(4)
        ),
        "tokenbucket + Prometheus metrics": RateLimitMiddleware(
            minimal_asgi_app, registry=BucketRegistry(LIMIT), metrics=_metrics()
        ),
    }


def minimal_wsgi_variants() -> Dict[str, Any]:
    from tokenbucket.wsgi import RateLimitMiddleware

    return {
        "minimal app": minimal_wsgi_app,
        "tokenbucket": RateLimitMiddleware(minimal_wsgi_app, registry=BucketRegistry(LIMIT)),
        IN_FLIGHT: RateLimitMiddleware(
            minimal_wsgi_app, registry=BucketRegistry(LIMIT), in_flight=InFlightLimit(4)
        ),
        "tokenbucket + Prometheus metrics": RateLimitMiddleware(
            minimal_wsgi_app, registry=BucketRegistry(LIMIT), metrics=_metrics()
        ),
    }


# --------------------------------------------------------------------------------------- runner


def measure(
    variants: Dict[str, Any],
    run: Callable[[Any, int], Tuple[float, int]],
    rounds: int,
    n: int,
) -> Dict[str, List[float]]:
    """Return each variant's µs per request, one sample per round."""
    names = list(variants)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for name in names:  # warm up: first calls build middleware stacks and caches
        run(variants[name], 200)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            # As timeit does: no garbage collection inside a timed batch, a full one between.
            gc.collect()
            gc.disable()
            try:
                seconds, status = run(variants[name], n)
            finally:
                gc.enable()
            if status != 200:
                raise SystemExit(f"{name}: status {status}, expected 200")
            samples[name].append(seconds * 1e6)
    return samples


def table(
    title: str, samples: Dict[str, List[float]], bare: str, headers: Dict[str, List[str]]
) -> str:
    """Per variant: the median and the best round; "added" is over the bare app.

    The median added time is the median over rounds of (variant - bare) within a round; the
    best is the difference of the best rounds, the figure least disturbed by other processes.
    """
    added = {
        name: statistics.median(v - b for v, b in zip(values, samples[bare]))
        for name, values in samples.items()
    }
    best = {name: min(values) for name, values in samples.items()}
    ours = added["tokenbucket"]
    lines = [
        f"### {title}",
        "",
        "| variant | µs / request (median) | added µs (median) | added µs (best) "
        "| added vs tokenbucket | rate-limit headers |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, values in samples.items():
        median = statistics.median(values)
        if name == bare:
            lines.append(f"| {name} | {median:.1f} (best {best[name]:.1f}) | - | - | - | - |")
            continue
        ratio = f"{added[name] / ours:.1f}x" if ours > 0 else "n/a"
        fields = ", ".join(headers.get(name, [])) or "none"
        lines.append(
            f"| {name} | {median:.1f} | {added[name]:.1f} | {best[name] - best[bare]:.1f} "
            f"| {ratio} | {fields} |"
        )
    return "\n".join(lines)


Frameworks = Dict[str, Tuple[Dict[str, List[float]], str, Dict[str, List[str]]]]


def measure_frameworks(rounds: int, n: int) -> Frameworks:
    """Each integration against the generic middleware on the same app, in one run."""
    from framework_variants import django_variants, fastapi_variants, flask_variants

    results: Frameworks = {}
    loop = asyncio.new_event_loop()
    fastapi = fastapi_variants()
    headers = {name: check_asgi_headers(app) for name, app in fastapi.items()}
    samples = measure(
        fastapi, lambda app, k: loop.run_until_complete(asgi_batch(app, k)), rounds, n
    )
    results["FastAPI"] = (samples, "bare FastAPI", headers)
    loop.close()
    for title, variants, bare in (
        ("Flask", flask_variants(flask_app), "bare Flask"),
        ("Django", django_variants(), "bare Django"),
    ):
        headers = {name: check_wsgi_headers(app) for name, app in variants.items()}
        results[title] = (measure(variants, wsgi_batch, rounds, n), bare, headers)
    return results


def print_frameworks(frameworks: Frameworks) -> None:
    for title, (samples, bare, headers) in frameworks.items():
        print()
        print(table(f"{title}: the integration and the generic middleware", samples, bare, headers))
        generic = samples["tokenbucket"]
        for name, values in samples.items():
            if name not in (bare, "tokenbucket"):
                more = statistics.median(v - g for v, g in zip(values, generic))
                best = min(values) - min(generic)
                print(
                    f"\n{name} costs {more:+.1f} µs per request more than the generic "
                    f"middleware (median of rounds; {best:+.1f} µs between the best rounds)"
                )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", help="also write every sample to this file")
    parser.add_argument(
        "--frameworks-only",
        action="store_true",
        help="only the framework integrations against the generic middleware",
    )
    parser.add_argument(
        "--no-peers",
        action="store_true",
        help="leave out slowapi and Flask-Limiter",
    )
    args = parser.parse_args(argv)

    frameworks = measure_frameworks(args.rounds, args.requests)
    if args.frameworks_only:
        print(f"Python {sys.version.split()[0]}, {args.rounds} rounds x {args.requests} requests")
        print_frameworks(frameworks)
        return
    asgi = asgi_variants(peers=not args.no_peers)
    loop = asyncio.new_event_loop()

    def run_asgi(app: Any, n: int) -> Tuple[float, int]:
        return loop.run_until_complete(asgi_batch(app, n))

    asgi_headers = {name: check_asgi_headers(app) for name, app in asgi.items()}
    asgi_samples = measure(asgi, run_asgi, args.rounds, args.requests)
    loop.close()

    wsgi = wsgi_variants(peers=not args.no_peers)
    wsgi_headers = {name: check_wsgi_headers(app) for name, app in wsgi.items()}
    wsgi_samples = measure(wsgi, wsgi_batch, args.rounds, args.requests)

    # The middleware alone, around the smallest apps: its own cost, without a framework's
    # per-request work evicting its code and data from the CPU caches between calls.
    loop = asyncio.new_event_loop()
    minimal_asgi = minimal_asgi_variants()
    minimal_asgi_samples = measure(minimal_asgi, run_asgi, args.rounds, args.requests)
    loop.close()
    minimal_wsgi = minimal_wsgi_variants()
    minimal_wsgi_samples = measure(minimal_wsgi, wsgi_batch, args.rounds, args.requests)

    print(f"Python {sys.version.split()[0]}, {args.rounds} rounds x {args.requests} requests\n")
    print(table("ASGI (Starlette)", asgi_samples, "bare Starlette", asgi_headers))
    print()
    print(table("WSGI (Flask)", wsgi_samples, "bare Flask", wsgi_headers))
    print()
    limited = [name for name in minimal_asgi if name != "minimal app"]
    asgi_minimal_headers = {name: check_asgi_headers(minimal_asgi[name]) for name in limited}
    wsgi_minimal_headers = {name: check_wsgi_headers(minimal_wsgi[name]) for name in limited}
    print(table("ASGI, minimal app", minimal_asgi_samples, "minimal app", asgi_minimal_headers))
    print()
    print(table("WSGI, minimal app", minimal_wsgi_samples, "minimal app", wsgi_minimal_headers))
    print_frameworks(frameworks)
    if args.json:
        results = {
            "python": sys.version.split()[0],
            "rounds": args.rounds,
            "requests": args.requests,
            "us_per_request": {
                "asgi": asgi_samples,
                "wsgi": wsgi_samples,
                "asgi_minimal": minimal_asgi_samples,
                "wsgi_minimal": minimal_wsgi_samples,
                **{title: samples for title, (samples, _, _) in frameworks.items()},
            },
        }
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
