"""Generated blocks: the middleware, the in-flight limit, metrics, the framework integrations."""

from __future__ import annotations

import statistics
from typing import Dict, List

from blocks import (
    Data,
    block,
    count,
    measured,
    span,
    table,
    x,
)
from blocks_core import OURS

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
