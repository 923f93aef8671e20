"""Calling the real demo gateway at its limit: the outbound transports against uvicorn.

Runs benchmarks/outbound.py (the script that records docs/data/outbound.json) at the issue's
bar: 300 requests, the demo (capacity 20, 20 per second) in a subprocess on loopback, 32
concurrent tasks (or threads, or 4 processes sharing a budget in Redis) through the
transports. The 429s are counted on the wire from the demo's /metrics. The time bound is
generous (1.25 x the ideal) for a loaded 2-core machine; the benchmark reports the ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("requests")

ROOT = Path(__file__).resolve().parents[2]
# ideal: (300 - 20) / 20 = 14 s per scenario. One 429 costs the whole key a pause of its
# Retry-After (1 s, whole seconds): fewer requests would leave no room for one.
REQUESTS = 300


def run(tmp_path: Path, scenarios: str, *extra: str, requests: int = REQUESTS) -> dict:
    out = tmp_path / "outbound.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "outbound.py"),
            "--requests",
            str(requests),
            "--scenarios",
            scenarios,
            "--json",
            str(out),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = {r["scenario"]: r for r in json.loads(out.read_text())["results"]}
    for run_ in runs.values():  # a Redis fallback, say, is logged there
        run_["stderr"] = result.stderr[-1500:]
    return runs


def check(result: dict, requests: int = REQUESTS, slack: float = 1.25) -> None:
    summary = {k: v for k, v in result.items() if k not in ("sent", "status")}
    assert result["requests"] == requests
    assert result["caller_200"] == requests, summary
    assert result["caller_429"] == 0, summary
    assert len(result["status"]) == requests + result["status"].count(429)  # retries
    assert result["wire_429"] <= 3, summary
    assert result["seconds"] <= slack * result["ideal_seconds"], summary


def test_async_transport_at_the_server_limit_and_learning_it_from_4x_looser(tmp_path):
    """32 tasks; the local limit equal to the gateway's, then 4x looser (learned from its
    RateLimit-Policy): no 429 reaches the caller, at most 3 on the wire, near the ideal time."""
    results = run(tmp_path, "tokenbucket,tokenbucket-loose")
    check(results["tokenbucket"])
    check(results["tokenbucket-loose"])


def test_requests_adapter_learns_the_limit_from_4x_looser(tmp_path):
    """The requests adapter on 32 threads, 4x looser than the gateway: the same bounds."""
    check(run(tmp_path, "tokenbucket-requests")["tokenbucket-requests"])


def test_four_processes_share_one_budget_in_redis(tmp_path, redis_url):
    """4 processes of 8 tasks, each 4x looser, one budget in Redis: they learn the limit
    together and stay under it. The time bound is 1.5 x the ideal: under a load average of
    12 on 2 cores the 4 processes start up to 0.7 s apart and every Redis round trip is slow
    (1.05 on a calmer machine, 1.09 to 1.31 under that load)."""
    results = run(tmp_path, "tokenbucket-redis", "--redis-url", redis_url)
    check(results["tokenbucket-redis"], slack=1.5)
