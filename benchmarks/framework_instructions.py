"""Instructions per request of each framework integration and of the generic middleware on the
same app, counted by valgrind's callgrind: repeatable on a loaded machine, where wall-clock
timings (benchmarks/middleware.py) drift.

The script re-runs itself under callgrind. Inside, it builds the variants of
benchmarks/framework_variants.py, warms each up, then runs each for ``--requests`` requests
between two calls of ``os.getppid`` (callgrind dumps its counters on entering that function),
so each dump holds exactly one variant's batch.

    python benchmarks/framework_instructions.py [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Callable, Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from framework_variants import django_variants, fastapi_variants, flask_variants  # noqa: E402
from middleware import asgi_batch, flask_app, wsgi_batch  # noqa: E402


def groups() -> List[Tuple[str, Dict[str, Any], Callable[[Any, int], Any]]]:
    loop = asyncio.new_event_loop()

    def run_asgi(app: Any, n: int) -> Any:
        return loop.run_until_complete(asgi_batch(app, n))

    return [
        ("FastAPI", fastapi_variants(), run_asgi),
        ("Flask", flask_variants(flask_app), wsgi_batch),
        ("Django", django_variants(), wsgi_batch),
    ]


def inside(requests: int) -> None:
    """Under callgrind: one dump per variant's batch, in the order printed to stdout."""
    order = []
    built = groups()
    for title, variants, run in built:
        for name, app in variants.items():
            run(app, 200)  # warm up: stacks built, caches filled
            order.append(f"{title}\t{name}")
    for _, variants, run in built:
        for app in variants.values():
            run(app, 50)
            os.getppid()  # dump: what came before
            run(app, requests)
            os.getppid()  # dump: this batch
    print("\n".join(order))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--json", help="also write the counts here")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args.requests)
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
            f"--requests={args.requests}",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        names = [line for line in done.stdout.splitlines() if "\t" in line]
        dumps = sorted(glob.glob(f"{out}/cg.out.*"), key=lambda p: int(p.rsplit(".", 1)[1]))
        counts = []
        for path in dumps:
            with open(path) as file:
                match = re.search(r"^summary: (\d+)", file.read(), re.M)
            counts.append(int(match.group(1)) if match else 0)
    # Dumps: the first ends at the first marker (startup, warm-up, the first prelude), then
    # each batch, then the next prelude.
    batches = counts[1::2]
    per_request = {names[i]: batches[i] / args.requests for i in range(len(names))}
    print(f"Instructions per request (callgrind, {args.requests} requests per variant)\n")
    print("| framework | variant | instructions / request | vs the generic middleware |")
    print("| --- | --- | ---: | ---: |")
    for key, count in per_request.items():
        title, name = key.split("\t")
        generic = per_request[f"{title}\ttokenbucket"]
        delta = (
            "-" if name == "tokenbucket" or name.startswith("bare") else f"{count - generic:+,.0f}"
        )
        print(f"| {title} | {name} | {count:,.0f} | {delta} |")
    if args.json:
        nested: Dict[str, Dict[str, float]] = {}
        for key, count in per_request.items():
            title, name = key.split("\t")
            nested.setdefault(title, {})[name] = count
        with open(args.json, "w") as file:
            json.dump({"requests": args.requests, "instructions": nested}, file, indent=1)


if __name__ == "__main__":
    main()
