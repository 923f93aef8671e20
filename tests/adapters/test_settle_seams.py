"""The middlewares' ``settle`` where it meets other features (issue 22): shadow limits, a
WSGI app starting its response again with ``exc_info``, a ``settle`` value that is no cost."""

from __future__ import annotations

import io
import logging
import math
import sys

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.wsgi import RateLimitMiddleware as WSGIMiddleware

KINDS = ["asgi", "wsgi"]


def usage(request, status, headers):
    return float(headers["x-usage"]) if "x-usage" in headers else None


@pytest.mark.parametrize("kind", KINDS)
def test_a_refund_from_the_response_spares_a_shadow_bucket_it_never_charged(make, kind):
    registry = BucketRegistry(
        {"burst": Rule(10, 0), "daily": Rule(2, 0)}, shadow={"daily"}, clock=ManualClock()
    )
    harness = make(registry=registry, settle=usage, cost=1)
    harness.app_headers = [("X-Usage", "1")]
    assert [harness.request().status for _ in range(2)] == [200, 200]  # daily spent
    harness.app_headers = [("X-Usage", "0")]
    assert harness.request().status == 200  # burst charged 1, then refunded; daily untouched
    registry.set_shadow("daily", False)
    assert harness.request().status == 429  # daily's 2 tokens were spent and stay spent


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("said", [-1.0, math.nan, math.inf, -math.inf, "12", True])
def test_a_settle_value_that_is_no_cost_is_logged_and_the_response_delivered(
    make, kind, said, caplog
):
    harness = make(settle=lambda request, status, headers: said, cost=1)
    with caplog.at_level(logging.WARNING, logger="tokenbucket"):
        result = harness.request()
    assert (result.status, result.body) == (200, b"app")
    assert harness.registry.tokens("203.0.113.7") == 2  # the admission's cost stays
    assert "'settle'" in caplog.text
    assert repr(said) in caplog.text


def test_a_wsgi_app_starting_again_with_exc_info_settles_once():
    """PEP 3333: an app may call start_response again with exc_info before any body is sent
    (its error page replaces the response); the cost is settled once, from the first."""
    registry = BucketRegistry(Rule(100, 0), clock=ManualClock())

    def app(environ, start_response):
        start_response("200 OK", [("X-Usage", "30")])
        try:
            raise RuntimeError("the app failed after starting")
        except RuntimeError:
            start_response("500 Internal Server Error", [("X-Usage", "30")], sys.exc_info())
        return [b"error page"]

    middleware = WSGIMiddleware(app, registry=registry, settle=usage, cost=10)
    statuses = []

    def start_response(status, headers, exc_info=None):
        statuses.append(status)
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = middleware(environ, start_response)
    assert b"".join(body) == b"error page"
    body.close()
    assert statuses == ["200 OK", "500 Internal Server Error"]
    assert registry.tokens("203.0.113.7") == 70  # 10 at admission, 20 more once


def test_a_wsgi_app_starting_again_settles_once_at_the_end():
    registry = BucketRegistry(Rule(100, 0), clock=ManualClock())

    def app(environ, start_response):
        start_response("200 OK", [("X-Usage", "30")])
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            start_response("500 Internal Server Error", [("X-Usage", "50")], sys.exc_info())
        return [b"error page"]

    middleware = WSGIMiddleware(app, registry=registry, settle=usage, settle_at="end", cost=10)
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }
    body = middleware(environ, lambda status, headers, exc_info=None: None)
    b"".join(body)
    body.close()
    assert registry.tokens("203.0.113.7") == 50  # the response sent (the error page) said 50
