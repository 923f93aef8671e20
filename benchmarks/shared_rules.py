"""How long a change of the shared default rule takes to reach every worker process.

N worker processes each hold their own RedisStore and registry (as uvicorn/gunicorn workers
would) following the shared rules (``share_rules(interval=...)``), and decide continuously
(one decision every ~1 ms). The parent changes the default through a registry of its own and
each worker reports the wall time of its first decision under the new rule. The lag of a trial
is the time from the start of the change (``update_default`` called) to the *last* worker's
first decision under the new rule; the documented bound is ``interval`` + one round trip.

It also prints what following shared rules costs a decision between refreshes (an in-memory
registry, so that the cost is not hidden by a round trip): one monotonic clock read.

Run (it starts its own redis-server on a free port unless given --url)::

    .venv/bin/python benchmarks/shared_rules.py --workers 4 --interval 1.0 --trials 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import time
import timeit
from typing import Dict

from redis_bench import start_server

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import RedisStore


def worker(url: str, interval: float, trials: int, ready, report) -> None:
    store = RedisStore.from_url(url)
    registry = BucketRegistry(Rule(1000, 1000.0), store=store)
    registry.share_rules(interval=interval)
    registry.consume("warm")
    ready.put(True)
    seen = 1000
    for _ in range(trials):
        while True:
            limit = registry.consume("client").limit
            if limit != seen:
                report.put((limit, time.time()))
                seen = limit
                break
            time.sleep(0.001)
    store.close()


def decision_cost() -> Dict[str, Dict[str, float]]:
    """ns per try_consume / consume, in memory, without and with share_rules (best of 7)."""
    table: Dict[str, Dict[str, float]] = {}
    for shared in (False, True):
        registry = BucketRegistry(Rule(1e9, 1e9))
        if shared:
            registry.share_rules(interval=1.0)
        costs = []
        label = "sharing" if shared else "not sharing"
        for call in (registry.try_consume, registry.consume):
            best = min(timeit.repeat(lambda call=call: call("k"), number=100_000, repeat=7))
            table.setdefault(label, {})[call.__name__] = best / 100_000 * 1e9
            costs.append(f"{call.__name__} {best / 100_000 * 1e9:.0f} ns")
        print(f"in memory, {label}: " + ", ".join(costs))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a Redis to use (default: start one)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", help="also write the lags and costs here")
    args = parser.parse_args()
    costs = decision_cost()
    server = None
    url = args.url
    if url is None:
        server, port, _ = start_server()
        url = f"redis://127.0.0.1:{port}"
    context = multiprocessing.get_context("spawn")
    ready, report = context.Queue(), context.Queue()
    processes = [
        context.Process(target=worker, args=(url, args.interval, args.trials, ready, report))
        for _ in range(args.workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=60)
    store = RedisStore.from_url(url)
    admin = BucketRegistry(Rule(1000, 1000.0), store=store)
    admin.share_rules(interval=args.interval)
    lags = []
    for trial in range(args.trials):
        time.sleep(random.uniform(0.2, 1.2) * args.interval)  # any phase of the workers' clocks
        capacity = 2000 + trial
        start = time.time()
        admin.update_default(capacity=capacity)
        firsts = [report.get(timeout=60) for _ in processes]
        assert all(limit == capacity for limit, _ in firsts), firsts
        lag = max(at for _, at in firsts) - start
        lags.append(lag)
        print(f"trial {trial}: last worker under the new rule after {lag * 1000:.1f} ms")
    for process in processes:
        process.join(timeout=30)
    store.close()
    if server is not None:
        server.terminate()
        server.wait()
    print(
        f"{args.workers} workers, interval {args.interval} s, {args.trials} trials: "
        f"lag median {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms "
        f"(bound: interval + one round trip = {args.interval * 1000:.0f} ms + RTT)"
    )
    if args.json:
        document = {"workers": args.workers, "interval": args.interval, "lags_seconds": lags}
        with open(args.json, "w") as out:
            json.dump({**document, "decision_ns": costs}, out, indent=1)


if __name__ == "__main__":
    main()
