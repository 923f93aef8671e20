"""Shadow limits: named limits that are evaluated and reported but never refuse.

A registry of several limits may watch some of them (``shadow={"daily"}``, or at runtime
``set_shadow("daily", True)``). Every decision is still one ``take_all`` of the store, given a
mask of the watched buckets:

* the enforced limits decide admission, all or nothing among them, as without shadow;
* a watched limit's bucket is charged exactly when it has the amount and the request is
  admitted, so its level follows what it would be if it were enforced from then on; a request
  it would have refused charges it nothing;
* the decision is the enforced limits' (`combine` over them alone), with
  ``shadow_denied`` naming the watched limits that would have refused a request the enforced
  limits admitted.

Waiting (``acquire``) reserves with the store's ``charge_all`` and the same mask: only the
enforced limits refuse or set the wait, and a watched limit is charged when its own wait fits.

A registry without shadow limits never comes here: its decisions take the path they always did.
"""

from __future__ import annotations

from typing import FrozenSet, Iterable, NamedTuple, Sequence, Tuple

from .._core.decision import Decision
from .._core.validate import show
from .._stores.store import Outcomes
from .limits import combine


class Watch(NamedTuple):
    """A registry's shadow state, replaced as a whole (so a decision reads it once)."""

    #: The names of the limits in shadow.
    names: FrozenSet[str]
    #: One flag per limit in declaration order (True: in shadow); ``()`` when none is.
    mask: Tuple[bool, ...]


#: No limit in shadow.
NONE = Watch(frozenset(), ())


def check_shadow(names: Sequence[str], shadow: object) -> Watch:
    """The `Watch` of a registry with limits ``names`` given ``shadow`` (names to watch)."""
    if isinstance(shadow, str) or not isinstance(shadow, Iterable):
        raise TypeError(f"'shadow' must be a set of limit names, got {show(shadow)}")
    watched = frozenset(shadow)
    for name in watched:
        if name not in names:
            raise ValueError(f"unknown limit {show(name)} in 'shadow': the limits are {names!r}")
    if not watched:
        return NONE
    return Watch(watched, tuple(name in watched for name in names))


def switched(names: Sequence[str], watch: Watch, limit: object, shadow: object) -> Watch:
    """The `Watch` after putting ``limit`` in shadow (``shadow`` True) or enforcing it."""
    if not isinstance(shadow, bool):
        raise TypeError(f"'shadow' must be a bool, got {show(shadow)}")
    if not isinstance(limit, str) or limit not in names:
        raise ValueError(f"unknown limit {show(limit)}: the limits are {list(names)!r}")
    watched = watch.names | {limit} if shadow else watch.names - {limit}
    return check_shadow(names, watched)


def decide_watched(
    names: Sequence[str], mask: Sequence[bool], allowed: bool, outcomes: Outcomes, amount: float
) -> Decision:
    """The decision of a ``take_all`` with shadow ``mask``.

    The enforced limits' own decision, with the watched limits that would have refused an
    admitted request in ``shadow_denied``.
    """
    enforced = [index for index, watched in enumerate(mask) if not watched]
    if not enforced:  # every limit watched: all admitted, reported over all of them
        decision = combine(names, True, outcomes, amount)
    else:
        decision = combine(
            [names[index] for index in enforced],
            allowed,
            tuple(outcomes[index] for index in enforced),
            amount,
        )
    if not allowed:
        return decision
    denied = tuple(
        names[index] for index, watched in enumerate(mask) if watched and not outcomes[index][0]
    )
    return decision._replace(shadow_denied=denied) if denied else decision
