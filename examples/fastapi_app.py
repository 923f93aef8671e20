"""FastAPI: a rate-limited API with a stricter login route and the runtime rule API.

From the root of a clone, in a virtualenv (python3 -m venv .venv && . .venv/bin/activate):

    pip install -e '.[demo]'
    TOKENBUCKET_ADMIN_TOKEN=change-me-to-a-long-secret uvicorn examples.fastapi_app:app --port 8000

(Once tokenbucket-ratelimit is on PyPI: pip install 'tokenbucket-ratelimit[demo]'.)
"""

import os

from fastapi import FastAPI

from tokenbucket import BucketRegistry, Rule
from tokenbucket.asgi import RateLimitMiddleware

# Each client IP: bursts of 10, refilled at 1 request per second.
registry = BucketRegistry(Rule(capacity=10, refill_rate=1.0))

app = FastAPI()


@app.get("/")
async def index() -> dict:
    return {"message": "hello"}


@app.post("/login")
async def login() -> dict:
    return {"token": "..."}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}


app.add_middleware(
    RateLimitMiddleware,
    registry=registry,
    routes={"/login": Rule(capacity=3, refill_rate=0.1)},  # 3 tries, then one per 10 s
    exempt=["/health"],
    # Behind a reverse proxy, key on the client it reports (and on nothing else):
    #   key=tokenbucket.proxies.TrustedProxyKey(["10.0.0.0/8"]),
    admin_token=os.environ.get("TOKENBUCKET_ADMIN_TOKEN"),  # None: no admin API
)
