"""Django: the admin API through a URLconf include (admin_urls), through django.test.Client."""

from __future__ import annotations

import logging

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["tokenbucket.django.RateLimitMiddleware"],
        INSTALLED_APPS=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": []}],
        TOKENBUCKET={},
    )
    django.setup()

from django.http import HttpResponse  # noqa: E402
from django.test import Client, override_settings  # noqa: E402
from django.urls import include, path  # noqa: E402

from tokenbucket import ManualClock, MemoryStore  # noqa: E402
from tokenbucket.django import admin_urls  # noqa: E402

TOKEN = "s3cret-Token_123"
AUTH_VALUE = f"Bearer {TOKEN}"
AUTH = {"HTTP_AUTHORIZATION": AUTH_VALUE}
URL = "/ratelimit/update-rule"


def login(request):
    return HttpResponse("login")


urlpatterns = [
    path("login/", login),
    path("ratelimit/", include(admin_urls())),
]


def configured(**extra):
    tokenbucket = {
        "STORE": MemoryStore(clock=ManualClock()),
        "ROUTES": {"/login/": "2/minute"},
        "DEFAULT": "3/minute",
        "EXEMPT": ["/ratelimit/*"],
        "ADMIN_TOKEN": TOKEN,
        **extra,
    }
    middleware = [
        "django.middleware.csrf.CsrfViewMiddleware",
        "tokenbucket.django.RateLimitMiddleware",
    ]
    return override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=middleware, TOKENBUCKET=tokenbucket)


def test_an_authorised_change_applies():
    with configured():
        client = Client(enforce_csrf_checks=True)  # a bearer-token API needs no CSRF token
        body = {"client_id": "127.0.0.1", "route": "/login/", "capacity": 4}
        answer = client.post(URL, body, content_type="application/json", **AUTH)
        assert answer.status_code == 200, answer.content
        assert answer.json()["capacity"] == 4
        assert answer.json()["override"] is True
        assert [client.get("/login/").status_code for _ in range(5)] == [200] * 4 + [429]
        read = client.get(URL, {"client_id": "127.0.0.1", "route": "/login/"}, **AUTH)
        assert read.json()["tokens"] == 0
        assert client.get(f"{URL}/export", **AUTH).status_code == 200  # an endpoint under it


def test_unauthorised_is_401_counted_and_changes_nothing():
    with configured():
        client = Client()
        body = {"client_id": "127.0.0.1", "route": "/login/", "capacity": 40}
        missing = client.post(URL, body, content_type="application/json")
        assert missing.status_code == 401
        assert missing.json() == {"error": "missing bearer token"}
        wrong = client.post(
            URL, body, content_type="application/json", HTTP_AUTHORIZATION="Bearer nope"
        )
        assert wrong.status_code == 403
        assert client.post(URL, body, content_type="application/json").status_code == 401
        assert client.post(URL, body, content_type="application/json").status_code == 429
        assert [client.get("/login/").status_code for _ in range(3)] == [200, 200, 429]


def test_bad_body_is_400_naming_the_field_and_nothing_half_applied(caplog):
    with configured():
        client = Client()
        body = {"client_id": "127.0.0.1", "route": "/login/", "capacity": 0}
        with caplog.at_level(logging.DEBUG, logger="tokenbucket.admin"):
            answer = client.post(URL, body, content_type="application/json", **AUTH)
        assert answer.status_code == 400
        assert "capacity" in answer.json()["error"]
        assert any("rejected (400)" in record.getMessage() for record in caplog.records)
        assert [client.get("/login/").status_code for _ in range(3)] == [200, 200, 429]
        assert client.put(URL, **AUTH).status_code == 405
        assert client.get(f"{URL}/nothing", **AUTH).status_code == 404


def test_without_an_admin_token_the_include_is_404():
    with configured(ADMIN_TOKEN=None):
        assert Client().get(URL, {"client_id": "x"}, **AUTH).status_code == 404


def test_an_authorised_change_applies_under_asgi():
    # Under ASGI, request.META has no wsgi.input: the body is read from the request itself.
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    with configured():
        client = AsyncClient()
        body = {"client_id": "127.0.0.1", "route": "/login/", "capacity": 4}

        async def send(*args, **kwargs):  # (Django 4.2's AsyncClient.post is not a coroutine
            return await client.post(*args, **kwargs)  # function: async_to_sync would warn)

        post = async_to_sync(send)
        answer = post(
            URL, body, content_type="application/json", headers={"authorization": AUTH_VALUE}
        )
        assert answer.status_code == 200, answer.content
        assert answer.json()["capacity"] == 4
        assert answer.json()["override"] is True


def test_a_wsgi_body_without_length_is_read_when_the_server_ends_it():
    """A chunked POST (no Content-Length, ``wsgi.input_terminated``) as the WSGI middleware.

    Regression: Django's middleware read the request, whose stream is empty without a
    Content-Length, and answered 400 where the WSGI middleware applies the body.
    """
    import io
    import json
    import wsgiref.util

    from django.core.handlers.wsgi import WSGIHandler

    body = json.dumps({"client_id": "127.0.0.1", "route": "/login/", "capacity": 4}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": URL,
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": AUTH_VALUE,
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
    }
    wsgiref.util.setup_testing_defaults(environ)
    started = []
    with configured():
        out = b"".join(WSGIHandler()(environ, lambda status, headers: started.append(status)))
        assert started == ["200 OK"], out
        assert json.loads(out)["capacity"] == 4
        assert [Client().get("/login/").status_code for _ in range(5)] == [200] * 4 + [429]
