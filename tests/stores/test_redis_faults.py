"""Redis going away and coming back: the failure policy, bounded waits, recovery, logging.

Each test that stops Redis runs its own redis-server (``own_redis``). Waits are measured and
asserted as generous upper bounds. Nothing sleeps: a bucket's refill is never waited for, and
the circuit breaker's windows pass on a ManualClock (only the breaker's clock: Redis and the
network calls stay real).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import pytest
import redis

from tokenbucket import BucketRegistry, ManualClock, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore, RedisUnavailableError

# Three requests through Redis on a bucket of 3, then Redis stops: what the next 5 get.
DURING_OUTAGE = {
    "fallback": [True, True, True, False, False],  # a fresh per-process bucket of 3
    "deny": [False] * 5,
    "allow": [True] * 5,
}


def manual_clock(store):
    """Give ``store``'s circuit breaker a ManualClock (its documented test hook) and return it."""
    clock = ManualClock()
    store._logic.breaker.clock = clock
    return clock


class Sync:
    """Drives a sync store; ``Async`` offers the same calls on an async one."""

    cls = RedisStore

    def __init__(self, url, **options):
        self.store = self.cls.from_url(url, **options)
        self.limits = BucketRegistry(Rule(3, 0), store=self.store)

    def decide(self, key, times=1):
        return [self.limits.try_consume(key) for _ in range(times)]

    def consume(self, key):
        return self.limits.consume(key)

    def update_rule(self, key, **fields):
        return self.limits.update_rule(key, **fields)

    def admin_calls(self, key):
        return [
            lambda: self.limits.update_rule(key, capacity=9),
            lambda: self.limits.remove_rule(key),
            lambda: self.limits.reset(key),
            lambda: self.limits.rule_for(key),
        ]

    def close(self):
        self.store.close()


class Async(Sync):
    cls = AsyncRedisStore

    def __init__(self, url, **options):
        self.loop = asyncio.new_event_loop()

        async def make():  # in the loop that uses it (Python 3.9's asyncio needs that)
            Sync.__init__(self, url, **options)

        self._run(make())

    def _run(self, awaitable):
        return self.loop.run_until_complete(awaitable)

    def decide(self, key, times=1):
        return [self._run(self.limits.atry_consume(key)) for _ in range(times)]

    def consume(self, key):
        return self._run(self.limits.aconsume(key))

    def update_rule(self, key, **fields):
        return self._run(self.limits.aupdate_rule(key, **fields))

    def admin_calls(self, key):
        return [
            lambda: self._run(self.limits.aupdate_rule(key, capacity=9)),
            lambda: self._run(self.limits.aremove_rule(key)),
            lambda: self._run(self.limits.areset(key)),
            lambda: self._run(self.limits.arule_for(key)),
        ]

    def close(self):
        self._run(self.store.aclose())
        self.loop.close()


@pytest.fixture(params=[Sync, Async], ids=["sync", "async"])
def driver(request):
    made = []

    def make(url, **options):
        made.append(request.param(url, **options))
        return made[-1]

    yield make
    for each in made:
        each.close()


@pytest.mark.parametrize("policy", ["fallback", "deny", "allow"])
def test_outage_applies_the_policy_then_recovers(own_redis, driver, policy):
    """Redis stops: decisions follow on_error and never raise; it starts again: they resume."""
    limits = driver(own_redis.url, on_error=policy, retry_interval=0)
    assert limits.decide("k", 3) == [True, True, True]  # through Redis: now empty
    assert limits.store.available
    own_redis.stop()
    assert limits.decide("k", 5) == DURING_OUTAGE[policy]
    assert not limits.store.available
    own_redis.start()  # same port, no data: every bucket is full again
    assert limits.decide("k", 4) == [True, True, True, False]
    assert limits.store.available
    check = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert check.hget("tokenbucket:k", "u") == "3"  # the decisions went through Redis
    check.close()


def test_deny_and_allow_decisions_are_complete(own_redis):
    """deny reports an empty bucket; allow a full one (a request beyond capacity still fails)."""
    store = RedisStore.from_url(own_redis.url, on_error="deny", retry_interval=60)
    limits = BucketRegistry(Rule(4, 2.0), store=store)
    own_redis.stop()
    decision = limits.consume("k")
    assert (decision.allowed, decision.remaining, decision.retry_after) == (False, 0.0, 0.5)
    store.close()
    store = RedisStore.from_url(own_redis.url, on_error="allow", retry_interval=60)
    limits = BucketRegistry(Rule(4, 2.0), store=store)
    assert limits.consume("k", 3).remaining == 1.0
    assert limits.consume("k", 4).remaining == 0.0
    assert not limits.consume("k", 5).allowed
    assert limits.tokens("k") == 4.0
    store.close()


def test_fallback_keeps_overrides_it_has_seen(own_redis, driver):
    """A key whose override this store saw keeps that rule while Redis is down."""
    limits = driver(own_redis.url, retry_interval=60)
    assert limits.update_rule("vip", capacity=5) == Rule(5, 0)
    own_redis.stop()
    assert limits.decide("vip", 6) == [True] * 5 + [False]
    assert limits.decide("plain", 4) == [True] * 3 + [False]


def test_admin_calls_raise_a_clear_error(own_redis, driver):
    """update_rule, remove_rule, reset and rule_for raise RedisUnavailableError, a builtin
    ConnectionError naming the call and the key."""
    limits = driver(own_redis.url, retry_interval=60)
    own_redis.stop()
    for call, name in zip(
        limits.admin_calls("k"), ["update_rule", "remove_rule", "reset", "get_rule"]
    ):
        with pytest.raises(RedisUnavailableError, match=rf"^{name}\('k'\) failed in Redis"):
            call()
    assert issubclass(RedisUnavailableError, ConnectionError)
    assert limits.decide("k") == [True]  # decisions still never raise


@pytest.fixture
def silent_server():
    """A socket on 127.0.0.1 that accepts connections (via the backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_a_silent_server_costs_one_bounded_timeout(silent_server, driver):
    """A decision waits at most about socket_timeout; then the breaker skips Redis."""
    limits = driver(silent_server, socket_timeout=0.3, retry_interval=60)
    start = time.monotonic()
    assert limits.decide("k") == [True]  # fallback
    first = time.monotonic() - start
    assert first < 0.3 + 1.5  # one timeout, not redis-py's 5 s x 10 retries
    start = time.monotonic()
    assert limits.decide("k", 50) == [True, True, False] + [False] * 47
    assert time.monotonic() - start < 0.3  # 50 decisions, not one of them waited for Redis
    assert not limits.store.available


def test_only_one_caller_probes_when_the_window_ends(silent_server):
    """With the window over, one decision probes Redis; the others keep deciding locally."""
    store = RedisStore.from_url(silent_server, socket_timeout=0.3, retry_interval=0.05)
    clock = manual_clock(store)
    limits = BucketRegistry(Rule(100, 0), store=store)
    limits.try_consume("k")  # opens the breaker
    breaker = store._logic.breaker
    clock.advance(0.049)
    assert breaker.skip()  # inside the window everyone skips
    clock.advance(0.001)  # the window is over
    assert not breaker.skip()  # this caller takes the probe ...
    assert breaker.skip()  # ... and everyone else still skips
    store.close()


def test_breaker_window_follows_its_clock(own_redis, driver):
    """Back from an outage, decisions stay local until retry_interval has passed on the
    breaker's clock; the first one after it goes to Redis and closes the breaker."""
    limits = driver(own_redis.url, retry_interval=60)
    clock = manual_clock(limits.store)
    own_redis.stop()
    assert limits.decide("k", 4) == [True, True, True, False]  # fallback bucket of 3
    own_redis.start()
    clock.advance(59.9)
    assert limits.decide("k") == [False]  # still the fallback, Redis not tried
    assert not limits.store.available
    clock.advance(0.1)
    assert limits.decide("k", 4) == [True, True, True, False]  # Redis: a fresh bucket
    assert limits.store.available
    check = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert check.hget("tokenbucket:k", "u") == "3"
    check.close()


def test_outage_logged_once_per_window_and_recovery_logged(own_redis, caplog):
    """One warning when Redis goes away (not one per request), one when it is back."""
    caplog.set_level(logging.WARNING, logger="tokenbucket.redis")
    store = RedisStore.from_url(own_redis.url, retry_interval=60)
    limits = BucketRegistry(Rule(3, 0), store=store)
    limits.try_consume("k")
    own_redis.stop()
    for _ in range(20):
        limits.try_consume("k")
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("Redis unavailable (ConnectionError: ")
    assert "deciding with on_error='fallback', retrying in 60 s" in messages[0]
    own_redis.start()
    caplog.clear()
    limits.rule_for("k")  # an admin call always tries Redis, and closes the breaker
    assert [record.getMessage() for record in caplog.records] == [
        "Redis available again; decisions go through Redis"
    ]
    assert store.available
    store.close()


def test_an_error_on_one_key_does_not_open_the_breaker(redis_url, caplog):
    """A key holding another type fails alone: its decisions follow the policy, others go on."""
    caplog.set_level(logging.WARNING, logger="tokenbucket.redis")
    store = RedisStore.from_url(redis_url, on_error="deny")
    limits = BucketRegistry(Rule(3, 0), store=store)
    admin = redis.Redis.from_url(redis_url)
    admin.rpush("tokenbucket:odd", "not a bucket")
    assert [limits.try_consume("odd") for _ in range(3)] == [False] * 3
    assert store.available
    assert [limits.try_consume("fine") for _ in range(4)] == [True, True, True, False]
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith("Redis refused a call (ResponseError: ")
    with pytest.raises(RedisUnavailableError, match=r"^update_rule\('odd'\) failed in Redis"):
        limits.update_rule("odd", capacity=5)
    admin.close()
    store.close()


def test_admin_api_answers_503_while_redis_is_down(own_redis):
    """Over HTTP an admin call during an outage is a 503 JSON error, never a 500; requests go
    on under the failure policy; after recovery the admin API works again."""
    import httpx

    from tokenbucket.wsgi import RateLimitMiddleware

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    store = RedisStore.from_url(own_redis.url, retry_interval=0.05)
    clock = manual_clock(store)
    limited = RateLimitMiddleware(
        app, registry=BucketRegistry(Rule(3, 0), store=store), admin_token="t0ken-0123456789ab"
    )
    auth = {"Authorization": "Bearer t0ken-0123456789ab"}
    transport = httpx.WSGITransport(app=limited, remote_addr="192.0.2.1")
    with httpx.Client(transport=transport, base_url="http://test") as client:
        body = {"client_id": "192.0.2.9", "capacity": 7}
        assert client.post("/admin/update-rule", json=body, headers=auth).status_code == 200
        own_redis.stop()
        try:
            down = client.post("/admin/update-rule", json=body, headers=auth)
            assert down.status_code == 503
            assert down.headers["Retry-After"] == "1"
            assert down.json()["error"].startswith("the rate-limit store is unavailable")
            read = client.get("/admin/update-rule", params={"client_id": "192.0.2.9"}, headers=auth)
            assert read.status_code == 503
            assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
        finally:
            own_redis.start()
        clock.advance(0.1)  # past retry_interval: the next call probes Redis again
        # This test server keeps no data across a restart, so the update is made again.
        again = client.post("/admin/update-rule", json=body, headers=auth)
        assert again.status_code == 200, again.text
        assert again.json()["capacity"] == 7
    store.close()


def test_fallback_store_is_capped(own_redis):
    """During an outage a flood of distinct keys cannot grow the fallback store past its cap."""
    from tokenbucket.redis import FALLBACK_MAX_KEYS

    store = RedisStore.from_url(own_redis.url, retry_interval=60)
    limits = BucketRegistry(Rule(3, 0), store=store)
    own_redis.stop()
    try:
        admitted = sum(limits.try_consume(f"flood-{i}") for i in range(FALLBACK_MAX_KEYS + 500))
        assert len(store._logic.fallback) == FALLBACK_MAX_KEYS
        assert admitted == FALLBACK_MAX_KEYS  # later keys count as empty buckets at the cap
    finally:
        own_redis.start()
        store.close()


@pytest.mark.parametrize("policy", ["fallback", "deny", "allow"])
def test_charge_and_reservations_follow_the_policy(policy):
    """Without Redis, a charge never raises and a reservation keeps its max_wait: the fallback
    store refuses one whose wait is longer, deny refuses all, allow takes from a full bucket."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", on_error=policy, retry_interval=0)
    rule = Rule(3, 1.0)
    try:
        assert store.charge("k", 3, rule, None)[0]
        reserved = store.charge("k", 3, rule, 1.0)[0]
        assert reserved == {"fallback": False, "deny": False, "allow": True}[policy]
        assert store.refund("k", 1, rule)[0]
    finally:
        store.close()
