"""A Redis Cluster failover under load, through a real server: what clients get, second by second.

Starts a Redis Cluster on loopback (3 masters, 3 replicas, ``cluster-node-timeout`` 1 s: the
``LocalCluster`` of tests/conftest.py), a Starlette app under uvicorn on 127.0.0.1 with one
rate-limited route per failure policy (``/fallback``, ``/deny``, ``/allow``, each with its own
``AsyncRedisStore.from_url(..., cluster=True, on_error=...)``) and ``--clients`` httpx clients
sending requests in a bounded loop. After ``--before`` seconds it kills (SIGKILL, by PID) the
master that holds the routes' buckets, then keeps the load on until every route has decided
through Redis again for ``--after`` seconds (at most ``--limit`` s). It prints, per policy and
per ``--step`` seconds around the kill, the responses by status and by where they were decided
(``R``: 200 decided in Redis, ``L``: 200 decided in this process by the policy, ``429``,
``5xx``, ``err``: no HTTP answer), then latency percentiles per policy.

The three stores' prefixes share one hash tag, ``{failover}``, only so that one kill hits all
three; the store itself never needs hash tags (each key is one hash, in one slot).

    pip install -e '.[redis]' --group test     # a checkout: redis-server, redis-cli on PATH
    python benchmarks/cluster_failover.py [--clients 4] [--before 1] [--after 1] [--step 0.5]

tests/test_redis_cluster.py runs ``failover`` against the test session's cluster and prints the
same table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, AsyncIterator, Dict, List, NamedTuple, Optional, Tuple

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Mount

from tokenbucket import BucketRegistry, Rule
from tokenbucket.asgi import RateLimitMiddleware
from tokenbucket.redis import AsyncRedisStore

POLICIES = ("fallback", "deny", "allow")
#: One hash tag in every prefix: the three routes' buckets share a slot, so one master.
TAG = "{failover}"
#: Never reached during a run: every 429 comes from the failure policy, not from the limit.
RULE = Rule(1_000_000, 1_000)


class Answer(NamedTuple):
    """One request: when it was sent, to which route, what came back, how long it took."""

    at: float
    policy: str
    outcome: str  # "R", "L", "429", "5xx", "err"
    latency: float


class Run(NamedTuple):
    answers: List[Answer]
    recovered_after: Optional[float]  # s from the kill until every route decided in Redis again
    killed: str  # the master killed, host:port


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_app(url: str) -> Starlette:
    """The app: ``/<policy>`` answers ``{"redis": <the store was available>}``, rate-limited."""
    mounts, stores = [], []
    for policy in POLICIES:
        store = AsyncRedisStore.from_url(
            url, cluster=True, on_error=policy, prefix=f"{TAG}{policy}:"
        )

        async def endpoint(scope: Any, receive: Any, send: Any, store: Any = store) -> None:
            response = JSONResponse({"redis": store.available})
            await response(scope, receive, send)

        stores.append(store)
        registry = BucketRegistry(RULE, store=store)
        mounts.append(Mount(f"/{policy}", app=RateLimitMiddleware(endpoint, registry=registry)))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for store in stores:
            await store.aclose()

    return Starlette(routes=mounts, lifespan=lifespan)


class Server:
    """uvicorn serving ``make_app(url)`` in a thread, on its own event loop (the stores'
    connections belong to the loop that made them)."""

    def __init__(self, url: str) -> None:
        self.port = free_port()
        self._url = url
        self._server: Optional[uvicorn.Server] = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        config = uvicorn.Config(
            make_app(self._url), host="127.0.0.1", port=self.port, log_level="error"
        )
        self._server = uvicorn.Server(config)
        await self._server.serve()

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 20
        while self._server is None or not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.should_exit = True
        self._thread.join(10)


def _outcome(response: httpx.Response) -> str:
    if response.status_code >= 500:
        return "5xx"
    if response.status_code == 429:
        return "429"
    if response.status_code == 200:
        return "R" if response.json()["redis"] else "L"
    return str(response.status_code)


async def _load(
    base: str, clients: int, pause: float, state: Dict[str, Any], answers: List[Answer]
) -> None:
    """``clients`` loops, each sending to the three routes in turn until ``state["stop"]``."""

    async def client(first: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            turn = first
            while not state["stop"] and len(answers) < state["max_requests"]:
                policy = POLICIES[turn % len(POLICIES)]
                turn += 1
                start = time.monotonic()
                try:
                    outcome = _outcome(await http.get(f"/{policy}/"))
                except httpx.HTTPError:
                    outcome = "err"
                end = time.monotonic()
                answers.append(Answer(start, policy, outcome, end - start))
                await asyncio.sleep(pause)

    await asyncio.gather(*(client(i) for i in range(clients)))


def failover(
    cluster: Any,
    *,
    clients: int = 4,
    before: float = 1.0,
    after: float = 1.0,
    limit: float = 20.0,
    pause: float = 0.005,
    max_requests: int = 50_000,
) -> Run:
    """Kill the master holding the routes' buckets under load; return every answer.

    ``cluster`` is a running ``LocalCluster`` (tests/conftest.py); the killed node stays down
    (``cluster.heal()`` starts it again, as a replica).
    """
    url = cluster.url
    victim = cluster.master_for(TAG)
    state: Dict[str, Any] = {"stop": False, "max_requests": max_requests}
    answers: List[Answer] = []
    with Server(url) as base:

        async def drive() -> Tuple[float, Optional[float]]:
            async with httpx.AsyncClient(base_url=base, timeout=10) as http:
                for policy in POLICIES:  # each store reads the cluster's layout: not timed
                    assert (await http.get(f"/{policy}/")).status_code == 200
            load = asyncio.ensure_future(_load(base, clients, pause, state, answers))
            await asyncio.sleep(before)
            kill = time.monotonic()
            victim.kill()
            recovered = None
            while time.monotonic() - kill < limit and not load.done():
                await asyncio.sleep(0.05)
                recovered = _recovered(answers, kill)
                if recovered is not None and time.monotonic() - kill > recovered + after:
                    break
            state["stop"] = True
            await load
            return kill, recovered

        kill, recovered = asyncio.run(drive())
    relative = [answer._replace(at=answer.at - kill) for answer in answers]
    return Run(relative, recovered, f"127.0.0.1:{victim.port}")


def _recovered(answers: List[Answer], kill: float) -> Optional[float]:
    """When (s after the kill) every route last answered by its policy, if each has answered
    from Redis since; None until then."""
    since: List[float] = []
    for policy in POLICIES:
        mine = [a._replace(at=a.at - kill) for a in answers if a.policy == policy and a.at >= kill]
        degraded = [a.at for a in mine if a.outcome != "R"]
        if not degraded or not any(a.outcome == "R" and a.at > degraded[-1] for a in mine):
            return None
        since.append(degraded[-1])
    return max(since)


def table(run: Run, step: float = 0.5) -> str:
    """The answers by outcome per policy and per ``step`` s around the kill, and latencies."""
    rows: Dict[int, Dict[str, Counter[str]]] = {}
    for answer in run.answers:
        row = rows.setdefault(int(answer.at // step), {policy: Counter() for policy in POLICIES})
        row[answer.policy][answer.outcome] += 1
    width = 26
    lines = [
        f"killed master {run.killed} at t=0; every route decided in Redis again after "
        + (
            "(not within the limit)"
            if run.recovered_after is None
            else f"{run.recovered_after:.2f} s"
        ),
        f"{'t (s)':>7} | " + " | ".join(f"{policy:<{width}}" for policy in POLICIES),
    ]
    order = ("R", "L", "429", "5xx", "err")
    for index in sorted(rows):
        cells = []
        for policy in POLICIES:
            counts = rows[index][policy]
            keys = sorted(counts, key=lambda k: order.index(k) if k in order else 99)
            cells.append(" ".join(f"{key}:{counts[key]}" for key in keys).ljust(width))
        lines.append(f"{index * step:>+7.1f} | " + " | ".join(cells))
    lines.append("latency (ms)   p50     p99   p99.9     max   requests")
    for policy in POLICIES:
        samples = sorted(a.latency * 1000 for a in run.answers if a.policy == policy)
        if not samples:
            continue

        def pick(q: float, samples: List[float] = samples) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))]

        lines.append(
            f"{policy:<10} {pick(0.5):7.2f} {pick(0.99):7.2f} {pick(0.999):7.2f} "
            f"{samples[-1]:7.2f} {len(samples):10d}"
        )
    return "\n".join(lines)


def _local_cluster() -> Any:
    """tests/conftest.py's LocalCluster (a checkout has it), loaded by path."""
    path = Path(__file__).resolve().parent.parent / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tokenbucket_test_conftest", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LocalCluster()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--before", type=float, default=1.0, help="s of load before the kill")
    parser.add_argument("--after", type=float, default=1.0, help="s of load after recovery")
    parser.add_argument("--limit", type=float, default=20.0, help="most s of load after the kill")
    parser.add_argument("--step", type=float, default=0.5, help="s per row of the table")
    args = parser.parse_args()
    cluster = _local_cluster()
    try:
        cluster.start()
        run = failover(
            cluster, clients=args.clients, before=args.before, after=args.after, limit=args.limit
        )
    finally:
        cluster.close()
    print(table(run, args.step))


if __name__ == "__main__":
    main()
