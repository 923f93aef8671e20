"""Several limits on one request (issue 12): what a 2- and 3-limit decision costs next to one.

Run:  .venv/bin/python benchmarks/several_limits.py [--json docs/data/benchmark-several-limits.json]

In memory, on one hot key whose buckets never run out (every request passes):

* ``try_consume`` and ``consume`` with 1, 2 and 3 limits, in interleaved rounds (machine noise
  hits all alike); each cell is the median over rounds of the time per call;
* per-call latency of ``consume`` (p50, p99, p99.9, max), each call timed on its own;
* bytes per tracked key and limit: tracemalloc growth after one request for each of 100,000
  fresh keys (key strings made beforehand; whatever the registry and store build per key is
  counted), divided by the number of limits.

On a private redis-server (started on a free port, unless ``--url``): ``consume`` through
``RedisStore`` with 1, 2 and 3 limits on one hot key, one thread: the time per decision, the
server's time in the script per call (INFO commandstats) and the commands the client sent per
decision (MONITOR: its round trips).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).parent))
from redis_bench import Monitor, start_server

from tokenbucket import BucketRegistry, Rule

HUGE = 10**12
RULES = [Rule(HUGE, 1.0), Rule(HUGE, 2.0), Rule(HUGE, 3.0)]
NAMES = ["burst", "hourly", "daily"]


def registry(limits: int, **options: Any) -> BucketRegistry:
    """A registry of ``limits`` limits (1: a plain Rule, as users write it)."""
    if limits == 1:
        return BucketRegistry(RULES[0], **options)
    return BucketRegistry(dict(zip(NAMES[:limits], RULES[:limits])), **options)


def per_call(call: Callable[[], object], calls: int) -> float:
    """Seconds per call over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def memory_rows(rounds: int, calls: int) -> Dict[str, float]:
    cases: Dict[str, Callable[[], object]] = {}
    for limits in (1, 2, 3):
        made = registry(limits)
        made.consume("hot")
        cases[f"try_consume, {limits} limit{'s' * (limits > 1)}"] = lambda m=made: m.try_consume(
            "hot"
        )
        cases[f"consume, {limits} limit{'s' * (limits > 1)}"] = lambda m=made: m.consume("hot")
    shadowed = registry(2, shadow={"hourly"})  # the general take_all, not the fast path
    shadowed.consume("hot")
    cases["consume, 2 limits, one in shadow"] = lambda: shadowed.consume("hot")
    samples: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, call in cases.items():
            samples[name].append(per_call(call, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def latencies(limits: int, calls: int) -> Dict[str, float]:
    made = registry(limits)
    consume = made.consume
    consume("hot")
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        start = clock()
        consume("hot")
        times.append(clock() - start)
    times.sort()

    def at(q: float) -> float:
        return times[min(len(times) - 1, int(q * len(times)))] / 1000

    return {"p50": at(0.5), "p99": at(0.99), "p99.9": at(0.999), "max": times[-1] / 1000}


def bytes_per_key_and_limit(limits: int, keys: int = 100_000) -> float:
    # Rates so low that no bucket is full again (and forgotten) before the count is taken.
    slow = [Rule(10, 1e-9), Rule(100, 1e-9), Rule(1000, 1e-9)]
    made = BucketRegistry(slow[0] if limits == 1 else dict(zip(NAMES[:limits], slow[:limits])))
    names = [f"client-{index}" for index in range(keys)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name in names:
        made.try_consume(name)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / keys / limits


def redis_rows(url: str, port: int, rounds: int, calls: int) -> Dict[str, Dict[str, float]]:
    import redis

    from tokenbucket.redis import RedisStore

    admin = redis.Redis.from_url(url)
    out: Dict[str, Dict[str, float]] = {}
    stores = []
    made = {}
    for limits in (1, 2, 3):
        store = RedisStore.from_url(url)
        stores.append(store)
        made[limits] = registry(limits, store=store)
        made[limits].consume("hot")
    samples: Dict[int, List[float]] = {limits: [] for limits in made}
    for _ in range(rounds):
        for limits, each in made.items():
            samples[limits].append(per_call(lambda e=each: e.consume("hot"), calls))
    for limits, each in made.items():
        admin.config_resetstat()
        for _ in range(calls):
            each.consume("hot")
        script = admin.info("commandstats")["cmdstat_evalsha"]
        monitor = Monitor(port)
        time.sleep(0.1)
        for _ in range(200):
            each.consume("hot")
        monitor.close()
        sent = {k.decode(): v / 200 for k, v in monitor.client_commands.items()}
        out[f"{limits} limit{'s' * (limits > 1)}"] = {
            "seconds": statistics.median(samples[limits]),
            "script_us": script["usec"] / script["calls"],
            "commands_sent": sum(sent.values()),
            "sent": sent,  # type: ignore[dict-item]
        }
    for store in stores:
        store.close()
    admin.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--url", help="an existing Redis (its keys 'tokenbucket:*' are used)")
    parser.add_argument("--json", help="write the results here too")
    options = parser.parse_args()

    memory = memory_rows(options.rounds, options.calls)
    print("| in memory, hot key | µs per call | vs 1 limit |")
    print("| --- | --- | --- |")
    for name, seconds in memory.items():
        base = memory[name.split(",")[0] + ", 1 limit"]
        print(f"| {name} | {seconds * 1e6:.2f} | {seconds / base:.2f}x |")
    tails = {limits: latencies(limits, options.calls) for limits in (1, 2, 3)}
    print("\n| consume, per call | p50 | p99 | p99.9 | max |")
    print("| --- | --- | --- | --- | --- |")
    for limits, row in tails.items():
        cells = " | ".join(f"{row[q]:.2f} µs" for q in ("p50", "p99", "p99.9", "max"))
        print(f"| {limits} limit{'s' * (limits > 1)} | {cells} |")
    sizes = {limits: bytes_per_key_and_limit(limits) for limits in (1, 2, 3)}
    print("\n| bytes per tracked key and limit | " + " | ".join(f"{n}" for n in sizes) + " |")
    print("| --- | " + " | ".join("---" for _ in sizes) + " |")
    print("| | " + " | ".join(f"{b:.0f} B" for b in sizes.values()) + " |")

    server = None
    url = options.url
    if url is None:
        server, port, _ = start_server()
        url = f"redis://127.0.0.1:{port}/0"
    else:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        remote = redis_rows(url, port, options.rounds, options.calls // 10)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    base = remote["1 limit"]
    print("\n| Redis, hot key, one thread | µs per decision | vs 1 | script µs | vs 1 | sent |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in remote.items():
        print(
            f"| {name} | {row['seconds'] * 1e6:.1f} | {row['seconds'] / base['seconds']:.2f}x "
            f"| {row['script_us']:.2f} | {row['script_us'] / base['script_us']:.2f}x "
            f"| {row['sent']} |"
        )
    if options.json:
        data = {
            "memory_seconds": memory,
            "latency_us": {str(k): v for k, v in tails.items()},
            "bytes_per_key_and_limit": {str(k): v for k, v in sizes.items()},
            "redis": remote,
            "python": sys.version.split()[0],
        }
        Path(options.json).write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
