"""The bucket arithmetic, once: pure functions on one bucket's numbers, no state, no locks.

A bucket's state is ``(base, used, carry)`` under a rule: at the instant ``base`` it was
``used`` tokens short of full, and ``carry`` is what rounding left out of ``used`` (``used +
carry`` is the exact sum of the request sizes; it is the int ``EXACT`` exactly when ``used`` is
an exact sum of integer sizes). Its level at ``now`` is ``capacity - deficit(...)``.

The in-memory store ([`MemoryStore`][tokenbucket.MemoryStore]), its sweep and
[`decide`][tokenbucket._core.decision.decide] call these functions; the Lua script
(``lua/bucket.lua``) cites each by name where it computes the same thing, and the conformance
tests (``tests/test_store_conformance.py``) hold the two to the same answers. For speed,
``MemoryStore._try_take`` (the registry's ``try_consume`` fast path) holds the one inlined copy
of ``deficit`` and ``admits``, and ``MemoryStore.take`` inlines ``admits``' one comparison; the
property tests check both paths against the exact model. The exact model
(``tokenbucket.testing``) is written independently, from the textbook definition, and the
property tests compare both with it.

============  =================================================================================
function      what it computes
============  =================================================================================
deficit       tokens missing from full at ``now`` (a clock behind ``base`` earns nothing)
settled_at    the instant a state settled at ``now`` restarts from (never before ``base``)
admits        whether a bucket ``debt`` tokens short admits ``amount`` (within the ceiling)
accumulate    ``used + carry + amount``, error-free (TwoSum)
behind        the level a denial reports (less while the clock is behind ``base``)
wait          seconds for ``missing`` tokens to refill (``inf`` if they never do)
forgotten_at  the instant a full state is written at (forgotten unless ahead of the clock)
============  =================================================================================

Bounds at the edges, the same in the Lua script and in the exact model:

* a bucket owes at most ``MAX_DEBT`` (2**53) tokens: a charge of ``amount`` to a bucket
  ``debt`` short with ``amount > MAX_DEBT - debt`` leaves it exactly ``MAX_DEBT`` short at the
  instant it settles to (``settled_at``); request sizes are at most as much
  (``_validate.check_amount``), so no sum reaches ``inf`` or NaN. The test is written so (not
  ``debt + amount > MAX_DEBT``) because the sum rounds (``2**53 + 1`` is ``2**53`` as a float)
  while the difference is exact near the bound, so ints (memory) and floats (Lua) agree;
* a full bucket is forgotten (it then decides as a new one) only once the clock has reached
  its instant ``base``: before that it is frozen, and a new bucket would refill from the
  earlier reading. So the sweep skips a full state ahead of the clock, the script expires it
  only once the clock is there, and an operation that leaves a bucket full (a refund, a rule
  change) writes it at ``forgotten_at``: ``FORGOTTEN`` (the instant of a new bucket, which
  ``settled_at`` moves to the next reading) or, ahead of the clock, its own instant. A reset
  always makes it new;
* the Lua script reads a stored state that is not finite (written by an older version) as an
  empty bucket; the stores here never write one.
"""

from __future__ import annotations

import math
from typing import Tuple

from .validate import MAX_AMOUNT

#: The carry of a state whose ``used`` is an int (so integer sizes add exactly, with no work).
EXACT = 0

#: The most tokens a bucket can owe (``MAX_AMOUNT``, 2**53): a charge saturates there.
MAX_DEBT = MAX_AMOUNT

#: The instant of a state reset to new (``MemoryStore.reset``): earlier than any clock reading,
#: so it settles to the next reading whatever it is, as a missing state does. Finite, so that
#: ``(now - base) * refill_rate`` is never ``inf * 0``.
FORGOTTEN = -1e300


def deficit(base: float, used: float, refill_rate: float, now: float) -> float:
    """Tokens missing from full at ``now`` for state ``(base, used)`` at ``refill_rate``.

    Never negative: a bucket refills up to full and no further. A clock reading not later than
    ``base`` earns nothing (the state is frozen until the clock is back at ``base``).
    """
    if now > base:
        missing = used - (now - base) * refill_rate
        return missing if missing > 0 else 0
    return used  # a clock that went backwards earns nothing


def settled_at(base: float, now: float) -> float:
    """The instant a state settled at ``now`` starts from: never earlier than ``base``.

    A clock that went backwards earned nothing since ``base``, and must not earn that gap later.
    """
    return now if now > base else base


def forgotten_at(base: float, now: float) -> float:
    """The instant to write a full state at: ``FORGOTTEN`` once ``now >= base``, else ``base``.

    A full state at or after its instant decides as a missing one, so it is forgotten (the Lua
    script deletes it); one ahead of a clock that stepped back is frozen until the clock is
    back at ``base``, so it is kept (a new bucket would refill from the earlier reading).
    """
    return FORGOTTEN if now >= base else base


def carry_of(used: float) -> float:
    """The carry of a freshly computed ``used``: ``EXACT`` if it is an int."""
    return EXACT if type(used) is int else 0.0


def admits(debt: float, amount: float, ceiling: float) -> bool:
    """Whether a bucket ``debt`` tokens short of full admits ``amount`` tokens.

    ``ceiling`` is the rule's capacity plus EPSILON (``Rule._ceiling``): float sums of
    fractional sizes may land a hair above the capacity and are admitted all the same.
    """
    return debt + amount <= ceiling


def accumulate(used: float, carry: float, amount: float) -> Tuple[float, float]:
    """Return ``used + carry + amount`` as (correctly rounded sum, what rounding left out).

    Knuth's TwoSum makes the addition error-free, so fractional request sizes never drift;
    integer sizes need not come here (their sums are exact).
    """
    total = used + amount
    back = total - used
    carry += (used - (total - back)) + (amount - back)
    rounded = total + carry
    return rounded, carry - (rounded - total)


def behind(level: float, base: float, now: float, refill_rate: float) -> float:
    """The level a denial reports: ``level``, or less while the clock is behind ``base``.

    While ``now`` is before the bucket's instant ``base`` nothing refills until the clock is
    back there, so the level reported is the one the refill line has at ``now``: ``level -
    (base - now) * refill_rate``. Then ``retry_after`` (``wait(amount - level, refill_rate)``)
    includes the wait for the clock to catch up, and waiting exactly that long admits the
    request.
    """
    return level - (base - now) * refill_rate if now < base else level


def wait(missing: float, refill_rate: float) -> float:
    """Seconds until ``missing`` tokens have refilled: 0 if none are, ``inf`` at rate 0."""
    if missing <= 0.0:
        return 0.0
    return missing / refill_rate if refill_rate else math.inf
