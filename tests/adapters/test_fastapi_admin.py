"""FastAPI: the admin router and the 429 in /openapi.json, through TestClient on real apps."""

from __future__ import annotations

import logging

import pytest

fastapi = pytest.importorskip("fastapi")

from fastapi import APIRouter, Depends, FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from tokenbucket import BucketRegistry, ManualClock  # noqa: E402
from tokenbucket.fastapi import RateLimit, admin_router, document  # noqa: E402

TOKEN = "s3cret-token-for-the-admin-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "GET /search"


def make_app(limit, **router):
    app = FastAPI()

    @app.get("/search", dependencies=[Depends(limit)])
    def search():
        return {"ok": True}

    app.include_router(admin_router(limit, token=TOKEN), **router)
    return app


def test_an_authorised_change_applies_to_the_routes_buckets():
    limit = RateLimit(BucketRegistry("2/minute", clock=ManualClock()))
    client = TestClient(make_app(limit, prefix="/ratelimit"))
    body = {"client_id": "testclient", "route": ROUTE, "capacity": 5, "refill_rate": 1}
    answer = client.post("/ratelimit/admin/update-rule", json=body, headers=AUTH)
    assert answer.status_code == 200, answer.text
    assert answer.json()["capacity"] == 5
    assert answer.json()["override"] is True
    assert answer.json()["route"] == ROUTE
    statuses = [client.get("/search").status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]  # the override (5), not the rule (2)
    read = client.get(
        "/ratelimit/admin/update-rule",
        params={"client_id": "testclient", "route": ROUTE},
        headers=AUTH,
    )
    assert read.status_code == 200
    assert read.json()["tokens"] == 0


def test_unauthorised_is_401_or_403_counted_and_changes_nothing():
    limit = RateLimit(BucketRegistry("3/minute", clock=ManualClock()))
    client = TestClient(make_app(limit))
    body = {"client_id": "testclient", "route": ROUTE, "capacity": 50}
    missing = client.post("/admin/update-rule", json=body)
    assert missing.status_code == 401
    assert missing.json() == {"error": "missing bearer token"}
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = client.post("/admin/update-rule", json=body, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 403
    third = client.post("/admin/update-rule", json=body)
    assert third.status_code == 401
    assert client.post("/admin/update-rule", json=body).status_code == 429  # guessing is limited
    statuses = [client.get("/search").status_code for _ in range(4)]
    assert statuses == [200] * 3 + [429]  # the rule, not the refused 50


def test_bad_body_is_400_naming_the_field_and_nothing_half_applied(caplog):
    limit = RateLimit(BucketRegistry("2/minute", clock=ManualClock()))
    client = TestClient(make_app(limit))
    body = {"client_id": "testclient", "route": ROUTE, "capacity": 5, "refill_rate": -1}
    with caplog.at_level(logging.DEBUG, logger="tokenbucket.admin"):
        answer = client.post("/admin/update-rule", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert "refill_rate" in answer.json()["error"]
    assert any("rejected (400)" in record.getMessage() for record in caplog.records)
    unknown = client.post(
        "/admin/update-rule",
        json={"client_id": "x", "route": "GET /nope", "capacity": 5},
        headers=AUTH,
    )
    assert unknown.status_code == 400
    assert "'route'" in unknown.json()["error"]
    assert "GET /search" in unknown.json()["error"]
    statuses = [client.get("/search").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # the capacity of the refused body was not applied
    assert client.put("/admin/update-rule", headers=AUTH).status_code == 405


def test_a_change_is_audited(caplog):
    limit = RateLimit(BucketRegistry("2/minute", clock=ManualClock()))
    client = TestClient(make_app(limit))
    body = {"client_id": "203.0.113.7", "route": ROUTE, "capacity": 9}
    with caplog.at_level(logging.INFO, logger="tokenbucket.admin"):
        assert client.post("/admin/update-rule", json=body, headers=AUTH).status_code == 200
    (record,) = [r for r in caplog.records if r.name == "tokenbucket.admin"]
    assert "admin update of client '203.0.113.7'" in record.getMessage()


def test_admin_router_checks_its_arguments():
    with pytest.raises(TypeError, match="'limit' must be a RateLimit"):
        admin_router(BucketRegistry("1/second"), token=TOKEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="admin_token"):
        admin_router(RateLimit("1/second"), token="")


def _openapi_429(app, path):
    schema = TestClient(app).get("/openapi.json").json()
    return schema["paths"][path]["get"]["responses"].get("429")


def test_document_lists_the_429_for_route_router_and_app_dependencies():
    limit = RateLimit("5/second")
    app = FastAPI(dependencies=[Depends(RateLimit("100/minute"))])
    document(app)  # before the routes: they are read when the schema is built

    @app.get("/route", dependencies=[Depends(limit)])
    def on_route():
        return {}

    router = APIRouter(dependencies=[Depends(limit)])

    @router.get("/router")
    def on_router():
        return {}

    app.include_router(router)
    plain = FastAPI()
    document(plain)

    @plain.get("/free")
    def free():
        return {}

    for path in ("/route", "/router"):
        documented = _openapi_429(app, path)
        assert documented is not None, path
        assert documented["description"].startswith("Too Many Requests")
        assert set(documented["headers"]) == {"Retry-After", "RateLimit", "RateLimit-Policy"}
    assert _openapi_429(plain, "/free") is None  # no limit, no 429


def test_document_covers_app_level_dependencies_alone_and_keeps_a_routes_own_429():
    app = FastAPI(dependencies=[Depends(RateLimit("1/second"))])

    @app.get("/a")
    def a():
        return {}

    @app.get("/b", responses={429: {"description": "mine"}})
    def b():
        return {}

    document(app)
    assert _openapi_429(app, "/a")["description"].startswith("Too Many Requests")
    assert _openapi_429(app, "/b") == {"description": "mine"}


def test_without_document_no_429_is_listed():
    app = FastAPI()

    @app.get("/a", dependencies=[Depends(RateLimit("1/second"))])
    def a():
        return {}

    assert _openapi_429(app, "/a") is None


def test_admin_addresses_a_route_of_an_included_router():
    limit = RateLimit(BucketRegistry("1/minute", clock=ManualClock()))
    app = FastAPI()
    api = APIRouter(prefix="/api", dependencies=[Depends(limit)])

    @api.get("/items/{item}")
    def item(item: int):
        return {"item": item}

    app.include_router(api)
    app.include_router(admin_router(limit, token=TOKEN), prefix="/ops")
    client = TestClient(app)
    body = {"client_id": "testclient", "route": "GET /api/items/{item}", "capacity": 3}
    assert client.post("/ops/admin/update-rule", json=body, headers=AUTH).status_code == 200
    statuses = [client.get(f"/api/items/{n}").status_code for n in range(4)]
    assert statuses == [200, 200, 200, 429]  # one route, whatever the item


def test_a_shared_limit_is_addressed_without_a_route():
    limit = RateLimit(BucketRegistry("1/minute", clock=ManualClock()), shared=True)
    app = FastAPI(dependencies=[Depends(limit)])

    @app.get("/a")
    def a():
        return {}

    @app.get("/b")
    def b():
        return {}

    app.include_router(admin_router(limit, token=TOKEN))
    client = TestClient(app)
    body = {"client_id": "testclient", "capacity": 3}
    answer = client.post("/admin/update-rule", json=body, headers=AUTH)
    assert answer.status_code == 200
    assert answer.json()["route"] is None
    codes = [client.get(path).status_code for path in ("/a", "/b", "/a", "/b")]
    assert codes == [200, 200, 200, 429]
