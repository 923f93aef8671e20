"""Flask: the Limiter extension through Flask's test client."""

from __future__ import annotations

import pytest

flask = pytest.importorskip("flask")

from flask import Blueprint, Flask  # noqa: E402

from tokenbucket import BucketRegistry, ManualClock, MemoryStore  # noqa: E402
from tokenbucket.flask import Limiter, RateLimitExceeded  # noqa: E402
from tokenbucket.proxies import TrustedProxyKey  # noqa: E402


def make_app(**options):
    clock = ManualClock()
    limiter = Limiter(store=MemoryStore(clock=clock), **options)
    app = Flask(__name__)
    limiter.init_app(app)

    @app.get("/")
    def index():
        return "hello"

    @app.post("/login")
    @limiter.limit("2/minute")
    def login():
        return "login"

    @app.get("/health")
    @limiter.exempt
    def health():
        return "ok"

    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/items")
    def items():
        return "items"

    @api.get("/orders")
    def orders():
        return "orders"

    @api.get("/search")
    @limiter.limit("5/second;1/day")
    def search():
        return "search"

    limiter.limit("3/minute")(api)
    static = Blueprint("static", __name__, url_prefix="/static")

    @static.get("/logo")
    def logo():
        return "logo"

    limiter.exempt(static)
    app.register_blueprint(api)
    app.register_blueprint(static)
    return app, limiter, clock


def test_default_is_exact_and_sends_the_headers():
    app, _, _ = make_app(default="10/second")
    client = app.test_client()
    responses = [client.get("/") for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 10 + [429] * 2
    assert responses[0].headers["RateLimit-Policy"] == '"10/second";q=10;w=1'
    assert responses[0].headers["RateLimit"] == '"10/second";r=9;t=1'
    denied = responses[-1]
    assert denied.headers["Retry-After"] == "1"
    assert denied.headers.getlist("Retry-After") == ["1"]  # werkzeug's, not a second one
    assert denied.headers["RateLimit"] == '"10/second";r=0;t=1'
    assert b"Rate limit exceeded" in denied.data  # werkzeug's own 429 page


def test_errorhandler_429_and_after_request_run():
    app, _, _ = make_app(default="1/minute")
    ran = []

    @app.errorhandler(429)
    def too_many(error):
        assert isinstance(error, RateLimitExceeded)
        return {"policy": error.decision.policy, "retry": error.retry_after}, 429

    @app.after_request
    def stamp(response):
        ran.append(response.status_code)
        response.headers["X-Seen"] = "yes"
        return response

    client = app.test_client()
    client.get("/")
    denied = client.get("/")
    assert denied.status_code == 429
    assert denied.json == {"policy": "1/minute", "retry": 60}
    assert denied.headers["Retry-After"] == "60"
    assert denied.headers["RateLimit"] == '"1/minute";r=0;t=60'
    assert denied.headers["X-Seen"] == "yes"
    assert ran == [200, 429]


def test_views_blueprints_and_exemptions():
    app, _, _ = make_app(default="100/minute")
    client = app.test_client()
    assert [client.post("/login").status_code for _ in range(3)] == [200, 200, 429]
    assert all(client.get("/health").status_code == 200 for _ in range(150))
    assert "RateLimit" not in client.get("/health").headers
    # The blueprint's limit, per view: /items and /orders have three each.
    assert [client.get("/api/items").status_code for _ in range(4)] == [200, 200, 200, 429]
    assert [client.get("/api/orders").status_code for _ in range(4)] == [200, 200, 200, 429]
    # A view's own limit replaces its blueprint's: 1/day binds.
    search = [client.get("/api/search") for _ in range(2)]
    assert [r.status_code for r in search] == [200, 429]
    assert search[1].headers["RateLimit"].startswith('"1/day";r=0')
    assert all(client.get("/static/logo").status_code == 200 for _ in range(150))
    assert client.get("/missing").status_code == 404


def test_shared_limits_and_stacked_decorators():
    clock = ManualClock()
    limiter = Limiter(store=MemoryStore(clock=clock))
    app = Flask(__name__)
    limiter.init_app(app)
    shared = limiter.limit("2/minute", shared=True, name="writes")

    @app.post("/a")
    @shared
    def a():
        return "a"

    @app.post("/b")
    @shared
    @limiter.limit("100/day")
    def b():
        return "b"

    client = app.test_client()
    codes = [client.post(path).status_code for path in ("/a", "/b", "/a")]
    assert codes == [200, 200, 429]
    both = client.post("/b")
    assert both.status_code == 429
    assert both.headers.getlist("RateLimit")[-1] == '"writes";r=0;t=30'


def test_a_registry_and_trusted_proxies():
    registry = BucketRegistry("1/minute", clock=ManualClock())
    app, _, _ = make_app(default=registry, key=TrustedProxyKey(["127.0.0.0/8"]))
    client = app.test_client()
    one = client.get("/", headers={"X-Forwarded-For": "198.51.100.1"})
    two = client.get("/", headers={"X-Forwarded-For": "198.51.100.2"})
    again = client.get("/", headers={"X-Forwarded-For": "198.51.100.1"})
    assert (one.status_code, two.status_code, again.status_code) == (200, 200, 429)
    assert registry.tokens("index\x00198.51.100.1") == 0


def test_the_app_sets_its_own_fields():
    app, _, _ = make_app(default="5/second")

    @app.get("/own")
    def own():
        return "own", 200, {"RateLimit": "mine"}

    response = app.test_client().get("/own")
    assert response.headers.getlist("RateLimit") == ["mine"]
    assert response.headers["RateLimit-Policy"] == '"5/second";q=5;w=1'


def test_bad_arguments():
    limiter = Limiter()
    with pytest.raises(TypeError, match=r"Rule\.parse"):
        limiter.limit(5)
    with pytest.raises(TypeError, match="join rate strings with ';'"):
        limiter.limit(["5/minute", "1/day"])
    with pytest.raises(TypeError, match="decorates views or blueprints"):
        limiter.limit("5/s")(42)
    with pytest.raises(TypeError, match="'shared' must be a bool"):
        limiter.limit("5/s", shared=1)


def test_stacked_limits_on_one_view_count_in_buckets_of_their_own():
    # Regression: both limits counted in one bucket key, so each request took two tokens.
    limiter = Limiter(store=MemoryStore(clock=ManualClock()))
    app = Flask(__name__)
    limiter.init_app(app)

    @app.get("/")
    @limiter.limit("3/minute")
    @limiter.limit("5/hour")
    def view():
        return "ok"

    client = app.test_client()
    responses = [client.get("/") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[0].headers.getlist("RateLimit") == [
        '"5/hour";r=4;t=720',
        '"3/minute";r=2;t=20',
    ]
