"""A gateway started while Redis is down: it starts, applies its failure policy, then uses Redis.

The demo (``python -m tokenbucket.demo --redis URL --on-error POLICY``, a real uvicorn on
127.0.0.1) is started against the port of a stopped redis-server; requests are answered by the
policy; then redis-server starts on that port and, without restarting the demo, decisions go to
Redis (the client's bucket appears there and Redis's count decides).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import httpx
import pytest
import redis

from tokenbucket import BucketRegistry, Rule
from tokenbucket._stores.redis.late import LateClient
from tokenbucket.redis import AsyncRedisStore, RedisStore

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-Token_123"


class Demo:
    """The demo gateway as a subprocess; its output is collected; terminated on exit."""

    def __init__(self, *args: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENBUCKET_ADMIN_TOKEN": TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tokenbucket.demo", "--port", str(self.port), *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: List[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(5)
                pytest.fail(f"the demo exited with {self.process.returncode}:\n{self.output}")
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        pytest.fail(f"the demo did not answer within {timeout} s:\n{self.output}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()


# Capacity 2, never refilled: the first 3 requests with Redis down, by policy.
WHILE_DOWN = {
    "fallback": [200, 200, 429],  # the limit holds, from memory in the process
    "deny": [429, 429, 429],
    "allow": [200, 200, 200],
}


@pytest.mark.parametrize("policy", list(WHILE_DOWN))
def test_demo_started_while_redis_is_down_uses_it_once_it_is_up(own_redis, policy):
    """The demo used to exit at start-up ("cannot reach ..."). Now it starts, says so, answers
    by --on-error, and shares its limit through Redis as soon as Redis answers."""
    own_redis.stop()
    demo = Demo(
        "--redis", own_redis.url, "--on-error", policy, "--capacity", "2", "--refill-rate", "0"
    )  # fmt: skip
    admin = redis.Redis.from_url(own_redis.url, socket_timeout=5)
    try:
        demo.wait_ready()
        assert "warning: cannot reach redis://127.0.0.1:" in demo.output
        assert f"decided by --on-error={policy} until it answers" in demo.output
        with httpx.Client(base_url=demo.base, timeout=10) as client:
            assert [client.get("/").status_code for _ in range(3)] == WHILE_DOWN[policy]
            own_redis.start()  # same port; the demo is not restarted
            deadline = time.monotonic() + 10
            statuses = []
            while not admin.keys("tokenbucket:*"):  # until a decision reaches Redis
                assert time.monotonic() < deadline, f"Redis never used; answers: {statuses}"
                statuses.append(client.get("/").status_code)
                time.sleep(0.05)
            # Until then the policy answered; the request that reached Redis took 1 of its 2
            # tokens; from then on Redis's count decides, for every policy alike.
            assert set(statuses[:-1]) <= {WHILE_DOWN[policy][-1]}
            assert statuses[-1] == 200
            assert [client.get("/").status_code for _ in range(2)] == [200, 429]
        names = admin.keys("tokenbucket:*")  # the bucket, and the markers of its decisions
        (name,) = [name for name in names if not name.startswith(b"tokenbucket:\xffonce:")]
        assert admin.type(name) == b"hash"
    finally:
        admin.close()
        demo.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_store_made_while_redis_is_down_connects_later(own_redis, kind):
    """from_url makes no connection (no PING, no script load): a store made while Redis is
    down decides by its policy, then uses Redis once it answers (retry_interval=0: at once)."""
    own_redis.stop()
    options = {"on_error": "fallback", "retry_interval": 0}

    async def scenario():
        if kind == "sync":
            store = RedisStore.from_url(own_redis.url, **options)

            async def decide(key):
                return limits.consume(key)
        else:
            store = AsyncRedisStore.from_url(own_redis.url, **options)

            async def decide(key):
                return await limits.aconsume(key)

        limits = BucketRegistry(Rule(2, 0), store=store)
        try:
            down = [(await decide("k")).allowed for _ in range(3)]
            assert not store.available
            own_redis.start()
            up = [(await decide("k")).remaining for _ in range(2)]
            assert store.available
            return down, up
        finally:
            if kind == "sync":
                store.close()
            else:
                await store.aclose()

    down, up = asyncio.run(scenario())
    assert down == [True, True, False]  # the limit held, from memory
    assert up == [1.0, 0.0]  # Redis's own bucket, fresh
    with redis.Redis.from_url(own_redis.url) as admin:
        assert admin.hget("tokenbucket:k", "u") is not None


@pytest.mark.parametrize("loop_before", ["run_and_closed", "set_not_running"])
def test_async_store_made_outside_its_loop_decides_in_redis(redis_url, loop_before):
    """AsyncRedisStore.from_url called where no loop runs (module level, before asyncio.run or
    uvicorn): its first calls, 30 at once without pipelining (so they wait on the connection
    pool's lock), are all decided by Redis. On Python 3.9 redis-py's locks belonged to the loop
    current at from_url (none after an asyncio.run: "no current event loop"; a set, idle one:
    "attached to a different loop" as soon as two calls wait on the pool's lock)."""
    if loop_before == "run_and_closed":
        asyncio.run(asyncio.sleep(0))
        idle = None
    else:
        idle = asyncio.new_event_loop()
        asyncio.set_event_loop(idle)
    try:
        store = AsyncRedisStore.from_url(redis_url, pipeline=False, on_error="deny")
        assert "not built yet" in repr(store) or sys.version_info >= (3, 10)
        limits = BucketRegistry(Rule(10, 0), store=store)

        async def burst():
            try:
                decisions = await asyncio.gather(*(limits.aconsume("k") for _ in range(30)))
                return [d.allowed for d in decisions], store.available
            finally:
                await store.aclose()

        allowed, available = asyncio.run(burst())
    finally:
        asyncio.set_event_loop(None)
        if idle is not None:
            idle.close()
    assert available
    assert allowed.count(True) == 10  # on_error="deny": an error would have refused all 30
    with redis.Redis.from_url(redis_url) as admin:
        assert admin.hget("tokenbucket:k", "u") is not None


def test_late_client_builds_the_real_client_at_the_first_call(redis_url):
    """The stand-in from_url uses on 3.9 outside a loop, on every version: nothing is built
    until a call; the repr says so without the URL's password; then it forwards."""
    late = LateClient(redis.asyncio.Redis.from_url, redis_url, {"socket_timeout": 2.0}, False)
    store = AsyncRedisStore(late)
    assert late._client is None
    assert repr(store).startswith(f"AsyncRedisStore(<Redis {redis_url[len('redis://') :]}, not")
    secret = "redis://:hunter2@127.0.0.1:1/0"
    never = AsyncRedisStore(LateClient(redis.asyncio.Redis.from_url, secret, {}, False))
    assert repr(never).startswith("AsyncRedisStore(<Redis 127.0.0.1:1/0, not built yet>")
    asyncio.run(never.aclose())  # nothing built, nothing to close

    async def use():
        limits = BucketRegistry(Rule(3, 0), store=store)
        allowed = [(await limits.aconsume("k")).allowed for _ in range(4)]
        assert isinstance(store.client, redis.asyncio.Redis)
        assert await late.execute_command("PING") is True  # forwarded
        assert late.connection_pool is store.client.connection_pool
        await late.aclose()  # what the store's aclose calls when from_url made it
        return allowed

    assert asyncio.run(use()) == [True, True, True, False]
    assert store.available
    assert late._client is not None
