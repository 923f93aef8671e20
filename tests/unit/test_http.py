"""The sans-IO layer on its own: header fields, the 429 response, structured-field strings."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, Decision, Rule
from tokenbucket._http import (
    OWN_FIELDS,
    OWN_INITIALS,
    RAW,
    RAW_OWN_FIELDS,
    RAW_OWN_INITIALS,
    TEXT,
    Options,
    Policy,
    RequestView,
    add_fields,
    denial,
    rate_limit_headers,
    retry_after_seconds,
    status_line,
)
from tokenbucket._http.admin import admin_api

_seconds = st.one_of(st.floats(min_value=0, max_value=1e12), st.just(math.inf))
_decisions = st.builds(
    Decision,
    st.booleans(),
    st.floats(min_value=0, max_value=1e12),
    _seconds,
    _seconds,
    st.one_of(
        st.integers(min_value=1, max_value=10**12), st.floats(min_value=1e-9, max_value=1e12)
    ),
)


def policy(name="default"):
    return Policy(name, BucketRegistry(Rule(1, 1)), "")


@given(decision=_decisions, mode=st.sampled_from([0, 1, 2, 3]))
def test_raw_fields_are_the_str_fields_as_asgi_bytes(decision, mode):
    """The ASGI (bytes) and WSGI (str) writers agree field for field, in every mode."""
    text = rate_limit_headers(decision, policy(), mode, TEXT)
    raw = rate_limit_headers(decision, policy(), mode, RAW)
    assert raw == [(name.lower().encode(), value.encode()) for name, value in text]
    assert len(text) == {0: 0, 1: 2, 2: 3, 3: 5}[mode] - (
        mode & 2 and decision.reset_after == math.inf
    )


@pytest.mark.parametrize(
    ("decision", "expected"),
    [
        (Decision(True, 9.0, 0.0, 1.0, 10), ['"default";q=10', '"default";r=9;t=1']),
        (Decision(True, 8.7, 0.0, 1.3, 10), ['"default";q=10', '"default";r=8;t=2']),
        (Decision(False, 0.4, 0.6, 9.6, 10), ['"default";q=10', '"default";r=0;t=1']),
        (Decision(False, 0.0, math.inf, math.inf, 1), ['"default";q=1;w=1', '"default";r=0']),
        (Decision(True, 0.0, 0.0, 0.0, 2.5), ['"default";q=2', '"default";r=0;t=0']),
    ],
)
def test_draft_values(decision, expected):
    """q floors the capacity, r floors the level, t ceils the wait (retry wait when denied)."""
    assert [value for _, value in rate_limit_headers(decision, policy(), 1, TEXT)] == expected


def test_policy_value_follows_the_limit():
    """The cached RateLimit-Policy value is recomputed when the limit changes."""
    p = policy()
    assert rate_limit_headers(Decision(True, 1, 0, 1, 5), p, 1, TEXT)[0][1] == '"default";q=5'
    assert rate_limit_headers(Decision(True, 1, 0, 1, 50), p, 1, TEXT)[0][1] == '"default";q=50'


def test_one_limit_sends_its_window_so_a_client_can_learn_the_rate():
    """RateLimit-Policy of one limit carries w = q / refill_rate rounded up (at least 1), so
    that q / w never exceeds the rate; it follows a changed default and is left out for an
    override of another capacity (its rate is unknown) and for a bucket that never refills."""
    registry = BucketRegistry(Rule(20, 20.0))
    p = Policy("default", registry, "")
    assert rate_limit_headers(Decision(True, 19, 0, 0.05, 20), p, 1, TEXT)[0][1] == (
        '"default";q=20;w=1'
    )
    registry.update_default(capacity=20, refill_rate=3.0)
    assert rate_limit_headers(Decision(True, 19, 0, 0.3, 20), p, 1, TEXT)[0][1] == (
        '"default";q=20;w=7'
    )
    assert rate_limit_headers(Decision(True, 9, 0, 1, 50), p, 1, TEXT)[0][1] == '"default";q=50'
    registry.update_default(capacity=20, refill_rate=0)
    assert rate_limit_headers(Decision(True, 19, 0, 1, 20), p, 1, TEXT)[0][1] == '"default";q=20'


def test_structured_field_string_escapes():
    """Policy names are SF Strings: quotes and backslashes are escaped (RFC 9651 4.1.6)."""
    assert policy('/a"b\\c').field_name == '"/a\\"b\\\\c"'


@pytest.mark.parametrize(
    ("wait", "expected"),
    [(0.0, 1), (1e-12, 1), (1.0, 1), (1.0000001, 2), (59.5, 60), (math.inf, None)],
)
def test_retry_after_whole_seconds_at_least_one(wait, expected):
    """Retry-After is the wait rounded up, never below 1; None when it can never pass."""
    assert retry_after_seconds(Decision(False, 0.0, wait, wait, 1)) == expected


def test_denial_response():
    """The 429: JSON body, Content-Length, Retry-After, then the fields given."""
    response = denial(Decision(False, 0.5, 2.5, 9.5, 10), [("RateLimit", "x")])
    assert response.status == 429
    assert json.loads(response.body) == {
        "error": "Rate limit exceeded",
        "retry_after": 3,
        "limit": 10,
        "remaining": 0,
    }
    assert response.headers == [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(response.body))),
        ("Retry-After", "3"),
        ("RateLimit", "x"),
    ]


def test_status_lines():
    """WSGI status lines carry the standard reason phrase."""
    assert status_line(429) == "429 Too Many Requests"
    # RFC 9110's name from Python 3.13 on (http.HTTPStatus), RFC 7231's before
    assert status_line(413) in ("413 Content Too Large", "413 Request Entity Too Large")


@pytest.mark.parametrize("container", [list, tuple, iter, lambda pairs: (p for p in pairs)])
def test_add_fields_reads_any_iterable_once(container):
    """The app's fields, from any iterable, come first; ours follow unless the app set them
    (in any case), for str (WSGI) and bytes (ASGI) alike."""
    ours = [("RateLimit-Policy", '"default";q=5'), ("RateLimit", '"default";r=4')]
    app = [("Content-Type", "text/plain"), ("rATElimit", "app")]
    assert add_fields(container(app[:1]), ours, OWN_FIELDS, OWN_INITIALS) == app[:1] + ours
    assert add_fields(container(app), ours, OWN_FIELDS, OWN_INITIALS) == app + ours[:1]
    raw_ours = [(name.lower().encode(), value.encode()) for name, value in ours]
    raw_app = [(name.encode(), value.encode()) for name, value in app]
    merged = add_fields(container(raw_app), raw_ours, RAW_OWN_FIELDS, RAW_OWN_INITIALS)
    assert merged == raw_app + raw_ours[:1]
    assert add_fields(None, raw_ours, RAW_OWN_FIELDS, RAW_OWN_INITIALS) == raw_ours


def options(**given):
    arguments = {
        "registry": BucketRegistry(Rule(3, 1)),
        "key": None,
        "cost": 1,
        "exempt": None,
        "routes": None,
        "dry_run": False,
        "headers": "draft",
        "on_decision": None,
        "admin_token": None,
        "admin_path": "/admin",
        "max_body": 100,
    }
    return Options(**{**arguments, **given})


def view(path="/", client="203.0.113.7", headers=None):
    return RequestView("GET", "http", path, "", client, headers or {}, dict)


class TestLimitFor:
    """The decisions both middlewares take from _http: exemption, route, key, cost, hook."""

    def test_default_policy_client_key_and_fixed_cost(self):
        """Without options: the default policy, the client address (else 'unknown'), cost 1."""
        o = options(cost=2)
        assert o.limit_for(view()) == (o.default, "203.0.113.7", "203.0.113.7", 2)
        assert o.limit_for(view(client=None))[1:] == ("unknown", "unknown", 2)
        assert o.limit_for(view(client=""))[1:] == ("unknown", "unknown", 2)

    def test_route_key_and_cost_functions(self):
        """A route's policy namespaces the bucket; key and cost callables see the view."""
        o = options(
            routes={"/login": Rule(1, 1)},
            key=lambda request: request.header("x-user") or "anonymous",
            cost=lambda request: len(request.path),
        )
        policy, key, bucket, cost = o.limit_for(view("/login", headers={"x-user": "ann"}))
        assert (policy.name, key, bucket, cost) == ("/login", "ann", "/login\0ann", 6)
        assert o.limit_for(view("/other")) == (o.default, "anonymous", "anonymous", 6)

    def test_exempt_paths_then_predicate(self):
        """Exempt paths match by path; a predicate is asked about each request."""
        asked = []
        o = options(exempt=["/health"])
        assert (o.is_exempt(view("/health")), o.is_exempt(view("/"))) == (True, False)
        o = options(exempt=lambda request: asked.append(request.path) or request.path == "/x")
        assert (o.is_exempt(view("/x")), o.is_exempt(view("/y"))) == (True, False)
        assert asked == ["/x", "/y"]

    def test_report_calls_the_hook_with_the_key(self):
        """report passes the view, the key (not the namespaced bucket) and the decision."""
        seen = []
        o = options(routes={"/login": Rule(1, 1)}, on_decision=lambda *args: seen.append(args))
        request = view("/login")
        policy, key, bucket, cost = o.limit_for(request)
        decision = policy.registry.consume(bucket, cost)
        o.report(request, key, decision)
        assert seen == [(request, "203.0.113.7", decision)]
        options().report(request, key, decision)  # no hook: nothing to call


def test_rule_change_without_numbers_is_the_cores_400():
    """A POST naming neither capacity nor refill_rate gets the core's own check and message
    (check_rule_fields, as BucketRegistry.update_rule raises it) as a 400."""
    registry = BucketRegistry(Rule(3, 1))
    admin = admin_api(options(registry=registry, admin_token="t" * 16))
    assert admin is not None
    with pytest.raises(ValueError, match=r"^at least one of") as core:
        registry.update_rule("a")
    for body in (b'{"client_id": "a"}', b'{"client_id": "a", "route": "/nope"}'):
        response = admin.parse("POST", "", body)
        assert (response.status, json.loads(response.body)) == (400, {"error": str(core.value)})
    assert registry.rule_for("a") == Rule(3, 1)


_segments = st.lists(st.sampled_from(["a", "b", "login", "", "x*"]), max_size=4)


@given(path=_segments.map("/".join), slashes=st.integers(0, 3))
def test_trailing_slashes_never_change_the_route_or_exemption(path, slashes):
    """Any path, with any number of trailing slashes added, has the same route and exemption."""
    o = options(
        routes={"/login": Rule(1, 1), "/a/*": Rule(2, 1), "/a/b*": Rule(3, 1), "/": Rule(4, 1)},
        exempt=["/b", "/login/x/*"],
    )
    path = "/" + path
    assert o.policy_for(path + "/" * slashes) is o.policy_for(path.rstrip("/") or "/")
    assert o.is_exempt(view(path + "/" * slashes)) == o.is_exempt(view(path.rstrip("/") or "/"))
