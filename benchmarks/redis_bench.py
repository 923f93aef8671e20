"""Decisions per second against a local Redis: tokenbucket vs limits, throttled-py, pyrate-limiter.

Every contender limits 1,000 keys at 100 requests per second (burst 100) on the same
redis-server, through redis-py. A bare ``INCR`` (one round trip doing the least a server can
do) is the floor. Five modes: sync on one thread (one connection), sync on 8 threads sharing
a client (a pool of connections), async one call at a time (one connection), async with 32
concurrent tasks (a pool) and async with 32 concurrent tasks on one connection (a
``BlockingConnectionPool`` of one; only for the contenders whose client the benchmark makes).
``tokenbucket, pipeline=False`` is AsyncRedisStore sending each decision alone, as before
pipelining (its sync columns are the same RedisStore as ``tokenbucket``'s: a second sample).
Rounds interleave the contenders; the table gives medians.

Before timing, each contender makes 1,000 decisions under INFO commandstats (what the server
ran per decision, scripts' inner commands included, and the server time it took) and 1,000
under MONITOR (the commands its client sent per decision; one pipeline sends several), one at
a time and from 32 concurrent tasks.

Run (it starts its own redis-server on a free port unless given --url)::

    .venv/bin/pip install -e '.[redis]' --group bench
    .venv/bin/python benchmarks/redis_bench.py [--rounds 5] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata

import redis
import redis.asyncio

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore

KEYS = [f"203.0.113.{i % 256}-{i}" for i in range(1000)]
LIMIT = 100  # per second, and the burst


# -- contenders: each returns (decide, close) for sync or async use -------------------------


def incr_sync(url):
    client = redis.Redis.from_url(url)
    return client.incr, client.close


def one_connection(url):
    """An async client whose pool holds one connection (callers wait for it), and its close."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=1)
    client = redis.asyncio.Redis(connection_pool=pool)

    async def close():
        await client.aclose()
        await pool.disconnect()

    return client, close


def async_client(url, single):
    if single:
        return one_connection(url)
    client = redis.asyncio.Redis.from_url(url)
    return client, client.aclose


def incr_async(url, single=False):
    client, close = async_client(url, single)
    return client.incr, close


def tokenbucket_sync(url):
    store = RedisStore.from_url(url)
    return BucketRegistry(Rule(LIMIT, LIMIT), store=store).try_consume, store.close


def tokenbucket_async(pipeline):
    def make(url, single=False):
        client, close = async_client(url, single)
        # (no keyword when on, the default: the script then also runs on 0.1.0, for comparison)
        store = AsyncRedisStore(client, **({} if pipeline else {"pipeline": False}))
        return BucketRegistry(Rule(LIMIT, LIMIT), store=store).atry_consume, close

    return make


def limits_sync(strategy):
    def make(url):
        import limits
        import limits.storage
        import limits.strategies

        storage = limits.storage.RedisStorage(url)
        limiter = getattr(limits.strategies, strategy)(storage)
        item = limits.parse(f"{LIMIT}/second")
        return (lambda key: limiter.hit(item, key)), storage.storage.close

    return make


def limits_async(strategy):
    def make(url, single=False):
        if single:
            return None
        import limits
        import limits.aio.storage
        import limits.aio.strategies

        storage = limits.aio.storage.RedisStorage(
            url.replace("redis://", "async+redis://"), implementation="redispy"
        )
        limiter = getattr(limits.aio.strategies, strategy)(storage)
        item = limits.parse(f"{LIMIT}/second")

        async def close():
            await storage.bridge.storage.aclose()

        return (lambda key: limiter.hit(item, key)), close

    return make


def throttled_sync(url):
    import throttled

    store = throttled.RedisStore(server=url)
    limiter = throttled.Throttled(
        using=throttled.RateLimiterType.TOKEN_BUCKET.value,
        quota=throttled.per_sec(LIMIT, burst=LIMIT),
        store=store,
    )
    return (lambda key: not limiter.limit(key).limited), lambda: None


def throttled_async(url, single=False):
    if single:
        return None
    import throttled.asyncio

    store = throttled.asyncio.RedisStore(server=url)
    limiter = throttled.asyncio.Throttled(
        using=throttled.RateLimiterType.TOKEN_BUCKET.value,
        quota=throttled.per_sec(LIMIT, burst=LIMIT),
        store=store,
    )

    async def decide(key):
        return not (await limiter.limit(key)).limited

    async def close():
        pass

    return decide, close


def pyrate_limiter(make_client, is_async):
    """pyrate-limiter's token bucket in Redis (its ``StateBucket`` over a ``RedisStateStore``,
    one Lua script call per decision). Its ready-made limiters share one bucket among all
    names, so each name gets its own bucket through a ``BucketFactory`` (its documented
    extension point), all on one client."""
    from pyrate_limiter import (
        BucketFactory,
        Duration,
        Limiter,
        Rate,
        RateItem,
        StateBucket,
        TokenBucket,
    )
    from pyrate_limiter.buckets.redis_state import RedisStateStore

    client, close = make_client()
    rates = [Rate(LIMIT, Duration.SECOND, burst=LIMIT)]

    class PerKey(BucketFactory):
        def __init__(self):
            self.buckets = {}
            self.clock = RedisStateStore.default_clock

        def wrap_item(self, name, weight=1):
            return RateItem(name, self.clock.now(), weight=weight)

        def get(self, item):
            bucket = self.buckets.get(item.name)
            if bucket is None:
                store = RedisStateStore(client, f"pyrate:{item.name}")
                store.is_async = is_async
                bucket = StateBucket(rates, TokenBucket(), store)
                self.buckets[item.name] = bucket
            return bucket

    if is_async:
        limiter = Limiter(PerKey(), buffer_ms=0)

        async def decide(key):
            return bool(await limiter.try_acquire_async(key, blocking=False))

        return decide, close
    # A Limiter's lock is not waited for with blocking=False (a thread that finds it taken is
    # refused at once), so each thread has its own Limiter, all on the one client.
    local = threading.local()

    def decide_sync(key):
        try:
            limiter = local.limiter
        except AttributeError:
            limiter = local.limiter = Limiter(PerKey(), buffer_ms=0)
        return bool(limiter.try_acquire(key, blocking=False))

    return decide_sync, close


def pyrate_sync(url):
    def make_client():
        client = redis.Redis.from_url(url)
        return client, client.close

    return pyrate_limiter(make_client, False)


def pyrate_async(url, single=False):
    return pyrate_limiter(lambda: async_client(url, single), True)


CONTENDERS = {
    "INCR (floor)": (incr_sync, incr_async),
    "tokenbucket": (tokenbucket_sync, tokenbucket_async(True)),
    "tokenbucket, pipeline=False": (tokenbucket_sync, tokenbucket_async(False)),
    "limits moving window": (
        limits_sync("MovingWindowRateLimiter"),
        limits_async("MovingWindowRateLimiter"),
    ),
    "limits fixed window": (
        limits_sync("FixedWindowRateLimiter"),
        limits_async("FixedWindowRateLimiter"),
    ),
    "throttled-py token bucket": (throttled_sync, throttled_async),
    "pyrate-limiter token bucket": (pyrate_sync, pyrate_async),
}

MODES = [
    "sync, 1 connection",
    "sync, pool (8 threads)",
    "async, 1 connection",
    "async, pool (32 tasks)",
    "async, 1 connection (32 tasks)",
]


# -- timing ---------------------------------------------------------------------------------


def run_sync(decide, threads, seconds):
    """Decisions per second by ``threads`` threads calling ``decide`` for ``seconds``."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = [0.0]

    def work(worker):
        keys, n = KEYS, len(KEYS)
        i = worker * 97
        barrier.wait()
        end = stop[0]
        done = 0
        while True:
            for _ in range(50):
                decide(keys[i % n])
                i += 1
            done += 50
            if time.perf_counter() >= end:
                break
        counts[worker] = done

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    start = time.perf_counter()
    stop[0] = start + seconds
    barrier.wait()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


async def run_async(decide, tasks, seconds):
    """Decisions per second by ``tasks`` concurrent tasks awaiting ``decide`` for ``seconds``."""
    counts = [0] * tasks
    end = time.perf_counter() + seconds

    async def work(worker):
        keys, n = KEYS, len(KEYS)
        i = worker * 97
        done = 0
        while True:
            for _ in range(50):
                await decide(keys[i % n])
                i += 1
            done += 50
            if time.perf_counter() >= end:
                break
        counts[worker] = done

    start = time.perf_counter()
    await asyncio.gather(*(work(t) for t in range(tasks)))
    return sum(counts) / (time.perf_counter() - start)


def measure(name, mode, url, seconds, threads, tasks):
    make_sync, make_async = CONTENDERS[name]
    if mode.startswith("sync"):
        decide, close = make_sync(url)
        try:
            for key in KEYS[:200]:  # connect, load scripts
                decide(key)
            return run_sync(decide, 1 if "1 connection" in mode else threads, seconds)
        finally:
            close()

    async def scenario():
        made = make_async(url, single="1 connection (" in mode)
        if made is None:
            return math.nan
        decide, close = made
        try:
            for key in KEYS[:200]:
                await decide(key)
            return await run_async(decide, 1 if mode == "async, 1 connection" else tasks, seconds)
        finally:
            await close()

    return asyncio.run(scenario())


# -- round trips ----------------------------------------------------------------------------


class Monitor:
    """Counts the commands clients send (MONITOR), apart from those scripts run inside."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        self.client_commands = {}
        self.buffer = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\r\n")
            for line in lines:
                if not line.startswith(b"+") or b"[" not in line:
                    continue
                source = line.split(b"[", 1)[1].split(b"]", 1)[0]
                command = line.split(b"] ", 1)[1].split(b" ", 1)[0].strip(b'"').lower()
                if source.endswith(b" lua") or command in (b"info", b"config", b"ping"):
                    continue
                self.client_commands[command] = self.client_commands.get(command, 0) + 1

    def close(self):
        time.sleep(0.2)  # let MONITOR's stream catch up
        self.sock.close()
        self.thread.join(1)


def round_trips(name, url, port, decisions=1000):
    """Client commands and server commands per decision, sync and async, for a contender.

    Two passes of ``decisions``: the first under INFO commandstats alone (what the server ran,
    and its time), the second under MONITOR (what the client sent; MONITOR slows the server).
    """
    admin = redis.Redis.from_url(url)
    out = {}
    for kind in ("sync", "async", "async, 32 tasks"):
        admin.flushall()
        make_sync, make_async = CONTENDERS[name]
        if kind == "sync":
            decide, close = make_sync(url)
            for key in KEYS[:50]:
                decide(key)
            admin.config_resetstat()
            for i in range(decisions):
                decide(KEYS[i % len(KEYS)])
            stats = admin.info("commandstats")
            monitor = Monitor(port)
            time.sleep(0.1)
            for i in range(decisions):
                decide(KEYS[i % len(KEYS)])
            monitor.close()
            close()
        else:

            async def scenario(make_async=make_async, tasks=32 if "tasks" in kind else 1):
                decide, close = make_async(url)

                async def work(worker):  # the tasks interleave: worker w decides w, w+tasks, ...
                    for i in range(worker, decisions, tasks):
                        await decide(KEYS[i % len(KEYS)])

                for key in KEYS[:50]:
                    await decide(key)
                admin.config_resetstat()
                await asyncio.gather(*(work(w) for w in range(tasks)))
                stats = admin.info("commandstats")
                watcher = Monitor(port)
                await asyncio.sleep(0.1)
                await asyncio.gather(*(work(w) for w in range(tasks)))
                await close()
                return watcher, stats

            monitor, stats = asyncio.run(scenario())
            monitor.close()
        server = {
            command.removeprefix("cmdstat_"): value["calls"] / decisions
            for command, value in stats.items()
            if not command.startswith(("cmdstat_config", "cmdstat_info", "cmdstat_monitor"))
        }
        client = {
            command.decode(): count / decisions
            for command, count in monitor.client_commands.items()
        }
        # Server time of what the client sent (a script's time includes its inner commands).
        busy = sum(stats.get(f"cmdstat_{command}", {}).get("usec", 0) for command in client)
        out[kind] = (client, server, busy / decisions)
    admin.close()
    return out


# -- a private redis-server -----------------------------------------------------------------


def start_server():
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server not found (apt-get install -y redis-server), or pass --url")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="tokenbucket-bench-")
    process = subprocess.Popen(
        [
            *(executable, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.02)
    client.close()
    return process, port, workdir


def version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an existing Redis (it is FLUSHALLed); default: start one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5, help="per measurement")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--only", nargs="*", help="contenders to run (names as in the table)")
    parser.add_argument("--modes", nargs="*", help="modes to run (words each mode's name holds)")
    parser.add_argument("--no-round-trips", action="store_true", help="skip the commands table")
    options = parser.parse_args()
    names = [n for n in CONTENDERS if not options.only or n in options.only or n.startswith("INCR")]
    missing = [
        p for p in ("limits", "throttled-py", "pyrate-limiter") if version(p) == "not installed"
    ]
    if missing:
        sys.exit(f"install the peers first: pip install -e '.[redis]' --group bench ({missing})")

    process = workdir = None
    if options.url:
        url = options.url
        port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
    else:
        process, port, workdir = start_server()
        url = f"redis://127.0.0.1:{port}/0"
    admin = redis.Redis.from_url(url)
    modes = [m.replace("32 tasks", f"{options.tasks} tasks") for m in MODES]
    modes = [m.replace("8 threads", f"{options.threads} threads") for m in modes]
    if options.modes:  # "sync" picks the sync modes, "async" the async ones, "pool" ...
        modes = [m for m in modes if set(options.modes) & set(m.replace(",", "").split())]
    try:
        print(
            f"Python {platform.python_version()}, redis-py {version('redis')}, "
            f"redis-server {admin.info('server')['redis_version']}, {os.cpu_count()} CPUs, "
            f"limits {version('limits')}, throttled-py {version('throttled-py')}, "
            f"pyrate-limiter {version('pyrate-limiter')}\n"
        )
        print("## Round trips per decision\n")
        print(
            "| contender | mode | client commands (MONITOR) | server commands (commandstats) "
            "| server µs |"
        )
        print("| --- | --- | --- | --- | ---: |")
        for name in [] if options.no_round_trips else names:
            for kind, (client, server, busy) in round_trips(name, url, port).items():
                sent = ", ".join(f"{c} {n:.2f}" for c, n in sorted(client.items()))
                ran = ", ".join(f"{c} {n:.2f}" for c, n in sorted(server.items()))
                print(f"| {name} | {kind} | {sent} | {ran} | {busy:.1f} |")

        results = {name: {mode: [] for mode in modes} for name in names}
        for round_number in range(options.rounds):
            for mode in modes:
                order = names[round_number % len(names) :] + names[: round_number % len(names)]
                for name in order:
                    admin.flushall()
                    rate = measure(name, mode, url, options.seconds, options.threads, options.tasks)
                    results[name][mode].append(rate)
            print(f"round {round_number + 1}/{options.rounds} done", file=sys.stderr)

        medians = {n: {m: statistics.median(r) for m, r in by.items()} for n, by in results.items()}
        floor = medians["INCR (floor)"]
        print(
            f"\n## Decisions per second (median of {options.rounds} rounds of "
            f"{options.seconds} s; in brackets: relative to INCR)\n"
        )
        print("| contender | " + " | ".join(modes) + " |")
        print("| --- |" + " ---: |" * len(modes))
        for name in names:
            cells = [
                "n/a"
                if math.isnan(medians[name][m])
                else f"{medians[name][m]:,.0f} ({medians[name][m] / floor[m]:.2f}x)"
                for m in modes
            ]
            print(f"| {name} | " + " | ".join(cells) + " |")
        if "tokenbucket" in medians:
            ours = medians["tokenbucket"]
            print("\n## tokenbucket against the others (> 1: tokenbucket is faster)\n")
            print("| against | " + " | ".join(modes) + " |")
            print("| --- |" + " ---: |" * len(modes))
            for name in names:
                if name != "tokenbucket":
                    cells = [
                        "n/a"
                        if math.isnan(medians[name][m])
                        else f"{ours[m] / medians[name][m]:.2f}x"
                        for m in modes
                    ]
                    print(f"| {name} | " + " | ".join(cells) + " |")
            slowdown = ", ".join(f"{m}: {floor[m] / ours[m]:.2f}x" for m in modes)
            print(f"\nINCR floor / tokenbucket (target <= 1.5): {slowdown}")
    finally:
        admin.close()
        if process is not None:
            process.terminate()
            process.wait()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
