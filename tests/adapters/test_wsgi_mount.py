"""A WSGI app mounted under a prefix (issue 22): ``exempt``, ``routes``, the admin path and
the request view's path are the path within the app, ``PATH_INFO``, as the ASGI middleware
uses the path without ``root_path``; the two adapters agree. Failed before its fix."""

from __future__ import annotations

import json

from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.wsgi import RateLimitMiddleware

TOKEN = "s3cret-Token_123"
IP = "203.0.113.7"


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


def root(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"root"]


def test_a_mounted_app_matches_exempt_routes_and_admin_on_path_info():
    """Mounted at /api by werkzeug's DispatcherMiddleware (SCRIPT_NAME=/api, as gunicorn's
    SCRIPT_NAME does too): the app's own paths match, and the key sees the app's path."""
    seen = []
    registry = BucketRegistry(Rule(100, 0.001), clock=ManualClock())
    limited = RateLimitMiddleware(
        hello,
        registry=registry,
        routes={"/login": Rule(1, 0.001)},
        exempt=["/health"],
        admin_token=TOKEN,
        key=lambda request: seen.append(request.path) or IP,
    )
    client = Client(DispatcherMiddleware(root, {"/api": limited}))
    assert client.get("/api/login").status_code == 200
    assert client.get("/api/login").status_code == 429  # the route's rule
    for _ in range(3):
        response = client.get("/api/health")
        assert (response.status_code, "RateLimit" in response.headers) == (200, False)
    response = client.post(
        "/api/admin/update-rule",
        headers={"Authorization": f"Bearer {TOKEN}"},
        data=json.dumps({"client_id": IP, "capacity": 3, "route": "/login"}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.get_data()
    assert client.get("/api/items").status_code == 200
    assert seen[0] == "/login"
    assert seen[-1] == "/items"
    assert client.get("/login").get_data() == b"root"  # outside the mount: not the app


def test_a_path_under_the_mount_that_names_the_prefix_is_not_stripped_twice():
    """PATH_INFO is taken as it is: /api/api/login is the app's /api/login, not /login."""
    registry = BucketRegistry(Rule(100, 0.001), clock=ManualClock())
    limited = RateLimitMiddleware(hello, registry=registry, routes={"/login": Rule(1, 0.001)})
    client = Client(DispatcherMiddleware(root, {"/api": limited}))
    assert [client.get("/api/api/login").status_code for _ in range(2)] == [200, 200]
