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
"""

from __future__ import annotations


def escape_key(key: str) -> str:
    r"""Return ``key`` with ``"\1"`` doubled and ``"\0"`` written ``"\1\2"`` (else as it is)."""
    if "\0" in key or "\1" in key:
        return key.replace("\1", "\1\1").replace("\0", "\1\2")
    return key


def bucket_key(namespace: str, key: str) -> str:
    r"""Return the store key of ``key`` in ``namespace`` (``""`` or a prefix ending in ``"\0"``)."""
    return namespace + escape_key(key)
