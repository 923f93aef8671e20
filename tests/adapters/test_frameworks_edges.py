"""The shared guard's checks and the integrations' less travelled paths."""

from __future__ import annotations

import pytest

from tokenbucket import BucketRegistry, ManualClock, MemoryStore, Rule
from tokenbucket._http.guard import Guard
from tokenbucket._http.request import RequestView


def view(client="203.0.113.7", headers=None):
    return RequestView("GET", "http", "/", "", client, headers or {}, lambda raw: raw)


def test_guard_checks_its_options():
    with pytest.raises(ValueError, match="'name' must be a non-empty printable ASCII str"):
        Guard("1/s", name="é")
    with pytest.raises(ValueError, match="'headers' must be 'draft'"):
        Guard("1/s", headers="all")
    with pytest.raises(TypeError, match="'cost' must be a number > 0"):
        Guard("1/s", cost="1")
    with pytest.raises(ValueError, match="'ipv6_prefix' must be an int"):
        Guard("1/s", ipv6_prefix=200)


def test_guard_names_keys_costs_and_never():
    guard = Guard(BucketRegistry(Rule(4, 0.0), clock=ManualClock()), cost=lambda v: 3)
    assert guard.policy.name == "default"
    assert not guard.plain
    first = guard.decide(view(), Guard.prefix("scope"))
    assert first.allowed
    never = guard.decide(view(), Guard.prefix("scope"))
    assert not never.allowed
    # A bucket that never refills: no Retry-After, only the fields.
    assert [name for name, _ in guard.fields(never)] == ["RateLimit-Policy", "RateLimit"]
    assert guard.registry.tokens("scope\x00203.0.113.7") == 1
    assert Guard.prefix("a\0b") == "a\1\2b\0"  # a scope cannot reach another namespace

    bad = Guard("1/s", key=lambda request: 42)
    with pytest.raises(TypeError, match="returned 42 \\(int\\); a key function must return"):
        bad.decide(view(), "")


def test_guard_legacy_headers():
    guard = Guard("2/minute", headers="legacy", store=MemoryStore(clock=ManualClock()))
    decision = guard.decide(view(), "")
    assert guard.fields(decision) == [
        ("X-RateLimit-Limit", "2"),
        ("X-RateLimit-Remaining", "1"),
        ("X-RateLimit-Reset", "30"),
    ]


def test_fastapi_without_a_route_and_its_repr():
    from tokenbucket.fastapi import RateLimit

    limit = RateLimit("5/minute", shared=True)
    assert repr(limit) == "RateLimit('5/minute', shared=True)"
    assert limit._prefix({"path": "/mounted/x"}) == "/mounted/x\0"


def test_flask_exempt_refuses_what_is_not_a_view():
    from tokenbucket.flask import Limiter

    with pytest.raises(TypeError, match=r"limiter\.exempt takes views or blueprints"):
        Limiter().exempt(42)


def test_django_user_key_and_store_path():
    pytest.importorskip("django")
    from types import ModuleType

    import django
    from django.conf import settings
    from django.http import HttpResponse
    from django.test import Client, override_settings
    from django.urls import path

    from tokenbucket.django import _Config, ratelimit

    if not settings.configured:
        settings.configure(SECRET_KEY="tests-not-secret", ALLOWED_HOSTS=["*"], TOKENBUCKET={})
        django.setup()

    class User:
        def __init__(self, pk):
            self.pk, self.is_authenticated = pk, pk is not None

    def login_from_header(get_response):
        def middleware(request):
            user = request.headers.get("x-user")
            request.user = User(int(user) if user else None)
            return get_response(request)

        return middleware

    @ratelimit("1/minute", key="user")
    def profile(request):
        return HttpResponse("me")

    urls = ModuleType("edge_urls")
    urls.urlpatterns = [path("me/", profile)]
    hooks = f"{__name__}.STORE_FACTORY"
    module = __import__(__name__, fromlist=["x"])
    module.STORE_FACTORY = lambda: MemoryStore(clock=ManualClock())
    module.login_from_header = login_from_header
    with override_settings(
        ROOT_URLCONF=urls,
        MIDDLEWARE=[f"{__name__}.login_from_header"],
        TOKENBUCKET={"STORE": hooks},
    ):
        client = Client()
        alice = [client.get("/me/", HTTP_X_USER="1").status_code for _ in range(2)]
        bob = client.get("/me/", HTTP_X_USER="2").status_code
        anonymous = [client.get("/me/").status_code for _ in range(2)]
    assert alice == [200, 429]
    assert bob == 200  # another user, another bucket, from the same address
    assert anonymous == [200, 429]  # keyed by the address
    with pytest.raises(TypeError, match=r"settings\.TOKENBUCKET must be a dict"):
        _Config(["DEFAULT"])
