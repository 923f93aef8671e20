"""Shadow limits and policies over HTTP (issue 15 item 4), on both middlewares: never refusing,
counted ``shadow_denied``, reported to ``on_decision``, switched through the admin API."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.metrics.prometheus import PrometheusMetrics

from ..conftest import AUTH, IP, TOKEN, Harness
from .test_metrics import scrape, value

KINDS = ["asgi", "wsgi"]
DECIDED = "tokenbucket_decisions_total"


def watched() -> BucketRegistry:
    return BucketRegistry(
        {"burst": Rule(10, 0), "tight": Rule(5, 0)}, shadow={"tight"}, clock=ManualClock()
    )


def switch(harness: Harness, **body: object):
    return harness.request(
        "POST", "/admin/update-rule", headers=AUTH, body=json.dumps(body).encode()
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_tighter_shadow_limit_is_counted_and_reported(kind: str) -> None:
    """Enforced burst 10, shadow 5, 12 requests: 10 pass, 2 get 429; metrics allowed 10,
    denied 2, shadow_denied 5 (requests 6 to 10, under the limit's name); the hook sees them."""
    registry, seen = CollectorRegistry(), []
    harness = Harness(
        kind,
        watched(),
        metrics=PrometheusMetrics(registry),
        on_decision=lambda view, key, decision: seen.append(decision.shadow_denied),
    )
    statuses = [harness.request().status for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2
    assert seen == [()] * 5 + [("tight",)] * 5 + [()] * 2
    samples = scrape(registry)
    assert value(samples, DECIDED, policy="default", outcome="allowed") == 10
    assert value(samples, DECIDED, policy="default", outcome="denied") == 2
    assert value(samples, DECIDED, policy="tight", outcome="shadow_denied") == 5
    assert value(samples, DECIDED, policy="default", outcome="shadow_denied") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_shadow_limits_are_not_advertised(kind: str) -> None:
    """RateLimit-Policy lists the enforced limits only; RateLimit names the binding one."""
    harness = Harness(kind, watched())
    for _ in range(7):
        response = harness.request()
    assert response.header("RateLimit-Policy") == '"burst";q=10'
    assert response.header("RateLimit") == '"burst";r=3'


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("headers", ["draft", "both", "legacy"])
def test_with_every_limit_in_shadow_nothing_is_advertised(kind: str, headers: str) -> None:
    """Issue 22 item 15: with every limit in shadow, responses carried RateLimit naming a
    shadow limit with r=0, and clients following the draft throttled themselves on a limit
    that is not enforced. No limit binds, so no rate-limit field is sent (as for a policy in
    shadow); enforcing one again brings them back."""
    registry = BucketRegistry(
        {"burst": Rule(10, 0), "tight": Rule(5, 0)},
        shadow={"burst", "tight"},
        clock=ManualClock(),
    )
    harness = Harness(kind, registry, headers=headers)
    for _ in range(12):
        response = harness.request()
        assert response.status == 200
        assert not [name for name, _ in response.headers if "ratelimit" in name.lower()]
    registry.set_shadow("burst", False)
    assert harness.request().status == 429  # the eleventh of ten: enforced again


@pytest.mark.parametrize("kind", KINDS)
def test_the_admin_api_switches_a_limit_to_enforcing_for_the_next_request(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(kind, watched(), admin_token=TOKEN)
    for _ in range(6):
        assert harness.request().status == 200
    with caplog.at_level(logging.DEBUG, logger="tokenbucket.admin"):
        answer = switch(harness, limit="tight", shadow=False)
    assert answer.status == 200
    assert answer.json() == {
        "route": None,
        "limit": "tight",
        "shadow": False,
        "shadow_policy": False,
        "shadow_limits": [],
    }
    [record] = caplog.records
    assert record.levelno == logging.INFO
    fields = record.tokenbucket
    assert fields["action"] == "enforce"
    assert fields["before"] == {"shadow": True}
    assert fields["after"] == {"shadow": False}
    assert "admin enforce of limit 'tight' of the default policy" in record.getMessage()
    denied = harness.request()
    assert denied.status == 429
    assert denied.header("RateLimit") == '"tight";r=0'
    assert denied.header("RateLimit-Policy") == '"burst";q=10, "tight";q=5'
    assert switch(harness, limit="tight", shadow=True).json()["shadow_limits"] == ["tight"]
    assert harness.request().status == 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_route_policy_in_shadow_never_refuses(kind: str) -> None:
    """shadow_policies={"/login"}: its denials pass (counted shadow_denied, no fields); the
    admin API enforces it at runtime, and the metrics then count denials as denied."""
    registry = CollectorRegistry()
    harness = Harness(
        kind,
        routes={"/login": Rule(2, 0)},
        shadow_policies={"/login"},
        metrics=PrometheusMetrics(registry),
        admin_token=TOKEN,
    )
    results = [harness.request(path="/login") for _ in range(4)]
    assert [r.status for r in results] == [200] * 4
    assert all(r.header("RateLimit") is None for r in results)
    assert harness.request().header("RateLimit") is not None  # the default policy enforces
    assert switch(harness, route="/login", shadow=False).json()["shadow_policy"] is False
    assert harness.request(path="/login").status == 429
    samples = scrape(registry)
    assert value(samples, DECIDED, policy="/login", outcome="allowed") == 2
    assert value(samples, DECIDED, policy="/login", outcome="shadow_denied") == 2
    assert value(samples, DECIDED, policy="/login", outcome="denied") == 1
    admin = "tokenbucket_admin_requests_total"
    assert value(samples, admin, action="enforce", status="200") == 1


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"shadow_policies": {"/nope"}}, ValueError, "'shadow_policies' must name 'default'"),
        ({"shadow_policies": "default"}, TypeError, "'shadow_policies' must be a set"),
    ],
)
def test_bad_shadow_policies_raise(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Harness("asgi", **options)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"shadow": 1, "limit": "tight"}, "'shadow' must be true or false"),
        ({"shadow": None}, "'shadow' must be true or false"),
        ({"shadow": True, "limit": "nope"}, "'limit' must be one of burst, tight"),
        ({"shadow": True, "client_id": IP}, "unknown field 'client_id' in a shadow switch"),
        ({"shadow": True, "route": "/x"}, "'route' must be a configured route"),
    ],
)
def test_bad_switches_are_400_and_change_nothing(kind: str, body: dict, message: str) -> None:
    harness = Harness(kind, watched(), admin_token=TOKEN)
    answer = switch(harness, **body)
    assert answer.status == 400
    assert message in answer.json()["error"]
    assert harness.registry.shadow == {"tight"}


def test_a_limit_of_a_one_rule_registry_cannot_be_switched() -> None:
    harness = Harness("wsgi", admin_token=TOKEN)
    answer = switch(harness, limit="default", shadow=True)
    assert answer.status == 400
    assert "cannot be put in shadow" in answer.json()["error"]
    assert switch(harness, shadow=True).json()["shadow_policy"] is True  # the policy can


def test_an_unauthorised_switch_is_refused() -> None:
    harness = Harness("asgi", watched(), admin_token=TOKEN)
    answer = harness.request(
        "POST", "/admin/update-rule", body=b'{"shadow": false, "limit": "tight"}'
    )
    assert answer.status == 401
    assert harness.registry.shadow == {"tight"}


HOSTILE = st.dictionaries(
    st.sampled_from(["shadow", "limit", "route", "client_id", "capacity", "x"]),
    st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.lists(st.booleans()),
    max_size=4,
).map(lambda body: {"shadow": body.pop("shadow", None), **body})


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=HOSTILE)
def test_hostile_switch_bodies_never_5xx_nor_half_apply(body: dict) -> None:
    """Any body with "shadow": a 200 that did exactly what was asked, or a 400 that did
    nothing; the audit record count is one per request."""
    harness = Harness("wsgi", watched(), routes={"/r": Rule(2, 0)}, admin_token=TOKEN)
    before = (harness.registry.shadow, harness.middleware._options.routes["/r"].shadow)
    answer = switch(harness, **body)
    after = (harness.registry.shadow, harness.middleware._options.routes["/r"].shadow)
    assert answer.status in (200, 400), answer
    if answer.status == 400:
        assert after == before
        return
    assert set(body) <= {"shadow", "limit", "route"}
    assert isinstance(body["shadow"], bool)
    assert answer.json()["shadow"] is body["shadow"]
