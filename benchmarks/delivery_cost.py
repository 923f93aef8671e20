"""What applying each call once costs: server and client time per decision, with and without
markers.

Every call that changes a bucket carries its marker (``tokenbucket._stores.redis.once``): the script
looks it up (GET) and, when the call changed something, keeps its reply there for 60 s (SET
PX). This compares, in one process against one redis-server, the store as it is ("marked")
with the same store sending each decision the way it did before markers existed ("unmarked":
one key, the bare operation; the script skips the marker then, so its arithmetic is the same).
Two cases: every take admitted (GET and SET), every take denied (GET only). The variants
alternate in short chunks (a loaded machine drifts); the table gives, per variant, the median
over chunks of the server's time per EVALSHA (``INFO commandstats``, ``usec``/``calls``, inner
commands included) and of the client's time per decision (a sync store on one connection,
round trip included), the client's CPU time to build a decision's arguments (``args µs``, no
I/O, best of 5), and the memory each kept marker takes (``used_memory``).

Run (it starts its own redis-server on a free port)::

    .venv/bin/python benchmarks/delivery_cost.py [--chunks 40] [--size 250]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
import timeit
from typing import Any, Dict, List, Optional, Tuple

import redis
from redis_bench import start_server

from tokenbucket import Rule
from tokenbucket._stores.redis.failure import _TAKE
from tokenbucket._stores.redis.logic import _SHA, Logic, _encode
from tokenbucket.redis import RedisStore

CASES = {"admitted": Rule(10**12, 10**6), "denied": Rule(1, 0)}
VARIANTS = ("unmarked", "marked")


class Unmarked(Logic):
    """Decisions sent as before markers: one key and the bare operation (no marker)."""

    __slots__ = ()

    def _take_args(
        self, key: str, amount: float, default: Rule, op: bytes, call: Optional[bytes]
    ) -> Tuple[bytes, ...]:
        encoded = self._encoded  # as the store built them before markers
        if encoded[0] is not default:
            encoded = (default, _encode(default.capacity), _encode(default.refill_rate))
            self._encoded = encoded
        args = (
            self._name(key),
            op,
            encoded[1],
            encoded[2],
            b"1" if amount == 1 else _encode(amount),
        )
        return (_SHA, b"1", *args)


def evalsha_stats(admin: Any) -> Tuple[int, int]:
    stats = admin.info("commandstats")["cmdstat_evalsha"]
    return stats["calls"], stats["usec"]


def measure(url: str, case: str, chunks: int, size: int) -> Dict[str, Dict[str, float]]:
    """Alternate the variants chunk by chunk (so load drifts hit both alike); per variant, the
    median over chunks of the server's µs per EVALSHA and the client's µs per decision."""
    rule = CASES[case]
    keys = [f"203.0.113.{i % 256}-{i}" for i in range(1000)]
    admin = redis.Redis.from_url(url)
    stores = {}
    for variant in VARIANTS:
        store = RedisStore(redis.Redis.from_url(url))
        if variant == "unmarked":
            store._logic = Unmarked("tokenbucket:", "fallback", 1.0)
        stores[variant] = store
    for key in keys:  # the script loaded; each key drained when the case is denials
        stores["marked"].take(key, 1, rule)
    samples: Dict[str, Dict[str, List[float]]] = {v: {"server": [], "client": []} for v in VARIANTS}
    memory, kept = admin.info("memory")["used_memory"], 0
    for chunk in range(chunks):
        order = VARIANTS if chunk % 2 else VARIANTS[::-1]
        for variant in order:
            store = stores[variant]
            calls, usec = evalsha_stats(admin)
            start = time.perf_counter()
            for i in range(size):
                store.take(keys[(chunk * size + i) % len(keys)], 1, rule)
            elapsed = time.perf_counter() - start
            calls_after, usec_after = evalsha_stats(admin)
            samples[variant]["server"].append((usec_after - usec) / (calls_after - calls))
            samples[variant]["client"].append(elapsed / size * 1e6)
    kept = admin.dbsize()
    grown = admin.info("memory")["used_memory"] - memory
    args = {}
    for variant, store in stores.items():
        logic = store._logic
        timer = timeit.Timer(lambda logic=logic: logic._take_args("k", 1, rule, _TAKE, None))
        args[variant] = min(timer.repeat(5, 20000)) / 20000 * 1e6
        store.close()
    admin.flushall()
    admin.close()
    markers = kept - len(keys) if case == "admitted" else 0
    return {
        variant: {
            "server_us": statistics.median(samples[variant]["server"]),
            "client_us": statistics.median(samples[variant]["client"]),
            "args_us": args[variant],
            "bytes_per_marker": grown / markers if variant == "marked" and markers > 0 else 0.0,
        }
        for variant in VARIANTS
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--size", type=int, default=250)
    options = parser.parse_args()
    process, port, workdir = start_server()
    url = f"redis://127.0.0.1:{port}/0"
    try:
        results = {case: measure(url, case, options.chunks, options.size) for case in CASES}
    finally:
        process.terminate()
        process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{options.chunks} chunks of {options.size} sync decisions per variant, alternating")
    print("| case | variant | server µs/EVALSHA | client µs/decision | args µs | bytes/marker |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for case, rows in results.items():
        for variant, row in rows.items():
            print(
                f"| {case} | {variant} | {row['server_us']:.2f} | {row['client_us']:.1f} | "
                f"{row['args_us']:.2f} | {row['bytes_per_marker']:.0f} |"
            )


if __name__ == "__main__":
    main()
