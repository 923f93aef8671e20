"""Behaviour both middlewares share, each test run against ASGI and WSGI (see conftest.Harness)."""

from __future__ import annotations

import math

import pytest

from tokenbucket import BucketRegistry, Decision, ManualClock, Rule

IP = "203.0.113.7"
OTHER = "198.51.100.1"


class TestLimiting:
    def test_burst_then_429(self, make):
        """Capacity 3: three requests reach the app, the fourth gets 429 and does not."""
        h = make()
        statuses = [h.request().status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert h.seen == ["/", "/", "/"]

    def test_refill_lets_requests_through_again(self, make):
        """After the 429, one second refills one token at 1 token/s."""
        h = make()
        for _ in range(3):
            h.request()
        assert h.request().status == 429
        h.clock.advance(1.0)
        assert h.request().status == 200
        assert h.request().status == 429

    def test_clients_have_their_own_buckets(self, make):
        """Another client IP is not affected by the first one's exhausted bucket."""
        h = make()
        for _ in range(3):
            h.request(client=IP)
        assert h.request(client=IP).status == 429
        assert h.request(client=OTHER).status == 200
        assert h.registry.tokens(OTHER) == 2.0

    @pytest.mark.parametrize("client", [None, ""])
    @pytest.mark.parametrize("plain", [True, False])
    def test_missing_client_address_uses_shared_unknown_key(self, make, client, plain):
        """No client address (scope client None or ("", port); REMOTE_ADDR missing or empty):
        the key is 'unknown' and the view's client None, on the fast path and the full one."""
        seen = []
        hook = {} if plain else {"on_decision": lambda view, key, d: seen.append((view, key))}
        h = make(**hook)
        assert h.request(client=client).status == 200
        assert h.registry.tokens("unknown") == 2.0
        assert h.registry.tokens("") == 3.0
        assert h.registry.tokens(IP) == 3.0
        if not plain:
            [(view, key)] = seen
            assert (view.client, key) == (None, "unknown")


class TestDenial:
    def test_429_body_and_headers(self, make):
        """The 429 carries Retry-After (ceil seconds), a JSON body and the RateLimit fields."""
        h = make()
        for _ in range(3):
            h.request()
        h.clock.advance(0.25)  # 0.25 tokens: the next token is 0.75 s away
        denied = h.request()
        assert denied.status == 429
        assert denied.header("retry-after") == "1"
        assert denied.header("content-type") == "application/json"
        assert denied.header("content-length") == str(len(denied.body))
        assert denied.json() == {
            "error": "Rate limit exceeded",
            "retry_after": 1,
            "limit": 3,
            "remaining": 0,
        }
        assert denied.header("ratelimit") == '"default";r=0;t=1'
        assert denied.header("ratelimit-policy") == '"default";q=3;w=3'

    def test_retry_after_rounds_up(self, make):
        """A 2.5 s wait is announced as 3 s, in the header and the body."""
        registry = BucketRegistry(Rule(1, 0.4), clock=ManualClock())
        h = make(registry=registry)
        assert h.request().status == 200
        denied = h.request()
        assert denied.header("retry-after") == "3"
        assert denied.json()["retry_after"] == 3

    def test_never_allowed_has_no_retry_after(self, make):
        """A bucket that never refills: no Retry-After header, retry_after null, no t."""
        registry = BucketRegistry(Rule(1, 0), clock=ManualClock())
        h = make(registry=registry)
        assert h.request().status == 200
        denied = h.request()
        assert denied.status == 429
        assert denied.header("retry-after") is None
        assert denied.json()["retry_after"] is None
        assert denied.header("ratelimit") == '"default";r=0'


class TestHeaders:
    def test_draft_fields_by_default(self, make):
        """Allowed responses carry RateLimit-Policy and RateLimit (draft-11 syntax), no legacy."""
        h = make()
        first = h.request()
        assert first.header("ratelimit-policy") == '"default";q=3;w=3'
        assert first.header("ratelimit") == '"default";r=2;t=1'
        assert first.header("x-ratelimit-limit") is None
        h.clock.advance(0.5)
        second = h.request()
        # 2.5 - 1 = 1.5 tokens left: r floors to 1; 1.5 missing at 1/s: t ceils to 2.
        assert second.header("ratelimit") == '"default";r=1;t=2'

    def test_legacy_fields(self, make):
        """headers='legacy' sends only X-RateLimit-Limit/Remaining/Reset (seconds until full)."""
        h = make(headers="legacy")
        response = h.request()
        assert response.header("x-ratelimit-limit") == "3"
        assert response.header("x-ratelimit-remaining") == "2"
        assert response.header("x-ratelimit-reset") == "1"
        assert response.header("ratelimit") is None

    def test_both_and_none(self, make):
        """headers='both' sends five fields; headers=None sends none, even on a 429."""
        both = make(headers="both").request()
        names = [name.lower() for name, _ in both.headers if "ratelimit" in name.lower()]
        assert sorted(names) == [
            "ratelimit",
            "ratelimit-policy",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ]
        h = make(headers=None)
        for _ in range(3):
            assert h.request().header("ratelimit") is None
        denied = h.request()
        assert denied.status == 429
        assert [name for name, _ in denied.headers if "ratelimit" in name.lower()] == []
        assert denied.header("retry-after") == "1"

    def test_app_headers_are_not_duplicated(self, make):
        """A field the app sets itself is kept as the app set it; the others are added."""
        h = make(headers="both")
        h.app_headers = [("RateLimit", '"app";r=5'), ("X-RateLimit-Limit", "99")]
        response = h.request()
        assert response.all("ratelimit") == ['"app";r=5']
        assert response.all("x-ratelimit-limit") == ["99"]
        assert response.header("ratelimit-policy") == '"default";q=3;w=3'
        assert response.header("x-ratelimit-remaining") == "2"

    def test_fractional_capacity_floors(self, make):
        """q and r are integers: a capacity of 2.5 shows as q=2."""
        h = make(registry=BucketRegistry(Rule(2.5, 1.0), clock=ManualClock()))
        response = h.request()
        assert response.header("ratelimit-policy") == '"default";q=2;w=2'
        assert response.header("ratelimit") == '"default";r=1;t=1'


class TestOptions:
    def test_key_function_gets_request_view(self, make):
        """A key function sees method, path, query, headers and client, the same in both."""
        views = []

        def by_api_key(request):
            views.append(request)
            return request.header("X-API-Key") or request.client

        h = make(key=by_api_key)
        for _ in range(3):
            h.request(path="/items", query="a=1", headers={"X-API-Key": "alice"})
        assert h.request(headers={"X-API-Key": "alice"}).status == 429
        assert h.request(headers={"X-API-Key": "bob"}).status == 200
        view = views[0]
        assert (view.method, view.path, view.query_string, view.client) == (
            "GET",
            "/items",
            "a=1",
            IP,
        )
        assert view.scheme == "http"
        assert view.headers["x-api-key"] == "alice"
        assert view.header("X-Api-KEY") == "alice"
        assert view.header("missing", "default") == "default"
        assert h.registry.tokens("alice") == 0.0

    def test_cost_number_and_callable(self, make):
        """cost=2 takes two tokens; a callable decides per request."""
        h = make(cost=2)
        assert h.request().status == 200
        assert h.registry.tokens(IP) == 1.0
        assert h.request().status == 429
        h = make(cost=lambda request: 3 if request.method == "POST" else 1)
        assert h.request("POST", body=b"x").status == 200
        assert h.registry.tokens(IP) == 0.0

    def test_exempt_paths_and_prefixes(self, make):
        """Exempt paths reach the app without being counted or getting headers."""
        h = make(exempt=["/health", "/static/*"])
        for path in ["/health", "/static/app.js", "/static/", "/health"]:
            response = h.request(path=path)
            assert response.status == 200
            assert response.header("ratelimit") is None
        assert h.registry.tokens(IP) == 3.0
        assert h.request(path="/healthz").header("ratelimit") == '"default";r=2;t=1'
        assert h.request(path="/staticky").header("ratelimit") == '"default";r=1;t=2'
        assert h.registry.tokens(IP) == 1.0

    @pytest.mark.parametrize("pattern", ["/health", "/health/"])
    def test_exempt_paths_ignore_trailing_slashes(self, make, pattern):
        """An exempt path matches with or without trailing slashes, as the app would route it;
        a prefix "/static/*" covers "/static" too."""
        h = make(exempt=[pattern, "/static/*"])
        for path in ["/health", "/health/", "/health//", "/static", "/static/", "/static//a"]:
            response = h.request(path=path)
            assert (response.status, response.header("ratelimit")) == (200, None), path
        assert h.registry.tokens(IP) == 3.0
        assert h.request(path="/health/x").header("ratelimit") == '"default";r=2;t=1'

    def test_exempt_predicate(self, make):
        """A predicate exempts what it returns True for."""
        h = make(exempt=lambda request: request.header("x-internal") == "yes")
        for _ in range(5):
            assert h.request(headers={"X-Internal": "yes"}).status == 200
        assert h.registry.tokens(IP) == 3.0

    def test_routes_have_their_own_stricter_buckets(self, make):
        """A route's requests use the route's rule and bucket instead of the default one."""
        h = make(routes={"/login": Rule(1, 0.1), "/api/*": Rule(2, 1.0)})
        assert h.request(path="/login").header("ratelimit") == '"/login";r=0;t=10'
        denied = h.request(path="/login")
        assert denied.status == 429
        assert denied.header("retry-after") == "10"
        assert denied.header("ratelimit-policy") == '"/login";q=1;w=10'
        # The default bucket is untouched by /login.
        assert h.registry.tokens(IP) == 3.0
        assert h.request(path="/").status == 200
        assert h.request(path="/api/a").header("ratelimit") == '"/api/*";r=1;t=1'
        assert h.request(path="/api/b").status == 200
        assert h.request(path="/api/c").status == 429
        assert h.registry.tokens(IP) == 2.0

    @pytest.mark.parametrize("pattern", ["/login", "/login/"])
    def test_routes_ignore_trailing_slashes(self, make, pattern):
        """A request to /login/ (or /login//) cannot escape a /login rule, nor /login a /login/
        one: all count in the one route bucket. A prefix "/api/*" covers "/api" too."""
        h = make(routes={pattern: Rule(2, 0.1), "/api/*": Rule(1, 1.0)})
        assert h.request(path="/login").status == 200
        assert h.request(path="/login/").status == 200
        denied = h.request(path="/login//")
        assert denied.status == 429
        assert denied.header("ratelimit-policy") == f'"{pattern}";q=2;w=20'
        assert h.request(path="/api").header("ratelimit-policy") == '"/api/*";q=1;w=1'
        assert h.request(path="/api/").status == 429
        assert h.request(path="/login/x").status == 200  # another path: the default bucket
        assert h.request(path="/apix").status == 200
        assert h.registry.tokens(IP) == 1.0

    def test_route_keys_are_namespaced_in_the_shared_store(self, make):
        """Route buckets live in the registry's store under '<route>\\0<key>'."""
        h = make(routes={"/login": Rule(2, 1.0)})
        h.request(path="/login")
        route = BucketRegistry(Rule(2, 1.0), store=h.registry.store)
        assert route.tokens("/login\0" + IP) == 1.0
        assert h.registry.tokens(IP) == 3.0

    def test_dry_run_never_blocks_but_reports(self, make):
        """dry_run: denied requests reach the app; headers and on_decision show the denial."""
        decisions = []
        h = make(dry_run=True, on_decision=lambda request, key, d: decisions.append((key, d)))
        statuses = [h.request().status for _ in range(5)]
        assert statuses == [200] * 5
        assert len(h.seen) == 5
        assert [d.allowed for _, d in decisions] == [True, True, True, False, False]
        last = h.request()
        assert last.header("ratelimit") == '"default";r=0;t=1'

    def test_on_decision_counts_denials(self, make):
        """on_decision receives the request view, the key and the Decision."""
        seen = []
        h = make(
            on_decision=lambda request, key, decision: seen.append((request.path, key, decision))
        )
        for _ in range(4):
            h.request(path="/x")
        assert [path for path, _, _ in seen] == ["/x"] * 4
        assert {key for _, key, _ in seen} == {IP}
        assert seen[0][2] == Decision(True, 2.0, 0.0, 1.0, 3)
        assert seen[3][2] == Decision(False, 0.0, 1.0, 3.0, 3)
        assert sum(not d.allowed for _, _, d in seen) == 1

    def test_overrides_apply(self, make):
        """A per-client override set on the registry shows in the decisions and headers."""
        h = make()
        h.registry.update_rule(IP, capacity=10)
        response = h.request()
        assert response.header("ratelimit-policy") == '"default";q=10'
        assert response.header("ratelimit") == '"default";r=9;t=1'


class TestValidation:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"registry": "nope"}, TypeError, r"^'registry' must be a BucketRegistry, got 'nope'$"),
            ({"key": 42}, TypeError, r"^'key' must be a callable taking a RequestView, got 42$"),
            ({"cost": 0}, ValueError, r"^'cost' must be a finite number > 0, got 0$"),
            ({"cost": math.nan}, ValueError, r"^'cost' must be a finite number > 0, got nan$"),
            ({"cost": True}, TypeError, r"^'cost' must be a number > 0 or a callable, got True$"),
            ({"cost": "1"}, TypeError, r"^'cost' must be a number > 0 or a callable, got '1'$"),
            ({"exempt": "/health"}, TypeError, r"^'exempt' must be a list of paths, not a single"),
            ({"exempt": 5}, TypeError, r"^'exempt' must be a list of paths or a callable, got 5$"),
            (
                {"exempt": ["health"]},
                ValueError,
                r"^'exempt' paths must start with '/', got 'health'$",
            ),
            ({"exempt": [b"/x"]}, TypeError, r"^'exempt' paths must be str, got b'/x'$"),
            ({"routes": ["/login"]}, TypeError, r"^'routes' must be a mapping of path to Rule"),
            ({"routes": {"/login": 5}}, TypeError, r"^'routes' values must be Rule objects \(or "),
            (
                {"routes": {"/login": Rule(1, 1), "/login/": Rule(2, 1)}},
                ValueError,
                r"^'routes' paths '/login' and '/login/' are the same route: trailing slashes",
            ),
            (
                {"routes": {"/api/*": Rule(1, 1), "/api//*": Rule(2, 1)}},
                ValueError,
                r"^'routes' paths '/api/\*' and '/api//\*' are the same route: trailing",
            ),
            ({"routes": {"login": Rule(1, 1)}}, ValueError, r"^'routes' paths must start with '/'"),
            (
                {"routes": {"/é": Rule(1, 1)}},
                ValueError,
                r"^'routes' paths must be printable ASCII",
            ),
            ({"dry_run": 1}, TypeError, r"^'dry_run' must be a bool, got 1$"),
            (
                {"headers": "ietf"},
                ValueError,
                r"^'headers' must be 'draft', 'legacy', 'both' or None, got 'ietf'$",
            ),
            (
                {"on_decision": "log"},
                TypeError,
                r"^'on_decision' must be a callable or None, got 'log'$",
            ),
            ({"admin_token": ""}, ValueError, r"^'admin_token' must be a non-empty str"),
            ({"admin_token": 123}, TypeError, r"^'admin_token' must be a str or None, got 123$"),
            (
                {"admin_token": "a b"},
                ValueError,
                r"^'admin_token' must be printable ASCII without spaces",
            ),
            (  # the length, never the secret itself
                {"admin_token": "short"},
                ValueError,
                r"^'admin_token' must be at least 16 characters, got 5 \(for example "
                r"secrets\.token_urlsafe\(32\)\)$",
            ),
            (
                {"admin_token": "x" * 15},
                ValueError,
                r"^'admin_token' must be at least 16 characters, got 15 ",
            ),
            (
                {"admin_path": "admin"},
                ValueError,
                r"^'admin_path' must start with '/', got 'admin'$",
            ),
            ({"admin_path": None}, TypeError, r"^'admin_path' must be a str, got None$"),
            ({"max_body": 0}, ValueError, r"^'max_body' must be >= 1, got 0$"),
            ({"max_body": 1.5}, TypeError, r"^'max_body' must be an int, got 1.5$"),
        ],
    )
    def test_bad_options_name_option_and_value(self, kind, options, error, message):
        """Bad options raise at construction, naming the option and the value."""
        from tokenbucket.asgi import RateLimitMiddleware as Asgi
        from tokenbucket.wsgi import RateLimitMiddleware as Wsgi

        cls = Asgi if kind == "asgi" else Wsgi
        arguments = {"registry": BucketRegistry(Rule(1, 1)), **options}
        with pytest.raises(error, match=message):
            cls(lambda *args: None, **arguments)

    @pytest.mark.parametrize(
        ("options", "error", "start"),
        [
            ({"exempt": ["x" * 500]}, ValueError, "'exempt' paths must start with '/', got "),
            ({"exempt": [b"/" * 500]}, TypeError, "'exempt' paths must be str, got "),
            ({"exempt": "/" * 500}, TypeError, "'exempt' must be a list of paths, not a single "),
            ({"routes": {"/" + "é" * 500: Rule(1, 1)}}, ValueError, "'routes' paths must be prin"),
            ({"routes": {"/x": "r" * 500}}, ValueError, "'text' must be a rate string like '10"),
            ({"routes": {"/" * 300: Rule(1, 1), "/" * 301: Rule(1, 1)}}, ValueError, "'routes' "),
            ({"headers": "h" * 500}, ValueError, "'headers' must be 'draft', 'legacy', 'both' or"),
            ({"admin_path": "a" * 500}, ValueError, "'admin_path' must start with '/', got "),
            ({"cost": "c" * 500}, TypeError, "'cost' must be a number > 0 or a callable, got "),
            ({"key": "k" * 500}, TypeError, "'key' must be a callable taking a RequestView"),
            ({"registry": "r" * 500}, TypeError, "'registry' must be a BucketRegistry, got "),
        ],
    )
    def test_long_values_are_shortened_in_messages(self, kind, options, error, start):
        """A long option value is quoted shortened (as show() does), never whole."""
        from tokenbucket.asgi import RateLimitMiddleware as Asgi
        from tokenbucket.wsgi import RateLimitMiddleware as Wsgi

        cls = Asgi if kind == "asgi" else Wsgi
        arguments = {"registry": BucketRegistry(Rule(1, 1)), **options}
        with pytest.raises(error) as raised:
            cls(lambda *args: None, **arguments)
        message = str(raised.value)
        assert message.startswith(start)
        assert "..." in message
        assert len(message) < 250, message

    def test_app_must_be_callable(self, kind):
        """A non-callable app is a TypeError naming 'app'."""
        from tokenbucket.asgi import RateLimitMiddleware as Asgi
        from tokenbucket.wsgi import RateLimitMiddleware as Wsgi

        cls = Asgi if kind == "asgi" else Wsgi
        with pytest.raises(
            TypeError, match=r"^'app' must be an? [AW]SGI app \(a callable\), got 3$"
        ):
            cls(3, registry=BucketRegistry(Rule(1, 1)))
        with pytest.raises(TypeError, match=r"got 'aaaaa[a.]*aaa'$") as raised:
            cls("a" * 500, registry=BucketRegistry(Rule(1, 1)))
        assert len(str(raised.value)) < 120
