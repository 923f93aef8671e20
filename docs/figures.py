"""Draw the documentation's figures from real runs.

Run:  .venv/bin/pip install -e . --group docs && .venv/bin/python docs/figures.py

* img/token-level.png: a real TokenBucket on a ManualClock, fed a burst and then steady
  traffic faster than its refill rate; the level is read from the bucket itself.
* img/benchmark-*.png: bars from the JSON the benchmark scripts write (docs/data/*.json,
  produced by ``benchmarks/core.py --json docs/data/benchmark-core.json`` and friends).
* img/several-limits.png: a real registry of two limits on a ManualClock, all or nothing,
  beside the same limits checked one after the other (each charged when it admits); the
  levels are read from the registries.
* img/metrics-burst.png: the demo's decisions by outcome, scraped from its /metrics under
  bursts (docs/data/metrics-burst.json, recorded by ``benchmarks/metrics_burst.py``).
* img/outbound.png: requests over time against the demo's limit, through tokenbucket's
  transport and aiolimiter (docs/data/outbound.json, recorded by ``benchmarks/outbound.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tokenbucket import BucketRegistry, ManualClock, Rule, TokenBucket

HERE = Path(__file__).parent
IMG = HERE / "img"
DATA = HERE / "data"


def token_level() -> Path:
    """A burst of 14 requests at t=1 s, then 4 requests/s from t=4 s to t=12 s, rate 2/s."""
    clock = ManualClock()
    bucket = TokenBucket(capacity=10, refill_rate=2.0, clock=clock)
    requests = [1.0 + i * 0.01 for i in range(14)] + [
        4.0 + i * 0.25 for i in range(33)
    ]
    times: List[float] = []
    levels: List[float] = []
    allowed: List[Tuple[float, float]] = []
    denied: List[Tuple[float, float]] = []
    step = 0.01
    t = 0.0
    pending = sorted(requests)
    while t <= 16.0 + 1e-9:
        while pending and pending[0] <= t + 1e-12:
            at = pending.pop(0)
            clock.set(at)
            decision = bucket.consume()
            (allowed if decision.allowed else denied).append(
                (at, decision.remaining)
            )
        clock.set(t)
        times.append(t)
        levels.append(bucket.tokens)
        t = round(t + step, 10)

    fig, ax = plt.subplots(figsize=(7.2, 3.6), dpi=150)
    ax.plot(
        times,
        levels,
        color="#3f51b5",
        linewidth=1.8,
        label="tokens in the bucket",
    )
    ax.axhline(
        10,
        color="#9e9e9e",
        linestyle="--",
        linewidth=1,
        label="capacity (burst) = 10",
    )
    ax.scatter(
        [a for a, _ in allowed],
        [lvl for _, lvl in allowed],
        s=14,
        color="#2e7d32",
        zorder=3,
        label=f"allowed ({len(allowed)})",
    )
    ax.scatter(
        [a for a, _ in denied],
        [lvl for _, lvl in denied],
        s=22,
        marker="x",
        color="#c62828",
        zorder=3,
        label=f"denied ({len(denied)})",
    )
    ax.annotate(
        "burst of 14: 10 pass",
        xy=(1.1, 0.3),
        xytext=(1.6, 6.5),
        arrowprops={"arrowstyle": "->", "color": "#555"},
    )
    ax.annotate(
        "4 req/s against a refill of 2/s:\nabout every other request passes",
        xy=(8.0, 0.4),
        xytext=(6.3, 5.2),
        arrowprops={"arrowstyle": "->", "color": "#555"},
    )
    ax.annotate(
        "idle: refills at 2 tokens/s",
        xy=(14.0, 4.5),
        xytext=(10.4, 7.0),
        arrowprops={"arrowstyle": "->", "color": "#555"},
    )
    ax.set_xlabel("seconds")
    ax.set_ylabel("tokens")
    ax.set_ylim(-0.5, 11)
    ax.set_xlim(0, 16)
    ax.set_title(
        "TokenBucket(capacity=10, refill_rate=2.0): a burst, then steady traffic"
    )
    ax.legend(loc="upper right", fontsize=9, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = IMG / "token-level.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def benchmark_bars(name: str, title: str, unit: str) -> Path | None:
    """One panel per scenario, stacked, from docs/data/<name>.json.

    Drawn to be read at the documentation's column width and on a phone: one column of
    panels, each with its own scale and the libraries named on every panel, 5 inches wide so
    that a phone's 360 pixels shrink its text by half, not by two thirds.
    """
    source = DATA / f"{name}.json"
    if not source.exists():
        return None
    results = json.loads(source.read_text())
    table: Dict[str, Dict[str, float]] = results["microseconds"]
    scenarios = list(table)
    libraries = list(next(iter(table.values())))
    panel_height = 0.26 * len(libraries) + 0.75
    fig, axes = plt.subplots(
        len(scenarios),
        1,
        figsize=(5.0, panel_height * len(scenarios) + 0.8),
        dpi=150,
    )
    if len(scenarios) == 1:
        axes = [axes]
    for ax, scenario in zip(axes, scenarios):
        values = [table[scenario][lib] for lib in libraries]
        colors = [
            "#3f51b5" if lib.startswith("tokenbucket") else "#9e9e9e"
            for lib in libraries
        ]
        ax.barh(libraries, values, color=colors)
        ax.invert_yaxis()
        # Right-aligned: a long title runs over the labels, not off the figure.
        ax.set_title(scenario, fontsize=11, loc="right", fontweight="bold")
        ax.tick_params(axis="y", labelsize=11)
        ax.tick_params(axis="x", labelsize=10)
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:.2f}", va="center", fontsize=11)
        ax.margins(x=0.35)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[-1].set_xlabel(unit, fontsize=11)
    stamp = results.get("measured")
    where = (
        f"commit {stamp['commit']}, {stamp['machine']}, Python {stamp['python']}"
        if stamp
        else results["machine"]
    )
    fig.suptitle(f"{title}, lower is better\n{where}", fontsize=10)
    fig.tight_layout()
    path = IMG / f"{name}.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def metrics_burst() -> Path | None:
    """The demo's decisions by outcome, from a real scrape of /metrics under bursts.

    docs/data/metrics-burst.json is written by ``benchmarks/metrics_burst.py``: the demo
    (capacity 10, refill 5/s) scraped every 0.5 s while one client sends a bounded schedule.
    Top: the counters as scraped; bottom: their rate between scrapes, as ``rate()`` would.
    """
    source = DATA / "metrics-burst.json"
    if not source.exists():
        return None
    results = json.loads(source.read_text())
    scrapes = results["scrapes"]
    times = [s["t"] for s in scrapes]
    colors = {"allowed": "#2e7d32", "denied": "#c62828"}
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(7.2, 5.6),
        dpi=150,
        sharex=True,
        gridspec_kw={"height_ratios": [1, 1.2]},
    )
    for outcome, color in colors.items():
        values = [s[outcome] for s in scrapes]
        top.step(
            times, values, where="post", color=color, linewidth=2, label=outcome
        )
        va = (
            "bottom" if outcome == "denied" else "top"
        )  # the two ends are close
        top.text(
            times[-1],
            values[-1],
            f" {values[-1]:.0f}",
            color=color,
            va=va,
            fontsize=10,
        )
    top.set_ylabel("decisions (total)", fontsize=11)
    top.set_title(
        "tokenbucket_decisions_total{outcome} scraped from the demo every 0.5 s",
        fontsize=11,
        loc="left",
    )
    top.legend(loc="upper left", fontsize=10)
    top.grid(alpha=0.3)
    top.set_xlim(0, times[-1] + 1.2)
    mids, width = [], results["interval"] * 0.9
    rates: Dict[str, List[float]] = {"allowed": [], "denied": []}
    for before, after in zip(scrapes, scrapes[1:]):
        span = after["t"] - before["t"]
        mids.append(before["t"] + span / 2)
        for outcome in rates:
            rates[outcome].append((after[outcome] - before[outcome]) / span)
    bottom.bar(
        mids,
        rates["allowed"],
        width=width,
        color=colors["allowed"],
        label="allowed",
    )
    bottom.bar(
        mids,
        rates["denied"],
        width=width,
        bottom=rates["allowed"],
        color=colors["denied"],
        label="denied",
    )
    bottom.axhline(5, color="#555", linestyle="--", linewidth=1)
    bottom.text(17.0, 6.5, "refill rate: 5/s", fontsize=10, color="#555")
    peak = max(a + d for a, d in zip(rates["allowed"], rates["denied"]))
    notes = (
        (3.7, peak * 0.75, "burst of 40 at once:\n10 pass (the bucket)"),
        (6.2, peak * 0.3, "10/s sent for 7 s:\nabout 5/s pass"),
        (15.7, peak * 0.45, "burst of 25:\n10 pass (refilled)"),
    )
    for x, y, label in notes:
        bottom.text(x, y, label, fontsize=10, va="center")
    bottom.set_ylabel("decisions per second", fontsize=11)
    bottom.set_xlabel("seconds since the first scrape", fontsize=11)
    bottom.legend(loc="upper right", fontsize=10)
    bottom.grid(alpha=0.3)
    bottom.set_axisbelow(True)
    for ax in (top, bottom):
        ax.tick_params(labelsize=10)
    sent = results["sent"]
    fig.suptitle(
        f"The demo (capacity 10, refill 5/s) under bursts: "
        f"{sent['allowed'] + sent['denied']} requests, {sent['allowed']} allowed, "
        f"{sent['denied']} denied",
        fontsize=11,
    )
    fig.tight_layout()
    path = IMG / "metrics-burst.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def several_limits() -> Path:
    """Burst 5 at 1/s and 30 at 0.2/s; 3 requests/s for 30 s: all or nothing vs one by one."""
    burst, daily = Rule(5, 1.0), Rule(30, 0.2)
    # Stacked, at the other figures' width and dpi: side by side, the labels shrank to a few
    # pixels at the documentation's column width.
    fig, axes = plt.subplots(
        2, 1, figsize=(7.2, 7.0), dpi=150, sharex=True, sharey=True
    )
    for ax, together in zip(axes, (True, False)):
        clock = ManualClock()
        if together:
            both = BucketRegistry({"burst": burst, "daily": daily}, clock=clock)
        else:  # checked separately, as limiters that keep one counter per limit do
            first = BucketRegistry(burst, clock=clock)
            second = BucketRegistry(daily, clock=clock)
        times, levels, admitted, sent = [], {"burst": [], "daily": []}, 0, 0
        for step in range(3001):
            now = step / 100
            clock.set(now)
            if step % 33 == 0 and now < 30:
                sent += 1
                if together:
                    admitted += both.try_consume("k")
                else:  # the daily limit is charged before the burst limit refuses
                    admitted += second.try_consume("k") and first.try_consume(
                        "k"
                    )
            times.append(now)
            if together:
                levels["burst"].append(both.tokens("k", limit="burst"))
                levels["daily"].append(both.tokens("k", limit="daily"))
            else:
                levels["burst"].append(first.tokens("k"))
                levels["daily"].append(second.tokens("k"))
        ax.plot(
            times, levels["daily"], color="#1565c0", label="daily (30, 0.2/s)"
        )
        ax.plot(times, levels["burst"], color="#ef6c00", label="burst (5, 1/s)")
        title = (
            "all or nothing (tokenbucket)"
            if together
            else "each limit checked on its own"
        )
        ax.set_title(
            f"{title}: {admitted} of {sent} admitted", fontsize=12, loc="left"
        )
        ax.set_ylabel("tokens", fontsize=11)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=10)
    axes[-1].set_xlabel("seconds (3 requests/s)", fontsize=11)
    fig.tight_layout()
    path = IMG / "several-limits.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def outbound() -> Path | None:
    """Requests over time against the demo's limit, from benchmarks/outbound.py's real run.

    Top: requests sent so far by tokenbucket's transport (told 80/s, it learns 20/s from the
    gateway's RateLimit-Policy) and by aiolimiter at the same 80/s, against the most the
    gateway admits by then (20 + 20 t). Bottom: the 429s each got, per second.
    """
    source = DATA / "outbound.json"
    if not source.exists():
        return None
    document = json.loads(source.read_text())
    runs = {r["scenario"]: r for r in document["results"]}
    capacity, rate = document["capacity"], document["refill_rate"]
    shown = (
        ("tokenbucket-loose", "tokenbucket transport, told 80/s", "#3f51b5"),
        ("aiolimiter-loose", "aiolimiter at 80/s", "#c62828"),
    )
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(7.2, 6.0),
        dpi=150,
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    end = (
        max(max(runs[name]["sent"]) for name, _, _ in shown if name in runs)
        + 0.5
    )
    top.plot(
        [0, end],
        [capacity, capacity + rate * end],
        color="#555",
        linestyle="--",
        linewidth=1.5,
        label=f"the gateway's limit: {capacity} + {rate:g}/s",
    )
    for name, label, color in shown:
        if name not in runs:
            continue
        run = runs[name]
        times = run["sent"]
        top.step(
            times,
            range(1, len(times) + 1),
            where="post",
            color=color,
            linewidth=2,
            label=f"{label}: {run['wire_429']} x 429",
        )
        seconds = int(end) + 1
        per_second = [0] * seconds
        for sent, status in zip(times, run["status"]):
            if status == 429:
                per_second[min(int(sent), seconds - 1)] += 1
        bottom.bar(
            [i + 0.5 for i in range(seconds)],
            per_second,
            width=0.8,
            color=color,
            alpha=0.8,
            label=label,
        )
    top.set_ylabel("requests sent (on the wire)", fontsize=11)
    top.legend(loc="upper left", fontsize=10)
    top.grid(alpha=0.3)
    bottom.set_ylabel("429s per second", fontsize=11)
    bottom.set_xlabel("seconds since the first request", fontsize=11)
    bottom.grid(alpha=0.3)
    bottom.set_axisbelow(True)
    for ax in (top, bottom):
        ax.tick_params(labelsize=10)
    fig.suptitle(
        f"{document['results'][0]['requests']} requests from {document['tasks']} tasks to the "
        f"demo gateway ({capacity} burst, {rate:g}/s)",
        fontsize=11,
    )
    fig.tight_layout()
    path = IMG / "outbound.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    """Draw every figure whose data is present."""
    IMG.mkdir(exist_ok=True)
    made = [token_level(), several_limits()]
    made.append(
        benchmark_bars(
            "benchmark-core", "One in-memory decision", "µs per decision"
        )
    )
    made.append(metrics_burst())
    made.append(outbound())
    for path in made:
        if path is not None:
            print(f"wrote {path.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
