r"""Listing every override of a registry, page by page, in any store.

A store lists its overrides by *store key* (``list_rules(prefix, cursor, count)``): the keys
that start with ``prefix``, a page at a time, with an opaque cursor (None: start; a returned
None: done). The in-memory store pages through its keys in sorted order; the Redis stores page
with SCAN (see ``_stores.redis.listing``). A registry turns store keys back into what its callers
address: a key (in the namespace the caller gives, ``""`` for the default one) and the name of
a limit (``"default"`` with one rule; a registry of several limits keeps limit ``name`` of key
``k`` under ``limit_key(k, name)``: see ``_registry.limits``). Store keys of other namespaces or of
other registries sharing the store are skipped, so a page may hold fewer than ``count``
entries (even none) and still have a next cursor.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from .._core.keys import split_limit_key, tag
from .._core.rule import Rule
from .._core.validate import show

#: One page of a registry's listing: the next cursor and ``(key, limit name, rule)`` entries.
Page = Tuple[Optional[str], List[Tuple[str, str, Rule]]]

#: The most entries one page may ask for.
MAX_COUNT = 1000


def check_page(cursor: object, count: object) -> Tuple[Optional[str], int]:
    """Validate a listing's ``cursor`` (None or a str) and ``count`` (an int in 1..1000)."""
    if cursor is not None and not isinstance(cursor, str):
        raise TypeError(f"'cursor' must be a str or None, got {show(cursor)}")
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"'count' must be an int, got {show(count)}")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"'count' must be between 1 and {MAX_COUNT}, got {count!r}")
    return cursor, count


def registry_entries(
    entries: Sequence[Tuple[str, Rule]], namespace: str, limits: Sequence[str]
) -> List[Tuple[str, str, Rule]]:
    r"""Turn a store page's entries into ``(key, limit, rule)`` of a registry's namespace.

    ``namespace`` is ``""`` (the registry's own keys) or a middleware route's ``route + "\0"``;
    keys come back as the registry was given them (the middleware's are escaped: `unescape`).
    In the default namespace, keys of a route (``"/..."`` with a ``"\0"``) are skipped.
    """
    several = len(limits) > 1
    found = []
    for store_key, rule in entries:
        named = split_limit_key(store_key)
        if several:
            if named is None or named[1] not in limits:
                continue
            key, limit = named
        elif named is None:  # else a limit key of a registry of several
            key, limit = store_key, limits[0]
        else:
            continue
        if namespace:
            if not key.startswith(namespace):
                continue
            key = key[len(namespace) :]
        elif key.startswith("/") and "\0" in key:
            continue
        found.append((key, limit, rule))
    return found


def store_prefix(namespace: str, several: bool) -> str:
    """The prefix of the store keys of ``namespace`` (see `registry_entries`)."""
    if not several:
        return namespace
    return "{" + tag(namespace) if namespace else "{"


def unescape(key: str) -> str:
    r"""Undo ``_keys.escape_key``: ``"\1\2"`` is ``"\0"`` and ``"\1\1"`` is ``"\1"``."""
    if "\1" not in key:
        return key
    out, index = [], 0
    while index < len(key):
        char = key[index]
        if char == "\1" and index + 1 < len(key):
            out.append("\0" if key[index + 1] == "\2" else "\1")
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def as_dicts(page: Page) -> Dict[str, object]:
    """A registry page as JSON-ready data (the admin API's and the export's shape)."""
    cursor, entries = page
    return {
        "cursor": cursor,
        "overrides": [
            {"key": key, "limit": limit, "capacity": rule.capacity, "refill_rate": rule.refill_rate}
            for key, limit, rule in entries
        ],
    }
