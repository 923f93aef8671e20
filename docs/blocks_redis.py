"""Generated blocks: the Redis store, its round trips and pipelining."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List

from blocks import (
    Data,
    Document,
    block,
    measured,
    span,
    table,
    x,
)
from blocks_core import OURS

INCR = "INCR (floor)"
UNPIPELINED = "tokenbucket, pipeline=False"
POOL_TASKS = "async, pool (32 tasks)"
ONE_CONNECTION_TASKS = "async, 1 connection (32 tasks)"
#: The modes where each connection carries one call at a time: nothing to pipeline.
ONE = "async, 1 connection"
ONE_AT_A_TIME = [
    "sync, 1 connection",
    "sync, pool (8 threads)",
    "async, 1 connection",
]


def _medians(redis: Document) -> Dict[str, Dict[str, Any]]:
    """Decisions per second, median over rounds, per contender and mode (None: no such mode)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name, modes in redis["decisions_per_second"].items():
        out[name] = {}
        for mode, rates in modes.items():
            known = [r for r in rates if r is not None]
            out[name][mode] = statistics.median(known) if known else None
    return out


def _redis_ratios(redis: Document) -> List[float]:
    """Per mode, INCR's rate over tokenbucket's: how many INCRs one decision costs."""
    medians = _medians(redis)
    return [medians[INCR][m] / medians[OURS][m] for m in ONE_AT_A_TIME]


@block("readme-summary")
def _readme_summary(data: Data) -> str:
    from blocks_middleware import _added, _middleware_numbers

    n = _middleware_numbers(data)
    redis = data["benchmark-redis"]
    return (
        f"In the same runs the ASGI middleware added {_added(n, 'asgi')} per request to a "
        f"Starlette app, slowapi {x(n['slowapi (pure ASGI)'])} to "
        f"{x(n['slowapi (BaseHTTPMiddleware)'])} as much; a Redis decision is one round trip "
        f"and took {span(_redis_ratios(redis))} the time of a bare `INCR` where each "
        "connection carries one call at a time (per mode, and pipelined, in "
        "docs/benchmarks.md).\n\n"
        + measured(data["benchmark-middleware"], redis)
    )


@block("redis-round-trips")
def _redis_round_trips(data: Data) -> str:
    redis = data["benchmark-redis"]
    rows = []
    for name, kinds in redis["round_trips"].items():
        if name == UNPIPELINED:
            continue
        for kind, seen in kinds.items():
            rows.append(
                [
                    name,
                    kind,
                    ", ".join(
                        f"{c} {n:.2f}"
                        for c, n in sorted(seen["client"].items())
                    ),
                    ", ".join(
                        f"{c} {n:.2f}"
                        for c, n in sorted(seen["server"].items())
                    ),
                    f"{seen['server_us']:.1f}",
                ]
            )
    header = [
        "contender",
        "mode",
        "client commands (MONITOR)",
        "server commands (commandstats)",
        "server µs",
    ]
    return table(header, "llllr", rows) + "\n\n" + measured(redis)


@block("redis-rates")
def _redis_rates(data: Data) -> str:
    redis = data["benchmark-redis"]
    medians = _medians(redis)
    modes = redis["modes"]
    rows = []
    for name, by_mode in medians.items():
        cells = []
        for mode in modes:
            value = by_mode[mode]
            floor = medians[INCR][mode]
            cells.append(
                "n/a"
                if value is None
                else f"{value:,.0f} ({value / floor:.2f}x)"
            )
        rows.append([name, *cells])
    return (
        table(["contender", *modes], "l" + "r" * len(modes), rows)
        + f"\n\nDecisions per second, median of {redis['rounds']} rounds of {redis['seconds']} s"
        " each; in brackets, relative to INCR.\n\n" + measured(redis)
    )


@block("redis-versus")
def _redis_versus(data: Data) -> str:
    redis = data["benchmark-redis"]
    medians = _medians(redis)
    modes = redis["modes"]
    ours = medians[OURS]
    rows = []
    for name, by_mode in medians.items():
        if name == OURS:
            continue
        cells = [
            "n/a" if by_mode[m] is None else f"{ours[m] / by_mode[m]:.2f}x"
            for m in modes
        ]
        rows.append([name, *cells])
    return (
        table(
            ["tokenbucket's rate against", *modes], "l" + "r" * len(modes), rows
        )
        + "\n\n(> 1: tokenbucket made more decisions per second.)\n\n"
        + measured(redis)
    )


def _standing(ratio: float) -> str:
    if ratio >= 1.05:
        return "ahead"
    return "behind" if ratio <= 0.95 else "level"


@block("redis-summary")
def _redis_summary(data: Data) -> str:
    redis = data["benchmark-redis"]
    medians = _medians(redis)
    modes = [m for m in redis["modes"] if m != ONE_CONNECTION_TASKS]
    ours = medians[OURS]
    per_mode = ", ".join(
        f"*{m}* {medians[INCR][m] / ours[m]:.2f}x" for m in modes
    )
    script = {
        n: k["sync"]["server_us"] for n, k in redis["round_trips"].items()
    }
    scripts = [n for n in script if n not in (INCR, UNPIPELINED)]
    costliest = max(scripts, key=script.get)
    order = sorted(scripts, key=script.get, reverse=True)
    lines = [
        f"Every contender sends one command per decision (MONITOR tells a client's commands "
        f"from a script's). A tokenbucket decision took the time of this many bare `INCR` "
        f"round trips: {per_mode}. Inside the server its script ran "
        f"{script[OURS]:.1f} µs per decision against {script[INCR]:.1f} µs for INCR "
        f"(INFO commandstats, sync): scripts from the costliest: "
        + ", ".join(f"{n} {script[n]:.1f} µs" for n in order)
        + (
            "; tokenbucket's is the costliest."
            if costliest == OURS
            else f"; the costliest is {costliest}'s."
        ),
    ]
    for name in medians:
        if name in (INCR, OURS, UNPIPELINED):
            continue
        groups: Dict[str, List[str]] = {}
        for mode in modes:
            if medians[name][mode] is not None:
                groups.setdefault(
                    _standing(ours[mode] / medians[name][mode]), []
                ).append(mode)
        standing = "; ".join(
            f"{s} in " + ", ".join(f"*{m}*" for m in ms)
            for s, ms in groups.items()
        )
        lines.append(
            f"Against {name}, tokenbucket is {standing} (5% either way is level)."
        )
    return " ".join(lines) + "\n\n" + measured(redis)


@block("pipelining-summary")
def _pipelining_summary(data: Data) -> str:
    redis = data["benchmark-redis"]
    medians = _medians(redis)
    ours, alone, floor = medians[OURS], medians[UNPIPELINED], medians[INCR]
    one = ONE_CONNECTION_TASKS
    return (
        f"With 32 tasks on one connection tokenbucket made {ours[one]:,.0f} decisions per "
        f"second, against {alone[one]:,.0f} with `pipeline=False` ({x(ours[one] / alone[one])}) "
        f"and {floor[one]:,.0f} bare `INCR`s ({x(ours[one] / floor[one])}); with 32 tasks on a "
        f"pool of connections {ours[POOL_TASKS]:,.0f} against {alone[POOL_TASKS]:,.0f} "
        f"({x(ours[POOL_TASKS] / alone[POOL_TASKS])}). One task at a time: "
        f"{ours[ONE]:,.0f} against {alone[ONE]:,.0f}: with nothing in flight a call goes "
        f"alone, so the two do the same work, and their difference "
        f"({abs(ours[ONE] / alone[ONE] - 1):.0%}) is the noise of this machine.\n\n"
        + measured(redis)
    )
