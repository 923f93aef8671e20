"""Instructions per call on the hot paths, counted by valgrind's callgrind (repeatable on a
loaded machine): ``try_consume`` and ``consume`` on a hot key of an in-memory registry of one
Rule and of 2 and 3 named limits, the first touch of a key (a new key per call) with 1 and 2
limits, and a request through each middleware around the smallest app: with one limit, with
several, and (ASGI) with several limits and a cost settled from the response. Then (outside
callgrind, with tracemalloc) the bytes a tracked key costs with 1 and 2 limits.

The script re-runs itself under callgrind; each case runs ``--calls`` times between two calls
of ``os.getppid`` (callgrind dumps its counters on entering that function), after a warm-up,
and the empty batch's count (the loop alone) is subtracted.

    python benchmarks/hot_instructions.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from middleware import asgi_batch, minimal_asgi_app, minimal_wsgi_app, wsgi_batch  # noqa: E402

from tokenbucket import BucketRegistry, Rule  # noqa: E402


def registry(limits: int, rate: float) -> BucketRegistry:
    """A registry of ``limits`` limits (1: a plain Rule) that never refuses a hot key."""
    rules = [Rule(1e12, rate), Rule(1e12, rate / 2), Rule(1e12, rate / 3)]
    if limits == 1:
        return BucketRegistry(rules[0])
    return BucketRegistry(dict(zip(["burst", "hourly", "daily"], rules[:limits])))


def bytes_per_key(limits: int, keys: int = 20_000) -> float:
    """tracemalloc's growth per new key (key strings made beforehand) with ``limits`` limits."""
    made = registry(limits, 1e-9)
    names = [f"client-{index}" for index in range(keys)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for name in names:
        made.try_consume(name)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / keys


def cases() -> Dict[str, Callable[[int], Any]]:
    from tokenbucket.asgi import RateLimitMiddleware as ASGIMiddleware
    from tokenbucket.wsgi import RateLimitMiddleware

    hot = BucketRegistry(Rule(1e12, 1e12))  # never refuses, so every call takes the same path

    def try_consume(n: int) -> None:
        for _ in range(n):
            hot.try_consume("hot")

    def consume(n: int) -> None:
        for _ in range(n):
            hot.consume("hot")

    named = [registry(limits, 1e12) for limits in (2, 3)]

    def hot_of(made: BucketRegistry, call: str) -> Callable[[int], None]:
        method = getattr(made, call)

        def run(n: int) -> None:
            for _ in range(n):
                method("hot")

        return run

    # First touch: a new key per call (made beforehand), under rates too slow to refill.
    fresh = [f"client-{index}" for index in range(200_000)]
    firsts = {limits: (registry(limits, 1e-9), iter(fresh)) for limits in (1, 2)}

    def first(limits: int) -> Callable[[int], None]:
        made, keys = firsts[limits]

        def run(n: int) -> None:
            take = made.try_consume
            for _ in range(n):
                take(next(keys))

        return run

    one = RateLimitMiddleware(minimal_wsgi_app, registry=BucketRegistry(Rule(1e12, 1e12)))
    several = RateLimitMiddleware(
        minimal_wsgi_app,
        registry=BucketRegistry({"burst": Rule(1e12, 1e12), "daily": Rule(1e12, 1e9)}),
    )
    loop = asyncio.new_event_loop()
    asgi_one = ASGIMiddleware(minimal_asgi_app, registry=BucketRegistry(Rule(1e12, 1e12)))
    asgi_settled = ASGIMiddleware(
        minimal_asgi_app,
        registry=BucketRegistry({"burst": Rule(1e12, 1e12), "daily": Rule(1e12, 1e9)}),
        settle=lambda request, status, headers: 2,
    )

    def asgi(app: Any) -> Callable[[int], Any]:
        return lambda n: loop.run_until_complete(asgi_batch(app, n))

    return {
        "nothing (the loop)": lambda n: None,
        "try_consume, one Rule, hot key": try_consume,
        "consume, one Rule, hot key": consume,
        "try_consume, 2 limits, hot key": hot_of(named[0], "try_consume"),
        "try_consume, 3 limits, hot key": hot_of(named[1], "try_consume"),
        "consume, 2 limits, hot key": hot_of(named[0], "consume"),
        "try_consume, one Rule, first touch": first(1),
        "try_consume, 2 limits, first touch": first(2),
        "WSGI request, one limit": lambda n: wsgi_batch(one, n),
        "WSGI request, two limits": lambda n: wsgi_batch(several, n),
        "ASGI request, one limit": asgi(asgi_one),
        "ASGI request, two limits, settled": asgi(asgi_settled),
    }


def inside(calls: int, only: str) -> None:
    """Under callgrind: one dump per case's batch, in the order printed to stdout."""
    built = {
        name: run for index, (name, run) in enumerate(cases().items()) if index == 0 or only in name
    }
    for run in built.values():
        run(200)  # warm up: caches filled
    for run in built.values():
        os.getppid()  # dump: what came before
        run(calls)
        os.getppid()  # dump: this batch
    print("\n".join(built))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.calls, args.only)
        return
    with tempfile.TemporaryDirectory() as out:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--dump-before=os_getppid",
            f"--callgrind-out-file={out}/cg.out",
            sys.executable,
            os.path.abspath(__file__),
            "--inside",
            f"--calls={args.calls}",
            f"--only={args.only}",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        names: List[str] = [line for line in done.stdout.splitlines() if line]
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        counts = []
        for path in dumps:
            with open(path) as file:
                match = re.search(r"^summary: (\d+)", file.read(), re.M)
            counts.append(int(match.group(1)) if match else 0)
    # Dumps: startup and warm-up, then per case its batch and the gap after it.
    batches = counts[1::2][: len(names)]
    empty = batches[0]
    print(f"Instructions per call (callgrind, {args.calls} calls per case, loop subtracted)\n")
    print("| case | instructions / call |")
    print("| --- | ---: |")
    for name, count in zip(names[1:], batches[1:]):
        print(f"| {name} | {(count - empty) / args.calls:,.0f} |")
    if args.only:
        return
    print("\n| bytes per tracked key (tracemalloc) | bytes |")
    print("| --- | ---: |")
    for limits in (1, 2):
        print(f"| {limits} limit{'s' * (limits > 1)} | {bytes_per_key(limits):,.0f} |")


if __name__ == "__main__":
    main()
