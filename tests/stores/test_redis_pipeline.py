"""AsyncRedisStore's pipelining: the decisions tasks start in one loop iteration share a pipeline.

Each decision stays one EVALSHA, exact and failing on its own; only the round trips are shared.
Real servers throughout (one redis-server, the test cluster, and a TCP relay on 127.0.0.1 that
cuts a connection after some replies); the batching is seen from the server's side (INFO:
commands run, socket reads made).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import PIPELINE_MAX, AsyncRedisStore

TASKS = 32


def one_connection(url):
    """An async client whose pool holds a single connection (callers wait for it)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=1, socket_timeout=5)
    return redis.asyncio.Redis(connection_pool=pool)


def server_stats(client):
    """EVALSHA calls, their failures, SCRIPT LOADs and socket reads the server made so far."""
    stats = client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "evalsha": evalsha.get("calls", 0),
        "failed": evalsha.get("failed_calls", 0),
        "script_load": stats.get("cmdstat_script|load", {}).get("calls", 0),
        "reads": client.info("stats")["total_reads_processed"],
    }


@pytest.fixture
def admin(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


async def decide_concurrently(limits, keys, rounds):
    """``TASKS`` tasks, each deciding ``rounds`` times on ``keys`` (task t starts at key t)."""

    async def work(task):
        return [await limits.atry_consume(keys[(task + i) % len(keys)]) for i in range(rounds)]

    return sum(sum(done) for done in await asyncio.gather(*(work(t) for t in range(TASKS))))


def test_tasks_on_one_connection_admit_exactly_capacity_in_few_reads(redis_url, admin):
    """32 tasks on one connection, 640 decisions on a bucket of 100 without refill: 100 pass.

    One EVALSHA per decision (no SCRIPT LOAD, nothing else), and the server reads them in
    far fewer socket reads than decisions: they came pipelined.
    """
    rounds = 20

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny")
        limits = BucketRegistry(Rule(100, 0), store=store)
        assert await limits.atokens("warm-up") == 100  # connects and loads the script
        admin.config_resetstat()
        before = server_stats(admin)
        admitted = await decide_concurrently(limits, ["shared"], rounds)
        after = server_stats(admin)
        after["commands"] = {
            name.removeprefix("cmdstat_"): stats["calls"]
            for name, stats in admin.info("commandstats").items()
        }
        left = await limits.atokens("shared")
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return admitted, left, store.available, before, after

    admitted, left, available, before, after = asyncio.run(scenario())
    assert (admitted, left, available) == (100, 0.0, True)
    assert after["evalsha"] - before["evalsha"] == TASKS * rounds
    assert after["failed"] == after["script_load"] == 0
    # Nothing else was sent: the rest is what the script runs inside (once per run) and ours.
    commands = after["commands"]
    assert (
        commands.pop("evalsha") == commands.pop("time") == commands.pop("hmget") == TASKS * rounds
    )
    assert commands.pop("get") == TASKS * rounds  # each call's marker, looked up
    assert commands.pop("set") == 100  # and kept by the calls that took a token
    assert set(commands) <= {"info", "config|resetstat", "hset", "pexpire", "persist", "del"}
    # Without pipelining each decision is at least one read; here a read carries many.
    assert after["reads"] - before["reads"] < TASKS * rounds / 4


def test_without_pipelining_each_decision_is_its_own_read(redis_url, admin):
    """``pipeline=False``: the same decisions, one socket read (round trip) each."""

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny", pipeline=False)
        limits = BucketRegistry(Rule(100, 0), store=store)
        await limits.atokens("warm-up")
        before = server_stats(admin)
        admitted = await decide_concurrently(limits, ["shared"], 5)
        after = server_stats(admin)
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return admitted, before, after, store.pipeline

    admitted, before, after, pipeline = asyncio.run(scenario())
    assert (admitted, pipeline) == (100, False)
    assert after["evalsha"] - before["evalsha"] == TASKS * 5
    assert after["reads"] - before["reads"] >= TASKS * 5


def test_pipeline_option_validated_and_reported(redis_url):
    async def scenario():
        with pytest.raises(TypeError, match="'pipeline' must be a bool, got 'yes'"):
            AsyncRedisStore.from_url(redis_url, pipeline="yes")
        with pytest.raises(TypeError, match="'pipeline' must be a bool, got 1"):
            AsyncRedisStore(redis.asyncio.Redis.from_url(redis_url), pipeline=1)
        on, off = (
            AsyncRedisStore.from_url(redis_url),
            AsyncRedisStore.from_url(redis_url, pipeline=False),
        )
        assert (on.pipeline, off.pipeline) == (True, False)
        await on.aclose()
        await off.aclose()

    asyncio.run(scenario())
    assert PIPELINE_MAX == 256


def test_more_calls_than_the_cap_make_several_exact_pipelines(redis_url, admin):
    """600 tasks deciding at once: batches of at most PIPELINE_MAX, every decision exact."""

    async def scenario():
        store = AsyncRedisStore.from_url(redis_url, on_error="deny")
        limits = BucketRegistry(Rule(500, 0), store=store)
        await limits.atokens("warm-up")
        before = server_stats(admin)
        results = await asyncio.gather(*(limits.atry_consume("k") for _ in range(600)))
        after = server_stats(admin)
        await store.aclose()
        return sum(results), before, after

    admitted, before, after = asyncio.run(scenario())
    assert admitted == 500
    assert after["evalsha"] - before["evalsha"] == 600
    assert after["reads"] - before["reads"] < 600 / 4


def test_flushed_scripts_reloaded_by_each_plan(redis_url, admin):
    """After SCRIPT FLUSH a whole batch meets NOSCRIPT: each decision reloads and is exact."""

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny")
        limits = BucketRegistry(Rule(10, 0), store=store)
        await limits.atokens("warm-up")
        admin.script_flush()
        admin.config_resetstat()
        admitted = await decide_concurrently(limits, ["k"], 1)
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return admitted, store.available

    assert asyncio.run(scenario()) == (10, True)
    stats = server_stats(admin)
    # Each call that met NOSCRIPT (the batch's, and the first call's, which went alone) loaded
    # the script and ran again; calls sent after a reload had it.
    assert 1 <= stats["failed"] <= TASKS
    assert stats["evalsha"] == TASKS + stats["failed"]
    assert stats["script_load"] == stats["failed"]


def test_an_error_on_one_key_follows_the_policy_alone(redis_url, admin, caplog):
    """A key of another type in a batch: that decision follows on_error, the others decide."""
    admin.set("tokenbucket:bad", "a string")

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny")
        limits = BucketRegistry(Rule(1, 0), store=store)
        await limits.atokens("warm-up")
        keys = [f"k{i}" for i in range(TASKS - 1)] + ["bad"]
        results = await asyncio.gather(*(limits.atry_consume(key) for key in keys))
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return results, store.available

    results, available = asyncio.run(scenario())
    assert results == [True] * (TASKS - 1) + [False]
    assert available  # an error in one reply is no outage
    assert "Redis refused a call (ResponseError" in caplog.text


class Relay:
    """A TCP relay to Redis on 127.0.0.1 that cuts its first connection after some replies.

    The client's commands all reach Redis. Once ``armed``, only ``replies`` more replies come
    back, then both sides are closed and no new connection is taken: to the client, Redis
    went away in the middle of a pipeline.
    """

    def __init__(self, port, replies):
        self.port, self.replies = port, replies
        self.server = None
        self.armed = False

    async def start(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, client_reader, client_writer):
        self.server.close()  # one connection only: a reconnection is refused
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def upstream():
            while data := await client_reader.read(65536):
                writer.write(data)

        pump = asyncio.ensure_future(upstream())
        buffer, passed = b"", 0
        try:
            while passed < self.replies and (data := await reader.read(65536)):
                if not self.armed:
                    client_writer.write(data)
                    continue
                buffer += data  # the script's replies: bulk strings, passed one by one
                while passed < self.replies and b"\r\n" in buffer:
                    line, rest = buffer.split(b"\r\n", 1)
                    size = int(line[1:]) + 2
                    if len(rest) < size:
                        break
                    reply, buffer = buffer[: len(line) + 2 + size], rest[size:]
                    client_writer.write(reply)
                    passed += 1
                await client_writer.drain()
        finally:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            for each in (client_writer, writer):
                each.close()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("deny", [False] * (TASKS - 1)),
        ("fallback", [True] * (TASKS - 1)),
        ("allow", [True] * (TASKS - 1)),
    ],
)
def test_redis_gone_mid_pipeline_each_decision_follows_the_policy(
    redis_url, admin, policy, expected
):
    """One connection; the first call goes alone (nothing in flight), the other 31 as one
    pipeline; the connection breaks after 10 replies (the first's, 9 of the pipeline's) and
    cannot be made again: redis-py drops the pipeline's replies, so each of its 31 decisions
    follows on_error, none raises, and the breaker opens."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])

    async def scenario():
        relay = Relay(port, replies=10)
        url = await relay.start()
        store = AsyncRedisStore(one_connection(url), on_error=policy, retry_interval=60)
        outages = []
        store._logic.on_degraded = outages.append
        limits = BucketRegistry(Rule(5, 0), store=store)
        assert await limits.atry_consume("warm-up")
        relay.armed = True
        results = await asyncio.gather(*(limits.atry_consume(f"k{i}") for i in range(TASKS)))
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return results, store.available, outages

    results, available, outages = asyncio.run(scenario())
    assert results == [True, *expected]
    assert not available
    assert outages
    assert set(outages) == {True}
    # Redis did receive (and apply) all 32: only the replies were lost.
    assert len(admin.keys("tokenbucket:k*")) == TASKS


def test_cancelled_callers_drop_their_calls_and_the_others_are_exact(redis_url):
    """Cancelled before the pipeline goes (a follower, or the leader that opened the batch):
    their calls are not sent; every other caller gets its own reply."""

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny")
        limits = BucketRegistry(Rule(100, 0), store=store)
        await limits.atokens("warm-up")
        tasks = [asyncio.ensure_future(limits.atry_consume("k")) for _ in range(TASKS)]
        await asyncio.sleep(0)  # every task has made its call: 0 alone, 1 leads the batch
        cancelled = [1, 3, 4, 31]
        for i in cancelled:
            tasks[i].cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        left = await limits.atokens("k")
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return outcomes, cancelled, left, store.available

    outcomes, cancelled, left, available = asyncio.run(scenario())
    for i, outcome in enumerate(outcomes):
        if i in cancelled:
            assert isinstance(outcome, asyncio.CancelledError)
        else:
            assert outcome is True
    assert left == 100 - (TASKS - len(cancelled))  # exactly the calls that were sent
    assert available


@pytest.mark.parametrize("sent", [False, True], ids=["before-it-starts", "while-in-flight"])
def test_a_cancelled_pipeline_leaves_its_callers_deciding_by_policy(redis_url, admin, sent):
    """If the task sending a pipeline is cancelled (a loop shutting down), before it starts or
    while its pipeline is in flight, the callers waiting on it follow on_error, do not raise,
    and do not open the breaker; the next decisions go through Redis again."""

    async def scenario():
        # A pool: the pipeline has a connection of its own (not waiting for the first call's).
        store = AsyncRedisStore.from_url(redis_url, on_error="deny", socket_timeout=5)
        limits = BucketRegistry(Rule(100, 0), store=store)
        await limits.atokens("warm-up")
        if sent:  # the server holds the replies back: the pipeline is in flight for 1 s
            admin.client_pause(1000)
        tasks = [asyncio.ensure_future(limits.atry_consume(f"k{i}")) for i in range(TASKS)]
        while not store._batch._tasks:  # the leader closes the batch, starts the sender
            await asyncio.sleep(0)
        (sender,) = store._batch._tasks
        if sent:
            await asyncio.sleep(0.05)  # it starts, sends, and waits for the replies
            assert "wait_for=" in repr(sender)
        sender.cancel()
        results = await asyncio.gather(*tasks)
        available = store.available
        after = await asyncio.gather(*(limits.atry_consume(f"j{i}") for i in range(TASKS)))
        await store.aclose()
        return results, available, after

    results, available, after = asyncio.run(scenario())
    # The first call went alone (nothing was in flight); the batch's replies never came: deny.
    assert results == [True] + [False] * (TASKS - 1)
    assert available
    assert after == [True] * TASKS


def test_cluster_pipeline_spans_slots_and_admits_exactly(redis_cluster_url):
    """On a Redis Cluster a batch holds keys of every slot (redis-py sends one pipeline per
    master): 32 tasks on 8 keys across the masters admit exactly each key's capacity."""
    keys = [f"user-{i}" for i in range(8)]

    async def scenario():
        store = AsyncRedisStore.from_url(
            redis_cluster_url, cluster=True, on_error="deny", socket_timeout=5
        )
        limits = BucketRegistry(Rule(10, 0), store=store)
        admitted = await decide_concurrently(limits, keys, 8)
        left = [await limits.atokens(key) for key in keys]
        await store.aclose()
        return admitted, left, store.available

    admitted, left, available = asyncio.run(scenario())
    assert (admitted, left, available) == (80, [0.0] * 8, True)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    requests=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 4), st.booleans()),
        min_size=1,
        max_size=80,
    )
)
def test_concurrent_pipelined_decisions_are_exact(redis_url, admin, requests):
    """Any mix of takes and peeks of any amounts on a few keys, all started at once from as
    many tasks on one connection (refill 0): each key ends at its capacity minus exactly what
    its admitted takes asked for, and a take denied asked for more than the key had left."""
    admin.flushall()

    async def scenario():
        store = AsyncRedisStore(one_connection(redis_url), on_error="deny")
        limits = BucketRegistry(Rule(10, 0), store=store)
        await limits.atokens("warm-up")

        async def one(key, amount, take):
            if take:
                return await limits.atry_consume(key, amount)
            return (await limits.apeek(key, amount)).allowed

        results = await asyncio.gather(*(one(*request) for request in requests))
        levels = {key: await limits.atokens(key) for key in "abc"}
        await store.client.aclose()
        await store.client.connection_pool.disconnect()
        return results, levels, store.available

    results, levels, available = asyncio.run(scenario())
    assert available
    for key in "abc":
        taken = sum(a for (k, a, take), ok in zip(requests, results) if k == key and take and ok)
        assert levels[key] == 10 - taken
        for (k, amount, take), ok in zip(requests, results):
            if k == key and take and not ok:
                assert amount > levels[key]
