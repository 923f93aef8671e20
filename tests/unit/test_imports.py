"""Importing the package and its adapters pulls in no web framework or server."""

from __future__ import annotations

import json
import subprocess
import sys

FRAMEWORKS = {
    "starlette",
    "fastapi",
    "flask",
    "werkzeug",
    "django",
    "uvicorn",
    "gunicorn",
    "waitress",
    "httpx",
    "anyio",
    "asgiref",
    "pydantic",
    "h11",
    "redis",
    "prometheus_client",
    "opentelemetry",
}


def test_adapters_import_no_framework():
    """import tokenbucket, .asgi, .wsgi, .proxies, .metrics: no framework or metrics library."""
    code = (
        "import json, sys\n"
        "import tokenbucket, tokenbucket.asgi, tokenbucket.wsgi, tokenbucket.proxies\n"
        "import tokenbucket.metrics\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    loaded = set(json.loads(output))
    assert "tokenbucket" in loaded
    assert loaded & FRAMEWORKS == set()


def test_public_names():
    """The adapters export exactly their documented names."""
    import tokenbucket.asgi
    import tokenbucket.proxies
    import tokenbucket.wsgi

    names = ["RateLimitMiddleware", "RequestView", "Response", "problem_details"]
    assert tokenbucket.asgi.__all__ == names
    assert tokenbucket.wsgi.__all__ == names
    assert tokenbucket.proxies.__all__ == ["TrustedProxyKey"]
    assert tokenbucket.asgi.RequestView is tokenbucket.wsgi.RequestView


PUBLIC = {
    "tokenbucket": [
        "EPSILON",
        "AsyncStore",
        "BucketRegistry",
        "Clock",
        "Decision",
        "InFlightLimit",
        "InFlightLimitExceeded",
        "ManualClock",
        "MemorySlots",
        "MemoryStore",
        "Outcome",
        "RateLimitExceeded",
        "Reservation",
        "Rule",
        "Slot",
        "Store",
        "TokenBucket",
        "rate_limit",
    ],
    "tokenbucket.redis": ["AsyncRedisStore", "RedisStore", "RedisUnavailableError"],
    "tokenbucket.fastapi": ["RateLimit", "RequestView"],
    "tokenbucket.flask": ["Limiter", "RateLimitExceeded", "RequestView"],
    "tokenbucket.django": [
        "RateLimitMiddleware",
        "Ratelimited",
        "RequestView",
        "denied",
        "ratelimit",
    ],
    "tokenbucket.testing": [
        "SLACK",
        "ExactBucket",
        "ExactRegistry",
        "ManualClock",
        "manual_registry",
    ],
    "tokenbucket.metrics": [
        "OUTCOMES",
        "STORE_SECONDS_BUCKETS",
        "InstrumentedRegistry",
        "Metrics",
        "Recorder",
        "Snapshot",
        "instrument",
        "store_name",
        "watch",
    ],
}


def test_public_api_is_pinned():
    """Each package's __all__ is exactly the documented API: a change here is an API change."""
    import importlib

    for name, expected in PUBLIC.items():
        module = importlib.import_module(name)
        assert module.__all__ == expected, name
        assert all(hasattr(module, attribute) for attribute in expected), name
