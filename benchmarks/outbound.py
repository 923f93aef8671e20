"""Calling a rate-limited API: tokenbucket's transports, aiolimiter and pyrate-limiter, one run.

    pip install -e '.[bench,demo,redis,requests]'
    python benchmarks/outbound.py --json docs/data/outbound.json

Starts the demo gateway (``--capacity 20 --refill-rate 20``: 20 requests of burst, 20 per
second) on loopback and, for each scenario, sends ``--requests`` requests (300) from 32
concurrent tasks, waiting for the gateway's bucket to be full again in between. Each scenario
records when every request was sent and its status, the 429s the caller saw, and the 429s on
the wire, read from the gateway's ``/metrics`` (denied decisions). The ideal run takes
``(requests - 20) / 20`` seconds: the burst, then the refill rate.

Scenarios (``--scenarios``, comma-separated):

* ``tokenbucket``: ``AsyncRateLimitedTransport(limit="20/second")``, the server's own limit.
* ``tokenbucket-loose``: ``limit="80/second"``, 4x looser: it must learn the limit from the
  gateway's ``RateLimit-Policy``.
* ``tokenbucket-requests``: the ``requests`` adapter at 80/second, 32 threads.
* ``tokenbucket-redis``: 4 processes of 8 tasks sharing one budget in Redis (a redis-server
  started on a free port), 80/second each, learning the limit together.
* ``aiolimiter`` / ``aiolimiter-loose``: ``AsyncLimiter(20, 1)`` / ``(80, 1)`` before each call.
* ``pyrate`` / ``pyrate-loose``: pyrate-limiter's ``Limiter(Rate(20, Duration.SECOND))`` /
  80 per second, ``try_acquire_async`` before each call.

The competitors neither read the fields nor retry: a 429 reaches the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import httpx

CAPACITY = 20
RATE = 20.0
TASKS = 32
Record = Tuple[float, float, int]  # sent (s from the start), answered, status

SCENARIOS = (
    "tokenbucket",
    "tokenbucket-loose",
    "tokenbucket-requests",
    "tokenbucket-redis",
    "aiolimiter",
    "aiolimiter-loose",
    "pyrate",
    "pyrate-loose",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {timeout} s")


def denied(url: str) -> float:
    """The gateway's denied decisions so far, from its /metrics."""
    text = httpx.get(url + "/metrics", timeout=10).text
    found = re.search(
        r'tokenbucket_decisions_total\{outcome="denied",policy="default"\} (\S+)', text
    )
    return float(found[1]) if found else 0.0


class Wire:
    """Every request as it leaves (after any limiter's wait): when, when answered, status."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.records: List[Record] = []

    def note(self, sent: float, status: int) -> None:
        self.records.append((sent - self.start, time.monotonic() - self.start, status))


class WireTransport(httpx.AsyncBaseTransport):
    """The real transport, noting each request on the ``wire``."""

    def __init__(self, wire: Wire, tasks: int) -> None:
        self.wire = wire
        self.inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=tasks))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = time.monotonic()
        response = await self.inner.handle_async_request(request)
        self.wire.note(sent, response.status_code)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


async def run_tasks(call: Callable[[], Awaitable[int]], count: int, tasks: int) -> List[int]:
    """``count`` calls from ``tasks`` tasks; the statuses the caller saw."""
    left = [count]
    statuses: List[int] = []

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            statuses.append(await call())

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return statuses


Run = Tuple[List[int], List[Record]]  # the caller's statuses, the wire's records


async def tokenbucket_async(url: str, limit: Any, count: int, tasks: int, start: float) -> Run:
    from tokenbucket.httpx import AsyncRateLimitedTransport

    wire = Wire(start)
    transport = AsyncRateLimitedTransport(limit, transport=WireTransport(wire, tasks))
    async with httpx.AsyncClient(transport=transport, base_url=url) as client:

        async def call() -> int:
            return (await client.get("/")).status_code

        return await run_tasks(call, count, tasks), wire.records


async def aiolimiter_run(url: str, rate: float, count: int, tasks: int, start: float) -> Run:
    from aiolimiter import AsyncLimiter

    wire = Wire(start)
    limiter = AsyncLimiter(rate, 1)
    async with httpx.AsyncClient(transport=WireTransport(wire, tasks), base_url=url) as client:

        async def call() -> int:
            async with limiter:
                return (await client.get("/")).status_code

        return await run_tasks(call, count, tasks), wire.records


async def pyrate_run(url: str, rate: float, count: int, tasks: int, start: float) -> Run:
    from pyrate_limiter import Duration, Limiter, Rate

    wire = Wire(start)
    limiter = Limiter(Rate(int(rate), Duration.SECOND))
    async with httpx.AsyncClient(transport=WireTransport(wire, tasks), base_url=url) as client:

        async def call() -> int:
            await limiter.try_acquire_async("api")
            return (await client.get("/")).status_code

        return await run_tasks(call, count, tasks), wire.records


def requests_run(url: str, limit: str, count: int, tasks: int, start: float) -> Run:
    import requests
    from requests.adapters import HTTPAdapter

    from tokenbucket.requests import RateLimitedAdapter

    wire = Wire(start)

    class WireAdapter(HTTPAdapter):
        def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            sent = time.monotonic()
            response = super().send(request, **kwargs)
            wire.note(sent, response.status_code)
            return response

    class Adapter(RateLimitedAdapter, WireAdapter):
        """RateLimitedAdapter sends through WireAdapter.send (the next in the MRO)."""

    session = requests.Session()
    # connection_retries: urllib3's own retry of a GET whose kept-alive connection the
    # server had just closed (a race a loaded machine makes likely)
    session.mount("http://", Adapter(limit, pool_maxsize=tasks, connection_retries=1))
    left = [count]
    lock = threading.Lock()
    statuses: List[int] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            try:
                statuses.append(session.get(url + "/").status_code)
            except requests.RequestException:
                statuses.append(0)  # counted: caller_200 falls short

    threads = [threading.Thread(target=worker) for _ in range(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    session.close()
    return statuses, wire.records


def redis_worker(url: str, redis_url: str, count: int, tasks: int, at: float) -> None:
    """One of the processes of ``tokenbucket-redis``: print its records as JSON."""
    from tokenbucket import BucketRegistry, Rule
    from tokenbucket.redis import AsyncRedisStore

    async def main() -> Run:
        registry = BucketRegistry(
            Rule.parse("80/second"),
            # a loaded machine may answer slowly: wait for Redis rather than fall back to
            # a budget per process
            store=AsyncRedisStore.from_url(redis_url, socket_timeout=5.0),
        )
        await asyncio.sleep(max(at - time.time(), 0))
        start = time.monotonic() - (time.time() - at)
        return await tokenbucket_async(url, registry, count, tasks, start)

    print(json.dumps(asyncio.run(main())))


def redis_run(url: str, count: int, redis_url: Optional[str]) -> Run:
    """4 processes sharing a budget in Redis at ``redis_url`` (a new redis-server if None)."""
    redis: Optional[subprocess.Popen] = None
    if redis_url is None:
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("tokenbucket-redis needs redis-server on the PATH")
        port = free_port()
        redis = subprocess.Popen(
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_port(port, redis)
        redis_url = f"redis://127.0.0.1:{port}/0"
    try:
        at = time.time() + 3.0  # every process imports and connects first
        share, workers = count // 4, []
        for i in range(4):
            extra = count - 4 * share if i == 0 else 0
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        url,
                        redis_url,
                        str(share + extra),
                        str(TASKS // 4),
                        repr(at),
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        statuses: List[int] = []
        records: List[Record] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=600)
            if worker.returncode:
                raise SystemExit(f"a worker failed with {worker.returncode}")
            seen, wire = json.loads(out)
            statuses.extend(seen)
            records.extend((a, b, c) for a, b, c in wire)
        return statuses, records
    finally:
        if redis is not None:
            redis.terminate()
            redis.wait(10)


def scenario(name: str, url: str, count: int, redis_url: Optional[str] = None) -> Dict[str, Any]:
    """Run one scenario; return its summary and the wire's records."""
    before = denied(url)
    start = time.monotonic()
    loose = name.endswith("loose")
    if name == "tokenbucket":
        statuses, records = asyncio.run(tokenbucket_async(url, "20/second", count, TASKS, start))
    elif name == "tokenbucket-loose":
        statuses, records = asyncio.run(tokenbucket_async(url, "80/second", count, TASKS, start))
    elif name == "tokenbucket-requests":
        statuses, records = requests_run(url, "80/second", count, TASKS, start)
    elif name == "tokenbucket-redis":
        statuses, records = redis_run(url, count, redis_url)
    elif name.startswith("aiolimiter"):
        run = aiolimiter_run(url, 80.0 if loose else RATE, count, TASKS, start)
        statuses, records = asyncio.run(run)
    elif name.startswith("pyrate"):
        statuses, records = asyncio.run(
            pyrate_run(url, 80.0 if loose else RATE, count, TASKS, start)
        )
    else:
        raise SystemExit(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    records.sort()
    first = records[0][0]
    seconds = max(answered for _, answered, _ in records) - first
    ideal = (count - CAPACITY) / RATE
    return {
        "scenario": name,
        "requests": count,
        "seconds": round(seconds, 3),
        "ideal_seconds": ideal,
        "ratio": round(seconds / ideal, 3),
        "caller_200": statuses.count(200),
        "caller_429": statuses.count(429),
        "wire_429": int(denied(url) - before),
        # every request on the wire (retries included): sent, s from the first; status
        "sent": [round(sent - first, 4) for sent, _, _ in records],
        "status": [status for *_, status in records],
    }


def compact(text: str) -> str:
    """Indented JSON with each list of numbers on one line (300 numbers, not 300 lines)."""
    return re.sub(
        r"\[\s+([-0-9., \n]*?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m[1]) + "]", text
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--url", help="use this gateway instead of starting the demo")
    parser.add_argument("--redis-url", help="the Redis for tokenbucket-redis (else one is started)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    demo: Optional[subprocess.Popen] = None
    url = args.url
    if url is None:
        port = free_port()
        demo = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tokenbucket.demo",
                "--port",
                str(port),
                "--capacity",
                str(CAPACITY),
                "--refill-rate",
                str(int(RATE)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "TOKENBUCKET_ADMIN_TOKEN": "outbound-benchmark"},
        )
        wait_port(port, demo)
        url = f"http://127.0.0.1:{port}"
    results = []
    try:
        for name in names:
            time.sleep(2 * CAPACITY / RATE)  # the gateway's bucket is full again
            result = scenario(name, url, args.requests, args.redis_url)
            results.append(result)
            print(
                f"{name:22} {result['seconds']:6.2f} s (ideal {result['ideal_seconds']:.1f} s, "
                f"x{result['ratio']:.3f})  429s: wire {result['wire_429']}, "
                f"caller {result['caller_429']}",
                flush=True,
            )
    finally:
        if demo is not None:
            demo.terminate()
            demo.wait(10)
    if args.json:
        document = {
            "capacity": CAPACITY,
            "refill_rate": RATE,
            "tasks": TASKS,
            "machine": "2-core VM shared with other jobs (loopback)",
            "results": results,
        }
        Path(args.json).write_text(compact(json.dumps(document, indent=1)) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        redis_worker(
            sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
        )
    else:
        main()
