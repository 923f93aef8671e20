"""Generated blocks: several limits, waiting, floods, and the smaller benchmarks.

Outbound calls, restoring overrides, applied-once markers, the demo's latency, shared rules.
"""

from __future__ import annotations

import statistics

from blocks import (
    Data,
    block,
    count,
    measured,
    span,
    table,
    x,
)

# -- several limits (benchmarks/several_limits.py) ---------------------------------------------


@block("several-limits-instructions")
def _several_limits_instructions(data: Data) -> str:
    hot = data["instructions-hot"]
    counts = hot["instructions"]
    cases = {  # label: the one-Rule case, the several-limit cases' name pattern
        "try_consume, hot key": (
            "try_consume, one Rule, hot key",
            "try_consume, {} limits, hot key",
        ),
        "consume, hot key": (
            "consume, one Rule, hot key",
            "consume, {} limits, hot key",
        ),
        "try_consume, a new key each call": (
            "try_consume, one Rule, first touch",
            "try_consume, {} limits, first touch",
        ),
    }
    rows = []
    for label, (one, several) in cases.items():
        rows.append([f"{label}, 1 limit", count(counts[one]), "1.0x"])
        for limits in (2, 3):
            n = counts.get(several.format(limits))
            if n is not None:
                rows.append(
                    [f"{label}, {limits} limits", count(n), x(n / counts[one])]
                )
    parts = [
        table(["in memory", "instructions / call", "vs 1 limit"], "lrr", rows)
    ]
    rows = [
        [name, f"{size:.0f} B"]
        for name, size in hot.get("bytes_per_key", {}).items()
    ]
    if rows:
        parts.append(
            table(["a tracked key holding", "bytes (tracemalloc)"], "lr", rows)
        )
    return "\n\n".join(parts) + "\n\n" + measured(hot)


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
