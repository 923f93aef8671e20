"""The WSGI middleware's ``in_flight=``: a slot is held until the server closes the response
(after the last chunk, an error while iterating, or a client gone), or the app raises."""

from __future__ import annotations

import wsgiref.util

import pytest

from tokenbucket import BucketRegistry, InFlightLimit, Rule
from tokenbucket.wsgi import RateLimitMiddleware as WsgiMiddleware

IP = "203.0.113.7"


def wsgi_call(middleware, close=True, consume=True):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": IP}
    wsgiref.util.setup_testing_defaults(environ)
    environ["REMOTE_ADDR"] = IP
    statuses = []
    result = middleware(environ, lambda status, headers, exc_info=None: statuses.append(status))
    body = []
    try:
        if consume:
            body = list(result)
    finally:
        if close and hasattr(result, "close"):
            result.close()
    return statuses, body


def test_wsgi_slot_held_until_the_response_is_closed():
    limit = InFlightLimit(1)
    closed = []

    class Body:
        def __iter__(self):
            yield b"a"
            yield b"b"

        def close(self):
            closed.append(limit.in_flight(IP))

    def app(environ, start_response):
        start_response("200 OK", [])
        return Body()

    middleware = WsgiMiddleware(app, registry=BucketRegistry(Rule(5, 1)), in_flight=limit)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "REMOTE_ADDR": IP}
    wsgiref.util.setup_testing_defaults(environ)
    environ["REMOTE_ADDR"] = IP
    result = middleware(environ, lambda *a: None)
    assert list(result) == [b"a", b"b"]
    assert limit.in_flight(IP) == 1  # iterated, not yet closed: still in progress
    assert wsgi_call(middleware)[0] == ["429 Too Many Requests"]
    result.close()
    assert closed == [1]  # the app's close ran first, with the slot held
    assert limit.in_flight(IP) == 0
    result.close()  # closing twice releases once
    assert wsgi_call(middleware)[0] == ["200 OK"]


def test_wsgi_released_when_the_app_raises_or_iteration_fails():
    limit = InFlightLimit(1)

    def raising(environ, start_response):
        raise RuntimeError("app failed")

    def failing(environ, start_response):
        start_response("200 OK", [])
        yield b"a"
        raise RuntimeError("stream failed")

    for app in (raising, failing):
        middleware = WsgiMiddleware(app, registry=BucketRegistry(Rule(5, 1)), in_flight=limit)
        with pytest.raises(RuntimeError):
            wsgi_call(middleware)
        assert limit.in_flight(IP) == 0


def test_wsgi_client_gone_before_the_end():
    """The server stops iterating and closes the response: the slot is released."""
    limit = InFlightLimit(1)

    def app(environ, start_response):
        start_response("200 OK", [])
        return iter([b"a"] * 100)

    middleware = WsgiMiddleware(app, registry=BucketRegistry(Rule(5, 1)), in_flight=limit)
    wsgi_call(middleware, consume=False)
    assert limit.in_flight(IP) == 0


def test_both_through_the_harness(make):
    """Through the harness (WSGI under wsgiref.validate), with a rule of 3: 3 pass, then 429."""
    harness = make(in_flight=InFlightLimit(2))
    assert [harness.request().status for _ in range(4)] == [200, 200, 200, 429]
