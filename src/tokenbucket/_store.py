"""The store protocol: where a registry keeps bucket state and per-key rule overrides.

A store does the bucket arithmetic atomically per key and owns the overrides; the registry
validates input, resolves nothing itself and turns outcomes into decisions. The in-memory store
is the default; a shared store (Redis) implements the same methods, synchronously or as
coroutines ([`AsyncStore`][tokenbucket.AsyncStore]).

Semantics every store must keep (the conformance tests hold each store to them):

* A key without state is a full bucket under its current rule (its override, else the default
  the caller passes). A full bucket may be forgotten at any time without changing a decision.
* ``take`` reads the store's clock, refills, checks and (when ``commit``) consumes as one atomic
  step. A denial consumes nothing.
* State written under one rule and read under another is first settled under the rule it was
  written with, up to the instant of reading. What carries over is the deficit (tokens missing
  from full): tokens used stay used. Below a lowered capacity the level goes negative (the
  bucket is in debt) and refills from there.
* A clock reading earlier than the state's instant earns nothing. A denial then reports the
  level of the refill line at that reading (the level minus the catch-up time times the rate),
  so that the decision's ``retry_after`` includes the wait for the clock to catch up.
* ``take(key, 0, default, False)`` reads the level without changing anything (the registry
  never passes an amount of 0 otherwise).
* ``update_rule`` and ``remove_rule`` settle the key's bucket at the instant of the change.
"""

from __future__ import annotations

from typing import Optional, Tuple

from typing_extensions import Protocol

from ._rule import Rule

#: What ``take`` returns: whether the tokens were (or would be) taken, the token level after the
#: decision, and the rule that decided.
Outcome = Tuple[bool, float, Rule]


class Store(Protocol):
    """A synchronous store. [`MemoryStore`][tokenbucket.MemoryStore] is the default.

    A store whose calls wait on I/O declares it with a class attribute
    ``blocking: ClassVar[bool] = True`` ([`RedisStore`][tokenbucket.redis.RedisStore] does):
    the ASGI middleware and async functions under [`rate_limit`][tokenbucket.rate_limit] refuse
    such a store with ``TypeError``, as every decision would stall the event loop. The attribute
    is optional: absent (or False) means non-blocking. ``MemoryStore`` is non-blocking (a
    decision is a few microseconds of arithmetic under a lock, with no I/O).
    """

    def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """Refill ``key``'s bucket, check ``amount`` against it and, if ``commit``, consume it."""

    def try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        """``take(key, amount, default, True)`` for an int ``amount``; only whether it passed.

        Its own method so that the in-memory store can answer the most frequent call (a whole
        number of tokens, a yes or no) without building an outcome or checking the amount's
        type; a store may simply return ``take(...)[0]``. Callers pass other amounts to `take`.
        """

    def get_rule(self, key: str, /) -> Optional[Rule]:
        """Return ``key``'s override, or None."""

    def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """Settle ``key``'s bucket, then set its override; omitted fields keep their values."""

    def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """Settle ``key``'s bucket, then drop its override; return the dropped rule or None."""

    def reset(self, key: str, /) -> None:
        """Forget ``key``'s bucket state: it is full again. Its override stays."""


class AsyncStore(Protocol):
    """The coroutine form of [`Store`][tokenbucket.Store], for stores that do network I/O."""

    async def take(self, key: str, amount: float, default: Rule, commit: bool, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]."""

    async def try_take(self, key: str, amount: int, default: Rule, /) -> bool:
        """See [`Store.try_take`][tokenbucket.Store.try_take]."""

    async def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]."""

    async def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]."""

    async def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]."""

    async def reset(self, key: str, /) -> None:
        """See [`Store.reset`][tokenbucket.Store.reset]."""
