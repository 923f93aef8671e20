"""Harnesses that drive both middlewares the same way, in-process, with a manual clock.

``make(**options)`` (parametrised over ASGI and WSGI) returns a `Harness` whose ``request()``
calls the middleware directly: a raw ASGI call on a fresh event loop, or a WSGI call through
``wsgiref.validate`` so that every WSGI test also checks PEP 3333 compliance.
"""

from __future__ import annotations

import asyncio
import io
import json
import wsgiref.util
import wsgiref.validate
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import pytest

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.asgi import RateLimitMiddleware as AsgiMiddleware
from tokenbucket.wsgi import RateLimitMiddleware as WsgiMiddleware

IP = "203.0.113.7"
TOKEN = "s3cret-Token_123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Result(NamedTuple):
    status: int
    headers: List[Tuple[str, str]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        values = self.all(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        return values[0] if values else None

    def all(self, name: str) -> List[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


class Harness:
    """One middleware around a small app that answers 200 ``app`` and records what it saw."""

    def __init__(self, kind: str, registry: Optional[BucketRegistry] = None, **options: Any):
        self.kind = kind
        self.clock = ManualClock()
        self.registry = registry or BucketRegistry(Rule(3, 1.0), clock=self.clock)
        self.seen: List[str] = []  # paths that reached the app
        self.app_headers: List[Tuple[str, str]] = []  # extra headers the app sets
        if kind == "asgi":
            self.middleware: Any = AsgiMiddleware(self._asgi_app, registry=self.registry, **options)
        else:
            self.middleware = WsgiMiddleware(self._wsgi_app, registry=self.registry, **options)

    async def _asgi_app(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.seen.append(scope["path"])
        headers = [(b"content-type", b"text/plain")]
        headers += [(k.lower().encode(), v.encode()) for k, v in self.app_headers]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"app"})

    def _wsgi_app(self, environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        self.seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain"), *self.app_headers])
        return [b"app"]

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: str = "",
        headers: Optional[Dict[str, str]] = None,
        body: bytes = b"",
        client: Optional[str] = IP,
        chunks: Optional[Sequence[bytes]] = None,
        content_length: Optional[str] = "auto",
    ) -> Result:
        """Send one request. ``chunks`` splits an ASGI body; ``content_length=None`` omits it."""
        fields = dict(headers or {})
        if content_length == "auto":
            content_length = str(len(body)) if body or method in ("POST", "PUT") else None
        if self.kind == "asgi":
            return asyncio.run(
                self._asgi(method, path, query, fields, body, client, chunks, content_length)
            )
        return self._wsgi(method, path, query, fields, body, client, content_length)

    async def _asgi(
        self,
        method: str,
        path: str,
        query: str,
        fields: Dict[str, str],
        body: bytes,
        client: Optional[str],
        chunks: Optional[Sequence[bytes]],
        content_length: Optional[str],
    ) -> Result:
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]
        if content_length is not None:
            raw.append((b"content-length", content_length.encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode("latin-1"),
            "headers": raw,
            "client": None if client is None else (client, 40000),
            "server": ("testserver", 80),
        }
        parts = list(chunks) if chunks is not None else [body]
        messages = [
            {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
            for index, part in enumerate(parts)
        ]
        sent: List[Dict[str, Any]] = []

        async def receive() -> Dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        await self.middleware(scope, receive, send)
        assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in sent[0]["headers"]]
        for name, _ in headers:
            assert name == name.lower(), f"ASGI header name not lower case: {name}"
        return Result(sent[0]["status"], headers, sent[1].get("body", b""))

    def _wsgi(
        self,
        method: str,
        path: str,
        query: str,
        fields: Dict[str, str],
        body: bytes,
        client: Optional[str],
        content_length: Optional[str],
    ) -> Result:
        environ: Dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "wsgi.input": io.BytesIO(body),
        }
        if client is not None:
            environ["REMOTE_ADDR"] = client
        if content_length is not None:
            environ["CONTENT_LENGTH"] = content_length
        for name, value in fields.items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            else:
                environ["HTTP_" + key] = value
        wsgiref.util.setup_testing_defaults(environ)
        if client is None:
            environ.pop("REMOTE_ADDR", None)
        captured: Dict[str, Any] = {}

        def start_response(
            status: str, headers: List[Tuple[str, str]], exc_info: Any = None
        ) -> Any:
            captured["status"] = status
            captured["headers"] = headers
            return lambda data: None

        app = wsgiref.validate.validator(self.middleware)
        result = app(environ, start_response)
        try:
            body_out = b"".join(result)
        finally:
            result.close()
        return Result(int(captured["status"].split()[0]), list(captured["headers"]), body_out)


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str) -> Any:
    """``make(**options)``: a Harness of the parametrised kind with those middleware options."""

    def factory(**options: Any) -> Harness:
        return Harness(kind, **options)

    return factory
