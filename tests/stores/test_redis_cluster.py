"""The Redis stores on a real Redis Cluster: 3 masters, 3 replicas on loopback (tests/conftest.py).

The conformance suite (test_store_conformance.py) runs on the cluster through both of redis-py's
cluster clients. Here: where the keys live, a cluster that cannot be reached, and failovers: a
master killed by its PID (SIGKILL) while decisions go on, directly and through a real server
(uvicorn, httpx), whose timeline is printed (benchmarks/cluster_failover.py prints the same).
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest
import redis
import redis.exceptions

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore

ROOT = Path(__file__).resolve().parents[2]
MARKER = b"tokenbucket:\xffonce"


def load_benchmark():
    path = ROOT / "benchmarks" / "cluster_failover.py"
    spec = importlib.util.spec_from_file_location("cluster_failover", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cluster(redis_cluster_url, redis_cluster):
    """The shared cluster, whole and flushed; whatever the test kills is started again after."""
    yield redis_cluster
    redis_cluster.heal()


def test_each_key_is_one_hash_on_one_master(cluster):
    """Every rate-limited key is one hash, stored once, on the master that owns its slot;
    keys spread over all three masters, so one store uses the whole cluster."""
    store = RedisStore.from_url(cluster.url, cluster=True)
    limits = BucketRegistry(Rule(5, 0), store=store)
    keys = [f"198.51.100.{i}" for i in range(40)] + ["{tag}a", "{tag}b", "}{", ""]
    try:
        for key in keys:
            assert limits.try_consume(key, 2)
        limits.update_rule(keys[0], capacity=9)
        assert limits.tokens(keys[0]) == 7.0
        assert store.available
    finally:
        store.close()
    held, markers = {}, {}
    for node in cluster.masters():
        with redis.Redis(port=node.port) as raw:  # markers' names are not UTF-8
            names = raw.keys("*")
        held[node.port] = [n.decode() for n in names if not n.startswith(MARKER)]
        markers[node.port] = len(names) - len(held[node.port])
    names = [name for on_node in held.values() for name in on_node]
    assert sorted(names) == sorted(f"tokenbucket:{key}" for key in keys)  # each key once
    assert all(held.values()), held  # on every master
    # Each decision's marker (applied once) lives in its key's slot, so on its key's master.
    assert markers == {port: len(on_node) for port, on_node in held.items()}
    for node in cluster.masters():
        for name in held[node.port]:
            assert node.command("TYPE", name) == "hash"


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("fallback", [True, True, False]), ("deny", [False] * 3), ("allow", [True] * 3)],
)
def test_unreachable_cluster_follows_the_policy_then_is_used(cluster, policy, expected):
    """A gateway started while no cluster node answers: redis-py's cluster client raised
    RedisClusterException (not a RedisError) out of every decision, a 500 in a server. Now
    decisions follow on_error, and once a node answers they go to the cluster, without a
    restart."""
    node = next(node for node in cluster.nodes if node not in cluster.masters())
    node.kill()

    async def scenario():
        store = AsyncRedisStore.from_url(
            node.url, cluster=True, on_error=policy, retry_interval=0, socket_timeout=2
        )
        limits = BucketRegistry(Rule(2, 0), store=store)
        try:
            during = [await limits.atry_consume("k") for _ in range(3)]
            assert not store.available
            node.start()  # a replica: the client learns the whole cluster from it
            after = await limits.aconsume("k")
            assert store.available
            return during, after
        finally:
            await store.aclose()

    during, after = asyncio.run(scenario())
    assert during == expected
    assert (after.allowed, after.remaining) == (True, 1.0)  # a fresh bucket, in the cluster
    assert sum(len(n.command("KEYS", "tokenbucket:k")) for n in cluster.masters()) == 1


def test_sync_cluster_client_connects_as_it_is_built(cluster):
    """redis-py's sync cluster client reads the cluster's layout in its constructor, so
    from_url(cluster=True) raises when no node answers (documented in docs/redis.md)."""
    node = next(node for node in cluster.nodes if node not in cluster.masters())
    node.kill()
    with pytest.raises(redis.exceptions.RedisClusterException):
        RedisStore.from_url(node.url, cluster=True)


def test_sync_store_through_a_failover(cluster):
    """A master killed under a sync store (deny): decisions never raise, are denied while the
    key's slot has no master, and go through Redis again once its replica took over."""
    store = RedisStore.from_url(cluster.url, cluster=True, on_error="deny")
    limits = BucketRegistry(Rule(1_000_000, 0), store=store)
    try:
        assert limits.try_consume("k")
        cluster.master_for("tokenbucket:k").kill()
        killed = time.monotonic()
        answers = []
        while time.monotonic() - killed < 20:
            answers.append((limits.try_consume("k"), store.available))
            if answers[-1] == (True, True) and (False, False) in answers:
                break
            time.sleep(0.01)
        assert (False, False) in answers  # denied by the policy while the slot had no master
        assert answers[-1] == (True, True)  # then decided in Redis again
        # Every allowed decision was counted in Redis: one before the kill, the others on the
        # promoted replica. Replication is asynchronous: the write just before the kill may
        # not have reached the replica, so that one may be missing.
        allowed = sum(allowed for allowed, _ in answers)
        assert 1_000_000 - 1 - allowed <= limits.tokens("k") <= 1_000_000 - allowed
    finally:
        store.close()


def test_failover_under_load_through_a_server(cluster, capsys):
    """uvicorn + AsyncRedisStore(cluster=True), one route per failure policy, httpx clients in a
    bounded loop; the master holding the routes' buckets is killed. No request gets a 5xx or no
    answer; while the slot has no master, each route answers by its policy (fallback and allow:
    200 decided in the process; deny: 429); then every route decides in Redis again, without a
    restart. The timeline is printed (pytest shows it with -s or on failure)."""
    bench = load_benchmark()
    run = bench.failover(cluster, clients=3, before=0.5, after=0.5, limit=15)
    with capsys.disabled():
        print("\n" + bench.table(run))
    outcomes = {policy: [a for a in run.answers if a.policy == policy] for policy in bench.POLICIES}
    assert {a.outcome for a in run.answers} <= {"R", "L", "429"}  # no 5xx, no failed request
    assert run.recovered_after is not None, "not every route decided in Redis again"
    assert all(a.outcome == "R" for a in run.answers if a.at + a.latency < 0)  # before the kill
    for policy, degraded in (("fallback", "L"), ("deny", "429"), ("allow", "L")):
        mine = {a.outcome for a in outcomes[policy]}
        assert mine == {"R", degraded}, (policy, mine)
    assert all(a.outcome == "R" for a in run.answers if a.at > run.recovered_after)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.MasterDownError("MASTERDOWN Link with MASTER is down"),
        redis.exceptions.SlotNotCoveredError('Slot "866" is not covered by the cluster.'),
        redis.exceptions.RedisClusterException("Redis Cluster cannot be connected."),
    ],
    ids=lambda error: type(error).__name__,
)
def test_cluster_errors_are_outages(error):
    """The errors a cluster client raises while a failover is under way are outages: the
    decision follows the policy and the breaker opens (one probe per retry_interval), as for
    a connection error. SlotNotCoveredError and RedisClusterException are not RedisErrors:
    they escaped the policy; ClusterDownError did not open the breaker."""
    from tokenbucket._stores.redis.logic import Logic

    logic = Logic("p:", "deny", 1.0)
    plan = logic.take("k", 1, Rule(3, 1.0))
    next(plan)
    with pytest.raises(StopIteration) as done:
        plan.throw(error)
    assert done.value.value == (False, 0.0, Rule(3, 1.0))
    assert logic.breaker.down


def _key_per_limit(view):
    return {"user": view.header("x-user") or "anon", "org": "acme"}


def test_a_key_per_limit_on_a_cluster_is_a_clear_503_not_a_500(redis_cluster_url, caplog):
    """Issue 22 item 18: a key function returning {"user", "org"} keys on a Redis Cluster
    answered 500 on every request (the registry's ValueError: the keys span hash slots).
    Both middlewares answer 503 with a JSON error instead, nothing is charged, and one ERROR
    record says why and what to do; one key per request still works on the cluster."""
    import logging

    from tests.conftest import Harness

    limits = {"user": Rule(5, 0.001), "org": Rule(50, 0.001)}
    caplog.set_level(logging.ERROR, logger="tokenbucket")
    store = RedisStore.from_url(redis_cluster_url, cluster=True)
    try:
        registry = BucketRegistry(limits, store=store)
        h = Harness("wsgi", registry, key=_key_per_limit)
        for user in ("alice", "bob", "carol"):
            result = h.request(headers={"X-User": user})
            assert result.status == 503, result.body
            assert result.json()["error"].startswith("rate limiting cannot decide this request")
        assert h.seen == []
        assert registry.tokens("acme", limit="org") == 50.0  # nothing charged
        [record] = [r for r in caplog.records if r.name.startswith("tokenbucket")]
        assert "_key_per_limit" in record.getMessage()
        assert "Redis Cluster" in record.getMessage()
        one = Harness("wsgi", registry, key=lambda view: "alice")
        assert one.request().status == 200
    finally:
        store.close()

    async def asgi() -> list:
        from tokenbucket.asgi import RateLimitMiddleware

        store = AsyncRedisStore.from_url(redis_cluster_url, cluster=True)
        sent: list = []

        async def app(scope, receive, send):  # pragma: no cover - never reached
            raise AssertionError("the app was called")

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        middleware = RateLimitMiddleware(
            app, registry=BucketRegistry(limits, store=store), key=_key_per_limit
        )
        scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "client": None}
        try:
            await middleware(dict(scope), receive, send)
        finally:
            await store.aclose()
        return sent

    sent = asyncio.run(asgi())
    assert sent[0]["status"] == 503
