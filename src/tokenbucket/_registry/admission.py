"""What an admission did to its request's buckets: the record that settling acts on.

An admission (``consume``, ``reserve``, a middleware's or the decorator's decision) takes its
amount from some of the request's buckets: from every limit's bucket when it is allowed, except
a limit in shadow that would have refused (it did not have the amount, or a store at its
``max_keys`` cap had no room for its bucket), which the decision names in ``shadow_denied``; and
from none when it is denied. The `Admission` is made once, from that answer, when the
admission is made. Whatever acts on the admission later (settling the real cost, cancelling it)
acts on the record: it charges or refunds the buckets the admission charged and no other, and a
refund gives back at most what was taken. Re-deriving it later would read a state that may
have changed since (a limit put in shadow or enforced, a bucket that filled up).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence, Tuple

from .._core.decision import Decision
from .limits import Keys


class Admission(NamedTuple):
    """What one admission took: ``taken`` tokens from the bucket of each limit in ``charged``.

    Attributes:
        key: what the request was charged to (one key, or a key per limit).
        taken: the tokens taken from each charged bucket (they all took the same amount).
        charged: the names of the limits whose buckets were charged, in declaration order;
            ``()`` when the admission took nothing (a denial).
    """

    key: Keys
    taken: float
    charged: Tuple[str, ...]


def admitted(
    limits: Sequence[str], key: Keys, amount: float, decision: Decision, let_through: bool = False
) -> Admission:
    """The record of an admission of ``amount`` on ``key`` that answered ``decision``.

    ``limits`` are the registry's limit names in order. An allowed decision charged every limit
    but those in its ``shadow_denied``; a denial charged none. ``let_through``: a denial that
    the caller lets through anyway (a middleware's dry run) took nothing, and is settled as if
    it had taken nothing from every limit (its real cost is charged to all of them in full).
    """
    if not decision.allowed:
        return Admission(key, 0, tuple(limits) if let_through else ())
    denied = decision.shadow_denied
    if not denied:  # the common case, without NamedTuple's keyword handling
        return tuple.__new__(Admission, (key, amount, tuple(limits)))
    return Admission(key, amount, tuple(name for name in limits if name not in denied))
