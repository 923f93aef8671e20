"""Flask: wrap the WSGI app; rate limits per API key, falling back to the client IP.

From the root of a clone, in a virtualenv (python3 -m venv .venv && . .venv/bin/activate):

    pip install -e . flask
    flask --app examples/flask_app.py run --port 8000

(Once tokenbucket-ratelimit is on PyPI: pip install tokenbucket-ratelimit flask.)
"""

from flask import Flask

from tokenbucket import BucketRegistry, Rule
from tokenbucket.wsgi import RateLimitMiddleware

app = Flask(__name__)
registry = BucketRegistry(Rule(capacity=10, refill_rate=1.0))


@app.get("/")
def index():
    return {"message": "hello"}


def api_key_or_ip(request):
    """The same key function works under the ASGI middleware."""
    return request.header("x-api-key") or request.client or "unknown"


app.wsgi_app = RateLimitMiddleware(app.wsgi_app, registry=registry, key=api_key_or_ip)

if __name__ == "__main__":
    app.run()
