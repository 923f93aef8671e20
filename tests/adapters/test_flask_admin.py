"""Flask: the admin blueprint through Flask's test client, on a real app."""

from __future__ import annotations

import logging

import pytest

flask = pytest.importorskip("flask")

from flask import Blueprint, Flask  # noqa: E402

from tokenbucket import ManualClock, MemoryStore  # noqa: E402
from tokenbucket.flask import Limiter  # noqa: E402

TOKEN = "s3cret-token-for-the-admin-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIENT = "127.0.0.1"  # Flask's test client's REMOTE_ADDR


def make_app(**limiter_options):
    limiter = Limiter(store=MemoryStore(clock=ManualClock()), **limiter_options)
    app = Flask(__name__)
    limiter.init_app(app)

    @app.post("/login")
    @limiter.limit("2/minute")
    def login():
        return "login"

    api = Blueprint("api", __name__, url_prefix="/api")

    @api.get("/items")
    def items():
        return "items"

    limiter.limit("1/minute")(api)
    app.register_blueprint(api)
    app.register_blueprint(limiter.admin_blueprint(TOKEN), url_prefix="/ratelimit")
    return app.test_client()


URL = "/ratelimit/admin/update-rule"


def test_an_authorised_change_applies_to_the_views_buckets():
    client = make_app()
    body = {"client_id": CLIENT, "route": "login", "capacity": 4, "refill_rate": 1}
    answer = client.post(URL, json=body, headers=AUTH)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.json["override"] is True
    assert answer.json["capacity"] == 4
    statuses = [client.post("/login").status_code for _ in range(5)]
    assert statuses == [200] * 4 + [429]  # the override (4), not the rule (2)
    blueprint = {"client_id": CLIENT, "route": "api.items", "capacity": 2}
    assert client.post(URL, json=blueprint, headers=AUTH).status_code == 200
    assert [client.get("/api/items").status_code for _ in range(3)] == [200, 200, 429]
    read = client.get(URL, query_string={"client_id": CLIENT, "route": "login"}, headers=AUTH)
    assert read.status_code == 200
    assert read.json["tokens"] == 0


def test_unauthorised_is_401_counted_and_changes_nothing():
    client = make_app(default="3/minute")
    body = {"client_id": CLIENT, "route": "login", "capacity": 50}
    missing = client.post(URL, json=body)
    assert missing.status_code == 401
    assert missing.json == {"error": "missing bearer token"}
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = client.post(URL, json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    assert client.post(URL, json=body).status_code == 401
    assert client.post(URL, json=body).status_code == 429  # the default's bucket is empty
    assert [client.post("/login").status_code for _ in range(3)] == [200, 200, 429]


def test_bad_body_is_400_naming_the_field_and_nothing_half_applied(caplog):
    client = make_app()
    body = {"client_id": CLIENT, "route": "login", "capacity": 9, "refill_rate": "fast"}
    with caplog.at_level(logging.DEBUG, logger="tokenbucket.admin"):
        answer = client.post(URL, json=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.headers["Content-Type"] == "application/json"
    assert "refill_rate" in answer.json["error"]
    assert any("rejected (400)" in record.getMessage() for record in caplog.records)
    unknown = client.post(
        URL, json={"client_id": CLIENT, "route": "nope", "capacity": 3}, headers=AUTH
    )
    assert unknown.status_code == 400
    assert "'route'" in unknown.json["error"]
    assert "login" in unknown.json["error"]
    bad_json = client.post(URL, data=b"{", headers={**AUTH, "Content-Type": "application/json"})
    assert bad_json.status_code == 400
    assert [client.post("/login").status_code for _ in range(3)] == [200, 200, 429]
    put = client.put(URL, headers=AUTH)
    assert put.status_code == 405
    assert put.headers["Allow"] == "GET, POST, DELETE"


def test_a_change_is_audited(caplog):
    client = make_app()
    body = {"client_id": "203.0.113.7", "route": "login", "capacity": 9}
    with caplog.at_level(logging.INFO, logger="tokenbucket.admin"):
        assert client.post(URL, json=body, headers=AUTH).status_code == 200
    (record,) = [r for r in caplog.records if r.name == "tokenbucket.admin"]
    assert "admin update of client '203.0.113.7' on route 'login'" in record.getMessage()


def test_the_blueprint_needs_a_valid_token():
    with pytest.raises(ValueError, match="admin_token"):
        Limiter().admin_blueprint("has space")


def test_a_shared_limit_is_addressed_by_its_name():
    limiter = Limiter(store=MemoryStore(clock=ManualClock()))
    app = Flask(__name__)
    limiter.init_app(app)
    shared = limiter.limit("2/minute", name="search", shared=True)

    @app.get("/a")
    @shared
    def a():
        return "a"

    @app.get("/b")
    @shared
    def b():
        return "b"

    app.register_blueprint(limiter.admin_blueprint(TOKEN))
    client = app.test_client()
    body = {"client_id": CLIENT, "route": "shared:search", "capacity": 3}
    assert client.post("/admin/update-rule", json=body, headers=AUTH).status_code == 200
    codes = [client.get(path).status_code for path in ("/a", "/b", "/a", "/b")]
    assert codes == [200, 200, 200, 429]  # one bucket of 3 for both views
