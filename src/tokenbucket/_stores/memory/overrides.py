"""Rule overrides and shared documents in a MemoryStore: the admin side of the store.

What belongs here: ``get_rule``, ``update_rule``, ``remove_rule``, ``list_rules`` (overrides, kept
in ``_overrides`` and changed under the key's stripe lock), ``get_shared``/``set_shared``
(``_registry.shared``) and ``_rebase``, which settles a bucket when its rule changes. What it must
not know: how decisions read states (``take`` and the other hot paths in ``_stores.memory.store``
read ``_overrides`` directly), the sweep, or the ``max_keys`` cap.
"""

from __future__ import annotations

import bisect
import threading
from typing import Dict, List, Mapping, Optional

from ..._core.arith import EXACT, FORGOTTEN, carry_of, deficit, forgotten_at, settled_at
from ..._core.keys import split_limit_key
from ..._core.rule import Rule
from ..._core.validate import show
from ..store import StorePage
from .layout import pack, unpack
from .sweep import State, Sweeping


def memory_page(
    overrides: Mapping[str, Rule], prefix: str, cursor: Optional[str], count: int
) -> StorePage:
    """A page of an in-memory store's overrides, in sorted key order after ``cursor``.

    The cursor is ``"k"`` followed by the last key of the previous page, so that a key
    removed or added between pages moves no other key: every override present from the first
    page to the last is listed exactly once.
    """
    if cursor is not None and not cursor.startswith("k"):
        raise ValueError(f"'cursor' is not one this store returned, got {show(cursor)}")
    keys = sorted(key for key in list(overrides) if key.startswith(prefix))
    start = 0 if cursor is None else bisect.bisect_right(keys, cursor[1:])
    page = []
    for key in keys[start : start + count]:
        rule = overrides.get(key)
        if rule is not None:
            page.append((key, rule))
    done = start + count >= len(keys)
    return (None if done else "k" + keys[start + count - 1]), page


class Overriding(Sweeping):
    """Overrides and shared documents, a base of [`MemoryStore`][tokenbucket.MemoryStore]."""

    __slots__ = ()

    # MemoryStore's, read here.
    _overrides: Dict[str, Rule]
    _shared: Dict[str, str]
    _stripes: List[threading.Lock]

    def get_rule(self, key: str, /) -> Optional[Rule]:
        """See [`Store.get_rule`][tokenbucket.Store.get_rule]."""
        return self._overrides.get(key)

    def update_rule(
        self,
        key: str,
        default: Rule,
        capacity: Optional[float],
        refill_rate: Optional[float],
        /,
    ) -> Rule:
        """See [`Store.update_rule`][tokenbucket.Store.update_rule]."""
        with self._lock_of(key):
            rule = self._overrides.get(key, default).replace(
                capacity=capacity, refill_rate=refill_rate
            )
            self._rebase(key, rule)
            self._overrides[key] = rule
            return rule

    def remove_rule(self, key: str, default: Rule, /) -> Optional[Rule]:
        """See [`Store.remove_rule`][tokenbucket.Store.remove_rule]."""
        with self._lock_of(key):
            if key not in self._overrides:
                return None
            self._rebase(key, default)
            return self._overrides.pop(key)

    def list_rules(self, prefix: str, cursor: Optional[str], count: int, /) -> StorePage:
        """A page of overrides, in sorted key order (the store protocol's optional method)."""
        return memory_page(self._overrides, prefix, cursor, count)

    def get_shared(self, name: str, /) -> Optional[str]:
        """The shared document ``name``, or None (see `BucketRegistry.share_rules`)."""
        return self._shared.get(name)

    def set_shared(self, name: str, text: str, /) -> None:
        """Write the shared document ``name`` (see `BucketRegistry.share_rules`)."""
        self._shared[name] = text

    def _lock_of(self, key: str) -> threading.Lock:
        """The stripe lock of the store key ``key`` (a limit's: its key's, see ``layout``)."""
        limit = split_limit_key(key)
        return self._stripes[hash(key if limit is None else limit[0]) & self._mask]

    def _rebase(self, key: str, rule: Rule) -> None:
        """Settle ``key``'s bucket now and move it to ``rule``. Caller holds the key's lock."""
        limit = split_limit_key(key)
        if limit is not None:  # a limit of a key: in its group state
            groups = self._grouped[hash(limit[0]) & self._mask][0]
            found = groups.get(limit[0])
            limits = unpack(found)
            if limit[1] in limits:
                limits[limit[1]] = _rebased(limits[limit[1]], rule, self._clock())
                groups[limit[0]] = pack(limits, ())
            return
        states = self._shards[hash(key) & self._mask][0]
        state = states.get(key)
        if state is not None:  # else full, and full under any rule
            states[key] = _rebased(state, rule, self._clock())

    def _reset_limit(self, key: str, name: str) -> None:
        """Forget the state of limit ``name`` of ``key`` (see `MemoryStore.reset`)."""
        groups, lock = self._grouped[hash(key) & self._mask]
        with lock:
            limits = unpack(groups.get(key))
            if name in limits:
                limits[name] = (FORGOTTEN, 0, EXACT, limits[name][3])
                groups[key] = pack(limits, ())


def _rebased(state: State, rule: Rule, now: float) -> State:
    """``state`` settled at ``now`` and moved to ``rule``: what its deficit carries over."""
    base, used, _, shape = state
    missing = deficit(base, used, shape[1], now)
    if missing:
        return (settled_at(base, now), missing, carry_of(missing), rule._shape)
    # Full: forgotten unless ahead of the clock (not deleted: the key keeps its one entry in
    # _keys, and the sweep drops it).
    return (forgotten_at(base, now), 0, EXACT, rule._shape)
