"""Key namespaces: no key, from any source, can address another namespace's buckets."""

from __future__ import annotations

import re
from typing import Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, ManualClock, Rule, rate_limit
from tokenbucket._core.keys import bucket_key, escape_key
from tokenbucket._http import AdminOp, Options, RequestView

ROUTES = ("/login", "/login/*", "/", "/api/v1", "/a\\0b")


def _options(key_func=None) -> Options:
    return Options(
        registry=BucketRegistry(Rule(3, 1.0)),
        key=key_func,
        cost=1,
        exempt=None,
        routes={route: Rule(5, 1.0) for route in ROUTES},
        dry_run=False,
        headers="draft",
        on_decision=None,
        admin_token="t" * 16,
        admin_path="/admin/update-rule",
        max_body=4096,
    )


OPTIONS = _options()
_routes = st.sampled_from((None, *ROUTES))
# Client ids weighted towards what could forge a namespace: separators, escapes, route names.
_pieces = st.sampled_from(["\0", "\1", "\2", "/", "login", "a", "\\", "*", "1.2"])
_ids = st.lists(_pieces, min_size=1).map("".join) | st.text(min_size=1)


def _store_key(route: Optional[str], client_id: str) -> str:
    policy = OPTIONS.default if route is None else OPTIONS.routes[route]
    return AdminOp("get", client_id, policy).key


@given(first=st.tuples(_routes, _ids), second=st.tuples(_routes, _ids))
def test_different_pairs_have_different_store_keys(
    first: Tuple[Optional[str], str], second: Tuple[Optional[str], str]
) -> None:
    """Any two (route, client_id) pairs that differ give different store keys, and a key lies
    in exactly its own route's namespace: its only NUL ends its route's prefix."""
    if first != second:
        assert _store_key(*first) != _store_key(*second)
    route, client_id = first
    key = _store_key(route, client_id)
    namespaces = [name for name in ROUTES if key.startswith(name + "\0")]
    assert key.count("\0") == (0 if route is None else 1)
    assert namespaces == ([] if route is None else [route])


@given(route=_routes, client_id=_ids)
def test_key_functions_and_the_admin_api_agree(route: Optional[str], client_id: str) -> None:
    """A key function's answer is escaped the same way as the admin API's client_id: an
    override set over the admin API applies to the requests the key function names."""
    path = "/elsewhere" if route is None else route.rstrip("*")
    options = _options(key_func=lambda view: client_id)
    view = RequestView("GET", "http", path, "", "192.0.2.1", [], lambda raw: {})
    policy, key, bucket, _ = options.limit_for(view)
    assert key == client_id  # on_decision gets the key as the key function returned it
    assert bucket == AdminOp("get", client_id, policy).key


def test_ordinary_keys_do_not_move() -> None:
    """Only keys holding NUL or \\x01 are escaped: existing store keys stay where they are."""
    for key in ("203.0.113.7", "2001:db8::/56", "user:42", "unknown", "é ü", "/login"):
        assert escape_key(key) == key
        assert bucket_key("/login\0", key) == "/login\0" + key
    assert escape_key("/login\0x") == "/login\1\2x"
    assert escape_key("\1\2") == "\1\1\2"


def test_decorator_keys_stay_out_of_route_namespaces() -> None:
    """A decorated function sharing the middleware's store cannot reach a route's bucket."""
    registry = BucketRegistry(Rule(1, 0.001), clock=ManualClock())

    @rate_limit(registry, key=lambda who: who)
    def call(who: str) -> None:
        pass

    call("/login\x00203.0.113.7")
    assert registry.tokens("/login\x00203.0.113.7") == 1.0  # the route's bucket: untouched
    assert registry.tokens("/login\x01\x02203.0.113.7") == 0.0
    with pytest.raises(Exception, match="rate limit exceeded"):
        call("/login\x00203.0.113.7")


def _no_key(request: RequestView) -> Optional[str]:
    return request.header("x-api-key")  # None without the header: a bug in the app


@pytest.mark.parametrize("in_flight", [False, True])
@pytest.mark.parametrize(
    ("key_func", "shown"),
    [(_no_key, "None (NoneType)"), (lambda request: 42, "42 (int)")],
    ids=["none", "int"],
)
def test_a_key_function_returning_a_non_str_fails_clearly(make, key_func, shown, in_flight):
    """Review item 3: ``TypeError: argument of type 'NoneType' is not iterable`` from deep in
    the key escaping. Still an error (the app's bug, a 500 from the server), but one that
    names the key function and what it returned; through both middlewares, with routes."""
    from tokenbucket import InFlightLimit

    options = {"in_flight": InFlightLimit(2)} if in_flight else {}
    h = make(key=key_func, routes={"/login": Rule(5, 1.0)}, **options)
    message = re.escape(
        f"the key function {key_func.__qualname__!r} returned {shown}; "
        "a key function must return a str, the bucket key"
    )
    for path in ("/", "/login"):
        with pytest.raises(TypeError, match=f"^{message}$"):
            h.request(path=path)
    assert h.seen == []


LIMITS = {"burst": Rule(10, 1.0), "daily": Rule(100, 0.01)}
# Raw keys weighted towards the characters the limit keys' encoding uses.
_raw = (
    st.lists(st.sampled_from(["", "\0", "\1", "\2", "\3", "{", "}", "a", "/"])).map("".join)
    | st.text()
)


@given(first=_raw, second=_raw, limit=st.sampled_from(list(LIMITS)))
def test_raw_keys_of_several_limits_have_distinct_store_keys(
    first: str, second: str, limit: str
) -> None:
    """Issue 22 item 12: through the registry API (no middleware escaping), ``""`` and
    ``"\\x01"``, ``"a}"`` and ``"a\\x01\\x03"`` shared a bucket. A store key decodes back
    to its (key, limit), so distinct pairs give distinct store keys; both ways of building
    one agree."""
    from tokenbucket import MemoryStore
    from tokenbucket._registry.limits import limit_key
    from tokenbucket._registry.listing import registry_entries

    rule = Rule(1, 1.0)
    for key in (first, second):
        store_key = limit_key(key, limit)
        if not (key.startswith("/") and "\0" in key):  # a route's key: not listed as ours
            assert registry_entries([(store_key, rule)], "", list(LIMITS)) == [(key, limit, rule)]
    if first != second:
        assert limit_key(first, limit) != limit_key(second, limit)
    store = MemoryStore()
    assert store.take_all([(first, tuple(LIMITS.items()))], 1)[0]
    assert all(limit_key(first, name) in store for name in LIMITS)


@pytest.mark.parametrize(("one", "other"), [("", "\1"), ("a}", "a\1\3"), ("\1", "\1\1")])
def test_colliding_raw_keys_of_several_limits_are_apart(one: str, other: str) -> None:
    """The collisions issue 22 item 12 found: taking from one leaves the other full."""
    registry = BucketRegistry(LIMITS, clock=ManualClock())
    assert registry.consume(one, 10).allowed
    assert registry.consume(other, 10).allowed
    assert registry.update_rule(other, capacity=3, limit="burst") == Rule(3, 1.0)
    assert registry.rules_for(one)["burst"] == Rule(10, 1.0)
