import asyncio
import math

import pytest

from tokenbucket import (
    BucketRegistry,
    Decision,
    ManualClock,
    MemoryStore,
    RateLimitExceeded,
    Rule,
    rate_limit,
)


def registry(capacity=2, rate=1.0):
    clock = ManualClock()
    return BucketRegistry(Rule(capacity, rate), clock=clock), clock


class TestSync:
    def test_raises_with_the_decision(self):
        """The call after the burst raises RateLimitExceeded carrying the denial."""
        reg, _ = registry(2, 0.5)
        calls = []

        @rate_limit(reg)
        def work(x):
            calls.append(x)
            return x * 2

        assert [work(1), work(2)] == [2, 4]
        with pytest.raises(RateLimitExceeded) as info:
            work(3)
        assert info.value.decision == Decision(False, 0.0, 2.0, 4.0, 2)
        assert info.value.retry_after == 2.0
        assert str(info.value) == "rate limit exceeded: retry after 2.000 s"
        assert calls == [1, 2]

    def test_preserves_metadata(self):
        """functools.wraps keeps name, docstring and signature visible."""
        reg, _ = registry()

        @rate_limit(reg)
        def documented(a: int, b: str = "x") -> str:
            """Doc."""
            return b * a

        assert documented.__name__ == "documented"
        assert documented.__doc__ == "Doc."
        assert documented(2, b="y") == "yy"

    def test_key_function_sees_the_arguments(self):
        """Each user gets their own bucket through the key function."""
        reg, _ = registry(1, 0)

        @rate_limit(reg, key=lambda user, **_: f"user:{user}")
        def fetch(user, page=1):
            return (user, page)

        assert fetch("ann") == ("ann", 1)
        assert fetch("bob", page=2) == ("bob", 2)
        with pytest.raises(RateLimitExceeded):
            fetch("ann", page=3)
        assert reg.tokens("user:ann") == 0.0

    def test_cost(self):
        """cost= takes that many tokens per call."""
        reg, _ = registry(5, 0)

        @rate_limit(reg, cost=2)
        def heavy():
            return True

        assert heavy()
        assert heavy()
        with pytest.raises(RateLimitExceeded):
            heavy()

    def test_rule_makes_a_private_registry(self):
        """A Rule gives the function its own limit."""

        @rate_limit(Rule(1, 0))
        def once():
            return "ok"

        assert once() == "ok"
        with pytest.raises(RateLimitExceeded) as info:
            once()
        assert info.value.retry_after == math.inf
        assert str(info.value) == "rate limit exceeded: the request can never be allowed"

    def test_methods_share_by_key(self):
        """Methods work; the key function receives self."""
        reg, _ = registry(1, 0)

        class Client:
            def __init__(self, name):
                self.name = name

            @rate_limit(reg, key=lambda self, *a: self.name)
            def get(self, path):
                return f"{self.name}{path}"

        a, b = Client("a"), Client("b")
        assert (a.get("/x"), b.get("/y")) == ("a/x", "b/y")
        with pytest.raises(RateLimitExceeded):
            a.get("/z")

    def test_waits_with_manual_clock(self):
        """wait=True sleeps exactly retry_after on the injected clock, then runs."""
        reg, clock = registry(1, 0.5)
        sleeps = []

        def sleep(seconds):
            sleeps.append(seconds)
            clock.sleep(seconds)

        @rate_limit(reg, wait=True, sleep=sleep)
        def work():
            return clock()

        assert work() == 0.0
        assert work() == 2.0
        assert work() == 4.0
        assert sleeps == [2.0, 2.0]

    def test_wait_gives_up_when_too_long(self):
        """A wait beyond max_wait raises at once, without sleeping."""
        reg, clock = registry(1, 0.5)

        @rate_limit(reg, wait=True, max_wait=1.5, sleep=clock.sleep)
        def work():
            return True

        assert work()
        with pytest.raises(RateLimitExceeded) as info:
            work()
        assert info.value.retry_after == 2.0
        assert clock() == 0.0

    @pytest.mark.parametrize(("capacity", "rate", "cost"), [(1, 0.0, 1), (2, 1.0, 3)])
    def test_wait_never_waits_for_a_call_that_can_never_pass(self, capacity, rate, cost):
        """retry_after == inf raises at once, even with the default max_wait (inf)."""
        reg, _ = registry(capacity, rate)

        def sleep(seconds):
            raise AssertionError(f"slept {seconds} s for a call that can never pass")

        @rate_limit(reg, wait=True, cost=cost, sleep=sleep)
        def work():
            return True

        if cost <= capacity:
            assert work()
        with pytest.raises(RateLimitExceeded) as info:
            work()
        assert info.value.retry_after == math.inf

        @rate_limit(reg, wait=True, cost=cost, sleep=sleep)
        async def async_work():
            return True

        async def scenario():
            if cost <= capacity:
                assert await async_work()
            await async_work()

        with pytest.raises(RateLimitExceeded) as info:
            asyncio.run(asyncio.wait_for(scenario(), 5))
        assert info.value.retry_after == math.inf

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"cost": 0}, ValueError, "'cost' must be a finite number > 0, got 0"),
            ({"cost": True}, TypeError, "'cost' must be a number, got True (bool)"),
            ({"wait": 1}, TypeError, "'wait' must be a bool, got 1"),
            ({"max_wait": -1}, ValueError, "'max_wait' must be >= 0, got -1"),
            ({"max_wait": "5"}, TypeError, "'max_wait' must be a number, got '5'"),
            ({"key": "ip"}, TypeError, "'key' must be a callable, got 'ip'"),
            ({"sleep": 3}, TypeError, "'sleep' must be a callable, got 3"),
        ],
    )
    def test_bad_options(self, kwargs, error, message):
        """Options are validated when decorating, naming the option."""
        with pytest.raises(error) as info:
            rate_limit(Rule(1, 1), **kwargs)
        assert str(info.value) == message

    def test_bad_limiter(self):
        """The limiter must be a registry, a rule or a rate string."""
        with pytest.raises(TypeError, match="'limiter' must be a BucketRegistry, a Rule"):
            rate_limit(10)  # type: ignore[arg-type]


class TestAsync:
    def test_async_raises_and_runs(self):
        """Async functions get an async wrapper with the same behaviour."""
        reg, _ = registry(2, 1.0)

        @rate_limit(reg)
        async def work(x):
            await asyncio.sleep(0)
            return x

        async def scenario():
            assert await work(1) == 1
            assert await work(2) == 2
            with pytest.raises(RateLimitExceeded) as info:
                await work(3)
            return info.value.decision

        assert asyncio.run(scenario()) == Decision(False, 0.0, 1.0, 2.0, 2)
        assert asyncio.iscoroutinefunction(work)

    def test_async_waits_with_async_sleep(self):
        """wait=True awaits an async sleep function."""
        reg, clock = registry(1, 4.0)
        slept = []

        async def sleep(seconds):
            slept.append(seconds)
            clock.sleep(seconds)

        @rate_limit(reg, wait=True, sleep=sleep)
        async def work():
            return clock()

        async def scenario():
            return [await work() for _ in range(3)]

        assert asyncio.run(scenario()) == [0.0, 0.25, 0.5]
        assert slept == [0.25, 0.25]

    def test_async_method(self):
        """Async methods work with a key of self."""
        reg, _ = registry(1, 0)

        class Api:
            @rate_limit(reg, key=lambda self: "api")
            async def ping(self):
                return "pong"

        async def scenario():
            api = Api()
            first = await api.ping()
            with pytest.raises(RateLimitExceeded):
                await api.ping()
            return first

        assert asyncio.run(scenario()) == "pong"

    def test_async_function_with_blocking_store_is_refused(self):
        """An async function cannot use a blocking store (a sync RedisStore): each call would
        stall the event loop. TypeError at decoration, naming AsyncRedisStore."""

        redis_store = pytest.importorskip("tokenbucket.redis")
        store = redis_store.RedisStore.from_url("redis://127.0.0.1:1/0")  # never connects

        async def work():
            return None

        with pytest.raises(TypeError) as info:
            rate_limit(BucketRegistry(Rule(1, 1), store=store))(work)
        assert str(info.value).startswith(f"{work!r} is async but the registry's store,")
        assert str(info.value).endswith(
            "RedisStore, blocks the event loop on every call; use tokenbucket.redis.AsyncRedisStore"
        )
        store.close()

        class Blocking(MemoryStore):
            blocking = True

        with pytest.raises(TypeError, match="blocks the event loop on every call"):
            rate_limit(BucketRegistry(Rule(1, 1), store=Blocking()))(work)

        @rate_limit(BucketRegistry(Rule(1, 1), store=Blocking()))
        def sync_work():  # a sync function may block: it is not on a loop
            return "ok"

        assert sync_work() == "ok"

    def test_sync_function_with_async_store_is_refused(self):
        """A sync function cannot use an async store: TypeError at decoration."""

        class AsyncStore:
            async def take(self, key, amount, default):
                raise AssertionError("not reached")

        reg = BucketRegistry(Rule(1, 1), store=AsyncStore())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="synchronous but the registry's store is async"):

            @rate_limit(reg)
            def work():
                return None


def test_two_lambdas_have_two_buckets():
    """Review item 8: the default key was ``module.qualname``, ``<lambda>`` for both, so two
    decorated lambdas in one module shared a bucket. Now each lambda has its own."""
    reg = BucketRegistry(Rule(1, 1.0), clock=ManualClock())
    first = rate_limit(reg)(lambda: "first")
    second = rate_limit(reg)(lambda: "second")
    assert (first(), second()) == ("first", "second")
    with pytest.raises(RateLimitExceeded):
        first()
    with pytest.raises(RateLimitExceeded):
        second()
    func = first.__wrapped__
    assert func.__qualname__.endswith("<lambda>")
    assert reg.tokens(f"{func.__module__}.{func.__qualname__}#{id(func)}") == 0.0


def test_named_functions_made_by_a_factory_share_their_bucket():
    """A named nested function keeps its qualified name as its key: each one a factory makes
    is the same function (and shares its bucket across processes on a shared store)."""
    reg = BucketRegistry(Rule(1, 1.0), clock=ManualClock())

    def make():
        @rate_limit(reg)
        def search() -> str:
            return "results"

        return search

    assert make()() == "results"
    with pytest.raises(RateLimitExceeded):
        make()()
    name = f"{make.__module__}.test_named_functions_made_by_a_factory_share_their_bucket.<locals>"
    assert reg.tokens(f"{name}.make.<locals>.search") == 0.0
