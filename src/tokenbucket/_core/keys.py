r"""Store keys: a bucket key placed in its namespace so that no key can reach another namespace.

The middleware keeps each route's buckets apart from the default ones by a namespace prefix,
``route + "\0"`` (route patterns are printable ASCII), and the default namespace has none. A
key is anything a key function, an admin request or a decorated function's ``key`` returns,
so a key containing ``"\0"`` would otherwise land in a route's namespace:
``"/login\0203.0.113.7"`` in the default namespace *is* that client's ``/login`` bucket.
`bucket_key` escapes the key first, so the store key has no ``"\0"`` but the namespace's own:

* ``"\1"`` becomes ``"\1\1"`` and ``"\0"`` becomes ``"\1\2"``, which is reversible
  (injective), and leaves every other key as it is: existing store keys do not move.
* A store key is then ``namespace + escaped key``, with at most one ``"\0"``, ending its
  namespace: two different (namespace, key) pairs always give two different store keys.

A registry of several limits puts each key between braces (see ``_registry.limits``), as a Redis
Cluster hash tag: `tag` writes a key without ``"}"`` and never empty, `untag` reads it back. Both
encodings are injective over every ``str``, whether the key was escaped first or not.
"""

from __future__ import annotations

from typing import Optional, Tuple


def escape_key(key: str) -> str:
    r"""Return ``key`` with ``"\1"`` doubled and ``"\0"`` written ``"\1\2"`` (else as it is)."""
    if "\0" in key or "\1" in key:
        return key.replace("\1", "\1\1").replace("\0", "\1\2")
    return key


def bucket_key(namespace: str, key: str) -> str:
    r"""Return the store key of ``key`` in ``namespace`` (``""`` or a prefix ending in ``"\0"``)."""
    return namespace + escape_key(key)


def tag(key: str) -> str:
    r"""Return ``key`` written without ``"}"`` and never empty, reversibly (see `untag`).

    ``"\1"`` becomes ``"\1\1"`` and ``"}"`` becomes ``"\1\3"``; ``""`` is ``"\1"``, which no
    other key gives (every other ``"\1"`` comes in a pair). A key without either character,
    the common case, is left as it is.
    """
    if "\1" in key or "}" in key:
        return key.replace("\1", "\1\1").replace("}", "\1\3")
    return key or "\1"


def limit_key(key: str, name: str) -> str:
    r"""Return the store key of limit ``name`` of ``key``: ``"{" + tag(key) + "}\0" + name``.

    A registry of several limits keeps its buckets there (see ``_registry.limits``); a store
    that keeps a key's limits together (``MemoryStore``) still answers to this name for each.
    """
    return "{" + tag(key) + "}\0" + name


def untag(text: str) -> str:
    r"""Undo `tag`: ``"\1"`` alone is ``""``, ``"\1\1"`` is ``"\1"`` and ``"\1\3"`` is ``"}"``."""
    if "\1" not in text:
        return text
    if text == "\1":
        return ""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\1":
            index += 1
            char = "}" if text[index : index + 1] == "\3" else "\1"
        out.append(char)
        index += 1
    return "".join(out)


def split_limit_key(store_key: str) -> Optional[Tuple[str, str]]:
    """The ``(key, name)`` of a limit's store key (see `limit_key`), or None if it is not one.

    Only the canonical form counts (what `limit_key` writes), so that two store keys never name
    one limit.
    """
    if store_key[:1] != "{":
        return None
    end = store_key.find("}\0")
    if end < 0:
        return None
    key, name = untag(store_key[1:end]), store_key[end + 2 :]
    if tag(key) != store_key[1:end]:
        return None
    return key, name
