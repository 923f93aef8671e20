"""No dependencies at all: a plain WSGI app, the middleware and the standard library's server.

From the root of a clone, in a virtualenv (python3 -m venv .venv && . .venv/bin/activate):

    pip install -e .
    python examples/wsgiref_app.py 8000

(Once tokenbucket-ratelimit is on PyPI: pip install tokenbucket-ratelimit.)

Try the admin API: it prints a TOKEN=... line at start-up; paste it into your shell, then

    curl -X POST localhost:8000/admin/update-rule -H "Authorization: Bearer $TOKEN" \\
         -d '{"client_id": "127.0.0.1", "capacity": 50, "refill_rate": 10.0}'
"""

import os
import secrets
import sys
from wsgiref.simple_server import make_server

from tokenbucket import BucketRegistry, Rule
from tokenbucket.wsgi import RateLimitMiddleware


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [b"hello\n"]


registry = BucketRegistry(Rule(capacity=10, refill_rate=1.0))
token = os.environ.get("TOKENBUCKET_ADMIN_TOKEN") or secrets.token_urlsafe(24)
app = RateLimitMiddleware(hello, registry=registry, admin_token=token, headers="both")

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    print(f"serving http://127.0.0.1:{port}/; the admin token:\nTOKEN={token}", flush=True)
    make_server("127.0.0.1", port, app).serve_forever()
