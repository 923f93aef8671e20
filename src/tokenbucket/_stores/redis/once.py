r"""Delivery to Redis: a call that changes a bucket is applied once, however often it is sent.

A client sends a call again when it did not get the reply: ``from_url``'s clients retry a broken
connection once, a user's own client may retry timeouts too (redis-py 8: ten times), and Redis
may have run the first send all the same. The store cannot tell, and cannot control a client it
was given, so the script does: every call that changes a bucket (take, charge, reserve, refund
and their several-key forms; not peek, which changes nothing, nor the admin calls, which set
absolute values and may run twice) carries one more key, its *marker*, a name unique to the
call. A call that changed something leaves its reply under the marker for 60 s; the same call
sent again finds it and gets that reply, changing nothing (``lua/bucket.lua``, its header).
A call that changed nothing (a denial) leaves no marker: sent again, it decides afresh, which
is still one decision applied.

What belongs here: the call ids, the markers' names and the operations' marked names. The
marker of a call is ``prefix + b"\xffonce:" + call id``: ``0xff`` keeps it apart from every
bucket hash (UTF-8 never holds that byte) and it still starts with the prefix (``SCAN``, ACL
key patterns). A call id is this process's random token (a forked child draws its own) and a
counter. On a Redis Cluster a script's keys must share a hash slot, so there the marker is
``prefix + b"\xffonce{" + tag + b"}" + call id``, with ``tag`` two bytes that hash to the
bucket's slot; a prefix that holds a ``{`` must then hold a whole ``{tag}`` (that tag decides
every key's slot), else the store refuses it.
"""

from __future__ import annotations

import itertools
import os
from binascii import crc_hqx
from functools import lru_cache
from typing import List, Optional

from redis.crc import key_slot

from .failure import _CHARGE, _REFUND, _RESERVE, _TAKE

#: The operations that change buckets, as sent with their call's marker.
MARKED = {op: b"+" + op for op in (_TAKE, _CHARGE, _RESERVE, _REFUND)}
#: Takes back a call that may have been applied (a caller cancelled while it was on the way).
UNDO = b"+undo"
#: Between the prefix and a call id: ``0xff`` (no UTF-8 text, so no bucket hash, holds it).
INFIX = b"\xffonce:"

_token = [os.urandom(6).hex().encode("ascii")]
_calls = itertools.count()


def _new_token() -> None:
    _token[0] = os.urandom(6).hex().encode("ascii")


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_new_token)


def new_call() -> bytes:
    """A call id that no other call of any process uses."""
    return b"%s%x" % (_token[0], next(_calls))


class Markers:
    """The markers of one store's calls: ``prefix + INFIX + call id`` (on a Cluster, tagged)."""

    __slots__ = ("base", "cluster")

    def __init__(self, prefix: str, cluster: bool) -> None:
        self.base = prefix.encode("utf-8", "surrogatepass") + INFIX
        self.cluster = cluster
        start = self.base.find(b"{")
        if cluster and start >= 0 and self.base.find(b"}", start + 1) <= start + 1:
            raise ValueError(
                "'prefix' must hold no '{' or a whole non-empty {hash tag} on a Redis Cluster "
                f"(a script's keys must share a slot), got {prefix!r}"
            )

    def of(self, name: bytes, call: Optional[bytes]) -> bytes:
        """The marker of ``call`` (a new call if None) on the bucket hash ``name``."""
        if self.cluster:
            if call is None:
                call = new_call()
            return b"%s{%s}%s" % (self.base, _slot_tags()[key_slot(name)], call)
        if call is None:  # (new_call's id, written in place: most decisions come this way)
            return b"%s%s%x" % (self.base, _token[0], next(_calls))
        return self.base + call


@lru_cache(maxsize=1)
def _slot_tags() -> List[bytes]:
    """For each Redis Cluster hash slot, two bytes that hash to it and hold no brace."""
    tags = [b""] * 16384
    for number in range(65536):  # CRC16 maps the 2-byte strings onto all of its values
        tag = number.to_bytes(2, "big")
        slot = crc_hqx(tag, 0) % 16384
        if not tags[slot] and b"{" not in tag and b"}" not in tag:
            tags[slot] = tag
    return tags
