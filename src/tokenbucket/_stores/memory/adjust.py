"""Charges and refunds of one bucket in a MemoryStore: the lifecycle calls after a decision.

What belongs here: `charge` and `refund` (a charge of ``-amount``) and ``_adjusted``, the one
step that both they and ``charge_all``/``refund_all`` (in ``_stores.memory.several``) apply to a
bucket's state; the Lua script's ``charge`` and ``refund`` mirror it. What it must not know:
how states are looked up, settled under a changed rule or admitted at the cap (MemoryStore's
``_view`` and ``_admit``, declared below for the type checker), nor anything of the hot paths
(``take``, ``_try_take``), which never come here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Optional, Tuple

from ..._core.arith import (
    EXACT,
    MAX_DEBT,
    accumulate,
    behind,
    carry_of,
    deficit,
    forgotten_at,
    settled_at,
    wait,
)
from ..._core.keys import split_limit_key
from ..._core.rule import Rule
from ..store import Groups, Mask, Outcome, Outcomes
from .sweep import State, Sweeping


class Adjusting(Sweeping):
    """`charge` and `refund`, a base of [`MemoryStore`][tokenbucket.MemoryStore]."""

    __slots__ = ()

    if TYPE_CHECKING:  # MemoryStore's, called here

        def _view(
            self, states: Dict[str, State], key: str, default: Rule, now: float, commit: bool
        ) -> Tuple[Optional[State], Rule, float, float, float]: ...

        def _admit(
            self, states: Dict[str, State], key: str, state: State, held: bool = False
        ) -> bool: ...

        def _reserve(self, count: int, over: bool = False) -> bool: ...

        def _adjust_all(
            self, groups: Groups, amount: float, max_wait: Optional[float], shadow: Mask = ()
        ) -> Tuple[bool, Outcomes]: ...

    def charge(
        self, key: str, amount: float, default: Rule, max_wait: Optional[float], /
    ) -> Outcome:
        """See [`Store.charge`][tokenbucket.Store.charge].

        At the ``max_keys`` cap an untracked key is an empty bucket: a reservation is refused
        (as `take` is); a charge, a cost already incurred, is recorded all the same (that
        empty bucket charged, ``-amount``, tracked past the cap) so that its debt is never
        forgotten. (A negative ``amount`` is a refund: `refund` calls this, so that a charge
        makes no extra call.)
        """
        states, lock = self._shards[hash(key) & self._mask]
        if key not in states:
            limit = split_limit_key(key)
            if limit is not None:  # a limit of a key: in its group state
                group = [(limit[0], ((limit[1], default),))]
                return self._adjust_all(group, amount, max_wait)[1][0]
            if self._sweep_due():
                self._sweep()
        lock.acquire()
        try:
            now = self._clock()
            state = states.get(key)
            if state is not None and state[3] is default._shape:  # as take, without _view
                base, used, carry, _ = state
                rule = default
            else:
                state, rule, base, used, carry = self._view(states, key, default, now, True)
            done, before, after, new = _adjusted(base, used, carry, amount, rule, now, max_wait)
            if done:
                if state is not None:
                    states[key] = new
                elif amount > 0 and not self._admit(states, key, new):
                    # at the cap an untracked key is an empty bucket (see the docstring)
                    if max_wait is not None:
                        return False, 0.0, rule
                    self._track_over(states, key, _charged_empty(amount, rule, now))
                    return True, -amount, rule
                return True, after, rule
            return False, before, rule
        finally:
            lock.release()

    def refund(self, key: str, amount: float, default: Rule, /) -> Outcome:
        """See [`Store.refund`][tokenbucket.Store.refund]."""
        return self.charge(key, -amount, default, None)

    def _track_over(self, states: Dict[str, State], key: str, state: State) -> None:
        """Track a charged key past the ``max_keys`` cap. Caller holds its lock.

        New keys are refused (empty) until the sweep brings the count back under the cap.
        """
        self._reserve(1, True)
        self._admit(states, key, state, True)


#: Waits are finite: a reservation that would wait forever (at rate 0) is refused.
_FOREVER = 1e300


def _charged_empty(amount: float, rule: Rule, now: float) -> State:
    """The state of an empty bucket (a key at the ``max_keys`` cap) charged ``amount``."""
    return _adjusted(now, rule.capacity, carry_of(rule.capacity), amount, rule, now, None)[3]


def _adjusted(
    base: float,
    used: float,
    carry: float,
    amount: float,
    rule: Rule,
    now: float,
    max_wait: Optional[float],
) -> Tuple[bool, float, float, State]:
    """A charge (``amount`` > 0) or refund (< 0) of the bucket ``(base, used, carry)`` at ``now``.

    Returns whether it is done, the level before and after it on the refill line at ``now``
    (``_arith.behind``), and the state to write. A charge saturates the debt at
    ``_arith.MAX_DEBT``; a refund to full forgets the bucket unless it is ahead of the clock
    (``_arith.forgotten_at``). The Lua script's ``charge``
    and ``refund`` mirror this step by step.
    """
    rate = rule.refill_rate
    debt = deficit(base, used, rate, now)
    if amount > 0:
        level = rule.capacity - debt
        if now < base:
            level = behind(level, base, now, rate)
        if max_wait is not None and (
            amount > rule._ceiling or not wait(amount - level, rate) <= min(max_wait, _FOREVER)
        ):
            return False, level, level, (base, used, carry, rule._shape)
        if amount > MAX_DEBT - debt:  # saturated: MAX_DEBT short, no further (see _arith)
            base = settled_at(base, now)
            after = behind(rule.capacity - MAX_DEBT, base, now, rate)
            return True, level, after, (base, MAX_DEBT, EXACT, rule._shape)
        if not debt:  # full now: restart (as _charged)
            state = (settled_at(base, now), amount, carry_of(amount), rule._shape)
            return True, level, level - amount, state
        if carry is EXACT and type(amount) is int:  # ints add exactly (as _charged)
            return True, level, level - amount, (base, used + amount, EXACT, rule._shape)
        used, carry = accumulate(used, carry, amount)
        return True, level, level - amount, (base, used, carry, rule._shape)
    level = behind(rule.capacity - debt, base, now, rate)
    if debt + amount <= 0:  # refunded to full: forgotten, unless ahead of the clock
        after = behind(rule.capacity, settled_at(base, now), now, rate)
        return True, level, after, (forgotten_at(base, now), 0, EXACT, rule._shape)
    if carry is EXACT and type(amount) is int:  # less used since base: debt - amount
        used += amount  # amount < 0: a refund
    else:
        used, carry = accumulate(used, carry, amount)
    return True, level, level - amount, (base, used, carry, rule._shape)
