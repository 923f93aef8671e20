"""Instructions per call on the hot paths, counted by valgrind's callgrind (repeatable on a
loaded machine): ``try_consume`` and ``consume`` on a hot key of a one-Rule in-memory registry,
and a request through each middleware around the smallest app: with one limit, with several,
and (ASGI) with several limits and a cost settled from the response.

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
from typing import Any, Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from middleware import asgi_batch, minimal_asgi_app, minimal_wsgi_app, wsgi_batch  # noqa: E402

from tokenbucket import BucketRegistry, Rule  # noqa: E402


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
        "WSGI request, one limit": lambda n: wsgi_batch(one, n),
        "WSGI request, two limits": lambda n: wsgi_batch(several, n),
        "ASGI request, one limit": asgi(asgi_one),
        "ASGI request, two limits, settled": asgi(asgi_settled),
    }


def inside(calls: int) -> None:
    """Under callgrind: one dump per case's batch, in the order printed to stdout."""
    built = cases()
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
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.calls)
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


if __name__ == "__main__":
    main()
