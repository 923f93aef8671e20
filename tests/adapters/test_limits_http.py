"""Several limits over HTTP (issue 12): headers, the 429, routes, key per limit, admin API,
and the decorator. Each middleware test runs against ASGI and WSGI."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, RateLimitExceeded, Rule, rate_limit
from tokenbucket._http.admin import AdminAPI

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/admin/update-rule"
DAY = 86400


def limits(clock: ManualClock) -> BucketRegistry:
    return BucketRegistry({"burst": Rule(2, 1.0), "daily": Rule.per(5, DAY)}, clock=clock)


class TestHeaders:
    def test_policy_lists_every_limit_and_ratelimit_names_the_binding_one(self, make):
        clock = ManualClock()
        h = make(registry=limits(clock))
        first = h.request()
        assert first.status == 200
        assert first.header("RateLimit-Policy") == '"burst";q=2;w=2, "daily";q=5;w=86400'
        assert first.header("RateLimit") == '"burst";r=1;t=1'
        h.request()
        denied = h.request()
        assert denied.status == 429
        assert denied.header("RateLimit") == '"burst";r=0;t=1'
        assert denied.json() == {
            "error": "Rate limit exceeded",
            "retry_after": 1,
            "limit": 2,
            "remaining": 0,
            "policy": "burst",
        }
        clock.advance(2)
        h.request()
        h.request()
        clock.advance(2)
        h.request()  # the fifth of the day
        clock.advance(2)
        refused = h.request()
        assert refused.status == 429
        assert refused.json()["policy"] == "daily"
        assert refused.header("RateLimit").startswith('"daily";r=0;t=')

    def test_the_window_of_an_overridden_binding_limit_is_its_own(self, make):
        """Issue 22 item 14: burst overridden to Rule(100, 10) for the client (a 10 s refill)
        was advertised as "burst";q=100;w=100, the override's capacity over the default's
        rate. The binding limit's w is its own refill time (or left out when the decision
        does not tell it); the other limits keep their default's."""
        clock = ManualClock()
        registry = BucketRegistry(
            {"burst": Rule(10, 1.0), "daily": Rule.per(1000, DAY)}, clock=clock
        )
        h = make(registry=registry)
        registry.update_rule(IP, capacity=100, refill_rate=10.0, limit="burst")
        first = h.request()
        assert first.header("RateLimit") == '"burst";r=99;t=1'
        assert first.header("RateLimit-Policy") == '"burst";q=100;w=10, "daily";q=1000;w=86400'
        registry.update_rule(IP, capacity=10, refill_rate=0.5, limit="burst")  # rate only
        assert h.request().header("RateLimit-Policy") == '"burst";q=10;w=20, "daily";q=1000;w=86400'
        registry.update_rule(IP, capacity=1, refill_rate=0.5, limit="burst")
        h.request()
        denied = h.request()
        assert denied.status == 429
        # a denial does not tell the override's rate: w is left out rather than wrong
        assert denied.header("RateLimit-Policy") == '"burst";q=1, "daily";q=1000;w=86400'

    def test_one_rule_keeps_its_fields(self, make):
        h = make()
        assert h.request().header("RateLimit-Policy") == '"default";q=3;w=3'
        h.request()
        h.request()
        denied = h.request()
        assert denied.status == 429
        assert "policy" not in denied.json()


class TestRoutes:
    def test_a_route_of_several_limits(self, make):
        clock = ManualClock()
        registry = BucketRegistry(Rule(100, 1.0), clock=clock)
        h = make(
            registry=registry,
            routes={"/login": {"burst": Rule(2, 1.0), "daily": Rule.per(3, DAY)}},
        )
        assert [h.request(path="/login").status for _ in range(3)] == [200, 200, 429]
        clock.advance(5)
        statuses = [h.request(path="/login").status for _ in range(2)]
        assert statuses == [200, 429]
        last = h.request(path="/login")
        assert last.json()["policy"] == "daily"
        assert last.header("RateLimit-Policy") == '"burst";q=2;w=2, "daily";q=3;w=86400'
        assert h.request(path="/other").status == 200

    def test_a_route_value_must_be_rules(self, make):
        with pytest.raises(TypeError, match="mappings of limit names to Rules"):
            make(routes={"/login": 5})


class TestKeyPerLimit:
    def test_key_function_charges_user_and_organisation(self, make):
        clock = ManualClock()
        registry = BucketRegistry({"user": Rule(2, 0), "org": Rule(3, 0)}, clock=clock)
        h = make(
            registry=registry,
            key=lambda request: {"user": request.headers.get("x-user", ""), "org": "acme"},
        )
        ask = lambda user: h.request(headers={"X-User": user}).status  # noqa: E731
        assert [ask("ann"), ask("ann"), ask("ann"), ask("bob"), ask("bob")] == [
            200,
            200,
            429,
            200,
            429,
        ]
        assert registry.tokens("bob", limit="user") == 1.0  # the org's denial took nothing
        assert registry.tokens("acme", limit="org") == 0.0


def post(h, payload):
    return h.request("POST", PATH, headers=AUTH, body=json.dumps(payload).encode())


class TestAdmin:
    def test_update_one_named_limit(self, make):
        clock = ManualClock()
        h = make(registry=limits(clock), admin_token=TOKEN)
        response = post(h, {"client_id": IP, "capacity": 50, "limit": "daily"})
        assert response.status == 200
        body = response.json()
        assert (body["limit"], body["capacity"], body["override"]) == ("daily", 50, True)
        assert h.registry.rule_for(IP, limit="daily").capacity == 50
        assert h.registry.rule_for(IP, limit="burst") == Rule(2, 1.0)

    def test_a_limit_is_required_to_change_one_of_several(self, make):
        h = make(registry=limits(ManualClock()), admin_token=TOKEN)
        response = post(h, {"client_id": IP, "capacity": 50})
        assert response.status == 400
        assert response.json() == {"error": "'limit' is required: the limits are burst, daily"}
        unknown = post(h, {"client_id": IP, "capacity": 50, "limit": "hourly"})
        assert unknown.status == 400
        assert "must be one of burst, daily" in unknown.json()["error"]
        deleted = h.request("DELETE", PATH, query=f"client_id={IP}", headers=AUTH)
        assert deleted.status == 400
        assert h.registry.rules_for(IP) == {"burst": Rule(2, 1.0), "daily": Rule.per(5, DAY)}

    def test_get_returns_every_limit(self, make):
        h = make(registry=limits(ManualClock()), admin_token=TOKEN)
        h.request()
        response = h.request("GET", PATH, query=f"client_id={IP}", headers=AUTH)
        assert response.status == 200
        assert response.json() == {
            "client_id": IP,
            "route": None,
            "limits": {
                "burst": {"capacity": 2, "refill_rate": 1.0, "tokens": 1.0, "override": False},
                "daily": {
                    "capacity": 5,
                    "refill_rate": Rule.per(5, DAY).refill_rate,
                    "tokens": 4.0,
                    "override": False,
                },
            },
        }
        one = h.request("GET", PATH, query=f"client_id={IP}&limit=daily", headers=AUTH)
        assert (one.json()["limit"], one.json()["tokens"]) == ("daily", 4.0)
        removed = h.request("DELETE", PATH, query=f"client_id={IP}&limit=burst", headers=AUTH)
        assert (removed.status, removed.json()["removed"]) == (200, False)

    @given(st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers())))
    def test_hostile_limit_values_get_a_400(self, value: object) -> None:
        """Any JSON value for 'limit' is a 400 naming the limits, or one of them (never a 500)."""
        from tokenbucket.wsgi import RateLimitMiddleware

        middleware = RateLimitMiddleware(
            lambda environ, start: [], registry=limits(ManualClock()), admin_token=TOKEN
        )
        admin = middleware._admin
        assert isinstance(admin, AdminAPI)
        body = json.dumps({"client_id": IP, "capacity": 5, "limit": value}).encode()
        op = admin.parse("POST", "", body)
        if value in ("burst", "daily"):
            assert op.limit == value
        else:
            assert op.status == 400
            assert "burst, daily" in json.loads(op.body)["error"]


class TestDecorator:
    def test_accepts_a_mapping(self):
        clock = ManualClock()

        @rate_limit(BucketRegistry({"burst": Rule(2, 1.0), "daily": Rule(3, 0)}, clock=clock))
        def call():
            return "ok"

        assert [call(), call()] == ["ok", "ok"]
        with pytest.raises(RateLimitExceeded) as info:
            call()
        assert info.value.decision.policy == "burst"
        clock.advance(5)
        call()
        with pytest.raises(RateLimitExceeded) as info:
            call()
        assert info.value.decision.policy == "daily"
        assert str(info.value) == "rate limit exceeded ('daily'): the request can never be allowed"

    def test_a_private_registry_of_several_limits_and_a_key_per_limit(self):
        @rate_limit({"user": Rule(1, 0), "org": Rule(2, 0)}, key=lambda u: {"user": u, "org": "o"})
        def call(user):
            return user

        assert [call("ann"), call("bob")] == ["ann", "bob"]
        with pytest.raises(RateLimitExceeded):
            call("cy")  # the organisation is spent
        with pytest.raises(TypeError, match="mapping of names to Rules"):
            rate_limit(5)  # type: ignore[arg-type]


def test_metrics_count_decisions_of_several_limits():
    """instrument() keeps working on a registry of several limits (label: the policy)."""
    from tokenbucket.metrics import Metrics, instrument

    metrics = Metrics()
    registry = instrument(limits(ManualClock()), metrics, policy="api")
    assert registry.consume("k").policy == "burst"
    assert registry.try_consume({"burst": "k", "daily": "k"})
    assert not registry.try_consume("k")
    assert registry.tokens("k", limit="daily") == 3.0
    counts = {key: cell[0] for key, cell in metrics.snapshot().decisions.items()}
    assert counts == {("api", "allowed"): 2, ("api", "denied"): 1}
