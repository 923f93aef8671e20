"""The store protocol's groups on Redis: a hash per limit, under its ``limit_key``.

What belongs here: turning the groups of a ``*_all`` call (``(key, ((name, default), ...))``,
see ``_stores.store``) into the hashes the script takes, in order, and refusing repeated keys
or names as every store does. What it must not know: the script, replies, failures.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

from ..._core.keys import limit_key
from ..._core.rule import Rule
from ..store import Groups

#: Hashes with their default rules: ``(hash key, rule)`` pairs (see `flat`).
Buckets = Sequence[Tuple[str, Rule]]


def flat(groups: Groups) -> List[Tuple[str, Rule]]:
    """The ``(hash key, default rule)`` of every limit of ``groups``, in order.

    Limit ``name`` of ``key`` is the hash ``limit_key(key, name)``: the store protocol's groups
    (see ``_stores.store``) mapped onto one hash per limit. Repeated keys, or names within a
    key, raise ValueError (as in every store).
    """
    keys = [key for key, _ in groups]
    if len(set(keys)) != len(keys):
        raise ValueError(f"'groups' must name distinct keys, got {keys!r}")
    buckets = []
    for key, limits in groups:
        names = [name for name, _ in limits]
        if len(set(names)) != len(names):
            raise ValueError(f"the limits of key {key!r} must have distinct names: {names!r}")
        buckets += [(limit_key(key, name), rule) for name, rule in limits]
    return buckets
