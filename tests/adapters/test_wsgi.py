"""WSGI-only behaviour: Flask in-process, PEP 3333 details, async stores refused."""

from __future__ import annotations

import io
import json
import sys
import wsgiref.util
import wsgiref.validate

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket.wsgi import RateLimitMiddleware

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"


def call(app, **environ):
    """Call ``app`` through wsgiref.validate; return (status, headers, body)."""
    base = {"SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "", "REMOTE_ADDR": IP}
    base["wsgi.input"] = io.BytesIO()
    base.update(environ)
    wsgiref.util.setup_testing_defaults(base)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    result = wsgiref.validate.validator(app)(base, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()
    return captured["status"], dict(captured["headers"]), body


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


class TestFlask:
    def make_app(self, **options):
        from flask import Flask, request

        app = Flask(__name__)

        @app.route("/")
        def index():
            return {"client": request.remote_addr}

        registry = BucketRegistry(Rule(2, 1.0), clock=ManualClock())
        app.wsgi_app = RateLimitMiddleware(app.wsgi_app, registry=registry, **options)
        return app, registry

    def test_flask_test_client(self):
        """Flask behind the middleware: two 200s with headers, then 429."""
        app, registry = self.make_app()
        client = app.test_client()
        responses = [client.get("/", environ_base={"REMOTE_ADDR": IP}) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 429]
        assert responses[0].get_json() == {"client": IP}
        assert responses[0].headers["RateLimit"] == '"default";r=1;t=1'
        assert responses[2].headers["Retry-After"] == "1"
        assert responses[2].get_json()["retry_after"] == 1
        assert registry.tokens(IP) == 0.0

    def test_flask_admin_through_httpx_wsgi_transport(self):
        """httpx.WSGITransport drives the admin API of a Flask app."""
        app, registry = self.make_app(admin_token=TOKEN)
        transport = httpx.WSGITransport(app=app, remote_addr=IP)
        with httpx.Client(transport=transport, base_url="http://testserver") as client:
            assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
            update = client.post(
                "/admin/update-rule",
                json={"client_id": IP, "capacity": 4, "refill_rate": 2.0},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert update.status_code == 200
            assert update.json()["tokens"] == 2.0
            assert [client.get("/").status_code for _ in range(3)] == [200, 200, 429]
        assert registry.rule_for(IP) == Rule(4, 2.0)


class TestPep3333:
    def test_async_store_is_refused(self):
        """A registry on an async store cannot serve WSGI: TypeError at construction."""

        class AsyncStore:
            def __init__(self):
                self.inner = MemoryStore()

            async def take(self, key, amount, default, /):
                return self.inner.take(key, amount, default)

        registry = BucketRegistry(Rule(1, 1), store=AsyncStore())
        with pytest.raises(TypeError, match=r"^'registry' uses an async store \(.*\), which WSGI"):
            RateLimitMiddleware(hello, registry=registry)

    def test_exc_info_is_passed_on(self):
        """An app that replaces its status with exc_info still gets the fields added."""

        def failing(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            try:
                raise RuntimeError("boom")
            except RuntimeError:
                start_response(
                    "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
                )
            return [b"error"]

        app = RateLimitMiddleware(failing, registry=BucketRegistry(Rule(2, 1.0)))
        status, headers, body = call(app)
        assert status == "500 Internal Server Error"
        assert headers["RateLimit-Policy"] == '"default";q=2;w=2'
        assert body == b"error"

    def test_paths_are_path_info_without_script_name(self):
        """Paths are PATH_INFO (the path within the app), as ASGI's are without root_path:
        exempt and admin match them (see test_wsgi_mount.py for a mounted app)."""
        seen = []
        registry = BucketRegistry(Rule(1, 1.0), clock=ManualClock())
        app = RateLimitMiddleware(
            hello,
            registry=registry,
            exempt=["/health"],
            key=lambda r: seen.append(r.path) or "k",
        )
        assert call(app, SCRIPT_NAME="/api", PATH_INFO="/health")[0] == "200 OK"
        assert registry.tokens("k") == 1.0
        call(app, SCRIPT_NAME="/api", PATH_INFO="/items")
        assert seen == ["/items"]

    def test_non_ascii_path_is_decoded_like_asgi(self):
        """PATH_INFO carries UTF-8 bytes as latin-1; the view shows the decoded path."""
        views = []
        app = RateLimitMiddleware(
            hello, registry=BucketRegistry(Rule(5, 1.0)), exempt=lambda r: views.append(r)
        )
        call(app, PATH_INFO="/café".encode().decode("latin-1"))
        assert views[0].path == "/café"

    def test_path_outside_latin_1_is_taken_as_decoded_text(self):
        """A server that hands over PATH_INFO already decoded (characters past U+00FF, which
        latin-1 cannot hold) gets the app's answer; the view shows that text as it is."""
        views = []
        registry = BucketRegistry(Rule(5, 1.0), clock=ManualClock())
        app = RateLimitMiddleware(hello, registry=registry, key=lambda r: views.append(r) or "k")
        status, headers, body = call(app, PATH_INFO="/\u20acuro/\u4e2d")
        assert (status, body) == ("200 OK", b"hello")
        assert headers["RateLimit"] == '"default";r=4;t=1'
        assert views[0].path == "/\u20acuro/\u4e2d"

    @given(
        script=st.sampled_from(["", "/api", "/caf\u00c3\u00a9", "/\u20ac"]),
        path=st.text(max_size=30).map(lambda text: "/" + text),
    )
    def test_any_path_gets_the_apps_answer_or_a_4xx(self, script, path):
        """Hostile SCRIPT_NAME/PATH_INFO (any code point, lone surrogates, latin-1 or not)
        through wsgiref.validate: the app's answer or a 4xx, never an exception."""
        registry = BucketRegistry(Rule(5, 1.0), clock=ManualClock())
        for options in (
            {},
            {"admin_token": TOKEN},
            {"routes": {"/login": Rule(1, 1.0), "/api/*": Rule(2, 1.0)}, "exempt": ["/s/*"]},
            {"key": lambda r: r.path, "exempt": lambda r: r.path.endswith("x")},
        ):
            app = RateLimitMiddleware(hello, registry=registry, **options)
            status, _, body = call(app, SCRIPT_NAME=script, PATH_INFO=path)
            assert (status, body) == ("200 OK", b"hello") or status.startswith("4"), status

    def test_headers_view_includes_content_fields(self):
        """CONTENT_TYPE and CONTENT_LENGTH appear as content-type and content-length."""
        views = []
        app = RateLimitMiddleware(
            hello, registry=BucketRegistry(Rule(5, 1.0)), exempt=lambda r: views.append(r)
        )
        call(
            app,
            REQUEST_METHOD="POST",
            CONTENT_TYPE="application/json",
            CONTENT_LENGTH="2",
            HTTP_X_FORWARDED_FOR="1.2.3.4",
            **{"wsgi.input": io.BytesIO(b"{}")},
        )
        headers = views[0].headers
        assert headers["content-type"] == "application/json"
        assert headers["content-length"] == "2"
        assert headers["x-forwarded-for"] == "1.2.3.4"

    def test_terminated_input_without_length(self):
        """wsgi.input_terminated: a body without Content-Length is read up to max_body."""
        registry = BucketRegistry(Rule(5, 1.0))
        app = RateLimitMiddleware(hello, registry=registry, admin_token=TOKEN, max_body=64)
        auth = f"Bearer {TOKEN}"
        body = json.dumps({"client_id": "a", "capacity": 9}).encode()
        status, _, out = call(
            app,
            REQUEST_METHOD="POST",
            PATH_INFO="/admin/update-rule",
            HTTP_AUTHORIZATION=auth,
            **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True},
        )
        assert status == "200 OK"
        assert registry.rule_for("a") == Rule(9, 1.0)
        status, _, out = call(
            app,
            REQUEST_METHOD="POST",
            PATH_INFO="/admin/update-rule",
            HTTP_AUTHORIZATION=auth,
            **{"wsgi.input": io.BytesIO(b" " * 65 + body), "wsgi.input_terminated": True},
        )
        assert status in ("413 Content Too Large", "413 Request Entity Too Large")  # 3.13: RFC 9110
        assert json.loads(out) == {"error": "request body is larger than 64 bytes"}

    def test_body_shorter_than_content_length_changes_nothing(self):
        """A body that ends before CONTENT_LENGTH (the client left) is never acted on."""
        registry = BucketRegistry(Rule(5, 1.0))
        app = RateLimitMiddleware(hello, registry=registry, admin_token=TOKEN)
        body = json.dumps({"client_id": "a", "capacity": 9}).encode()
        status, _, out = call(
            app,
            REQUEST_METHOD="POST",
            PATH_INFO="/admin/update-rule",
            HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
            CONTENT_LENGTH=str(len(body) + 10),
            **{"wsgi.input": io.BytesIO(body)},
        )
        assert status == "400 Bad Request"
        assert json.loads(out) == {"error": "request body incomplete: the client disconnected"}
        assert registry.rule_for("a") == Rule(5, 1.0)

    def test_bad_content_length_is_400(self):
        """A CONTENT_LENGTH that is not a number is 400 (called directly: the validator
        refuses such an environ itself)."""
        app = RateLimitMiddleware(hello, registry=BucketRegistry(Rule(5, 1.0)), admin_token=TOKEN)
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/admin/update-rule",
            "CONTENT_LENGTH": "-3",
            "HTTP_AUTHORIZATION": f"Bearer {TOKEN}",
            "wsgi.input": io.BytesIO(b"{}"),
        }
        captured = {}
        body = b"".join(app(environ, lambda status, headers: captured.update(status=status)))
        assert captured["status"] == "400 Bad Request"
        assert json.loads(body) == {"error": "invalid Content-Length: '-3'"}


def test_policy_header_is_each_clients_own_under_threads():
    """Threads serving clients with different capacities never mix up RateLimit-Policy."""
    import threading

    registry = BucketRegistry(Rule(10**6, 0), clock=ManualClock())
    registry.update_rule("192.0.2.50", capacity=5 * 10**5)
    app = RateLimitMiddleware(hello, registry=registry)
    expected = {"192.0.2.10": '"default";q=1000000', "192.0.2.50": '"default";q=500000'}
    wrong = []
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work(client):
        for _ in range(300):
            headers = call(app, REMOTE_ADDR=client)[1]
            if headers["RateLimit-Policy"] != expected[client]:
                wrong.append(client)

    try:
        threads = [threading.Thread(target=work, args=(c,)) for c in list(expected) * 4]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert wrong == []
