"""Generated blocks: one in-memory decision and the instruction counts."""

from __future__ import annotations

from typing import List

from blocks import (
    Data,
    Document,
    block,
    count,
    faster,
    measured,
    span,
    table,
    x,
)

# -- one in-memory decision (benchmarks/core.py, hot_instructions.py) --------------------------

FALCONRY = "token-bucket (falconry)"
OURS = "tokenbucket"
README_PEERS = [
    "limits fixed window",
    "pyrate-limiter token bucket",
    "throttled-py token bucket",
    FALCONRY,
]
BUSY = ["hot key, allowed", "hot key, denied", "100,000 cycling keys"]
REFILLED = "100,000 cycling keys, refilled"


def _peers(core: Document) -> List[str]:
    """The thread-safe peers of the core benchmark (not tokenbucket, not falconry)."""
    names = list(core["microseconds"][BUSY[0]])
    return [n for n in names if not n.startswith(OURS) and n != FALCONRY]


def _admitted(core: Document, name: str) -> str:
    """The trials' counts, ``1,000`` or ``1,000-2,457``, and what the calls raised."""
    runs = core["threaded_admitted"][name]
    low, high = min(runs), max(runs)
    text = f"{low:,}" if low == high else f"{low:,}-{high:,}"
    errors = core.get("threaded_errors", {}).get(name)
    if errors:
        text += (
            " ("
            + ", ".join(f"{e} x {n}" for e, n in errors.items())
            + " raised)"
        )
    return text


@block("core-table")
def _core_table(data: Data) -> str:
    core = data["benchmark-core"]
    times = core["microseconds"]
    names = list(times[BUSY[0]])
    rows = []
    for name in names:
        cells = [f"{times[s][name]:.2f} µs" for s in times]
        cells.append(f"{core['bytes_per_key'][name]:.0f} B")
        cells.append(_admitted(core, name))
        rows.append([name, *cells])
    header = [
        "library",
        *times,
        "bytes / key",
        "8 threads, bucket of 1,000: admitted",
    ]
    return (
        table(header, ["l"] + ["r"] * (len(header) - 1), rows)
        + "\n\n"
        + measured(core)
    )


@block("readme-core")
def _readme_core(data: Data) -> str:
    core = data["benchmark-core"]
    times = core["microseconds"]
    names = [OURS, *README_PEERS]
    rows = [
        [scenario, *(f"{times[scenario][n]:.2f} µs" for n in names)]
        for scenario in BUSY
    ]
    rows.append(
        [
            "bytes per tracked key",
            *(f"{core['bytes_per_key'][n]:.0f} B" for n in names),
        ]
    )
    rows.append(
        [
            "8 threads, bucket of 1,000: admitted",
            *(_admitted(core, n) for n in names),
        ]
    )
    header = ["one in-memory decision", *names]
    return (
        table(header, ["l"] + ["r"] * len(names), rows)
        + "\n\n"
        + measured(core)
    )


@block("core-summary")
def _core_summary(data: Data) -> str:
    core, hot = data["benchmark-core"], data["instructions-hot"]
    times, counts = core["microseconds"], hot["instructions"]
    peers = _peers(core)
    busy = [times[s][p] / times[s][OURS] for s in BUSY for p in peers]
    refilled = [times[REFILLED][p] / times[REFILLED][OURS] for p in peers]
    ours_count = counts["try_consume, one Rule, hot key"]
    fewer = [counts[f"decision, hot key: {p}"] / ours_count for p in peers]
    falconry = ", ".join(
        f"{faster(times[s][OURS], times[s][FALCONRY])} on the {s} row"
        for s in [*BUSY, REFILLED]
    )
    sizes = core["bytes_per_key"]
    smaller = sorted(
        (n for n in sizes if not n.startswith(OURS)), key=sizes.get
    )
    memory = (
        "the least of all"
        if sizes[OURS] <= sizes[smaller[0]]
        else f"{smaller[0]} takes {sizes[smaller[0]]:.0f} B"
    )
    bullets = [
        f"tokenbucket's `try_consume` is {span(busy)} faster than each thread-safe peer on the "
        f"hot-key and busy-client rows, {span(refilled)} on the refilled row; in instructions "
        f"on a hot key (callgrind, table below) the peers execute {span(fewer)} as many.",
        f"Against `token-bucket` (falconry), which takes no lock at all, tokenbucket is "
        f"{falconry}; falconry executes {count(counts['decision, hot key: ' + FALCONRY])} "
        f"instructions per hot-key decision, tokenbucket {count(ours_count)}. "
        "Under 8 threads falconry admitted "
        f"{_admitted(core, FALCONRY)} requests from a bucket of 1,000 "
        f"({len(core['threaded_admitted'][FALCONRY])} trials).",
        f"Memory: {sizes[OURS]:.0f} bytes per tracked key for tokenbucket, {memory} (the key "
        "strings themselves, which every library stores, are not counted).",
    ]
    return "\n".join(f"* {b}" for b in bullets) + "\n\n" + measured(core, hot)


@block("comparison-threads")
def _comparison_threads(data: Data) -> str:
    core = data["benchmark-core"]
    rows = []
    for name, runs in core["threaded_admitted"].items():
        verdicts = {
            "exact"
            if n == 1000
            else ("over-admits" if n > 1000 else "under-admits")
            for n in runs
        }
        rows.append(
            [
                name,
                ", ".join(f"{n:,}" for n in runs),
                " and ".join(sorted(verdicts)),
                ", ".join(
                    f"{e} x {n}"
                    for e, n in core.get("threaded_errors", {})
                    .get(name, {})
                    .items()
                )
                or "none",
            ]
        )
    header = [
        "library",
        "admitted of 1,000, each trial",
        "verdict",
        "exceptions",
    ]
    return table(header, "lrll", rows) + "\n\n" + measured(core)


@block("lifecycle-costs")
def _lifecycle_costs(data: Data) -> str:
    core = data["benchmark-core"]
    life = core["lifecycle_microseconds"]
    rows = [
        [s, *(f"{cells[op]:.2f} µs" for op in ("consume", "charge", "refund"))]
        for s, cells in life.items()
    ]
    ratios = "; ".join(
        f"{s}: a charge {cells['charge'] / cells['consume']:.2f}x a consume, "
        f"a refund {cells['refund'] / cells['consume']:.2f}x"
        for s, cells in life.items()
    )
    return (
        table(["scenario", "consume", "charge", "refund"], "lrrr", rows)
        + f"\n\n{ratios}.\n\n"
        + measured(core)
    )


@block("hot-instructions")
def _hot_instructions(data: Data) -> str:
    hot = data["instructions-hot"]
    rows = [
        [name.replace("TrustedProxyKey", "`TrustedProxyKey`"), count(n)]
        for name, n in hot["instructions"].items()
        if ":" not in name
    ]
    return (
        table(["case", "instructions / call"], "lr", rows)
        + "\n\n"
        + measured(hot)
    )


@block("proxy-key-cost")
def _proxy_key_cost(data: Data) -> str:
    hot = data["instructions-hot"]
    counts = hot["instructions"]
    base = counts["WSGI request, one limit"]
    cases = [
        ("default key, IPv4 client", base),
        (
            "default key, IPv6 client",
            counts["WSGI request, one limit, IPv6 client"],
        ),
        (
            "`TrustedProxyKey`, IPv4 client",
            counts["WSGI request, TrustedProxyKey, IPv4 client"],
        ),
        (
            "`TrustedProxyKey`, IPv6 client",
            counts["WSGI request, TrustedProxyKey, IPv6 client"],
        ),
    ]
    rows = [[name, count(n), f"{n - base:+,.0f}"] for name, n in cases]
    header = [
        "WSGI request through the middleware",
        "instructions",
        "vs the default key, IPv4",
    ]
    return (
        table(header, "lrr", rows)
        + "\n\nInstructions per request (callgrind, `benchmarks/hot_instructions.py`), a "
        "minimal app behind the middleware, one limit.\n\n" + measured(hot)
    )


@block("peer-instructions")
def _peer_instructions(data: Data) -> str:
    hot = data["instructions-hot"]["instructions"]
    ours = hot["try_consume, one Rule, hot key"]
    rows = [["tokenbucket (`try_consume`)", count(ours), "1.0x"]]
    for name, n in hot.items():
        if name.startswith("decision, hot key: "):
            rows.append([name.split(": ", 1)[1], count(n), x(n / ours)])
    decisions = table(
        ["one decision, hot key", "instructions", "vs tokenbucket"], "lrr", rows
    )
    rows = []
    for kind, bare in (("ASGI", "bare Starlette"), ("WSGI", "bare Flask")):
        base = hot[f"{kind} request: {bare}"]
        added_ours = hot[f"{kind} request: tokenbucket"] - base
        for name, n in hot.items():
            if name.startswith(f"{kind} request: ") and not name.endswith(bare):
                variant = name.split(": ", 1)[1]
                rows.append(
                    [
                        f"{bare}: {variant}",
                        count(n - base),
                        x((n - base) / added_ours),
                    ]
                )
    requests = table(
        [
            "middleware, per request",
            "instructions added to the bare app",
            "vs tokenbucket",
        ],
        "lrr",
        rows,
    )
    return (
        decisions
        + "\n\n"
        + requests
        + "\n\n"
        + measured(data["instructions-hot"])
    )
