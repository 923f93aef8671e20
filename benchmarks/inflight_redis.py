"""The in-flight limit on Redis: round trips and latency per request through the ASGI middleware.

Requests go in-process (no HTTP) through tokenbucket's ASGI middleware on an
``AsyncRedisStore``, one at a time on one connection, with and without ``in_flight=`` on the
same store: the difference is what the limit costs on Redis. Before timing, 1,000 requests of
each variant run under INFO commandstats: the commands the client sent per request (its round
trips: none is pipelined). Then rounds alternate the variants; the table gives each request's
latency percentiles over all rounds (p50, p99, p99.9, max), since the slot's two round trips
add to the tail as much as to the median.

    .venv/bin/pip install -e '.[redis]'
    .venv/bin/python benchmarks/inflight_redis.py [--rounds 5] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from typing import Any, Dict, List

import redis
from redis_bench import start_server

from tokenbucket import BucketRegistry, InFlightLimit, Rule
from tokenbucket.asgi import RateLimitMiddleware
from tokenbucket.redis import AsyncRedisStore

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [],
    "client": ("203.0.113.7", 40000),
    "server": ("bench.local", 80),
}
# Client commands; the rest of commandstats runs inside the scripts.
CLIENT_COMMANDS = ("evalsha", "zrem", "eval", "script|load")


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> Dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def request(middleware: Any) -> int:
    status = [0]

    async def send(message: Dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status[0] = message["status"]

    await middleware(dict(SCOPE), receive, send)
    return status[0]


def variants(store: AsyncRedisStore) -> Dict[str, Any]:
    registry = BucketRegistry(Rule(1e9, 1e9), store=store)
    return {
        "rate limit": RateLimitMiddleware(app, registry=registry),
        "rate limit + in_flight=4": RateLimitMiddleware(
            app, registry=registry, in_flight=InFlightLimit(4, store=store)
        ),
    }


async def run(url: str, rounds: int, requests: int) -> None:
    store = AsyncRedisStore.from_url(url)
    middlewares = variants(store)
    print("## Client commands per request (INFO commandstats)\n")
    print("| variant | commands |")
    print("| --- | --- |")
    for name, middleware in middlewares.items():
        await request(middleware)  # connect, load the scripts
        await store.client.config_resetstat()
        for _ in range(1000):
            assert await request(middleware) == 200
        stats = await store.client.info("commandstats")
        sent = {
            key[len("cmdstat_") :]: value["calls"] / 1000
            for key, value in stats.items()
            if key[len("cmdstat_") :] in CLIENT_COMMANDS
        }
        print(f"| {name} | {', '.join(f'{c} {n:.2f}' for c, n in sorted(sent.items()))} |")

    samples: Dict[str, List[float]] = {name: [] for name in middlewares}
    for round_ in range(rounds):
        names = list(middlewares)
        if round_ % 2:
            names.reverse()
        for name in names:
            middleware = middlewares[name]
            for _ in range(requests):
                start = time.perf_counter()
                await request(middleware)
                samples[name].append((time.perf_counter() - start) * 1e6)
    await store.aclose()

    print(f"\n## µs per request ({rounds} rounds x {requests} requests, one connection)\n")
    print("| variant | p50 | p99 | p99.9 | max |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in samples.items():
        cuts = statistics.quantiles(values, n=1000)
        print(
            f"| {name} | {statistics.median(values):.0f} | {cuts[989]:.0f} | {cuts[998]:.0f} "
            f"| {max(values):.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an existing Redis (it is FLUSHALLed); default: start one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    process = workdir = None
    if args.url:
        url = args.url
    else:
        process, port, workdir = start_server()
        url = f"redis://127.0.0.1:{port}/0"
    redis.Redis.from_url(url).flushall()
    try:
        asyncio.run(run(url, args.rounds, args.requests))
    finally:
        if process is not None:
            process.terminate()
            process.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
