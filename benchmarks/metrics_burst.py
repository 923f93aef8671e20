"""Record the demo's /metrics under bursts: the data of docs/img/metrics-burst.png.

Run:  .venv/bin/pip install -e '.[demo]' && .venv/bin/python benchmarks/metrics_burst.py
      [PATH]  (writes docs/data/metrics-burst.json, or PATH; docs/figures.py draws the figure)

Starts the demo gateway (``python -m tokenbucket.demo``, capacity 10, refill 5/s) on a free
loopback port, scrapes ``/metrics`` every 0.5 s for 20 s as Prometheus would, while one client
sends a bounded schedule of requests from 127.0.0.1:

* 0-3 s: 2 requests/s (all allowed);
* at 3 s: a burst of 40 at once (the 10 of the bucket pass);
* 5-12 s: 10 requests/s against a refill of 5/s (about half pass);
* at 15 s: a burst of 25 (the refilled 10 pass).

The client's own count of 200 and 429 answers must equal the last scrape's counters, or the
script fails without writing anything.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "data" / "metrics-burst.json"
DURATION = 20.0
INTERVAL = 0.5
RULE_ARGS = ("--capacity", "10", "--refill-rate", "5")


def schedule() -> List[float]:
    """Send times (seconds after the start) of every request."""
    times = [i * 0.5 for i in range(6)]  # 2/s for 3 s
    times += [3.0] * 40
    times += [5.0 + i * 0.1 for i in range(70)]  # 10/s for 7 s
    times += [15.0] * 25
    return sorted(times)


def counters(text: str) -> Dict[str, float]:
    values = {"allowed": 0.0, "denied": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tokenbucket_decisions_total":
                values[sample.labels["outcome"]] = sample.value
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TOKENBUCKET_ADMIN_TOKEN": "metrics-burst-recording"}
    server = subprocess.Popen(
        [sys.executable, "-m", "tokenbucket.demo", "--port", str(port), *RULE_ARGS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the demo did not start") from None
                time.sleep(0.1)
        scrapes: List[Dict[str, float]] = []
        sent = {"allowed": 0, "denied": 0}
        start = time.monotonic()

        def scraper() -> None:
            with httpx.Client(base_url=base, timeout=5) as client:
                for index in range(int(DURATION / INTERVAL) + 1):
                    delay = start + index * INTERVAL - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    text = client.get("/metrics").text
                    scrapes.append({"t": time.monotonic() - start, **counters(text)})

        thread = threading.Thread(target=scraper)
        thread.start()
        with httpx.Client(base_url=base, timeout=5) as client:
            for at in schedule():
                delay = start + at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                status = client.get("/").status_code
                sent["allowed" if status == 200 else "denied"] += 1
        thread.join()
    finally:
        server.terminate()
        server.wait(timeout=10)
    last = scrapes[-1]
    if (last["allowed"], last["denied"]) != (sent["allowed"], sent["denied"]):
        raise SystemExit(f"the scrape {last} disagrees with the client's count {sent}")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(
        json.dumps(
            {
                "machine": f"Python {platform.python_version()} on {platform.machine()}",
                "rule": {"capacity": 10, "refill_rate": 5},
                "interval": INTERVAL,
                "sent": sent,
                "scrapes": scrapes,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {out}: {sent}")


if __name__ == "__main__":
    main()
