r"""The store protocol: where a registry keeps bucket state and per-key rule overrides.

This is the contract a store author implements. A store does the bucket arithmetic atomically
per call and owns the overrides; the registry validates input (keys are str, amounts finite and
> 0, rules valid), resolves nothing itself and turns outcomes into decisions. The in-memory
store is the default; a shared store (Redis) implements the same methods, synchronously or as
coroutines ([`AsyncStore`][tokenbucket.AsyncStore]). The arithmetic itself is in
``tokenbucket._core.arith`` (and, for Redis, cited by name in ``lua/bucket.lua``).

Operations, each one atomic step:

* ``take``: refill, check ``amount``, take it if it fits (changes the bucket);
* ``peek``: what ``take`` would answer now (changes nothing);
* ``level``: the token level now (changes nothing);
* ``take_all``: ``take`` on the limits of one or more keys at once, all of them or none
  (changes the buckets);
* ``peek_all``: what ``take_all`` would answer now (changes nothing);
* ``get_rule``: the key's override (changes nothing);
* ``update_rule``, ``remove_rule``: settle the bucket, then set or drop the override;
* ``reset``: forget the bucket's state, so that it is full again (the override stays);
* ``charge``: take ``amount`` whatever the level, leaving debt (or, given ``max_wait``, only if
  the level is back at 0 within ``max_wait`` seconds: a reservation); ``charge_all`` on several;
* ``refund``: give ``amount`` back, never above full; ``refund_all`` on several.

Buckets are named by store keys. A registry of one Rule keeps key ``k``'s bucket under ``k``
itself. A registry of several named limits charges limit ``name`` of key ``k``: the bucket
whose store key is ``limit_key(k, name)`` (``"{" + tag(k) + "}\0" + name``, ``_core.keys``).
The ``*_all`` calls name those buckets as *groups*, ``(k, ((name, default rule), ...))``: one
group per key, its limits in the registry's order, so that a store can keep all the limits of
a key together (``MemoryStore`` keeps them in one state: one lookup and one lock per key; the
Redis stores keep one hash per ``limit_key``). Whatever a store does inside, the one-bucket
calls on ``limit_key(k, name)`` (``take``, ``level``, ``charge``, the overrides, ``reset``...)
address that same bucket, and ``list_rules`` lists a limit's override under that store key.
A ``*_all`` call returns ``(allowed, outcomes)``: one outcome per limit, groups in order and
each group's limits in order; a registry's ``try_consume`` reads only ``allowed``.

Optional (a registry's `list_rules`, `export_rules` and `import_rules` need them; a store
without them makes those raise TypeError):

* ``list_rules(prefix, cursor, count)``: a page of the overrides of keys starting with
  ``prefix``: ``(next cursor or None when done, [(key, rule), ...])``; cursors are opaque str.
* ``get_shared(name)``, ``set_shared(name, text)``: read and write a named document (the
  shared default rules, see `BucketRegistry.share_rules`), outside the keys' namespace.

A new operation is one more method here, in each store and in ``lua/bucket.lua``.

Semantics every store must keep (the conformance tests hold each store to them):

* A key without state is a full bucket under its current rule (its override, else the default
  the caller passes). A full bucket may be forgotten at any time without changing a decision.
* ``take`` reads the store's clock, refills, checks and consumes as one atomic step. A denial
  consumes nothing. ``take_all`` does so for every limit of every group at one instant: it
  admits only if every one has ``amount``, and a denial consumes from none of them (a request
  charged to two keys, a user and an organisation, is all or nothing across both).
* State written under one rule and read under another is first settled under the rule it was
  written with, up to the instant of reading. What carries over is the deficit (tokens missing
  from full): tokens used stay used. Below a lowered capacity the level goes negative (the
  bucket is in debt) and refills from there.
* A clock reading earlier than the state's instant earns nothing. A denial then reports the
  level of the refill line at that reading (the level minus the catch-up time times the rate),
  so that the decision's ``retry_after`` includes the wait for the clock to catch up.
* ``update_rule`` and ``remove_rule`` settle the key's bucket at the instant of the change.
* ``charge`` and ``refund`` report the level of the refill line at the clock reading (as a
  denial does), so ``wait(-level, refill_rate)`` is exactly the time until the debt is repaid.
  A refund of a bucket ``d`` tokens short gives back ``min(amount, d)``: never above full.
"""

from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple

from .._core.rule import Rule

#: One page of a store's listing: the next cursor (None when done) and ``(store key, rule)``.
StorePage = Tuple[Optional[str], List[Tuple[str, Rule]]]
#: What ``take`` returns: whether the tokens were (or would be) taken, the token level after the
#: decision, and the rule that decided.
Outcome = Tuple[bool, float, Rule]
#: What ``take_all`` returns per limit, in the order given: whether that limit alone has the
#: amount, its level after the call (after the take if all were taken, else now) and its rule.
Outcomes = Tuple[Outcome, ...]
#: A key's limits in a ``take_all``: ``(name, default rule)`` pairs, names distinct.
Limits = Sequence[Tuple[str, Rule]]
#: The groups of a ``take_all``: ``(key, limits)`` pairs, keys distinct. Limit ``name`` of
#: group ``key`` is the bucket whose store key is ``limit_key(key, name)``.
Groups = Sequence[Tuple[str, Limits]]
#: A ``take_all``'s shadow mask: one flag per limit (groups in order, each group's limits in
#: order), True for a limit that is only watched (see `Store.take_all`); empty (the default)
#: when every limit decides.
Mask = Sequence[bool]


class Store(Protocol):
    """A synchronous store. [`MemoryStore`][tokenbucket.MemoryStore] is the default.

    A store whose calls wait on I/O declares it with a class attribute
    ``blocking: ClassVar[bool] = True`` ([`RedisStore`][tokenbucket.redis.RedisStore] does):
    the ASGI middleware and async functions under [`rate_limit`][tokenbucket.rate_limit] refuse
    such a store with ``TypeError``, as every decision would stall the event loop. The attribute
    is optional: absent (or False) means non-blocking. ``MemoryStore`` is non-blocking (a
    decision is a few microseconds of arithmetic under a lock, with no I/O).
    """

    def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """Refill ``key``'s bucket, check ``amount`` (> 0) against it and take it if it fits.

        ``default`` is the rule when the key has no override. Returns ``(allowed, level after,
        rule that decided)``; a denial takes nothing and reports the level now.
        """

    def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """Return what ``take(key, amount, default)`` would now, changing nothing."""

    def level(self, key: str, default: Rule, /) -> float:
        """Return ``key``'s token level now (raw: may be below 0 in debt), changing nothing.

        A store that treats untracked keys as empty (``MemoryStore`` at its ``max_keys`` cap)
        says 0 for them, as ``take`` would decide.
        """

    def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """Take ``amount`` from every limit of every group, or from none, atomically.

        ``groups`` is a sequence of ``(key, ((name, default rule), ...))`` with distinct keys,
        and distinct names within a key (else ValueError); limit ``name`` of ``key`` is the
        bucket of store key ``limit_key(key, name)`` (see the module docstring). Every limit is
        refilled and checked at one instant; the call is allowed only if every one has
        ``amount``. Returns ``(allowed, outcomes)``, one outcome per limit in order: whether
        that limit alone had the amount, its level after the call and the rule that decided
        it. A denial charges none of them. A shared store may restrict which keys can go
        together (Redis Cluster: one hash slot) and says so with ValueError. A store with a
        ``max_keys`` cap counts keys: a new key comes in with all its limits, or none.

        ``shadow`` (optional; a registry passes it only when it has shadow limits) flags the
        limits that are watched, not enforced: ``allowed`` is then decided by the others
        alone, and a flagged limit is charged only if it has the amount and the call is
        allowed (else its outcome is its level now, as for a denial). A store that does not
        take the argument works with every registry without shadow limits.
        """

    def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """Return what ``take_all(groups, amount)`` would now, changing nothing."""

    def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        """Take ``amount`` (> 0) from ``key``'s bucket whatever its level; it may go into debt.

        With ``max_wait`` None the charge always happens. With a number it is a reservation:
        it happens only if ``amount`` is within the capacity and the level after it is back at
        0 within ``max_wait`` seconds; else nothing is taken. Returns ``(charged, level after
        (or now, if not charged), rule)``, the level being that of the refill line now (see the
        module docstring).
        """

    def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """Give ``amount`` (> 0) back to ``key``'s bucket, never above full.

        Returns ``(True, level after, rule)``.
        """

    def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """`charge` on every limit of every group, all or none, at one instant.

        With ``max_wait`` None every limit is charged; with a number all are charged only if
        each one would be (see `charge`). ``groups`` and outcomes as for `take_all`.

        ``shadow`` (optional, with a ``max_wait``; a registry passes it only when it has
        shadow limits) flags the limits that are watched, as for `take_all`: ``allowed`` is
        decided by the others alone, and a flagged limit is charged only if its own
        reservation fits and the call is allowed (else its outcome is its level now).
        """

    def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        """`refund` on every limit of every group at one instant; always allowed."""

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

    async def take(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.take`][tokenbucket.Store.take]."""

    async def peek(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.peek`][tokenbucket.Store.peek]."""

    async def level(self, key: str, default: Rule, /) -> float:
        """See [`Store.level`][tokenbucket.Store.level]."""

    async def take_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.take_all`][tokenbucket.Store.take_all]."""

    async def peek_all(
        self, groups: Groups, amount: float, shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.peek_all`][tokenbucket.Store.peek_all]."""

    async def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        """See [`Store.charge`][tokenbucket.Store.charge]."""

    async def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.refund`][tokenbucket.Store.refund]."""

    async def charge_all(
        self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = (), /
    ) -> Tuple[bool, Outcomes]:
        """See [`Store.charge_all`][tokenbucket.Store.charge_all]."""

    async def refund_all(self, groups: Groups, amount: float, /) -> Tuple[bool, Outcomes]:
        """See [`Store.refund_all`][tokenbucket.Store.refund_all]."""

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
