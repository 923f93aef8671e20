"""The demo gateway: a rate-limited FastAPI app with the runtime rule API, served by uvicorn.

    pip install 'tokenbucket[demo]'
    python -m tokenbucket.demo [--host 127.0.0.1] [--port 8000] [--capacity 10] [--refill-rate 1]

Every client IP gets a bucket of ``--capacity`` tokens refilled at ``--refill-rate`` per second:
ten quick ``curl http://localhost:8000/`` succeed and the eleventh gets 429. The admin API is on at
``/admin/update-rule``; its token comes from the environment variable ``TOKENBUCKET_ADMIN_TOKEN``
or is generated and printed at start-up, with curl lines to try.

To serve the same app another way, build it with [`create_app`][tokenbucket.demo.create_app].
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any, Dict, List, Optional, TextIO, Union

from fastapi import FastAPI, Request

from . import __version__
from ._registry import BucketRegistry
from ._rule import Rule
from .asgi import RateLimitMiddleware

#: The environment variable the admin token is read from.
TOKEN_VARIABLE = "TOKENBUCKET_ADMIN_TOKEN"


def create_app(registry: BucketRegistry, admin_token: Optional[str]) -> FastAPI:
    """Return the gateway app: ``GET /`` limited per client IP by ``registry``.

    Args:
        registry: the buckets; its default rule is every client's limit.
        admin_token: enables the admin API at ``/admin/update-rule`` (None disables it).
    """
    app = FastAPI(title="tokenbucket demo gateway", version=__version__)

    @app.get("/")
    async def root(request: Request) -> Dict[str, Any]:
        client = request.client.host if request.client else None
        return {"message": "Hello from the tokenbucket demo gateway", "client": client}

    @app.get("/health")
    async def health() -> Dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        RateLimitMiddleware,
        registry=registry,
        admin_token=admin_token,
        exempt=["/health"],
    )
    return app


def _number(text: str) -> Union[int, float]:
    try:
        return int(text)
    except ValueError:
        return float(text)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser (extend it to add options)."""
    parser = argparse.ArgumentParser(
        prog="python -m tokenbucket.demo",
        description="A rate-limited demo gateway: a token bucket per client IP, with an admin API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--capacity", type=_number, default=10, help="bucket size (burst)")
    parser.add_argument("--refill-rate", type=_number, default=1.0, help="tokens added per second")
    return parser


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


def banner(host: str, port: int, rule: Rule, token: str, generated: bool) -> str:
    """Return what the demo prints at start-up: the limit, the token and curl lines to try."""
    base = f"http://{_url_host(host)}:{port}"
    where = (
        f"generated; set {TOKEN_VARIABLE} to choose it" if generated else f"from {TOKEN_VARIABLE}"
    )
    body = '{"client_id": "127.0.0.1", "capacity": 50, "refill_rate": 10.0}'
    return "\n".join(
        [
            f"tokenbucket demo gateway on {base}/",
            f"  limit: {rule.capacity} requests of burst, refilled at {rule.refill_rate}/s, "
            "per client IP",
            f"  admin token ({where}): {token}",
            "",
            "Try:",
            f"  for i in $(seq 11); do curl -s -o /dev/null -w '%{{http_code}}\\n' {base}/; done",
            f"  curl -X POST {base}/admin/update-rule -H 'Authorization: Bearer {token}' "
            f"-H 'Content-Type: application/json' -d '{body}'",
            f"  curl '{base}/admin/update-rule?client_id=127.0.0.1' "
            f"-H 'Authorization: Bearer {token}'",
            "",
        ]
    )


def main(argv: Optional[List[str]] = None, out: TextIO = sys.stdout) -> None:
    """Parse ``argv``, print the banner to ``out`` and serve the gateway until interrupted."""
    import uvicorn

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rule = Rule(args.capacity, args.refill_rate)
    except (TypeError, ValueError) as exc:
        parser.error(
            str(exc).replace("'capacity'", "--capacity").replace("'refill_rate'", "--refill-rate")
        )
    token = os.environ.get(TOKEN_VARIABLE) or None
    generated = token is None
    if token is None:
        token = secrets.token_urlsafe(24)
    try:
        app = create_app(BucketRegistry(rule), token)
    except ValueError as exc:
        parser.error(f"{TOKEN_VARIABLE}: {exc}")
    print(banner(args.host, args.port, rule, token, generated), file=out, flush=True)
    # proxy_headers=False: the client address is the peer's, never a forwarded header.
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=False)


if __name__ == "__main__":
    main()
