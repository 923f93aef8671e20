"""Latency of the demo gateway over loopback, one worker against N, with keep-alive clients.

Starts ``python -m tokenbucket.demo`` as a subprocess for each worker count (a limit high
enough that nothing is refused), then ``--clients`` threads each send ``--requests`` sequential
requests on one kept-alive connection (httpx) to ``--path``. It prints p50, p99, p99.9 and max
per worker count. Before the fix in ``tokenbucket.demo.NoDelayHTTPProtocol``, N workers stalled
every keep-alive response some 40 ms (Nagle's algorithm meeting delayed ACKs); one worker did
not.

    pip install -e '.[demo]'
    python benchmarks/demo_latency.py [--workers 1 4] [--clients 1] [--requests 500]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import List

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def measure(workers: int, clients: int, requests: int, path: str) -> List[float]:
    port = free_port()
    command = [
        sys.executable, "-m", "tokenbucket.demo", "--port", str(port), "--workers", str(workers),
        "--capacity", "1000000000", "--refill-rate", "1000000000",
    ]  # fmt: skip
    env = {**os.environ, "TOKENBUCKET_ADMIN_TOKEN": ""}
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"demo did not start: {server.stderr.read()!r}") from None
                time.sleep(0.1)
        time.sleep(0.5 * workers)  # let every worker finish starting
        samples: List[float] = []
        lock = threading.Lock()

        def client() -> None:
            mine = []
            with httpx.Client(base_url=base, timeout=10) as http:
                http.get(path)  # open the connection: only kept-alive requests are timed
                for _ in range(requests):
                    start = time.perf_counter()
                    http.get(path)
                    mine.append(time.perf_counter() - start)
            with lock:
                samples.extend(mine)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(samples)
    finally:
        server.terminate()
        server.wait(timeout=10)


def quantile(samples: List[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--clients", type=int, default=1, help="concurrent keep-alive clients")
    parser.add_argument("--requests", type=int, default=500, help="requests per client")
    parser.add_argument("--path", default="/")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print(f"{args.clients} keep-alive client(s) x {args.requests} requests to {args.path}")
    print(f"{'workers':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'max ms':>8}")
    for workers in args.workers:
        samples = measure(workers, args.clients, args.requests, args.path)
        row = [quantile(samples, q) * 1000 for q in (0.5, 0.99, 0.999)] + [samples[-1] * 1000]
        print(f"{workers:>8} {row[0]:>8.2f} {row[1]:>8.2f} {row[2]:>9.2f} {row[3]:>8.2f}")
        rows.append({"workers": workers, "p50_ms": row[0], "p99_ms": row[1], "max_ms": row[3]})
    if args.json:
        document = {"clients": args.clients, "requests": args.requests, "path": args.path}
        with open(args.json, "w") as out:
            json.dump({**document, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
