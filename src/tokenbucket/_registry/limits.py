r"""Several named limits on one request, all or nothing: their names, store keys and decision.

A registry's default is one [`Rule`][tokenbucket.Rule] (one limit named ``"default"``) or a
mapping of names to rules, in the order given. A registry of one limit keeps each key's bucket
under the key itself, as it always has (no store key moves). A registry of several keeps the
bucket of limit ``name`` for key ``key`` under `limit_key` ``(key, name)``:

    ``"{" + tag(key) + "}" + "\0" + name``

* `tag` (see ``_core.keys``) writes ``"\1"`` as ``"\1\1"``, ``"}"`` as ``"\1\3"`` and ``""`` as
  ``"\1"``: the key part ends at the first ``"}"`` and reads back as the key, whatever ``str``
  it is (escaped by the middleware or not), and the name is what follows the ``"\0"``. So two
  different ``(key, name)`` pairs give two different store keys, and a listing gives back
  the key that was set.
* No key of a one-limit registry looks like that: keys of the default namespace have no
  ``"\0"`` (see ``_core.keys``), and a route's keys contain one but start with the route's ``"/"``.
* On a Redis Cluster the part between the braces is the *hash tag*: every limit of one key hashes
  to that key's slot, whatever bytes the key holds, so a request's buckets can be taken in one
  script call. A request charged to several keys (a user and an organisation) spans slots in
  general: on a Cluster it raises ValueError, and is all-or-nothing on a single Redis.

All limits are decided by one ``take_all`` of the store, given the request's limits grouped by
key (`groups_of`: one group for one key), so that a store can keep a key's limits in one state:
one atomic step, so a denial charges none of them and no interleaving admits more than any one
limit allows. `combine` turns its outcomes into one [`Decision`][tokenbucket.Decision].
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._core.arith import wait
from .._core.decision import Decision, after, clamp, decide
from .._core.keys import limit_key as limit_key  # the store key of a limit (see above)
from .._core.rule import RATE_GRAMMAR, Rule, as_limits
from .._core.validate import show
from .._stores.store import Groups, Limits, Outcomes

#: The name of a registry's limit when its default is one Rule.
DEFAULT = "default"

#: What a request is charged to: one key (for every limit), or a key per limit name.
Keys = Union[str, Mapping[str, str]]


def check_limits(default: object) -> Dict[str, Rule]:
    """Return the limits a registry's ``default`` declares, ``{name: rule}`` in order.

    A rate string is read as `Rule.parse_many` reads it: one rate is a Rule (named
    ``"default"``), several are named limits.
    """
    default = as_limits(default)
    if isinstance(default, Rule):
        return {DEFAULT: default}
    if not isinstance(default, Mapping):
        raise TypeError(
            f"'default' must be a Rule, a mapping of limit names to Rules, or {RATE_GRAMMAR}; "
            f"got {show(default)}"
        )
    if not default:
        raise ValueError("'default' must name at least one limit, got an empty mapping")
    limits: Dict[str, Rule] = {}
    for name, rule in default.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"limit names must be non-empty str, got {show(name)}")
        if not all(" " <= char <= "~" for char in name):
            # Names are written in header fields (RFC 9651 Strings) and metrics labels.
            raise ValueError(
                f"limit name {show(name)} must be printable ASCII (space to '~'): "
                f"the middleware writes it in header fields"
            )
        if not isinstance(rule, Rule):
            raise TypeError(f"limit {name!r} must be a Rule or {RATE_GRAMMAR}; got {show(rule)}")
        limits[name] = rule
    return limits


def pick(names: Sequence[str], limit: Optional[str]) -> str:
    """Return the limit ``limit`` names: required (not None) when there are several."""
    if limit is None:
        if len(names) == 1:
            return names[0]
        raise ValueError(f"this registry has several limits: pass limit= one of {list(names)!r}")
    if limit not in names:
        raise ValueError(f"unknown limit {show(limit)}: the limits are {list(names)!r}")
    return limit


def groups_of(
    keys: object, limits: Mapping[str, Rule], group: Limits
) -> Tuple[Groups, Optional[List[int]]]:
    """The store's groups (``_stores.store``) for a request charged to ``keys``, and their order.

    ``keys`` is one key (every limit charges it: one group, ``group``, the limits' pairs) or a
    mapping naming each limit's key (a group per distinct key). The order is None when the
    outcomes come in the limits' order, else, for each limit in order, the index of its
    outcome (see `reorder`).
    """
    if type(keys) is str:
        return ((keys, group),), None
    if not isinstance(keys, Mapping):
        raise TypeError(
            f"'key' must be a str or a mapping of limit names to keys, got {show(keys)}"
        )
    if keys.keys() != limits.keys():
        raise ValueError(
            f"'key' must map every limit to a key: the limits are {list(limits)!r}, "
            f"got {list(keys)!r}"
        )
    by_key: Dict[str, List[Tuple[str, Rule]]] = {}
    for name, rule in limits.items():
        key = keys[name]
        if not isinstance(key, str):
            raise TypeError(f"the key of limit {name!r} must be a str, got {show(key)}")
        by_key.setdefault(key, []).append((name, rule))
    groups = [(key, tuple(pairs)) for key, pairs in by_key.items()]
    flat = [name for _, pairs in groups for name, _ in pairs]
    if flat == list(limits):
        return groups, None
    return groups, [flat.index(name) for name in limits]


def reorder(outcomes: Outcomes, order: Optional[List[int]]) -> Outcomes:
    """``outcomes`` of the groups of `groups_of` in the limits' order."""
    return outcomes if order is None else tuple(outcomes[index] for index in order)


def mask_of(mask: Sequence[bool], order: Optional[List[int]]) -> Sequence[bool]:
    """A shadow ``mask`` (in the limits' order) in the order of the groups of `groups_of`."""
    if order is None or not mask:
        return mask
    flat = [False] * len(mask)
    for index, watched in zip(order, mask):
        flat[index] = watched
    return flat


def combine(names: Sequence[str], allowed: bool, outcomes: Outcomes, amount: float) -> Decision:
    """One decision over every limit's outcome (in declaration order).

    ``retry_after`` is the longest wait among the limits (``inf`` if any can never admit);
    ``remaining`` the least level. The binding limit, whose ``policy``, ``limit`` and
    ``reset_after`` the decision reports, is for a denial the one with the longest wait,
    otherwise the one with the least remaining; ties go to the first declared.
    """
    binding = 0
    if allowed:  # the least level binds, and is the least remaining
        low = outcomes[0][1]
        for index in range(1, len(outcomes)):
            if outcomes[index][1] < low:
                binding, low = index, outcomes[index][1]
        _, level, rule = outcomes[binding]
        return decide(True, level, amount, rule, names[binding])
    longest = -1.0
    for index, (ok, level, rule) in enumerate(outcomes):
        if ok:
            continue
        waited = math.inf if amount > rule.capacity else wait(amount - level, rule.refill_rate)
        if waited > longest:
            binding, longest = index, waited
    _, level, rule = outcomes[binding]
    decision = decide(False, level, amount, rule, names[binding])
    remaining = min(clamp(outcome[1]) for outcome in outcomes)
    return decision._replace(remaining=remaining) if remaining < decision[1] else decision


def after_all(names: Sequence[str], outcomes: Outcomes) -> Decision:
    """The decision a charge or refund of several limits leaves (see `after`).

    The binding limit is the one whose next token is furthest away (the deepest debt in time),
    otherwise the one with the least level; ties go to the first declared. ``remaining`` is
    the least of all limits' levels.
    """
    decisions = [after(level, rule, name) for name, (_, level, rule) in zip(names, outcomes)]
    binding = decisions[0]
    for decision in decisions[1:]:
        if (decision.retry_after, -decision.remaining) > (binding.retry_after, -binding.remaining):
            binding = decision
    remaining = min(decision.remaining for decision in decisions)
    return binding._replace(remaining=remaining) if remaining < binding.remaining else binding
