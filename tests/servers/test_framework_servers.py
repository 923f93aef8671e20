"""The framework integrations under real servers: FastAPI under uvicorn, Flask and Django under
gunicorn, each app with a 429 handler of its own; 12 requests over loopback, 10 admitted."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "server_helpers", Path(__file__).with_name("test_servers.py")
)
assert _SPEC is not None
assert _SPEC.loader is not None
_helpers = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_helpers)
Server, listening_socket = _helpers.Server, _helpers.listening_socket

# 10 per hour: nothing refills while the 12 requests are sent.
FASTAPI_APP = """
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from tokenbucket.fastapi import RateLimit

limit = RateLimit("10/hour")
app = FastAPI()


@app.exception_handler(429)
async def too_many(request: Request, exc: HTTPException):
    return JSONResponse({"handled_by": "app"}, status_code=429, headers=exc.headers)


@app.get("/", dependencies=[Depends(limit)])
def home():
    return "hello"
"""

FLASK_APP = """
from flask import Flask

from tokenbucket.flask import Limiter

app = Flask(__name__)
limiter = Limiter(app, default="10/hour")


@app.errorhandler(429)
def too_many(error):
    return {"handled_by": "app"}, 429


@app.get("/")
def home():
    return "hello"
"""

DJANGO_SETTINGS = """
SECRET_KEY = "server-test-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "django_urls"
MIDDLEWARE = ["tokenbucket.django.RateLimitMiddleware"]
TOKENBUCKET = {"DEFAULT": "10/hour", "DENIED_VIEW": "django_urls.too_many"}
"""

DJANGO_URLS = """
from django.http import HttpResponse, JsonResponse
from django.urls import path


def home(request):
    return HttpResponse("hello")


def too_many(request, exception):
    return JsonResponse({"handled_by": "app"}, status=429)


urlpatterns = [path("", home)]
"""

DJANGO_WSGI = """
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()
"""


def burst(base: str, policy: str) -> None:
    """12 requests: 10 admitted with the fields, 2 refused by the app's own 429 handler."""
    with httpx.Client(base_url=base, timeout=10) as client:
        responses = [client.get("/") for _ in range(12)]
    assert [r.status_code for r in responses] == [200] * 10 + [429] * 2
    first, last = responses[0], responses[-1]
    assert "hello" in first.text
    assert first.headers["ratelimit-policy"] == f'"{policy}";q=10;w=3600'
    assert first.headers["ratelimit"] == f'"{policy}";r=9;t=360'
    assert last.json() == {"handled_by": "app"}
    retry_after = int(last.headers["retry-after"])
    assert 355 <= retry_after <= 360
    assert last.headers["ratelimit"] == f'"{policy}";r=0;t={retry_after}'


def serve(args, app_dir: Path, policy: str = "10/hour") -> None:
    sock = listening_socket()
    port = sock.getsockname()[1]
    try:
        command = [arg.replace("{fd}", str(sock.fileno())) for arg in args]
        with Server(command, port, cwd=app_dir, pass_fds=(sock.fileno(),)) as server:
            server.wait_ready()
            burst(f"http://127.0.0.1:{port}", policy)
    finally:
        sock.close()


def test_fastapi_under_uvicorn(tmp_path: Path) -> None:
    (tmp_path / "fastapi_app.py").write_text(textwrap.dedent(FASTAPI_APP))
    args = [sys.executable, "-m", "uvicorn", "--fd", "{fd}", "fastapi_app:app"]
    serve([*args, "--no-proxy-headers", "--log-level", "warning"], tmp_path)


GUNICORN = [sys.executable, "-m", "gunicorn", "--bind", "fd://{fd}", "--workers", "1"]


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on Unix only")
def test_flask_under_gunicorn(tmp_path: Path) -> None:
    (tmp_path / "flask_app.py").write_text(textwrap.dedent(FLASK_APP))
    serve([*GUNICORN, "--log-level", "warning", "flask_app:app"], tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn runs on Unix only")
def test_django_under_gunicorn(tmp_path: Path) -> None:
    (tmp_path / "django_settings.py").write_text(textwrap.dedent(DJANGO_SETTINGS))
    (tmp_path / "django_urls.py").write_text(textwrap.dedent(DJANGO_URLS))
    (tmp_path / "django_wsgi.py").write_text(textwrap.dedent(DJANGO_WSGI))
    serve([*GUNICORN, "--log-level", "warning", "django_wsgi:application"], tmp_path, "default")
