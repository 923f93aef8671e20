"""Importing the package and its adapters pulls in no web framework or server."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
    "tokenbucket.fastapi": ["RateLimit", "RequestView", "admin_router", "document"],
    "tokenbucket.flask": ["Limiter", "RateLimitExceeded", "RequestView"],
    "tokenbucket.django": [
        "RateLimitMiddleware",
        "Ratelimited",
        "RequestView",
        "admin_urls",
        "admin_view",
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


def _bare_env() -> dict[str, str]:
    """The environment less coverage's: under ``--cov`` a child process starts coverage
    first (``patch = ["subprocess"]``), which loads inspect and json itself."""
    return {name: value for name, value in os.environ.items() if not name.startswith("COV")}


def _loaded_after(module: str) -> set[str]:
    """The top-level modules loaded by ``import <module>`` in a fresh interpreter."""
    code = (
        "import sys\n"
        f"import {module}\n"
        "print(' '.join({name.split('.')[0] for name in sys.modules}))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=_bare_env(),
    ).stdout
    return set(output.split())


@pytest.mark.parametrize(
    "module", ["tokenbucket", "tokenbucket.asgi", "tokenbucket.wsgi", "tokenbucket.metrics"]
)
def test_sync_import_loads_no_asyncio(module):
    """asyncio (and ssl through it) and inspect load only when an async path runs."""
    heavy = {"asyncio", "ssl", "concurrent"}
    if sys.version_info >= (3, 10):  # 3.9 takes ParamSpec from typing_extensions, which loads it
        heavy |= {"inspect", "typing_extensions"}
    if module == "tokenbucket":  # the core logs and writes JSON only for shared rules
        heavy |= {"json", "logging"}
    assert _loaded_after(module) & heavy == set()


def test_coroutine_check_without_inspect_matches_inspect():
    """Telling an async callable from a sync one without inspect gives inspect's answers."""
    code = (
        "import functools, json, sys\n"
        "from tokenbucket._core import aio as _aio\n"
        "async def a(): pass\n"
        "def s(): pass\n"
        "class C:\n"
        "    async def am(self): pass\n"
        "    def sm(self): pass\n"
        "    pm = functools.partialmethod(am)\n"
        "    @staticmethod\n"
        "    async def st(): pass\n"
        "c = C()\n"
        "things = [a, s, c.am, c.sm, C.am, C.sm, c.pm, C.st, functools.partial(a), None, len,\n"
        "          lambda: None, c, C]\n"
        "before = 'inspect' in sys.modules\n"
        "ours = []\n"
        "for thing in things:\n"
        "    sys.modules.pop('inspect', None)  # each answered as if inspect were not loaded\n"
        "    ours.append(_aio.iscoroutinefunction(thing))\n"
        "import inspect\n"
        "print(json.dumps([before, ours, [inspect.iscoroutinefunction(t) for t in things]]))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=_bare_env(),
    ).stdout
    before, ours, theirs = json.loads(output)
    assert ours == theirs
    assert ours[:6] == [True, False, True, False, True, False]
    if sys.version_info >= (3, 10):
        assert before is False
