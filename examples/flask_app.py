"""Flask: wrap the WSGI app; rate limits per customer (known API keys), else per client IP.

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


# The API keys you issued, each to its customer (in a real app: your database or settings).
API_KEYS = {"demo-key-alice": "alice", "demo-key-bob": "bob"}


def customer_or_ip(request):
    """A known API key's customer, else the client IP; the same function works under ASGI.

    Only keys you issued count, and each kind has its own prefix: a header taken as it is
    would let a client send a new key per request (a fresh bucket each time) or name another
    client's key or IP address and empty that bucket.
    """
    customer = API_KEYS.get(request.header("x-api-key"))
    return f"customer:{customer}" if customer else f"ip:{request.client or 'unknown'}"


app.wsgi_app = RateLimitMiddleware(app.wsgi_app, registry=registry, key=customer_or_ip)

if __name__ == "__main__":
    app.run()
