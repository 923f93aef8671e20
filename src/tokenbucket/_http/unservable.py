"""A request no decision can be made for: a key per limit whose buckets span Cluster slots.

Knows: whether a store is a Redis Cluster, whether a request's limit keys span its hash slots,
and the 503 and the one ERROR record that answer such a request. On a Redis Cluster one
decision's buckets must share a hash slot (one script call), so the registry raises ValueError
for a request charged to keys in several slots ("user" and "org"), as documented; a key
function that returns a key per limit cannot work there, whatever the traffic. The middleware
answers that request a clear 503 instead of failing with a 500 on every one.
Must not know: requests, options, ASGI or WSGI.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .._core.validate import show
from .._registry.limits import limit_key
from .headers import error

_log = logging.getLogger("tokenbucket")


class Unservable(Exception):
    """A request no decision can be made for: its keys span Redis Cluster hash slots.

    A key function returned a key per limit, and the store is a Redis Cluster, where one
    decision's buckets must share a hash slot (the registry raises ValueError). The middleware
    answers `response` (503) instead of failing with a 500; ``log``: whether to log an ERROR
    saying why (logger ``tokenbucket``), once per policy: the configuration cannot work.
    """

    #: What such a request is answered: its cause is in the server's log, not in the answer.
    response = error(
        503, "rate limiting cannot decide this request: the server is misconfigured (see its log)"
    )

    def __init__(self, key_func: Any, keys: Mapping[str, str], log: bool) -> None:
        name = getattr(key_func, "__qualname__", None) or repr(key_func)
        super().__init__(
            f"the key function {name!r} returned a key per limit ({show(dict(keys))}), and the "
            f"store is a Redis Cluster, where one decision's buckets must share a hash slot: "
            f"return one str key, or use a single Redis server"
        )
        if log:  # the first such request of its policy
            _log.error("%s", self)


def is_cluster(store: object) -> bool:
    """Whether ``store`` is one of the Redis stores on a Redis Cluster client."""
    return getattr(getattr(store, "client", None), "nodes_manager", None) is not None


def spans_slots(store: Any, buckets: Mapping[str, str]) -> bool:
    """Whether a registry's limit keys for ``buckets`` (a key per limit) span hash slots."""
    from redis.crc import key_slot  # a Redis Cluster store: redis-py is installed

    prefix = store.prefix
    names = {prefix + limit_key(bucket, name) for name, bucket in buckets.items()}
    return len({key_slot(name.encode("utf-8", "surrogatepass")) for name in names}) > 1
