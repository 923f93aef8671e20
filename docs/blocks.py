"""The generated blocks of the documentation, each rendered from docs/data (see tables.py).

Every function takes the data and returns Markdown: a table or the sentences that compare,
ending with the line that says where and when the numbers were measured. Comparisons are the
ratios of one run, on one machine; instruction counts (callgrind) are given beside timings
wherever both exist, because they do not drift with the load of a shared machine.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

Document = Dict[str, Any]


class Data:
    """The JSON files of a data folder, read once each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._read: Dict[str, Document] = {}

    def __getitem__(self, name: str) -> Document:
        if name not in self._read:
            self._read[name] = json.loads(
                (self.folder / f"{name}.json").read_text()
            )
        return self._read[name]


BLOCKS: Dict[str, Callable[[Data], str]] = {}


def block(
    name: str,
) -> Callable[[Callable[[Data], str]], Callable[[Data], str]]:
    """Register a block renderer under ``name``."""

    def register(function: Callable[[Data], str]) -> Callable[[Data], str]:
        BLOCKS[name] = function
        return function

    return register


# -- formatting ------------------------------------------------------------------------------


def measured(*documents: Document) -> str:
    """The line naming the commit, date, machine and commands of the documents' runs."""
    stamps = []
    for document in documents:
        stamp = document.get("measured")
        if stamp is None:
            raise ValueError(
                "a data file without its 'measured' stamp: regenerate it"
            )
        stamps.append(stamp)
    places: Dict[str, List[str]] = {}
    for stamp in stamps:
        place = (
            f"commit `{stamp['commit']}`, {stamp['date']}, {stamp['machine']}, "
            f"Python {stamp['python']}"
        )
        quick = " (a --quick run: not for publishing)" if stamp["quick"] else ""
        places.setdefault(place, []).append(f"`{stamp['command']}`{quick}")
    return (
        "*Measured at "
        + "; and at ".join(
            f"{place}: {', '.join(runs)}" for place, runs in places.items()
        )
        + ".*"
    )


def x(value: float) -> str:
    """A ratio: ``3.1x``, or ``12x`` from 10 up."""
    return f"{value:.0f}x" if value >= 10 else f"{value:.1f}x"


def span(values: Sequence[float], unit: str = "x", digits: int = 1) -> str:
    """``lo-hi`` of ``values``, as ratios (``2.4-4.6x``) or in ``unit`` (one value if alike)."""
    lo, hi = min(values), max(values)
    if unit == "x":
        low, high, suffix = x(lo)[:-1], x(hi)[:-1], "x"
    else:
        low, high = f"{lo:.{digits}f}", f"{hi:.{digits}f}"
        suffix = f" {unit}"
    return (low if low == high else f"{low}-{high}") + suffix


def count(value: float) -> str:
    """An instruction count: ``38,747``."""
    return f"{value:,.0f}"


def table(
    header: Sequence[str], align: Sequence[str], rows: List[Sequence[str]]
) -> str:
    """A Markdown table; ``align`` holds ``l`` or ``r`` per column.

    A number and its unit (``0.53 µs``) are joined by a no-break space, so that a narrow
    column (a phone) never puts the unit on a line of its own.
    """
    lines = ["| " + " | ".join(header) + " |"]
    lines.append(
        "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"
    )
    for row in rows:
        cells = [re.sub(r"(\d) (µs|ms|s|B)\b", "\\1\u00a0\\2", c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def faster(ours: float, theirs: float) -> str:
    """``1.3x faster`` / ``1.2x slower`` / ``as fast``: tokenbucket's time against another's."""
    if abs(theirs / ours - 1) < 0.05:
        return "as fast (within 5%)"
    if theirs > ours:
        return f"{theirs / ours:.1f}x faster"
    return f"{ours / theirs:.1f}x slower"


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


# -- middleware (benchmarks/middleware.py) ----------------------------------------------------

MIDDLEWARE_TABLES = [
    ("asgi", "ASGI (Starlette)", "bare Starlette"),
    ("wsgi", "WSGI (Flask)", "bare Flask"),
    ("asgi_minimal", "ASGI, minimal app", "minimal app"),
    ("wsgi_minimal", "WSGI, minimal app", "minimal app"),
]


def added(samples: Dict[str, List[float]], bare: str, name: str) -> float:
    """Median over rounds of (variant - bare) within a round, µs per request."""
    return statistics.median(
        v - b for v, b in zip(samples[name], samples[bare])
    )


def best(samples: Dict[str, List[float]], bare: str, name: str) -> float:
    """The best round's time less the bare app's best round, µs per request."""
    return min(samples[name]) - min(samples[bare])


@block("middleware-tables")
def _middleware_tables(data: Data) -> str:
    document = data["benchmark-middleware"]
    parts = []
    for key, title, bare in MIDDLEWARE_TABLES:
        samples = document["us_per_request"][key]
        ours = added(samples, bare, OURS)
        rows = []
        for name, values in samples.items():
            median = statistics.median(values)
            if name == bare:
                rows.append(
                    [
                        name,
                        f"{median:.1f} (best {min(values):.1f})",
                        "-",
                        "-",
                        "-",
                    ]
                )
                continue
            more = added(samples, bare, name)
            rows.append(
                [
                    name,
                    f"{median:.1f}",
                    f"{more:.1f}",
                    f"{best(samples, bare, name):.1f}",
                    x(more / ours),
                ]
            )
        header = [
            "variant",
            "µs / request (median)",
            "added µs (median)",
            "added µs (best)",
            "added vs tokenbucket",
        ]
        parts.append(f"### {title}\n\n" + table(header, "lrrrr", rows))
    return "\n\n".join(parts) + "\n\n" + measured(document)


def _middleware_numbers(data: Data) -> Dict[str, float]:
    samples = data["benchmark-middleware"]["us_per_request"]
    hot = data["instructions-hot"]["instructions"]
    numbers: Dict[str, float] = {}
    for key, _, bare in MIDDLEWARE_TABLES:
        numbers[f"{key} median"] = added(samples[key], bare, OURS)
        numbers[f"{key} best"] = best(samples[key], bare, OURS)

    def by_count(kind: str, bare: str, name: str) -> float:
        base = hot[f"{kind} request: {bare}"]
        return (hot[f"{kind} request: {name}"] - base) / (
            hot[f"{kind} request: {OURS}"] - base
        )

    asgi, wsgi = samples["asgi"], samples["wsgi"]
    for name in ("slowapi (pure ASGI)", "slowapi (BaseHTTPMiddleware)"):
        numbers[name] = (
            added(asgi, "bare Starlette", name) / numbers["asgi median"]
        )
        numbers[name + " count"] = by_count("ASGI", "bare Starlette", name)
    numbers["Flask-Limiter"] = (
        added(wsgi, "bare Flask", "Flask-Limiter") / numbers["wsgi median"]
    )
    numbers["Flask-Limiter count"] = by_count(
        "WSGI", "bare Flask", "Flask-Limiter"
    )
    return numbers


def _added(numbers: Dict[str, float], key: str) -> str:
    return f"{numbers[key + ' median']:.1f} µs (median; {numbers[key + ' best']:.1f} best round)"


@block("middleware-summary")
def _middleware_summary(data: Data) -> str:
    n = _middleware_numbers(data)
    pure, base = "slowapi (pure ASGI)", "slowapi (BaseHTTPMiddleware)"
    return (
        f"In this run tokenbucket's ASGI middleware added {_added(n, 'asgi')} per request to "
        f"Starlette and {_added(n, 'asgi_minimal')} around a minimal ASGI app; "
        f"slowapi added {x(n[pure])} as much (pure ASGI) and {x(n[base])} "
        f"(BaseHTTPMiddleware) by the median times, {x(n[pure + ' count'])} and "
        f"{x(n[base + ' count'])} by instructions. The WSGI middleware added "
        f"{_added(n, 'wsgi')} inside Flask and {_added(n, 'wsgi_minimal')} around a minimal "
        f"WSGI app; Flask-Limiter added {x(n['Flask-Limiter'])} as much by time, "
        f"{x(n['Flask-Limiter count'])} by instructions. Inside a framework the same code runs "
        "with colder CPU caches than around a minimal app.\n\n"
        + measured(data["benchmark-middleware"], data["instructions-hot"])
    )


@block("inflight-table")
def _inflight_table(data: Data) -> str:
    document = data["benchmark-middleware"]
    flight = "tokenbucket (in_flight=4)"
    rows = []
    for key, title, bare in MIDDLEWARE_TABLES:
        samples = document["us_per_request"][key]
        ours, theirs = added(samples, bare, OURS), added(samples, bare, flight)
        more = statistics.median(
            f - t for f, t in zip(samples[flight], samples[OURS])
        )
        rows.append(
            [
                title,
                f"{ours:.1f} ({best(samples, bare, OURS):.1f})",
                f"{theirs:.1f} ({best(samples, bare, flight):.1f})",
                f"{more:.1f} ({min(samples[flight]) - min(samples[OURS]):.1f})",
            ]
        )
    header = [
        "table",
        "tokenbucket",
        "tokenbucket (in_flight=4)",
        "the in-flight limit adds",
    ]
    return table(header, "lrrr", rows) + "\n\n" + measured(document)


@block("inflight-cost")
def _inflight_cost(data: Data) -> str:
    document = data["benchmark-middleware"]
    hot = data["instructions-hot"]["instructions"]
    flight = "tokenbucket (in_flight=4)"
    times = [
        statistics.median(
            f - t
            for f, t in zip(
                document["us_per_request"][key][flight],
                document["us_per_request"][key][OURS],
            )
        )
        for key, _, _ in MIDDLEWARE_TABLES
    ]
    counts = [
        hot[f"{k} request: {flight}"] - hot[f"{k} request: {OURS}"]
        for k in ("ASGI", "WSGI")
    ]
    return (
        f"In memory the in-flight limit added {span(times, 'µs')} per request to the middleware "
        f"in the last run (median over rounds, in the four tables of "
        f"[the benchmarks](benchmarks.md#with-an-in-flight-limit)), "
        f"{count(min(counts))}-{count(max(counts))} instructions.\n\n"
        + measured(document, data["instructions-hot"])
    )


@block("metrics-cost")
def _metrics_cost(data: Data) -> str:
    core, document = data["benchmark-core"], data["benchmark-middleware"]
    metered = "tokenbucket + Prometheus metrics"
    times = core["microseconds"]
    per_decision = [times[s][metered] - times[s][OURS] for s in times]
    per_request = [
        added(document["us_per_request"][key], "minimal app", metered)
        - added(document["us_per_request"][key], "minimal app", OURS)
        for key in ("asgi_minimal", "wsgi_minimal")
    ]
    return (
        f"Attaching Prometheus metrics (`instrument` with `PrometheusMetrics`, every decision "
        f"counted and timed) added {span(per_decision, 'µs')} per decision in "
        f"`benchmarks/core.py`'s scenarios, and {span(per_request, 'µs')} per request behind "
        "the middleware around a minimal app (`benchmarks/middleware.py`).\n\n"
        + measured(core, document)
    )


# -- the framework integrations (framework_instructions.py) -----------------------------------


@block("framework-instructions")
def _framework_instructions(data: Data) -> str:
    document = data["instructions-frameworks"]
    rows, over_hook = [], []
    for framework, counts in document["instructions"].items():
        names = list(counts)
        bare, generic, hook, integration = (counts[n] for n in names)
        rows.append(
            [
                framework,
                count(bare),
                f"{count(generic)} (+{count(generic - bare)})",
                f"{count(hook)} (+{count(hook - bare)})",
                f"{count(integration)} (+{count(integration - bare)})",
                f"{integration - generic:+,.0f}",
            ]
        )
        over_hook.append(
            f"{framework}'s {names[3].split('.')[-1]} adds {count(integration - hook)} over the "
            f"empty hook, the generic middleware {count(generic - bare)} over the bare app"
        )
    header = [
        "framework",
        "bare app",
        "+ generic middleware",
        "+ empty hook",
        "+ integration",
        "integration vs generic",
    ]
    return (
        table(header, "lrrrrr", rows)
        + "\n\nInstructions per request: "
        + "; ".join(over_hook)
        + ".\n\n"
        + measured(document)
    )


@block("framework-times")
def _framework_times(data: Data) -> str:
    document = data["benchmark-middleware"]
    parts = []
    for framework in ("FastAPI", "Flask", "Django"):
        samples = document["us_per_request"][framework]
        name = list(samples)[-1]
        more = statistics.median(
            v - g for v, g in zip(samples[name], samples[OURS])
        )
        parts.append(f"`{name}` {more:+.1f} µs")
    return (
        "By time, in the run of the tables above (median over rounds of the difference within "
        "a round), each integration against the generic middleware on the same app: "
        + ", ".join(parts)
        + " per request.\n\n"
        + measured(document)
    )


# The Redis, several-limits, waiting and flood blocks: registered on import.
import blocks_redis  # noqa: E402, F401
