"""A Redis store on a clock the test sets, beside a MemoryStore on the same clock.

The script reads the server's ``TIME``, which a test cannot set. ``twins`` runs the very same
script with two lines swapped, its clock and its expiry: ``now`` comes from a hash the test
writes (whole microseconds, as ``TIME`` gives them), and a key's expiry is written with
``PEXPIREAT`` at the instant the script computed on that clock, shifted far into the real
future (``FAR``) so that no key expires while the test runs. The arithmetic, the reads and the
writes are the script's own; ``Twins.deadline`` reads a key's expiry back on the test's clock.

Both stores read one `TwinClock`: the MemoryStore in seconds (``us / 1e6``), the script in
microseconds. Steps of 1/64 s (15,625 µs) keep both readings exact, so the two stores compute
with the same floats.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Iterator, Optional, Tuple, Union

import pytest
import redis

from tokenbucket import BucketRegistry, MemoryStore, Rule
from tokenbucket._stores.redis import logic as _redis_logic
from tokenbucket.redis import RedisStore

#: The hash the swapped script reads its clock from.
CLOCK_KEY = "tokenbucket-test:clock"
#: Expiry instants are written this many ms later (about 127 years): no key expires in a test.
FAR = 4_000_000_000_000

_TIME = "local time = redis.call('TIME')"
_EXPIRE = "redis.call('PEXPIRE', key, ms + 1)"


def clocked_script() -> str:
    """The store's script, reading its clock from ``CLOCK_KEY`` and expiring at ``FAR`` + its
    own clock's instant."""
    text = _redis_logic._SCRIPT
    assert text.count(_TIME) == 1, "the script's clock line changed: update tests/property"
    assert text.count(_EXPIRE) == 1, "the script's expiry line changed: update tests/property"
    text = text.replace(_TIME, f"local time = redis.call('HMGET', '{CLOCK_KEY}', 's', 'us')")
    return text.replace(
        _EXPIRE, f"redis.call('PEXPIREAT', key, math.floor(now / 1000) + ms + 1 + {FAR})"
    )


class TwinClock:
    """One clock for both stores, in whole microseconds; call it for seconds (a `Clock`)."""

    def __init__(self, client: redis.Redis, us: int) -> None:
        self.client = client
        self.us = 0
        self.set_us(us)

    def __call__(self) -> float:
        return self.us / 1e6

    def set_us(self, us: int) -> None:
        """Set both stores' clock to ``us`` microseconds (backwards too)."""
        assert us >= 0
        self.us = us
        self.client.hset(CLOCK_KEY, mapping={"s": us // 1_000_000, "us": us % 1_000_000})


Defaults = Union[Rule, Dict[str, Rule]]


class Twins:
    """Makes pairs of registries, one per store, on one `TwinClock` and fresh key prefixes."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.made = 0
        self.policies: list[str] = []

    def pair(
        self, default: Defaults, us: int = 1_000_000_000
    ) -> Tuple[BucketRegistry, BucketRegistry, TwinClock]:
        """A registry on a MemoryStore and one on the (clocked) RedisStore, and their clock.

        The MemoryStore never sweeps (Redis keys never expire here either): forgetting full
        buckets is checked by `deadline`, not by waiting. Any decision the Redis store's
        failure policy made (a script error) is recorded in ``policies``.
        """
        self.made += 1
        clock = TwinClock(self.client, us)
        memory = MemoryStore(clock=clock)
        memory._until_sweep = 2**62
        store = RedisStore(self.client, prefix=f"t{self.made}:", on_error="deny")
        store._logic.on_policy = self.policies.append
        return (
            BucketRegistry(default, store=memory),
            BucketRegistry(default, store=store),
            clock,
        )

    def name(self, registry: BucketRegistry, key: str) -> str:
        """The Redis key of ``key``'s bucket in ``registry`` (a Redis one)."""
        store = registry.store
        assert isinstance(store, RedisStore)
        return store.prefix + key

    def state(self, registry: BucketRegistry, key: str) -> Dict[str, str]:
        """``key``'s hash in Redis, decoded."""
        raw = self.client.hgetall(self.name(registry, key))
        return {field.decode(): value.decode() for field, value in raw.items()}

    def deadline(self, registry: BucketRegistry, key: str) -> Optional[int]:
        """When ``key``'s hash expires, in µs of the test's clock; None if it never does.

        Redis deletes a key once its clock is past the expiry millisecond.
        """
        when = self.client.pexpiretime(self.name(registry, key))
        if when < 0:
            return None
        return (when - FAR) * 1000


@pytest.fixture(scope="module")
def twins(redis_server: object) -> Iterator[Twins]:
    """A `Twins` factory on the session's redis-server, the store running the clocked script."""
    text = clocked_script()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_redis_logic, "_SCRIPT", text)
        patch.setattr(_redis_logic, "_SHA", hashlib.sha1(text.encode()).hexdigest().encode())
        client = redis.Redis.from_url(redis_server.url, socket_timeout=5)  # type: ignore[attr-defined]
        client.flushall()
        try:
            yield Twins(client)
        finally:
            client.flushall()
            client.close()
