"""Every app in examples/ is imported and driven in-process, so none can rot."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
import wsgiref.util
import wsgiref.validate
from pathlib import Path

import httpx
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
IP = "203.0.113.7"


def load(name):
    """Import examples/<name>.py as a fresh module (fresh buckets each time)."""
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # Django resolves ROOT_URLCONF by name
    spec.loader.exec_module(module)
    return module


def asgi_get(app, paths, ip=IP, **kwargs):
    async def scenario():
        transport = httpx.ASGITransport(app=app, client=(ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.request(kwargs.get("method", "GET"), path) for path in paths]

    return asyncio.run(scenario())


def wsgi_get(app, path="/", ip=IP, headers=None, method="GET", body=b""):
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "REMOTE_ADDR": ip,
        "wsgi.input": io.BytesIO(body),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    wsgiref.util.setup_testing_defaults(environ)
    captured = {}

    def start_response(status, fields, exc_info=None):
        captured["status"], captured["headers"] = int(status.split()[0]), dict(fields)
        return lambda data: None

    result = wsgiref.validate.validator(app)(environ, start_response)
    try:
        content = b"".join(result)
    finally:
        result.close()
    return captured["status"], captured["headers"], content


def test_fastapi_example(monkeypatch):
    """FastAPI: 10 per client, /login stricter (3), /health exempt, admin API from env."""
    monkeypatch.setenv("TOKENBUCKET_ADMIN_TOKEN", "example-token")
    module = load("fastapi_app")
    responses = asgi_get(module.app, ["/"] * 11)
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert responses[0].json() == {"message": "hello"}
    logins = asgi_get(module.app, ["/login"] * 4, method="POST")
    assert [r.status_code for r in logins] == [200, 200, 200, 429]
    assert logins[3].headers["retry-after"] == "10"
    assert [r.status_code for r in asgi_get(module.app, ["/health"] * 3)] == [200] * 3

    async def update():
        transport = httpx.ASGITransport(app=module.app, client=(IP, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/admin/update-rule",
                json={"client_id": IP, "capacity": 20},
                headers={"Authorization": "Bearer example-token"},
            )

    assert asyncio.run(update()).json()["capacity"] == 20
    assert asgi_get(module.app, ["/"])[0].status_code == 200


def test_fastapi_example_without_token_has_no_admin_api(monkeypatch):
    """Without TOKENBUCKET_ADMIN_TOKEN the admin path is an ordinary (missing) route."""
    monkeypatch.delenv("TOKENBUCKET_ADMIN_TOKEN", raising=False)
    module = load("fastapi_app")
    response = asgi_get(module.app, ["/admin/update-rule"])[0]
    assert response.status_code == 404


def test_starlette_example_counts_denials():
    """Starlette: legacy headers, and on_decision counts denials per path."""
    module = load("starlette_app")
    responses = asgi_get(module.app, ["/"] * 12)
    assert [r.status_code for r in responses].count(429) == 2
    assert responses[0].headers["x-ratelimit-limit"] == "10"
    assert "ratelimit" not in responses[0].headers
    stats = asgi_get(module.app, ["/stats"])[0]
    assert stats.json() == {"/": 2}


def test_flask_example_keys_by_api_key():
    """Flask: requests with an API key have their own bucket."""
    module = load("flask_app")
    statuses = [wsgi_get(module.app.wsgi_app)[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    status, headers, _ = wsgi_get(module.app.wsgi_app, headers={"X-API-Key": "alice"})
    assert status == 200
    assert headers["RateLimit"].startswith('"default";r=9;')


def test_django_example():
    """Django: the WSGI application behind the middleware."""
    pytest.importorskip("django")
    module = load("django_app")
    results = [wsgi_get(module.application) for _ in range(11)]
    assert [status for status, _, _ in results] == [200] * 10 + [429]
    assert results[0][2] == b'{"message": "hello"}'
    assert results[10][1]["Retry-After"] == "1"


def test_wsgiref_example_admin_api():
    """The zero-dependency app: burst, 429, then the admin API raises the limit."""
    module = load("wsgiref_app")
    statuses = [wsgi_get(module.app)[0] for _ in range(11)]
    assert statuses == [200] * 10 + [429]
    body = b'{"client_id": "203.0.113.7", "capacity": 12}'
    status, _, content = wsgi_get(
        module.app,
        "/admin/update-rule",
        method="POST",
        body=body,
        headers={"Authorization": f"Bearer {module.token}"},
    )
    assert status == 200
    assert b'"capacity": 12' in content
    assert [wsgi_get(module.app)[0] for _ in range(3)] == [200, 200, 429]
