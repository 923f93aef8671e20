"""Instructions per call on the hot paths, counted by valgrind's callgrind (repeatable on a
loaded machine): ``try_consume`` and ``consume`` on a hot key of an in-memory registry of one
Rule and of 2 and 3 named limits, the first touch of a key (a new key per call) with 1 and 2
limits, and a request through each middleware around the smallest app. Then (outside
callgrind, with tracemalloc) the bytes a tracked key costs with 1 and 2 limits.

The script re-runs itself under callgrind; each case runs ``--calls`` times between two calls
of ``os.getppid`` (callgrind dumps its counters on entering that function), after a warm-up,
and the empty batch's count (the loop alone) is subtracted. Every batch, the empty one too,
runs with the cyclic garbage collector off, after a full collection: otherwise a collection
that happens to land inside a batch (the first-touch cases allocate a state per call) would
add thousands of instructions per call to one run and not to the next. So the counts leave out
the collector's amortised cost, the same for every library.

With ``--peers`` (the ``bench`` dependency group installed) it also counts each peer's
decision on a hot key (the contenders of benchmarks/core.py) and a request through each
middleware of benchmarks/middleware.py, with the bare app's count beside them: ratios of these
counts hold from run to run, where timings on a shared machine drift. Requests through a
framework run a tenth of ``--calls``.

    python benchmarks/hot_instructions.py [--calls 2000] [--peers] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import tracemalloc
from typing import Any, Callable, Dict, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from middleware import (  # noqa: E402
    CLIENT,
    asgi_batch,
    minimal_asgi_app,
    minimal_wsgi_app,
    wsgi_batch,
)

from tokenbucket import BucketRegistry, Rule  # noqa: E402

IPV6_CLIENT = "2001:db8:0:1ff::7"


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


def cases(peers: bool) -> Dict[str, Tuple[Callable[[int], Any], int]]:
    """Each case's batch function and its share of ``--calls`` (1, or 10 for a tenth)."""
    from tokenbucket.asgi import RateLimitMiddleware as ASGIMiddleware
    from tokenbucket.proxies import TrustedProxyKey
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

    def limited() -> BucketRegistry:
        return BucketRegistry(Rule(1e12, 1e12))

    one = RateLimitMiddleware(minimal_wsgi_app, registry=limited())
    several = RateLimitMiddleware(
        minimal_wsgi_app,
        registry=BucketRegistry({"burst": Rule(1e12, 1e12), "daily": Rule(1e12, 1e9)}),
    )
    proxied = RateLimitMiddleware(
        minimal_wsgi_app, registry=limited(), key=TrustedProxyKey(["10.0.0.0/8"])
    )
    loop = asyncio.new_event_loop()
    asgi_one = ASGIMiddleware(minimal_asgi_app, registry=limited())
    asgi_settled = ASGIMiddleware(
        minimal_asgi_app,
        registry=BucketRegistry({"burst": Rule(1e12, 1e12), "daily": Rule(1e12, 1e9)}),
        settle=lambda request, status, headers: 2,
    )

    def asgi(app: Any) -> Callable[[int], Any]:
        return lambda n: loop.run_until_complete(asgi_batch(app, n))

    built: Dict[str, Tuple[Callable[[int], Any], int]] = {
        "nothing (the loop)": (lambda n: None, 1),
        "try_consume, one Rule, hot key": (try_consume, 1),
        "consume, one Rule, hot key": (consume, 1),
        "try_consume, 2 limits, hot key": (hot_of(named[0], "try_consume"), 1),
        "try_consume, 3 limits, hot key": (hot_of(named[1], "try_consume"), 1),
        "consume, 2 limits, hot key": (hot_of(named[0], "consume"), 1),
        "try_consume, one Rule, first touch": (first(1), 1),
        "try_consume, 2 limits, first touch": (first(2), 1),
        "WSGI request, one limit": (lambda n: wsgi_batch(one, n), 1),
        "WSGI request, two limits": (lambda n: wsgi_batch(several, n), 1),
        "ASGI request, one limit": (asgi(asgi_one), 1),
        "ASGI request, two limits, cost settled": (asgi(asgi_settled), 1),
        "WSGI request, one limit, IPv6 client": (
            lambda n: wsgi_batch(one, n, remote=IPV6_CLIENT),
            1,
        ),
        "WSGI request, TrustedProxyKey, IPv4 client": (
            lambda n: wsgi_batch(proxied, n, remote="10.0.0.2", forwarded=CLIENT),
            1,
        ),
        "WSGI request, TrustedProxyKey, IPv6 client": (
            lambda n: wsgi_batch(proxied, n, remote="10.0.0.2", forwarded=IPV6_CLIENT),
            1,
        ),
    }
    if not peers:
        return built
    from core import CONTENDERS, HUGE
    from middleware import asgi_variants, wsgi_variants

    for name, factory in CONTENDERS.items():
        if name.startswith("tokenbucket"):
            continue
        decide = factory(HUGE, 1.0)

        def hot_key(n: int, decide: Callable[[str], bool] = decide) -> None:
            for _ in range(n):
                decide("hot")

        built[f"decision, hot key: {name}"] = (hot_key, 1)
    for name, app in asgi_variants().items():
        built[f"ASGI request: {name}"] = (asgi(app), 10)
    for name, app in wsgi_variants().items():
        built[f"WSGI request: {name}"] = (lambda n, app=app: wsgi_batch(app, n), 10)
    return built


def inside(calls: int, peers: bool) -> None:
    """Under callgrind: one dump per case's batch, in the order printed to stdout."""
    built = cases(peers)
    for run, share in built.values():
        run(max(20, 200 // share))  # warm up: caches filled
    for run, share in built.values():
        gc.collect()  # no garbage of a case left for the next one's batch to collect
        gc.disable()  # and no collection inside a batch (see the docstring)
        os.getppid()  # dump: what came before
        run(calls // share)
        os.getppid()  # dump: this batch
        gc.enable()
    print("\n".join(f"{name}\t{share}" for name, (_, share) in built.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--peers", action="store_true", help="count the peers too")
    parser.add_argument("--json", help="also write the counts here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.calls, args.peers)
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
            *(["--peers"] if args.peers else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        listed = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        counts = []
        for path in dumps:
            with open(path) as file:
                match = re.search(r"^summary: (\d+)", file.read(), re.M)
            counts.append(int(match.group(1)) if match else 0)
    # Dumps: startup and warm-up, then per case its batch and the gap after it.
    batches = counts[1::2][: len(listed)]
    empty = batches[0]  # a batch doing nothing: the markers' own cost
    per_call: Dict[str, float] = {}
    for (name, share), count in zip(listed[1:], batches[1:]):
        per_call[name] = (count - empty) / (args.calls // int(share))
    print(f"Instructions per call (callgrind, {args.calls} calls per case, loop subtracted)\n")
    print("| case | instructions / call |")
    print("| --- | ---: |")
    for name, count in per_call.items():
        print(f"| {name} | {count:,.0f} |")
    sizes = {f"{limits} limit{'s' * (limits > 1)}": bytes_per_key(limits) for limits in (1, 2)}
    print("\n| bytes per tracked key (tracemalloc) | bytes |")
    print("| --- | ---: |")
    for name, size in sizes.items():
        print(f"| {name} | {size:,.0f} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(
                {"calls": args.calls, "instructions": per_call, "bytes_per_key": sizes},
                file,
                indent=1,
            )


if __name__ == "__main__":
    main()
