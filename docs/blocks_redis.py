"""Generated blocks, continued: Redis, several limits, waiting, floods, outbound calls."""

from __future__ import annotations

import statistics
from typing import Any, Dict, List

from blocks import (
    OURS,
    Data,
    Document,
    block,
    count,
    measured,
    span,
    table,
    x,
)

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
    from blocks import _added, _middleware_numbers

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


# -- several limits (benchmarks/several_limits.py) ---------------------------------------------


@block("several-limits-tables")
def _several_limits_tables(data: Data) -> str:
    several = data["benchmark-several-limits"]
    memory = several["memory_seconds"]
    rows = []
    for name, seconds in memory.items():
        base = memory[name.split(",")[0] + ", 1 limit"]
        rows.append([name, f"{seconds * 1e6:.2f}", x(seconds / base)])
    parts = [
        table(["in memory, hot key", "µs per call", "vs 1 limit"], "lrr", rows)
    ]
    rows = [
        [
            f"{n} limit{'s' if n != '1' else ''}",
            *(f"{row[q]:.2f} µs" for q in row),
        ]
        for n, row in several["latency_us"].items()
    ]
    parts.append(
        table(
            ["consume, each call timed", "p50", "p99", "p99.9", "max"],
            "lrrrr",
            rows,
        )
    )
    rows = [
        [f"{n} limit{'s' if n != '1' else ''}", f"{b:.0f} B"]
        for n, b in several["bytes_per_key_and_limit"].items()
    ]
    parts.append(
        table(["limits", "bytes per tracked key and limit"], "lr", rows)
    )
    remote = several["redis"]
    base = remote["1 limit"]
    rows = [
        [
            name,
            f"{row['seconds'] * 1e6:.1f}",
            x(row["seconds"] / base["seconds"]),
            f"{row['script_us']:.1f}",
            x(row["script_us"] / base["script_us"]),
            f"{row['commands_sent']:.1f}",
        ]
        for name, row in remote.items()
    ]
    header = [
        "Redis, hot key",
        "µs per decision",
        "vs 1",
        "script µs",
        "vs 1",
        "commands sent",
    ]
    parts.append(table(header, "lrrrrr", rows))
    two = memory["consume, 2 limits"] / memory["consume, 1 limit"]
    return (
        "\n\n".join(parts)
        + f"\n\nA `consume` over 2 limits cost {two:.1f} times one over 1 limit in memory.\n\n"
        + measured(several)
    )


@block("shadow-cost")
def _shadow_cost(data: Data) -> str:
    several = data["benchmark-several-limits"]
    memory = several["memory_seconds"]
    shadowed, enforced = (
        memory["consume, 2 limits, one in shadow"],
        memory["consume, 2 limits"],
    )
    return (
        f"In `benchmarks/several_limits.py`'s last run, a `consume` over 2 limits with one in "
        f"shadow took {shadowed * 1e6:.2f} µs against {enforced * 1e6:.2f} µs with both "
        f"enforced ({x(shadowed / enforced)}).\n\n" + measured(several)
    )


# -- waiting (benchmarks/waiters.py) ------------------------------------------------------------


@block("waiters-table")
def _waiters_table(data: Data) -> str:
    document = data["waiters"]
    rows = [
        [
            "memory" if row["store"] == "memory" else "Redis",
            f"{row['waiters']:,}",
            "retry (before)" if row["way"] == "retry" else "reservation",
            f"{row['sleeps_per_call']:.2f}",
            f"{row['store_calls_per_call']:.2f}",
            f"{row['cpu_seconds']:.2f} s",
            f"{row['order_kept']:.0%}",
            "-"
            if row["store"] == "memory"
            else f"{row['connections_opened']:,}",
        ]
        for row in document["rows"]
    ]
    header = [
        "store",
        "waiters",
        "way",
        "sleeps per call",
        "store calls per call",
        "CPU (client)",
        "order kept",
        "connections opened",
    ]
    return table(header, "lllrrrrr", rows) + "\n\n" + measured(document)


# -- floods (benchmarks/flood.py) ---------------------------------------------------------------


@block("flood-table")
def _flood_table(data: Data) -> str:
    documents = [data["flood-cpu"], data["flood-wall"]]
    rows = [
        [
            "CPU" if d["clock"] == "cpu" else "wall",
            f"{d['p50_us']:.1f} µs",
            f"{d['p99_us']:.1f} µs",
            f"{d['p99.9_us']:.0f} µs",
            f"{d['max_us'] / 1000:.1f} ms",
            count(d["over_1ms"]),
            count(d["over_10ms"]),
        ]
        for d in documents
    ]
    header = ["clock", "p50", "p99", "p99.9", "max", "over 1 ms", "over 10 ms"]
    first = documents[0]
    return (
        table(header, "lrrrrrr", rows)
        + f"\n\n{first['decisions']:,} decisions on {first['keys']:,} distinct keys.\n\n"
        + measured(*documents)
    )


# -- outbound calls (benchmarks/outbound.py) ---------------------------------------------------

OUTBOUND_CLIENTS = {
    "tokenbucket": ("tokenbucket `AsyncRateLimitedTransport`", "20/s (right)"),
    "tokenbucket-loose": (
        "tokenbucket `AsyncRateLimitedTransport`",
        "80/s (4x too high)",
    ),
    "tokenbucket-requests": (
        "tokenbucket `RateLimitedAdapter` (requests, 32 threads)",
        "80/s",
    ),
    "tokenbucket-redis": (
        "tokenbucket, 4 processes sharing a Redis budget",
        "80/s",
    ),
    "aiolimiter": ("aiolimiter `AsyncLimiter`", "20/s (right)"),
    "aiolimiter-loose": ("aiolimiter `AsyncLimiter`", "80/s"),
    "pyrate": ("pyrate-limiter `Limiter`", "20/s (right)"),
    "pyrate-loose": ("pyrate-limiter `Limiter`", "80/s"),
}


@block("outbound-table")
def _outbound_table(data: Data) -> str:
    document = data["outbound"]
    rows = []
    for run in document["results"]:
        client, told = OUTBOUND_CLIENTS[run["scenario"]]
        rows.append(
            [
                client,
                told,
                f"{run['seconds']:.2f} s",
                f"{run['ratio']:.3f}",
                count(run["caller_200"]),
                count(run["caller_429"]),
                count(run["wire_429"]),
            ]
        )
    header = [
        "client",
        "told",
        "time",
        "x ideal",
        "answered 200",
        "429s at the caller",
        "429s on the wire",
    ]
    return table(header, "llrrrrr", rows) + "\n\n" + measured(document)


# -- restoring overrides, applied-once markers, the demo's latency ---------------------------


@block("restore-overrides")
def _restore_overrides(data: Data) -> str:
    document = data["restore-overrides"]
    rounds = document["rounds"]
    imports = [r["import_seconds"] for r in rounds]
    exports = [r["export_seconds"] for r in rounds]
    present = min(r["present"] for r in rounds)
    return (
        f"{document['overrides']:,} overrides restored in {span(imports, 's', 2)} "
        f"({len(rounds)} round{'s' if len(rounds) > 1 else ''}), {present:,} of them "
        f"present afterwards in the worst "
        f"round (checked one by one with `HMGET`); exporting them again took "
        f"{span(exports, 's', 2)}.\n\n" + measured(document)
    )


@block("delivery-cost")
def _delivery_cost(data: Data) -> str:
    document = data["delivery-cost"]
    labels = {"admitted": "admitted (GET + SET)", "denied": "denied (GET)"}
    rows, sizes = [], []
    for case, variants in document["results"].items():
        before = variants["unmarked"]["server_us"]
        for variant, row in variants.items():
            server = f"{row['server_us']:.1f}"
            if variant == "marked":
                more = row["server_us"] - before
                server += f" ({more:+.1f}, {more / before:+.0%})"
                if row["bytes_per_marker"] > 0:
                    sizes.append(row["bytes_per_marker"])
            rows.append(
                [
                    labels.get(case, case),
                    "before (no marker)" if variant == "unmarked" else variant,
                    server,
                    f"{row['client_us']:.0f}",
                    f"{row['args_us']:.1f}",
                ]
            )
    header = [
        "case",
        "variant",
        "server µs per EVALSHA",
        "client µs per decision (round trip)",
        "client µs to build the call",
    ]
    marker = (
        f" A kept marker took {sizes[0]:.0f} bytes (`used_memory`)."
        if sizes
        else ""
    )
    return (
        table(header, "llrrr", rows)
        + f"\n\nMedians over {document['chunks']} chunks of {document['size']} decisions per "
        f"variant.{marker}\n\n" + measured(document)
    )


@block("demo-latency")
def _demo_latency(data: Data) -> str:
    document = data["demo-latency"]
    rows = [
        [
            str(row["workers"]),
            f"{row['p50_ms']:.2f} ms",
            f"{row['p99_ms']:.1f} ms",
            f"{row['max_ms']:.1f} ms",
        ]
        for row in document["rows"]
    ]
    return (
        table(["workers", "p50", "p99", "max"], "lrrr", rows)
        + f"\n\nOne keep-alive client, {document['requests']} requests to "
        f"`{document['path']}`.\n\n" + measured(document)
    )


@block("shared-rules")
def _shared_rules(data: Data) -> str:
    document = data["shared-rules"]
    lags = [lag * 1000 for lag in document["lags_seconds"]]
    costs = document["decision_ns"]
    plain, shared = costs["not sharing"], costs["sharing"]
    calls = ", ".join(
        f"`{c}` {plain[c]:.0f} → {shared[c]:.0f} ns" for c in plain
    )
    return (
        f"{document['workers']} worker processes, `interval={document['interval']:g}`: "
        f"the last worker decided under a new default {statistics.median(lags):.0f} ms after "
        f"the change (median of {len(lags)} trials), {max(lags):.0f} ms at most. Following "
        f"shared rules, in memory (best of 7): {calls}.\n\n"
        + measured(document)
    )
