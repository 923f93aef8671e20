"""The Redis stores beyond the shared contract: keys, expiry, time, round trips, processes."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import pytest
import redis
import redis.asyncio

from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import AsyncRedisStore, RedisStore


@pytest.fixture
def admin(redis_url):
    """A plain client to look at what the stores wrote."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def store(redis_url):
    made = RedisStore.from_url(redis_url, on_error="deny")
    yield made
    assert made.available
    made.close()


def server_time_us(client):
    seconds, micros = client.time()
    return seconds * 1_000_000 + micros


def run_python(code, *args):
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


class TestImport:
    def test_import_tokenbucket_does_not_import_redis(self):
        """The core never imports redis-py, not even indirectly."""
        result = run_python(
            "import sys, tokenbucket, tokenbucket.testing\n"
            "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))"
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]"

    def test_missing_redis_py_names_the_extra(self):
        """Without redis-py, importing the store says which extra to install."""
        result = run_python(
            "import sys\n"
            "sys.modules['redis'] = None  # as if redis-py were not installed\n"
            "import tokenbucket\n"
            "try:\n"
            "    from tokenbucket.redis import RedisStore\n"
            "except ImportError as error:\n"
            "    print(error)\n"
        )
        assert result.returncode == 0, result.stderr
        assert "pip install 'tokenbucket-ratelimit[redis]'" in result.stdout

    def test_lua_script_is_package_data(self):
        """The script loads through importlib.resources, as it will from a wheel."""
        from importlib import resources

        text = (
            resources.files("tokenbucket._stores.redis")
            .joinpath("lua")
            .joinpath("bucket.lua")
            .read_text()
        )
        assert "redis.call('TIME')" in text


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            ({"prefix": 1}, TypeError, "'prefix' must be a str, got 1 (int)"),
            ({"on_error": "open"}, ValueError, "'on_error' must be one of ('fallback', 'deny'"),
            ({"retry_interval": -1}, ValueError, "'retry_interval' must be a finite number >= 0"),
            ({"retry_interval": math.inf}, ValueError, "'retry_interval' must be a finite"),
            ({"retry_interval": "1"}, TypeError, "'retry_interval' must be a number, got '1'"),
        ],
    )
    def test_options_validated(self, options, error, message):
        """Bad options raise at construction, naming the option and the value."""
        client = redis.Redis()
        with pytest.raises(error) as info:
            RedisStore(client, **options)
        assert str(info.value).startswith(message)
        client.close()

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"socket_timeout": 0}, "'socket_timeout' must be a finite number > 0, got 0"),
            ({"socket_timeout": math.nan}, "'socket_timeout' must be a finite number > 0"),
            ({"socket_connect_timeout": -1}, "'socket_connect_timeout' must be a finite number"),
        ],
    )
    def test_from_url_timeouts_validated(self, options, message):
        """Timeouts must be positive: an unbounded wait is never the default."""
        for cls in (RedisStore, AsyncRedisStore):
            with pytest.raises(ValueError, match="timeout' must be a finite number > 0") as info:
                cls.from_url("redis://127.0.0.1:1/0", **options)
            assert str(info.value).startswith(message)

    def test_client_kind_checked(self):
        """Each store takes its kind of client and says which store fits the other kind."""

        async def async_client_in_sync_store():
            client = redis.asyncio.Redis()
            with pytest.raises(TypeError, match="use AsyncRedisStore for this one"):
                RedisStore(client)  # type: ignore[arg-type]
            await client.aclose()

        asyncio.run(async_client_in_sync_store())
        sync_client = redis.Redis()
        with pytest.raises(TypeError, match="use RedisStore for this one"):
            AsyncRedisStore(sync_client)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="'client' must be a redis-py client, got 'x'"):
            RedisStore("x")  # type: ignore[arg-type]
        sync_client.close()

    def test_from_url_bounds_the_client(self):
        """from_url sets both socket timeouts and a single immediate retry of broken sockets."""
        store = RedisStore.from_url("redis://127.0.0.1:1/0", socket_timeout=0.25)
        kwargs = store.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.25
        assert kwargs["socket_connect_timeout"] == 0.25
        assert kwargs["retry"]._retries == 1  # get_retries() is newer than redis-py 5.0
        assert kwargs["retry"]._supported_errors == (redis.exceptions.ConnectionError,)
        assert repr(store) == (
            "RedisStore(<Redis 127.0.0.1:1/0>, prefix='tokenbucket:', on_error='fallback', "
            "retry_interval=1.0)"
        )
        assert (store.prefix, store.on_error, store.retry_interval) == (
            "tokenbucket:",
            "fallback",
            1.0,
        )
        store.close()


def assert_expires_in(admin, key, seconds, before):
    """The key's TTL is `seconds` from a write made after server time `before` (µs), less the
    time that has passed since: bounds from the server clock, not from how fast the test ran."""
    ttl = admin.pttl(key)
    after = server_time_us(admin)
    assert seconds * 1000 - (after - before) / 1000 - 1 <= ttl <= seconds * 1000 + 1, ttl


class TestKeys:
    def test_one_hash_per_key_under_the_prefix(self, redis_url, admin):
        """State lives in the hash prefix + key; time is the server's, in microseconds."""
        store = RedisStore.from_url(redis_url, prefix="app:")
        limits = BucketRegistry(Rule(10, 0), store=store)
        before = server_time_us(admin)
        limits.consume("203.0.113.7", 3)
        after = server_time_us(admin)
        assert admin.keys("app:2*") == ["app:203.0.113.7"]
        with redis.Redis.from_url(redis_url) as raw:  # and the call's marker (applied once)
            (marker,) = set(raw.keys("*")) - {b"app:203.0.113.7"}
            assert marker.startswith(b"app:\xffonce:")
            assert raw.get(marker) == b"17"  # the reply: allowed, 7 left
            assert 59_000 < raw.pttl(marker) <= 60_000
        state = admin.hgetall("app:203.0.113.7")
        assert set(state) == {"t", "u", "l", "c", "r"}
        assert before <= int(state["t"]) <= after
        assert (state["u"], state["l"], state["c"], state["r"]) == ("3", "0", "10", "0")
        store.close()

    def test_bucket_keys_expire_when_full_again(self, store, admin):
        """3 tokens short at 1/s: the key expires in ~3 s; a key that never refills does not."""
        limits = BucketRegistry(Rule(10, 1.0), store=store)
        before = server_time_us(admin)
        limits.consume("k", 3)
        assert_expires_in(admin, "tokenbucket:k", 3.0, before)
        frozen = BucketRegistry(Rule(10, 0), store=store)
        frozen.consume("never", 1)
        assert admin.pttl("tokenbucket:never") == -1

    def test_full_or_reset_buckets_leave_no_key(self, store, admin):
        """Reading or being denied creates nothing; reset deletes the key without override."""
        limits = BucketRegistry(Rule(2, 1.0), store=store)
        limits.tokens("k")
        limits.peek("k")
        assert not limits.try_consume("k", 5)
        assert admin.exists("tokenbucket:k") == 0
        limits.consume("k")
        limits.reset("k")
        assert admin.exists("tokenbucket:k") == 0

    def test_overrides_never_expire(self, store, admin):
        """A key with an override keeps it: no TTL; removing the override restores one."""
        limits = BucketRegistry(Rule(10, 1.0), store=store)
        limits.consume("k", 4)
        limits.update_rule("k", capacity=20)
        assert admin.pttl("tokenbucket:k") == -1
        limits.consume("k", 2)
        assert admin.pttl("tokenbucket:k") == -1
        limits.reset("k")
        assert admin.hgetall("tokenbucket:k") == {"C": "20", "R": "1.0"}
        assert admin.pttl("tokenbucket:k") == -1
        limits.consume("k", 5)
        before = server_time_us(admin)
        assert limits.remove_rule("k") == Rule(20, 1.0)
        assert_expires_in(admin, "tokenbucket:k", 5.0, before)
        assert limits.rule_for("k") == Rule(10, 1.0)

    def test_clock_going_back_earns_nothing(self, store, admin):
        """A state written 10 s 'in the future' (the server clock went back) earns nothing."""
        future = server_time_us(admin) + 10_000_000
        admin.hset("tokenbucket:k", mapping={"t": future, "u": 5, "c": 10, "r": 1000})
        limits = BucketRegistry(Rule(10, 1000), store=store)
        assert limits.tokens("k") == 5.0
        before = server_time_us(admin)
        assert limits.consume("k", 5).remaining == 0.0
        assert not limits.try_consume("k")
        ttl = admin.pttl("tokenbucket:k")
        after = server_time_us(admin)
        # It expires once full by the key's own rule (10 tokens at 1000/s: 10 ms), counted
        # from the future base; bounds from the server time measured around the calls.
        expires = future + 10_000
        assert (expires - after) / 1000 - 1 <= ttl <= (expires - before) / 1000 + 2

    @pytest.mark.parametrize("change", ["update_rule", "remove_rule", "new_default"])
    def test_clock_going_back_then_a_rule_change_earns_nothing(self, store, admin, change):
        """Settling a state from 'the future' keeps its base: the gap is not refill time."""
        future = server_time_us(admin) + 10_000_000
        state = {"t": future, "u": 5, "c": 10, "r": 1000}
        if change == "remove_rule":
            state.update({"C": 10, "R": 1000})
        admin.hset("tokenbucket:k", mapping=state)
        default = Rule(20, 1000) if change == "new_default" else Rule(10, 1000)
        limits = BucketRegistry(default, store=store)
        if change == "update_rule":
            limits.update_rule("k", refill_rate=1000)
        elif change == "remove_rule":
            limits.remove_rule("k")
        else:
            assert limits.consume("k", 16).allowed is False  # settles under the new default
        assert admin.hget("tokenbucket:k", "t") == str(future)
        expected = 15.0 if change == "new_default" else 5.0
        assert limits.tokens("k") == expected

    def test_client_decoding_responses_works(self, redis_url):
        """A client made with decode_responses=True works the same."""
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        limits = BucketRegistry(Rule(3, 0), store=RedisStore(client))
        limits.update_rule("k", capacity=2.5)
        assert [limits.try_consume("k") for _ in range(3)] == [True, True, False]
        assert limits.rule_for("k") == Rule(2.5, 0)
        client.close()


class TestSharedAcrossWorkers:
    def test_overrides_and_buckets_shared_by_independent_clients(self, redis_url):
        """Two stores with their own clients (two workers): one update applies to both."""

        async def scenario():
            sync_store = RedisStore.from_url(redis_url)
            async_store = AsyncRedisStore.from_url(redis_url)
            worker1 = BucketRegistry(Rule(5, 0), store=sync_store)
            worker2 = BucketRegistry(Rule(5, 0), store=async_store)
            assert worker1.update_rule("vip", capacity=100) == Rule(100, 0)
            assert await worker2.arule_for("vip") == Rule(100, 0)
            assert (await worker2.aconsume("vip", 60)).remaining == 40.0
            assert worker1.consume("vip", 40).remaining == 0.0
            assert await worker2.aremove_rule("vip") == Rule(100, 0)
            assert worker1.rule_for("vip") == Rule(5, 0)
            assert worker1.tokens("vip") == 0.0  # 100 used of 5: in debt
            sync_store.close()
            await async_store.aclose()

        asyncio.run(scenario())


def command_calls(client):
    """Calls per command since the last CONFIG RESETSTAT (INFO commandstats)."""
    return {
        name.removeprefix("cmdstat_"): stats["calls"]
        for name, stats in client.info("commandstats").items()
    }


# What one run of the script calls inside Redis (counted by commandstats too).
SCRIPT_COMMANDS = {"hmget", "time", "hset", "pexpire", "persist", "del", "hdel"}


class TestRoundTrips:
    @pytest.mark.parametrize("kind", ["sync", "async"])
    def test_one_evalsha_per_decision(self, redis_url, admin, kind):
        """N decisions send exactly N commands, all EVALSHA (the rest run inside the script)."""
        decisions = 200

        async def decide_async():
            store = AsyncRedisStore.from_url(redis_url)
            limits = BucketRegistry(Rule(100, 10.0), store=store)
            await limits.atokens("warm-up")  # connects and loads the script
            admin.config_resetstat()
            for i in range(decisions):
                await limits.aconsume(f"k{i % 7}")
            calls = command_calls(admin)
            await store.aclose()
            return calls

        if kind == "async":
            calls = asyncio.run(decide_async())
        else:
            store = RedisStore.from_url(redis_url)
            limits = BucketRegistry(Rule(100, 10.0), store=store)
            limits.tokens("warm-up")
            admin.config_resetstat()
            for i in range(decisions):
                limits.consume(f"k{i % 7}")
            calls = command_calls(admin)
            store.close()
        assert calls.pop("evalsha") == decisions
        calls.pop("info", None)  # ours, just now
        calls.pop("config|resetstat", None)
        assert calls.pop("time") == decisions  # once per script run
        assert calls.pop("hmget") == decisions
        assert calls.pop("get") == decisions  # the call's marker: not seen before
        assert calls.pop("set") == decisions  # each took a token: its reply kept 60 s
        assert set(calls) <= SCRIPT_COMMANDS
        assert "eval" not in calls
        assert "script|load" not in calls

    def test_script_reloaded_after_script_flush(self, store, admin):
        """After SCRIPT FLUSH (or a restart) the next decision reloads the script once."""
        limits = BucketRegistry(Rule(3, 0), store=store)
        assert limits.try_consume("k")
        admin.script_flush()
        admin.config_resetstat()
        assert limits.try_consume("k")
        assert limits.try_consume("k")
        assert not limits.try_consume("k")
        calls = command_calls(admin)
        assert calls["script|load"] == 1
        stats = admin.info("commandstats")["cmdstat_evalsha"]
        assert (stats["calls"], stats["failed_calls"]) == (4, 1)  # one NOSCRIPT

    def test_a_decision_is_a_plan_without_io(self):
        """The logic both stores share makes no calls itself: it yields them, is sent the
        replies (or thrown the errors) and returns the outcome, here NOSCRIPT and a reload."""
        from tokenbucket._stores.redis.logic import _SCRIPT, _SHA, Logic

        plan = Logic("p:", "deny", 1.0).take("k", 1, Rule(3, 1.0))
        name, args = next(plan)
        marker = args[3]  # the call's marker: a key of its own (applied once)
        assert (name, args) == (
            "evalsha",
            (_SHA, b"2", b"p:k", marker, b"+take", b"3", b"1.0", b"1"),
        )
        assert marker.startswith(b"p:\xffonce:")
        assert plan.throw(redis.exceptions.NoScriptError("NOSCRIPT")) == (
            "script_load",
            (_SCRIPT,),
        )
        assert plan.send(_SHA.decode())[0] == "evalsha"
        with pytest.raises(StopIteration) as done:
            plan.send(b"12.5")
        assert done.value.value == (True, 2.5, Rule(3, 1.0))
        plan = Logic("p:", "deny", 1.0).take("k", 1, Rule(3, 1.0))
        next(plan)
        with pytest.raises(StopIteration) as done:  # an outage: the deny policy answers
            plan.throw(redis.exceptions.ConnectionError("refused"))
        assert done.value.value == (False, 0.0, Rule(3, 1.0))

    def test_take_all_is_one_script_call_or_the_policy(self):
        """take_all sends every key to one EVALSHA; in an outage it follows on_error, all or
        nothing too (fallback: the local store; allow: full buckets, so a denial keeps all)."""
        from tokenbucket._stores.redis.logic import _SHA, Logic

        groups = [("k", (("a", Rule(3, 1.0)), ("b", Rule(2, 0))))]  # a hash per limit
        plan = Logic("p:", "fallback", 1.0).take_all(groups, 1)
        name, args = next(plan)
        a, b = b"p:{k}\0a", b"p:{k}\0b"
        assert (name, args) == (
            "evalsha",
            (_SHA, 3, a, b, args[4], b"+take", b"3", b"1.0", b"1", b"2", b"0"),
        )
        assert args[4].startswith(b"p:\xffonce:")
        with pytest.raises(StopIteration) as done:
            plan.send(b"12\n00 2 0")
        assert done.value.value == (False, ((True, 2, Rule(3, 1.0)), (False, 0, Rule(2, 0))))
        for policy, amount, expected in [
            ("fallback", 2, (True, ((True, 1, Rule(3, 1.0)), (True, 0, Rule(2, 0))))),
            ("deny", 1, (False, ((False, 0.0, Rule(3, 1.0)), (False, 0.0, Rule(2, 0))))),
            ("allow", 3, (False, ((True, 3.0, Rule(3, 1.0)), (False, 2.0, Rule(2, 0))))),
        ]:
            plan = Logic("p:", policy, 1.0).take_all(groups, amount)
            next(plan)
            with pytest.raises(StopIteration) as done:
                plan.throw(redis.exceptions.ConnectionError("refused"))
            assert done.value.value == expected, policy


CHILD = r"""
import sys, threading
from tokenbucket import BucketRegistry, Rule
from tokenbucket.redis import RedisStore

url, threads, attempts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = RedisStore.from_url(url, on_error="deny", socket_timeout=10)
limits = BucketRegistry(Rule(1000, 0), store=store)
limits.tokens("warm-up")  # connect and load the script before the start signal
barrier = threading.Barrier(threads + 1)
admitted = [0] * threads

def work(i):
    barrier.wait()
    admitted[i] = sum(limits.try_consume("shared") for _ in range(attempts))

workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for worker in workers:
    worker.start()
print("ready", flush=True)
sys.stdin.readline()
barrier.wait()
for worker in workers:
    worker.join()
print(sum(admitted), store.available, flush=True)
"""


def test_processes_and_threads_admit_exactly_capacity(redis_url):
    """4 processes x 4 threads, 2,000 attempts on one key of 1,000 without refill: 1,000 pass."""
    processes, threads, attempts = 4, 4, 125
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, redis_url, str(threads), str(attempts)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n", child.stderr.read()
        for child in children:  # everyone is connected and waiting: go
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    counts = []
    for (out, err), child in zip(results, children):
        assert child.returncode == 0, err
        count, available = out.split()
        assert available == "True"  # no decision fell back to the failure policy
        counts.append(int(count))
    assert sum(counts) == 1000
    assert all(count > 0 for count in counts)  # they really competed
    store = RedisStore.from_url(redis_url)
    assert BucketRegistry(Rule(1000, 0), store=store).tokens("shared") == 0.0
    store.close()
