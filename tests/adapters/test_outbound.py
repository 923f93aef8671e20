"""The outbound transports in process: httpx over a real WSGI/ASGI app, requests over wsgiref.

The app answers what each test scripts (a 429 with ``retry-after-ms``, the draft's fields, ...)
and counts what reached it; the timing runs against the real demo are in
tests/servers/test_outbound.py.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Iterator, List, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
import pytest
import requests

import tokenbucket.httpx
from tokenbucket import BucketRegistry, Decision, ManualClock, RateLimitExceeded, Rule
from tokenbucket._edges.outbound.follow import Follower, Plan, owed
from tokenbucket.httpx import AsyncRateLimitedTransport, RateLimitedTransport, host_key
from tokenbucket.requests import RateLimitedAdapter

Script = List[Tuple[int, List[Tuple[str, str]]]]


class ScriptedApp:
    """A WSGI app answering from a script (then 200 without fields); it records each request."""

    def __init__(self, script: Script) -> None:
        self.script = list(script)
        self.seen: List[Tuple[str, float]] = []

    def __call__(self, environ, start_response):
        self.seen.append((environ["REQUEST_METHOD"], time.monotonic()))
        status, headers = self.script.pop(0) if self.script else (200, [])
        start_response(f"{status} X", [("Content-Type", "text/plain"), *headers])
        return [b"ok"]


def client(app: ScriptedApp, **options) -> httpx.Client:
    inner = httpx.WSGITransport(app=app)
    return httpx.Client(
        transport=RateLimitedTransport(
            options.pop("limit", "100/second"), transport=inner, **options
        ),
        base_url="http://api.test",
    )


TOO_MANY = (429, [("retry-after-ms", "150")])


def test_the_module_uses_the_real_httpx():
    """tokenbucket/httpx.py imports the top-level httpx, not itself."""
    assert tokenbucket.httpx.httpx is httpx
    assert host_key(httpx.Request("GET", "https://api.example.com/x")) == "api.example.com:443"


def test_the_shared_core_is_sans_io_and_a_missing_extra_is_named():
    """tokenbucket._edges.outbound imports no HTTP client; tokenbucket.httpx without httpx says
    which extra to install."""
    code = (
        "import json, sys\n"
        "import tokenbucket._edges.outbound.drive, tokenbucket._edges.outbound.fields\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert {"httpx", "requests", "urllib3"} & set(json.loads(out.stdout)) == set()
    blocked = "import sys; sys.modules['httpx'] = None\nimport tokenbucket.httpx\n"
    failed = subprocess.run([sys.executable, "-c", blocked], capture_output=True, text=True)
    assert failed.returncode == 1
    assert "pip install 'tokenbucket-ratelimit[httpx]'" in failed.stderr


def test_a_429_is_retried_after_its_wait_and_the_caller_sees_the_answer():
    app = ScriptedApp([TOO_MANY])
    with client(app) as c:
        response = c.get("/")
    assert response.status_code == 200
    assert len(app.seen) == 2
    assert app.seen[1][1] - app.seen[0][1] >= 0.15


def test_retries_are_bounded_then_the_429_is_returned_as_it_came():
    app = ScriptedApp([TOO_MANY] * 3)
    with client(app, max_retries=1) as c:
        response = c.get("/")
    assert response.status_code == 429
    assert response.headers["retry-after-ms"] == "150"
    assert response.text == "ok"  # the body is still readable
    assert len(app.seen) == 2


def test_a_wait_above_max_wait_is_not_slept_the_429_is_returned():
    app = ScriptedApp([(429, [("Retry-After", "3600")])])
    with client(app, max_wait=1) as c:
        started = time.monotonic()
        response = c.get("/")
    assert response.status_code == 429
    assert time.monotonic() - started < 0.5
    assert len(app.seen) == 1


def test_only_idempotent_methods_are_retried_by_default():
    app = ScriptedApp([TOO_MANY, TOO_MANY])
    with client(app) as c:
        assert c.post("/", content=b"x").status_code == 429
        assert c.put("/", content=b"x").status_code == 200
    assert [method for method, _ in app.seen] == ["POST", "PUT", "PUT"]


def test_a_503_is_retried_only_with_a_retry_after():
    app = ScriptedApp([(503, []), (503, [("Retry-After", "0")])])
    with client(app) as c:
        assert c.get("/").status_code == 503
        assert c.get("/").status_code == 200
    assert len(app.seen) == 3


def test_a_pause_from_the_server_holds_the_next_request_back():
    """r=0 with a fixed window (t=1, q=100 per 60 s): the next request waits about 1 s."""
    fields = [("RateLimit-Policy", '"p";q=100;w=60'), ("RateLimit", '"p";r=0;t=1')]
    app = ScriptedApp([(200, fields)])
    with client(app) as c:
        c.get("/")
        c.get("/")
    assert 0.85 <= app.seen[1][1] - app.seen[0][1] <= 1.5


def test_a_server_quota_of_one_still_lets_a_request_through():
    """q=1 per second: the headroom never takes the learned burst below one request."""
    follower = Follower("100/second")
    fields = [("RateLimit-Policy", '"p";q=1;w=1'), ("RateLimit", '"p";r=0;t=1')]
    assert follower.plan("k", 200, fields, 0.0).rule == Rule(1, 1.0)


def test_a_tighter_server_limit_is_adopted_then_forgotten():
    """Local 100/s; the server says 10 per second: the key's rule becomes 10/s minus the
    headroom (0.25 s of 10/s: 2.5 requests) until a response says nothing."""
    fields = [("RateLimit-Policy", '"p";q=10;w=1'), ("RateLimit", '"p";r=9;t=1')]
    app = ScriptedApp([(200, fields), (502, [])])
    transport = RateLimitedTransport("100/second", transport=httpx.WSGITransport(app=app))
    with httpx.Client(transport=transport, base_url="http://api.test") as c:
        c.get("/")
        assert transport.registry.rule_for("api.test:80") == Rule(7.5, 10.0)
        assert c.get("/").status_code == 502  # a proxy's error without fields: kept
        assert transport.registry.rule_for("api.test:80") == Rule(7.5, 10.0)
        c.get("/")  # no fields: the server no longer says it
        assert transport.registry.rule_for("api.test:80") == Rule(100, 100.0)


def test_follow_server_false_only_paces_and_never_retries():
    app = ScriptedApp([TOO_MANY])
    with client(app, follow_server=False) as c:
        assert c.get("/").status_code == 429
    assert len(app.seen) == 1


def test_the_local_wait_above_max_wait_raises():
    app = ScriptedApp([])
    with client(app, limit=Rule(1, 0.01), max_wait=0.5) as c:
        c.get("/")
        with pytest.raises(RateLimitExceeded):
            c.get("/")
    assert len(app.seen) == 1


def test_a_key_function_gives_each_api_key_its_budget():
    app = ScriptedApp([])
    registry = BucketRegistry(Rule(1, 0.01))
    with client(app, limit=registry, key=lambda r: r.headers["authorization"], max_wait=0) as c:
        c.get("/", headers={"authorization": "a"})
        c.get("/", headers={"authorization": "b"})
        with pytest.raises(RateLimitExceeded):
            c.get("/", headers={"authorization": "a"})
    assert registry.tokens("a") < 1
    assert registry.tokens("b") < 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_retries": -1}, "'max_retries' must be an int >= 0, got -1"),
        ({"max_wait": float("nan")}, "'max_wait' must be a finite number >= 0, got nan"),
        ({"headroom": -1}, "'headroom' must be a finite number >= 0, got -1"),
        ({"limit": Rule(0.5, 1.0)}, "'limit' must let one request pass: capacity >= 1"),
    ],
)
def test_bad_options_name_the_field(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        RateLimitedTransport(options.pop("limit", "1/second"), **options)


def test_follow_server_needs_one_limit():
    several = BucketRegistry({"burst": Rule(5, 5.0), "daily": Rule.per(1000, 86400)})
    with pytest.raises(ValueError, match="'follow_server' needs a registry of one limit"):
        RateLimitedTransport(several)
    RateLimitedTransport(several, follow_server=False)  # pacing alone works with several


def test_a_pause_is_charged_as_debt_once_not_on_top_of_a_queue():
    """The pause makes the next request wait exactly `pause`; a queue already longer is left."""
    clock = ManualClock()
    follower = Follower(BucketRegistry(Rule(10, 10.0), clock=clock))
    registry = follower.registry
    follower.apply("k", follower.plan("k", 429, [("Retry-After", "2")], 0.0))
    assert registry.peek("k").retry_after == pytest.approx(2.0)
    follower.apply("k", follower.plan("k", 429, [("Retry-After", "1")], 0.0))
    assert registry.peek("k").retry_after == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("now", "plan", "expected"),
    [
        (Decision(True, 0.0, 0.5, 1.5, 10), Plan(None, 1.0, None, None), 5.0),  # 0.5 s queued
        (Decision(True, 4.0, 0.0, 0.5, 10), Plan(None, 1.0, None, None), 14.0),  # 5 tokens
        (Decision(True, 0.0, 2.0, 3.0, 10), Plan(None, 1.0, None, None), 0.0),  # queue longer
        (Decision(True, 7.0, 0.0, 0.2, 10), Plan(None, 0.0, 3.0, None), 5.0),  # 8 held, r=3
        (Decision(True, 0.0, 0.3, 1.3, 10), Plan(None, 0.0, 0.0, None), 0.0),  # in debt: r=0 ok
    ],
)
def test_owed_holds_the_key_to_the_server_s_remaining_and_its_pause(now, plan, expected):
    assert owed(now, 10.0, plan) == pytest.approx(expected)


def test_the_server_s_remaining_caps_a_fresh_budget():
    """A budget refilled at the looser local rate is brought down to what the server has."""
    follower = Follower(BucketRegistry(Rule(100, 100.0), clock=ManualClock()))
    fields = [("RateLimit-Policy", '"p";q=20;w=1'), ("RateLimit", '"p";r=12;t=1')]
    follower.apply("k", follower.plan("k", 200, fields, 0.0))
    assert follower.registry.rule_for("k") == Rule(15, 20.0)
    assert follower.registry.tokens("k") == pytest.approx(12.0)


def test_async_transport_retries_and_a_cancelled_waiter_gives_its_token_back():
    app = ScriptedApp([TOO_MANY])

    async def asgi(scope, receive, send):
        status, headers = app.script.pop(0) if app.script else (200, [])
        app.seen.append((scope["method"], time.monotonic()))
        raw = [(k.encode(), v.encode()) for k, v in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"ok"})

    registry = BucketRegistry(Rule(2, 0.5))
    transport = AsyncRateLimitedTransport(registry, transport=httpx.ASGITransport(app=asgi))

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as c:
            assert (await c.get("/")).status_code == 200  # two tokens: the try and its retry
            waiter = asyncio.ensure_future(c.get("/"))  # waits ~2 s for the next token
            await asyncio.sleep(0.1)
            assert not waiter.done()
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter

    asyncio.run(main())
    assert len(app.seen) == 2
    # the cancelled waiter's token is back: the next one is due as if it never asked
    assert registry.peek("api.test:80").retry_after == pytest.approx(1.8, abs=0.15)


@pytest.fixture
def wsgi_server() -> Iterator[Tuple[str, ScriptedApp]]:
    app = ScriptedApp([])

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_requests_adapter_follows_the_same_rules(wsgi_server):
    url, app = wsgi_server
    app.script = [TOO_MANY, (200, []), TOO_MANY, TOO_MANY, TOO_MANY]
    adapter = RateLimitedAdapter("100/second", max_retries=1)
    with requests.Session() as session:
        session.mount("http://", adapter)
        assert session.get(url).status_code == 200  # retried once
        assert session.post(url).status_code == 429  # not idempotent
        last = session.get(url)
    assert last.status_code == 429  # two 429s in a row: one retry, then as it came
    assert last.headers["retry-after-ms"] == "150"
    assert [method for method, _ in app.seen] == ["GET", "GET", "POST", "GET", "GET"]
    assert app.seen[1][1] - app.seen[0][1] >= 0.15


def test_a_waiter_that_wakes_late_takes_a_new_turn(monkeypatch):
    """A stalled process wakes its waiters late: the token reserved for the missed turn is
    given back and a new one taken at the real send time, so a stall never turns into a
    burst the server's bucket (full all along) cannot absorb."""
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda seconds: real_sleep(seconds + 0.4))  # a stall
    app = ScriptedApp([])
    registry = BucketRegistry(Rule(1, 10.0))
    with client(app, limit=registry, headroom=0.1) as c:
        c.get("/")
        c.get("/")  # reserved 0.1 s ahead, woken 0.4 s late: retaken at the real time
        assert registry.tokens("api.test:80") < 0.5  # the old code left it full again
    assert app.seen[1][1] - app.seen[0][1] >= 0.5
