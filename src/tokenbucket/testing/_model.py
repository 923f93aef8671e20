"""Exact reference models of a bucket and a registry, in rational arithmetic.

They are written from the textbook definition (level and last instant, refill clamped at
capacity), not from the library's representation, so comparing the two checks the library's
arithmetic.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Collection, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._core.rule import EPSILON, Rule
from .._core.validate import MAX_AMOUNT

#: The most tokens a bucket may owe (the library's documented bound, ``MAX_AMOUNT``).
MAX_DEBT = Fraction(MAX_AMOUNT)

Real = Union[int, float, Fraction]

#: How far below the boundary a real decision may admit: the library's EPSILON, plus room for
#: the one rounding of its arithmetic on the model's value ranges.
SLACK = Fraction(EPSILON) + Fraction(1, 10**12)


class ExactBucket:
    """A token bucket computed with :class:`fractions.Fraction`: no rounding anywhere.

    Every float given to it is taken at its exact binary value, so it answers what the library
    would answer with infinite precision. It follows the library's documented semantics: it
    starts full; ``level(t) = min(capacity, level(s) + (t - s) * refill_rate)``; a clock reading
    earlier than the last one earns nothing; a rule change keeps the deficit (tokens missing from
    full), so under a lowered capacity the level can be negative (a debt that refills first); a
    charge's debt saturates at ``MAX_DEBT`` tokens.

    Examples:
        >>> model = ExactBucket(capacity=1, refill_rate=0.1)
        >>> model.consume(0.0, 1), model.consume(9.0, 1), model.consume(10.0, 1)
        (True, False, True)
    """

    __slots__ = ("capacity", "last", "level", "refill_rate")

    def __init__(self, capacity: Real, refill_rate: Real, start: Real = 0) -> None:
        self.capacity = Fraction(capacity)
        self.refill_rate = Fraction(refill_rate)
        self.level = self.capacity
        self.last = Fraction(start)

    def copy(self) -> ExactBucket:
        """Return an independent copy (for what-if questions)."""
        clone = ExactBucket(self.capacity, self.refill_rate, self.last)
        clone.level = self.level
        return clone

    def advance(self, now: Real) -> Fraction:
        """Refill up to ``now`` (no-op if ``now`` is not later than the last instant)."""
        t = Fraction(now)
        if t > self.last:
            self.level = min(self.capacity, self.level + (t - self.last) * self.refill_rate)
            self.last = t
        return self.level

    def allows(self, now: Real, amount: Real) -> bool:
        """Whether ``amount`` tokens are available at ``now`` (exactly; no tolerance)."""
        return Fraction(amount) <= self.advance(now)

    def consume(self, now: Real, amount: Real = 1, *, force: Optional[bool] = None) -> bool:
        """Take ``amount`` at ``now`` if available; return whether it did.

        ``force`` makes the model follow a decision made elsewhere (taking the tokens, or not,
        regardless).
        """
        allowed = self.allows(now, amount) if force is None else force
        if allowed:
            self.level -= Fraction(amount)
        return allowed

    def follow(self, now: Real, amount: Real, allowed: bool) -> None:
        """Check a real decision against the model, then take the same step.

        A real limiter may admit a request up to ``EPSILON`` tokens (1e-9) before the exact
        boundary (float arithmetic cannot place it exactly); anything else is a disagreement.

        Raises:
            AssertionError: the real decision disagrees with exact arithmetic.
        """
        level = self.advance(now)
        wanted = Fraction(amount)
        if allowed and level < wanted - SLACK:
            raise AssertionError(
                f"admitted {amount} at {now} with only {float(level)} tokens ({self!r})"
            )
        if not allowed and level >= wanted:
            raise AssertionError(f"denied {amount} at {now} with {float(level)} tokens ({self!r})")
        self.consume(now, amount, force=allowed)

    def retry_after(self, now: Real, amount: Real) -> Fraction:
        """Seconds from ``now`` until ``amount`` is available (0 if it is; -1 if never).

        A clock behind the last instant earns nothing until it is back there, so that wait
        counts too.
        """
        missing = Fraction(amount) - self.advance(now)
        if missing <= 0:
            return Fraction(0)
        if Fraction(amount) > self.capacity or not self.refill_rate:
            return Fraction(-1)
        behind = max(self.last - Fraction(now), Fraction(0))
        return behind + missing / self.refill_rate

    def charge(self, now: Real, amount: Real) -> None:
        """Take ``amount`` at ``now`` whatever the level: it may go below 0 (a debt).

        A debt saturates: the level never goes below ``capacity - MAX_DEBT`` (2**53 tokens
        short of full), however much is charged.
        """
        self.level = max(self.advance(now) - Fraction(amount), self.capacity - MAX_DEBT)

    def reservation_wait(self, now: Real, amount: Real) -> Fraction:
        """The wait a reservation of ``amount`` at ``now`` implies (-1: forever).

        Seconds until the level is back at 0 after charging ``amount``.
        The level counted is that of the refill line at ``now``: while the clock is behind the
        last instant nothing refills, so that catch-up time counts too.
        """
        behind = max(self.last - Fraction(now), Fraction(0))
        short = Fraction(amount) - self.advance(now) + behind * self.refill_rate
        if Fraction(amount) > self.capacity:
            return Fraction(-1)
        if short <= 0:
            return Fraction(0)
        return short / self.refill_rate if self.refill_rate else Fraction(-1)

    def refund(self, now: Real, amount: Real) -> None:
        """Give ``amount`` back at ``now``, never above the capacity."""
        self.level = min(self.capacity, self.advance(now) + Fraction(amount))

    def update(
        self, now: Real, capacity: Optional[Real] = None, refill_rate: Optional[Real] = None
    ) -> None:
        """Settle at the old rule up to ``now``, then switch, keeping the deficit."""
        self.advance(now)
        deficit = self.capacity - self.level
        if capacity is not None:
            self.capacity = Fraction(capacity)
        if refill_rate is not None:
            self.refill_rate = Fraction(refill_rate)
        self.level = self.capacity - deficit

    def __repr__(self) -> str:
        return (
            f"ExactBucket(capacity={self.capacity}, refill_rate={self.refill_rate}, "
            f"level={self.level}, last={self.last})"
        )


class ExactRegistry:
    """The documented semantics of [`BucketRegistry`][tokenbucket.BucketRegistry], exactly.

    Keys without a bucket are full under their rule (override, else default). A per-key rule
    change settles that key at once; a default change settles each bucket the first time it is
    read (with ``commit``) afterwards, under the rule it was written with. Nothing is forgotten,
    so comparing it with a real registry also checks that forgetting full buckets is invisible.

    With a mapping of limit names to rules (several limits), each limit is such a registry of
    its own (`limit`); `consume` decides a request over all of them, all or nothing, and
    ``limit=`` picks one limit in `rule_for`, `bucket`, `set_override`, `set_default` and
    `reset` (with one limit it may be omitted).

    Examples:
        >>> model = ExactRegistry({"burst": Rule(2, 1), "daily": Rule(3, 0)})
        >>> [model.consume("alice", 0, 1)[0] for _ in range(3)]
        [True, True, False]
        >>> model.consume("alice", 5, 1)
        (True, {'burst': Fraction(1, 1), 'daily': Fraction(0, 1)})
        >>> model.consume("alice", 9, 1)[0]  # daily is spent, and never refills
        False
    """

    def __init__(self, default: Union[Rule, Mapping[str, Rule]]) -> None:
        rules = {"default": default} if isinstance(default, Rule) else dict(default)
        #: The limits' names, in order.
        self.names: Tuple[str, ...] = tuple(rules)
        #: Each limit's model (the registry itself when it has one limit).
        self.limits: Dict[str, ExactRegistry] = {}
        if len(rules) > 1:
            self.limits = {name: ExactRegistry(rule) for name, rule in rules.items()}
        else:
            self.limits = {self.names[0]: self}
        self.default = next(iter(rules.values()))
        self.overrides: Dict[str, Rule] = {}
        self._version = 0
        self._buckets: Dict[str, Tuple[ExactBucket, object]] = {}

    def limit(self, name: Optional[str] = None) -> ExactRegistry:
        """The model of limit ``name`` (may be omitted with one limit)."""
        if name is None:
            if len(self.names) > 1:
                raise ValueError(f"several limits: name one of {list(self.names)!r}")
            name = self.names[0]
        return self.limits[name]

    def rule_for(self, key: str, limit: Optional[str] = None) -> Rule:
        """The key's override, else the default (of ``limit``)."""
        model = self.limit(limit)
        return model.overrides.get(key, model.default)

    def consume(
        self,
        keys: Union[str, Mapping[str, str]],
        now: Real,
        amount: Real,
        allowed: Optional[bool] = None,
        *,
        commit: bool = True,
        shadow: Collection[str] = (),
        shadow_denied: Optional[Collection[str]] = None,
    ) -> Tuple[bool, Dict[str, Fraction]]:
        """One request over every limit, all or nothing; return the decision and the levels.

        ``keys`` is one key for every limit, or a mapping naming each limit's key. Given the
        ``allowed`` of a real decision, it checks it as `take_all` does and takes the same
        step. Returns whether it was admitted and each limit's level after, by name.

        Limits named in ``shadow`` do not decide; an admitted request is charged to each of
        them that has the amount. Given the real decision's ``shadow_denied``, those verdicts
        are checked too (with the same slack) and followed.

        Raises:
            AssertionError: the real decision disagrees with exact arithmetic.
        """
        buckets = [
            self.limits[name].bucket(keys if isinstance(keys, str) else keys[name], now, commit)
            for name in self.names
        ]
        levels = [bucket.advance(now) for bucket in buckets]
        wanted = Fraction(amount)
        enforced = [level for name, level in zip(self.names, levels) if name not in shadow]
        exact = all(level >= wanted for level in enforced)
        if allowed is None:
            allowed = exact
        elif allowed and any(level < wanted - SLACK for level in enforced):
            raise AssertionError(f"admitted {amount} at {now} for {keys} with levels {levels}")
        elif not allowed and exact:
            raise AssertionError(f"denied {amount} at {now} for {keys} with levels {levels}")
        if allowed:
            for name, bucket, level in zip(self.names, buckets, levels):
                if name in shadow:
                    admits = level >= wanted
                    if shadow_denied is not None:
                        said = name not in shadow_denied
                        if (said and level < wanted - SLACK) or (not said and admits):
                            raise AssertionError(
                                f"shadow {name!r} {'admitted' if said else 'denied'} {amount} "
                                f"at {now} for {keys} with level {level}"
                            )
                        admits = said
                    if not admits:
                        continue
                bucket.consume(now, amount, force=True)
        return allowed, {name: bucket.level for name, bucket in zip(self.names, buckets)}

    def retry_after(self, keys: Union[str, Mapping[str, str]], now: Real, amount: Real) -> Fraction:
        """Seconds until every limit admits ``amount`` (0 if all do now; -1 if one never does)."""
        waits = [
            self.limits[name]
            .bucket(keys if isinstance(keys, str) else keys[name], now, commit=False)
            .retry_after(now, amount)
            for name in self.names
        ]
        return Fraction(-1) if Fraction(-1) in waits else max(waits)

    def bucket(
        self, key: str, now: Real, commit: bool = True, *, limit: Optional[str] = None
    ) -> ExactBucket:
        """The key's bucket at ``now``, settled if its rule changed (kept only if ``commit``).

        With ``commit=False`` the result is a copy: use it to ask, not to consume.
        """
        model = self.limit(limit)
        if model is not self:
            return model.bucket(key, now, commit)
        current = self.rule_for(key)
        tag = self._tag(key)
        if key in self._buckets:
            bucket, written = self._buckets[key]
            if written != tag:
                bucket = bucket.copy()
                bucket.update(now, current.capacity, current.refill_rate)
                if commit:
                    self._buckets[key] = (bucket, tag)
        else:
            bucket = ExactBucket(current.capacity, current.refill_rate, now)
            if commit:
                self._buckets[key] = (bucket, tag)
        return bucket if commit else bucket.copy()

    def take_all(
        self,
        keys: Sequence[str],
        now: Real,
        amount: Real,
        allowed: Optional[bool] = None,
        *,
        commit: bool = True,
    ) -> Tuple[bool, List[Fraction]]:
        """Take ``amount`` from every key's bucket at ``now``, or from none; return the levels.

        Allowed exactly when every bucket has ``amount``. Given the ``allowed`` of a real
        ``take_all``, it checks that decision as `ExactBucket.follow` does (an admission may
        come up to ``SLACK`` early) and takes the same step. ``commit=False`` asks without
        changing anything (a ``peek_all``). Returns the decision and each bucket's level after.

        Raises:
            AssertionError: the real decision disagrees with exact arithmetic.
        """
        buckets = [self.bucket(key, now, commit) for key in keys]
        levels = [bucket.advance(now) for bucket in buckets]
        wanted = Fraction(amount)
        exact = all(level >= wanted for level in levels)
        if allowed is None:
            allowed = exact
        elif allowed and any(level < wanted - SLACK for level in levels):
            raise AssertionError(f"admitted {amount} at {now} for {keys} with levels {levels}")
        elif not allowed and exact:
            raise AssertionError(f"denied {amount} at {now} for {keys} with levels {levels}")
        if allowed:
            for bucket in buckets:
                bucket.consume(now, amount, force=True)
        return allowed, [bucket.level for bucket in buckets]

    def set_override(
        self, key: str, now: Real, rule: Optional[Rule], *, limit: Optional[str] = None
    ) -> None:
        """Settle ``key`` under the rule it was written with, then give it ``rule`` (or none)."""
        model = self.limit(limit)
        if model is not self:
            model.set_override(key, now, rule)
            return
        if rule is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = rule
        if key in self._buckets:
            bucket, _ = self._buckets[key]
            current = self.rule_for(key)
            bucket.update(now, current.capacity, current.refill_rate)
            self._buckets[key] = (bucket, self._tag(key))

    def set_default(self, rule: Rule, *, limit: Optional[str] = None) -> None:
        """Change the default rule (buckets settle lazily, as in the library)."""
        model = self.limit(limit)
        if model is not self:
            model.set_default(rule)
            return
        self.default = rule
        self._version += 1

    def reset(self, key: str, *, limit: Optional[str] = None) -> None:
        """Forget ``key``'s bucket (of ``limit``; of every limit if omitted): full again."""
        if limit is None and len(self.names) > 1:
            for model in self.limits.values():
                model.reset(key)
            return
        self.limit(limit)._buckets.pop(key, None)

    def _tag(self, key: str) -> object:
        return ("override", self.overrides[key]) if key in self.overrides else self._version
