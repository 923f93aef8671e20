"""Waiting for tokens: N concurrent waiters, the old retry loop against one reservation each.

N asyncio tasks start at once on one key whose bucket holds 1 token and refills N per second,
so the last waiter is due about one second later. Two ways to wait, side by side:

* ``retry`` (the decorator's ``wait=True`` before 0.2.0): consume; if denied sleep
  ``retry_after`` and try again. Every waiter wakes at the same instants, one of them wins.
* ``reserve`` (now: ``BucketRegistry.aacquire``): one store call takes the tokens into debt
  behind the earlier waiters; one sleep, exactly until they are earned.

Printed per store (in memory, and Redis through ``AsyncRedisStore`` on a redis-server this
script starts on a free port): sleeps per call, store calls per call, CPU seconds of this
process (and of redis-server), the wall time of the whole run, and the order (the share of
consecutive waiters finishing in the order in which the store first answered them: first come,
first served is 100%).

Run::

    python benchmarks/waiters.py            # 100 and 1,000 waiters
    python benchmarks/waiters.py --no-redis
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time

from tokenbucket import BucketRegistry, MemoryStore, Rule


class Counting:
    """A store wrapper counting calls (every method is one store round trip), and noting the
    order in which each task's first call was answered: the order the store served them."""

    def __init__(self, store):
        self.store = store
        self.calls = 0
        self.served = {}

    def __getattr__(self, name):
        method = getattr(self.store, name)

        async def call(*args):
            self.calls += 1
            result = await method(*args)
            self.served.setdefault(asyncio.current_task(), len(self.served))
            return result

        return call if asyncio.iscoroutinefunction(method) else method


async def retry(limits, key, sleep):
    """The old wait mode: retry until it wins."""
    while True:
        decision = await limits.aconsume(key)
        if decision.allowed:
            return
        await sleep(decision.retry_after)


async def reserve(limits, key, sleep):
    """The new wait mode: one reservation, one sleep."""
    await limits.aacquire(key, sleep=sleep)


async def scenario(way, make_store, waiters):
    store = await make_store()
    counting = Counting(store)
    limits = BucketRegistry(Rule(1, float(waiters)), store=store)
    # the registry calls the store's methods: count them through a wrapper registry
    limits._async = counting
    sleeps = 0

    async def sleep(seconds):
        nonlocal sleeps
        sleeps += 1
        await asyncio.sleep(seconds)

    finished = []

    async def waiter():
        await way(limits, "k", sleep)
        finished.append(counting.served[asyncio.current_task()])

    await limits.aconsume("k")  # empty: every waiter waits
    counting.calls = 0
    counting.served.clear()
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(waiter() for _ in range(waiters)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    in_order = sum(1 for a, b in zip(finished, finished[1:]) if a < b) / max(1, waiters - 1)
    close = getattr(store, "aclose", None)
    if close is not None:
        await close()
    return sleeps / waiters, counting.calls / waiters, cpu, wall, in_order


def memory_store():
    async def make():
        return _Async(MemoryStore())

    return make


class _Async:
    """A MemoryStore presented as an async store, as the registry itself does."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        method = getattr(self.store, name)

        async def call(*args):
            return method(*args)

        return call


def redis_store(url):
    from tokenbucket.redis import AsyncRedisStore

    async def make():
        store = AsyncRedisStore.from_url(url, socket_timeout=5, max_connections=5000)
        await store.client.flushall()
        return store

    return make


def server_cpu(url):
    """redis-server's CPU seconds so far and the connections it has accepted (0, 0 in memory)."""
    if url is None:
        return 0.0, 0
    import redis

    client = redis.Redis.from_url(url)
    cpu = client.info("cpu")
    connections = client.info("stats")["total_connections_received"]
    client.close()
    # less this very connection
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"], connections - 1


def start_redis():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    folder = tempfile.mkdtemp()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.05)
    return process, url


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waiters", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--json", help="also write the rows here")
    options = parser.parse_args()
    rows = []
    process = url = None
    stores = [("memory", memory_store(), None)]
    if not options.no_redis and shutil.which("redis-server"):
        process, url = start_redis()
        stores.append(("redis", redis_store(url), url))
    try:
        print(
            "store   waiters  way      sleeps/call  calls/call  cpu s  redis cpu s  wall s order"
            "  connections"
        )
        for name, make, server in stores:
            for waiters in options.waiters:
                for label, way in (("retry", retry), ("reserve", reserve)):
                    cpu_before, connections_before = server_cpu(server)
                    sleeps, calls, cpu, wall, order = asyncio.run(scenario(way, make, waiters))
                    cpu_after, connections_after = server_cpu(server)
                    spent = cpu_after - cpu_before
                    connections = connections_after - connections_before
                    print(
                        f"{name:7} {waiters:7}  {label:8} {sleeps:11.2f} {calls:11.2f} "
                        f"{cpu:6.2f} {spent:12.2f} {wall:7.2f} {order:5.0%} {connections:12}"
                    )
                    rows.append(
                        {
                            "store": name,
                            "waiters": waiters,
                            "way": label,
                            "sleeps_per_call": sleeps,
                            "store_calls_per_call": calls,
                            "cpu_seconds": cpu,
                            "server_cpu_seconds": spent,
                            "wall_seconds": wall,
                            "order_kept": order,
                            "connections_opened": connections,
                        }
                    )
        if options.json:
            with open(options.json, "w") as out:
                json.dump({"rows": rows}, out, indent=1)
    finally:
        if process is not None:
            process.terminate()
            process.wait(5)


if __name__ == "__main__":
    main()
