"""The admin API's rule endpoints (list, default, export, import), against ASGI and WSGI."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbucket import Rule

TOKEN = "s3cret-Token_123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "/admin/update-rule"


@pytest.fixture
def admin(make):
    return lambda **options: make(admin_token=TOKEN, routes={"/login": Rule(2, 0.5)}, **options)


def call(h, method, endpoint, payload=None, query="", headers=AUTH):
    body = (
        b""
        if payload is None
        else (payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    )
    return h.request(method, f"{BASE}/{endpoint}", query=query, headers=headers, body=body)


def test_list_pages_through_client_ids_of_a_route(admin):
    h = admin()
    routes = h.middleware._options.routes
    for index in range(5):
        h.request(
            "POST",
            BASE,
            headers=AUTH,
            body=json.dumps(
                {"client_id": f"c\0{index}", "capacity": 10 + index, "route": "/login"}
            ).encode(),
        )
    h.registry.update_rule("plain", capacity=9)
    seen, cursor, pages = [], "", 0
    while True:
        result = call(h, "GET", "rules", query=f"route=/login&count=2&cursor={cursor}")
        assert result.status == 200, result.body
        body = result.json()
        assert body["route"] == "/login"
        seen += body["overrides"]
        pages += 1
        if body["cursor"] is None:
            break
        cursor = body["cursor"]
    assert pages == 3
    assert seen == [
        {"client_id": f"c\0{index}", "limit": "default", "capacity": 10 + index, "refill_rate": 0.5}
        for index in range(5)
    ]
    default = call(h, "GET", "rules").json()["overrides"]
    assert default == [
        {"client_id": "plain", "limit": "default", "capacity": 9, "refill_rate": 1.0}
    ]
    assert routes["/login"].registry.rule_for("c\00") == Rule(2, 0.5)  # raw key: not the client's


def test_change_and_read_the_default_of_a_route(admin):
    h = admin()
    result = call(h, "POST", "default", {"capacity": 7, "route": "/login"})
    assert result.status == 200, result.body
    assert result.json() == {
        "route": "/login",
        "limit": "default",
        "capacity": 7,
        "refill_rate": 0.5,
    }
    assert call(h, "GET", "default", query="route=/login").json() == {
        "route": "/login",
        "default": {"capacity": 7, "refill_rate": 0.5},
    }
    assert h.registry.default == Rule(3, 1.0)


def test_export_then_import_restores_everything(admin):
    h = admin()
    h.request(
        "POST", BASE, headers=AUTH, body=json.dumps({"client_id": "alice", "capacity": 50}).encode()
    )
    h.request(
        "POST",
        BASE,
        headers=AUTH,
        body=json.dumps({"client_id": "bob", "refill_rate": 0.0, "route": "/login"}).encode(),
    )
    call(h, "POST", "default", {"refill_rate": 2.0})
    exported = call(h, "GET", "export").json()
    assert exported == {
        "version": 1,
        "default": {"capacity": 3, "refill_rate": 2.0},
        "routes": {"/login": {"capacity": 2, "refill_rate": 0.5}},
        "overrides": [
            {
                "client_id": "alice",
                "route": None,
                "limit": "default",
                "capacity": 50,
                "refill_rate": 1.0,  # set before the default changed
            },
            {
                "client_id": "bob",
                "route": "/login",
                "limit": "default",
                "capacity": 2,
                "refill_rate": 0.0,
            },
        ],
    }
    fresh = admin()
    result = call(fresh, "POST", "import", exported)
    assert result.status == 200, result.body
    assert result.json()["imported"] == 2
    assert call(fresh, "GET", "export").json() == exported


@pytest.mark.parametrize(
    ("method", "endpoint", "payload", "query", "status"),
    [
        ("DELETE", "rules", None, "", 405),
        ("GET", "rules", None, "count=0", 400),
        ("GET", "rules", None, "count=abc", 400),
        ("GET", "rules", None, "bogus=1", 400),
        ("GET", "rules", None, "route=/nope", 400),
        ("GET", "rules", None, "cursor=zzz", 400),
        ("POST", "default", {"capacity": -1}, "", 400),
        ("POST", "default", {}, "", 400),
        ("POST", "default", {"capacity": 1, "x": 1}, "", 400),
        ("POST", "default", b"{nope", "", 400),
        ("POST", "import", {"version": 1}, "", 400),
        ("POST", "import", [], "", 400),
        ("GET", "import", None, "", 405),
    ],
)
def test_bad_requests_are_4xx_naming_the_problem(admin, method, endpoint, payload, query, status):
    h = admin()
    result = call(h, method, endpoint, payload, query)
    assert result.status == status, result.body
    assert result.json()["error"]


def test_endpoints_need_the_token(admin):
    h = admin()
    assert call(h, "GET", "export", headers={}).status == 401
    assert (
        call(h, "POST", "import", {"version": 1}, headers={"Authorization": "Bearer x"}).status
        == 403
    )


def test_import_has_its_own_body_limit(admin):
    h = admin(max_body=64, max_import_body=200)
    document = {"version": 1, "default": {"capacity": 3, "refill_rate": 1.0}, "overrides": []}
    assert call(h, "POST", "import", document).status == 200  # over 64 bytes, under 200
    document["overrides"] = [{"client_id": "x" * 200, "capacity": 1, "refill_rate": 1}]
    assert call(h, "POST", "import", document).status == 413


def test_an_import_with_one_bad_entry_changes_nothing(admin):
    h = admin()
    h.registry.update_rule("keep", capacity=5)
    before = call(h, "GET", "export").json()
    document = {
        **before,
        "default": {"capacity": 99, "refill_rate": 1.0},
        "overrides": [
            {"client_id": "new", "capacity": 1, "refill_rate": 1},
            {"client_id": "bad", "route": "/login", "capacity": 1, "refill_rate": -1},
        ],
    }
    result = call(h, "POST", "import", document)
    assert result.status == 400
    assert "overrides[1].refill_rate" in result.json()["error"]
    assert call(h, "GET", "export").json() == before


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=15,
)
ENTRY = st.dictionaries(
    st.sampled_from(["client_id", "route", "limit", "capacity", "refill_rate", "key"]),
    JSON | st.sampled_from(["/login", "default", "a", 1, 2.5]),
)
DOCUMENT = (
    st.fixed_dictionaries(
        {
            "version": st.sampled_from([1, 1, 1, 2]),
            "default": st.sampled_from([{"capacity": 3, "refill_rate": 1.0}]) | JSON,
        },
        optional={
            "routes": st.dictionaries(st.sampled_from(["/login", "/x"]), JSON, max_size=2),
            "overrides": st.lists(ENTRY, max_size=3) | JSON,
        },
    )
    | JSON
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(document=DOCUMENT)
def test_hostile_imports_never_5xx_and_never_half_apply(admin, document):
    h = admin()
    h.registry.update_rule("keep", capacity=5)
    before = call(h, "GET", "export").json()
    result = call(h, "POST", "import", json.dumps(document).encode())
    assert result.status in (200, 400), result.body
    if result.status == 400:
        assert call(h, "GET", "export").json() == before


# Issue 22 item 16: the rule endpoints agree with update-rule, and audit what they change.


@pytest.mark.parametrize(
    ("endpoint", "body", "named"),
    [
        ("default", b'{"capacity": 5, "capacity": 7}', "capacity"),
        ("default", b'{"capacity": 5, "route": "/login", "route": null}', "route"),
        (
            "import",
            b'{"version": 1, "default": {"capacity": 3, "refill_rate": 1, "capacity": 9}}',
            "capacity",
        ),
        (
            "import",
            b'{"version": 1, "default": {"capacity": 3, "refill_rate": 1}, "overrides": '
            b'[{"client_id": "a", "client_id": "b", "capacity": 1, "refill_rate": 1}]}',
            "client_id",
        ),
    ],
)
def test_repeated_fields_are_refused_as_by_update_rule(admin, endpoint, body, named):
    """Repeated JSON fields were accepted (the last won) by /default and /import, refused by
    update-rule: now a 400 naming the field everywhere, and nothing changes."""
    h = admin()
    before = call(h, "GET", "export").json()
    result = call(h, "POST", endpoint, body)
    assert result.status == 400, result.body
    assert result.json()["error"] == f"field {named!r} given more than once"
    assert call(h, "GET", "export").json() == before
    repeated = h.request("POST", BASE, headers=AUTH, body=b'{"client_id": "a", "client_id": "b"}')
    assert repeated.json()["error"] == "field 'client_id' given more than once"


@pytest.mark.parametrize("field", ["capacity", "refill_rate"])
def test_null_is_refused_by_default_as_by_update_rule(admin, field):
    """JSON null kept the value on /default and was a 400 on update-rule: a 400 on both."""
    h = admin()
    other = "refill_rate" if field == "capacity" else "capacity"
    for path in (f"{BASE}/default", BASE):
        payload = {field: None, other: 2}
        if path == BASE:
            payload["client_id"] = "alice"
        result = h.request("POST", path, headers=AUTH, body=json.dumps(payload).encode())
        assert result.status == 400, (path, result.body)
        assert result.json()["error"] == f"{field!r} must be a number, got None"
    assert h.registry.default == Rule(3, 1.0)


def test_a_default_capacity_below_the_cost_is_refused_naming_it(admin):
    """A default capacity below every request's cost refuses every request forever."""
    h = admin(cost=2)
    for endpoint, payload in [
        ("default", {"capacity": 1.5}),
        ("default", {"capacity": 1, "route": "/login"}),
        ("import", {"version": 1, "default": {"capacity": 1, "refill_rate": 1.0}}),
        (
            "import",
            {
                "version": 1,
                "default": {"capacity": 3, "refill_rate": 1.0},
                "routes": {"/login": {"capacity": 1.5, "refill_rate": 1.0}},
            },
        ),
    ]:
        result = call(h, "POST", endpoint, payload)
        assert result.status == 400, result.body
        assert "below the cost of a request (2)" in result.json()["error"], result.body
    assert h.registry.default == Rule(3, 1.0)
    assert call(h, "POST", "default", {"capacity": 2}).status == 200  # the cost itself: fine
    flexible = admin(cost=lambda view: 5)  # a cost function: no smallest cost known
    assert call(flexible, "POST", "default", {"capacity": 1}).status == 200


def _audit_fields(caplog, action):
    return [
        record.tokenbucket
        for record in caplog.records
        if record.name == "tokenbucket.admin" and record.tokenbucket.get("action") == action
    ]


def test_update_default_and_import_audit_before_and_after(admin, caplog):
    """The records of update-default and import lacked what the change replaced: they now
    carry before and after, enough to put everything back."""
    import logging

    caplog.set_level(logging.DEBUG, logger="tokenbucket.admin")
    h = admin()
    h.registry.update_rule("alice", capacity=50)
    assert call(h, "POST", "default", {"refill_rate": 2.0, "route": "/login"}).status == 200
    [fields] = _audit_fields(caplog, "update-default")
    assert fields["before"] == {"capacity": 2, "refill_rate": 0.5}
    assert fields["after"] == {"capacity": 2, "refill_rate": 2.0}
    document = {
        "version": 1,
        "default": {"capacity": 4, "refill_rate": 1.0},
        "overrides": [
            {"client_id": "alice", "capacity": 7, "refill_rate": 1.0},
            {"client_id": "bob", "route": "/login", "capacity": 1, "refill_rate": 0.5},
        ],
    }
    assert call(h, "POST", "import", document).status == 200
    [fields] = _audit_fields(caplog, "import")
    assert fields["before"] == {
        "default": {"capacity": 3, "refill_rate": 1.0},
        "routes": {},
        "overrides": [
            {
                "client_id": "alice",
                "route": None,
                "limit": "default",
                "capacity": 50,
                "refill_rate": 1.0,
            },
        ],
    }
    assert fields["after"] == {
        "default": {"capacity": 4, "refill_rate": 1.0},
        "routes": {},
        "overrides": [
            {
                "client_id": "alice",
                "route": None,
                "limit": "default",
                "capacity": 7,
                "refill_rate": 1.0,
            },
            {
                "client_id": "bob",
                "route": "/login",
                "limit": "default",
                "capacity": 1,
                "refill_rate": 0.5,
            },
        ],
    }
    assert fields["imported"] == 2


def test_a_bogus_cursor_on_redis_is_a_400_not_a_store_failure(redis_url, caplog):
    """A cursor Redis refuses ("invalid cursor") answered 503 and was logged as a store
    failure (WARNING): it is the caller's mistake, a 400 like any cursor of another store."""
    import logging

    from tokenbucket import BucketRegistry
    from tokenbucket.redis import RedisStore

    from ..conftest import Harness

    store = RedisStore.from_url(redis_url)
    h = Harness("wsgi", BucketRegistry(Rule(3, 1.0), store=store), admin_token=TOKEN)
    caplog.set_level(logging.DEBUG, logger="tokenbucket.admin")
    for cursor in ("99999999999999999999999", "18446744073709551616", "²", "-1"):
        result = call(h, "GET", "rules", query=f"cursor={cursor}")
        assert result.status == 400, (cursor, result.body)
        assert "'cursor' is not one this store returned" in result.json()["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert call(h, "GET", "rules", query="cursor=18446744073709551615").status == 200
    store.close()


def test_client_ids_of_several_limits_round_trip_exactly(make):
    """Issue 22 item 12 over the admin API: with several limits, "a\\x01\\x03" was listed as
    "a\\x01", so its export named another client and a second import failed."""
    from tokenbucket import BucketRegistry, ManualClock

    def several():
        limits = {"burst": Rule(10, 1.0), "daily": Rule(100, 0.01)}
        return make(registry=BucketRegistry(limits, clock=ManualClock()), admin_token=TOKEN)

    h = several()
    ids = ["a}", "a\x01\x03", "\x01", "a\x01", "\x00}"]
    for index, client_id in enumerate(ids):
        body = {"client_id": client_id, "capacity": 1 + index, "limit": "burst"}
        assert h.request("POST", BASE, headers=AUTH, body=json.dumps(body).encode()).status == 200
    exported = call(h, "GET", "export").json()
    assert sorted((o["client_id"], o["capacity"]) for o in exported["overrides"]) == sorted(
        (client_id, 1 + index) for index, client_id in enumerate(ids)
    )
    fresh = several()
    assert call(fresh, "POST", "import", exported).json()["imported"] == len(ids)
    again = call(fresh, "GET", "export").json()
    key = lambda o: (o["client_id"], o["limit"])  # noqa: E731
    assert sorted(again["overrides"], key=key) == sorted(exported["overrides"], key=key)
    assert call(fresh, "POST", "import", again).status == 200
