"""Tail latency of in-memory decisions under a flood of distinct keys, garbage collector on.

Run:  .venv/bin/python benchmarks/flood.py

The scenario (issue 9, item 10): ``BucketRegistry(Rule(10, 0.001))`` on the default store and
clock, 1,500,000 decisions of 5 tokens on 1,100,000 distinct keys (each key once, then the
first 400,000 again), so a million buckets are in debt and none refills during the run: every
sweep finds nothing to forget. Each decision is timed on its own (``perf_counter_ns``, which
adds about 0.1 µs); the script prints the percentiles, the maximum and how many decisions took
over 1 ms and over 10 ms. Pauses come from sweeps and from the cyclic garbage collector's full
collections, which visit every tracked object.

On a shared machine the scheduler can pause the process for tens of milliseconds; ``--clock
cpu`` times each decision in this process's CPU time instead (``process_time_ns``, a system call
that adds about 1 µs), which counts sweeps, collections and dict resizes but not time spent
waiting for a core.

To compare with an older version, put its ``src`` first on the path:
``PYTHONPATH=/path/to/old/src .venv/bin/python benchmarks/flood.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import time
from array import array

import tokenbucket
from tokenbucket import BucketRegistry, MemoryStore, Rule


def percentile(ordered: array, fraction: float) -> float:  # type: ignore[type-arg]
    """The value at ``fraction`` of the sorted samples (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_100_000, help="distinct keys")
    parser.add_argument("--decisions", type=int, default=1_500_000, help="decisions in all")
    parser.add_argument("--amount", type=int, default=5, help="tokens per decision")
    parser.add_argument("--max-keys", type=int, default=None, help="MemoryStore max_keys")
    parser.add_argument(
        "--clock", choices=["wall", "cpu"], default="wall", help="time per decision: wall or CPU"
    )
    parser.add_argument("--json", help="also write the row here")
    args = parser.parse_args()

    registry = BucketRegistry(Rule(10, 0.001), store=MemoryStore(max_keys=args.max_keys))
    keys = [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:{i}" for i in range(args.keys)]
    samples = array("q", bytes(8 * args.decisions))
    decide = registry.try_consume
    clock = time.perf_counter_ns if args.clock == "wall" else time.process_time_ns
    amount = args.amount
    gc.collect()
    assert gc.isenabled()
    collections = sum(stat["collections"] for stat in gc.get_stats())
    began = time.perf_counter()
    for i in range(args.decisions):
        key = keys[i % args.keys]
        start = clock()
        decide(key, amount)
        samples[i] = clock() - start
    wall = time.perf_counter() - began
    collections = sum(stat["collections"] for stat in gc.get_stats()) - collections
    ordered = array("q", sorted(samples))
    us = 1e-3
    print(
        f"tokenbucket from {tokenbucket.__file__}\n"
        f"Python {platform.python_version()}; {args.decisions:,} decisions on {args.keys:,} keys, "
        f"{amount} tokens each, Rule(10, 0.001), max_keys={args.max_keys}, {args.clock} clock, "
        "GC on "
        f"({collections:,} collections); {wall:.1f} s in all, {len(registry.store):,} tracked "  # type: ignore[arg-type]
        "at the end\n"
    )
    print("| p50 | p99 | p99.9 | max | over 1 ms | over 10 ms |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {percentile(ordered, 0.5) * us:.1f} µs | {percentile(ordered, 0.99) * us:.1f} µs "
        f"| {percentile(ordered, 0.999) * us:.1f} µs | {ordered[-1] * us * 1e-3:.1f} ms "
        f"| {sum(1 for s in samples if s > 1_000_000)} "
        f"| {sum(1 for s in samples if s > 10_000_000)} |"
    )
    if args.json:
        row = {
            "clock": args.clock,
            "keys": args.keys,
            "decisions": args.decisions,
            "p50_us": percentile(ordered, 0.5) * us,
            "p99_us": percentile(ordered, 0.99) * us,
            "p99.9_us": percentile(ordered, 0.999) * us,
            "max_us": ordered[-1] * us,
            "over_1ms": sum(1 for s in samples if s > 1_000_000),
            "over_10ms": sum(1 for s in samples if s > 10_000_000),
        }
        with open(args.json, "w") as out:
            json.dump(row, out, indent=1)


if __name__ == "__main__":
    main()
