"""Restoring 10,000 overrides into an empty Redis from an export: time, and all present after.

The scenario of a Redis restarted without persistence: every override is gone. The operator
imports the last export (`import_rules`, or ``POST {admin_path}/import``). This script imports
N overrides into a fresh redis-server, then checks each one (HMGET of its hash) and exports
them again. Printed: import time, export time, overrides present afterwards.

Run (it starts its own redis-server on a free port unless given --url)::

    .venv/bin/python benchmarks/restore_overrides.py --overrides 10000
"""

from __future__ import annotations

import argparse
import json
import time

import redis
from redis_bench import start_server

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import RedisStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a Redis to use (it is FLUSHALLed; default: start one)")
    parser.add_argument("--overrides", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the rounds here")
    args = parser.parse_args()
    rounds = []
    server = None
    url = args.url
    if url is None:
        server, port, _ = start_server()
        url = f"redis://127.0.0.1:{port}"
    document = {
        "version": 1,
        "default": {"capacity": 10, "refill_rate": 1.0},
        "overrides": [
            {"key": f"client-{index}", "capacity": 1000 + index, "refill_rate": 100.0}
            for index in range(args.overrides)
        ],
    }
    client = redis.Redis.from_url(url)
    for round_ in range(args.rounds):
        client.flushall()
        store = RedisStore.from_url(url)
        registry = BucketRegistry(Rule(10, 1.0), store=store)
        start = time.perf_counter()
        registry.import_rules(document)
        imported = time.perf_counter() - start
        start = time.perf_counter()
        exported = registry.export_rules()
        listed = time.perf_counter() - start
        present = sum(
            client.hmget(f"tokenbucket:client-{index}", "C")[0] == str(1000 + index).encode()
            for index in range(args.overrides)
        )
        print(
            f"round {round_}: import {imported:.2f} s, export {listed:.2f} s, "
            f"present {present}/{args.overrides}, exported {len(exported['overrides'])}"
        )
        rounds.append(
            {
                "import_seconds": imported,
                "export_seconds": listed,
                "present": present,
                "exported": len(exported["overrides"]),
            }
        )
        store.close()
    client.close()
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"overrides": args.overrides, "rounds": rounds}, out, indent=1)
    if server is not None:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
