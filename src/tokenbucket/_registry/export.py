"""All of a registry's rules as one JSON-ready document, and its validation before an import.

The document (``version`` 1):

    {"version": 1,
     "default": {"capacity": 10, "refill_rate": 1.0},
     "overrides": [{"key": "alice", "limit": "default", "capacity": 50, "refill_rate": 5.0}]}

``default`` is one rule for a registry of one rule, else a mapping of every limit's name to its
rule (``{"burst": {...}, "daily": {...}}``). Each override names its key and limit (``limit``
may be left out with one limit). `parse` checks the whole document against the registry's
limits before anything is applied, so an import is all or nothing as far as validation goes: a
bad entry anywhere raises ValueError (TypeError for a wrong type) naming it, and nothing
changes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .._core.rule import Rule
from .._core.validate import check_capacity, check_key, check_rate, show

#: The version this module writes and reads.
VERSION = 1
#: The fields a document may have (``routes``: the middleware's, see the admin API).
_FIELDS = {"version", "default", "overrides", "routes"}
_OVERRIDE_FIELDS = {"key", "client_id", "limit", "route", "capacity", "refill_rate"}

#: A parsed document: every limit's default, and ``(key, limit, rule)`` per override.
Parsed = Tuple[Dict[str, Rule], List[Tuple[str, str, Rule]]]


def rule_data(rule: Rule) -> Dict[str, Any]:
    """A rule as JSON-ready data."""
    return {"capacity": rule.capacity, "refill_rate": rule.refill_rate}


def default_data(defaults: Mapping[str, Rule]) -> Dict[str, Any]:
    """The ``default`` of a document: one rule (one limit named "default"), else by name."""
    if tuple(defaults) == ("default",):
        return rule_data(defaults["default"])
    return {name: rule_data(rule) for name, rule in defaults.items()}


def override_data(key: str, limit: str, rule: Rule, name: str = "key") -> Dict[str, Any]:
    """One override as JSON-ready data (``name``: the field naming the key)."""
    return {name: key, "limit": limit, **rule_data(rule)}


def parse_rule(data: object, where: str) -> Rule:
    """A rule from ``{"capacity": ..., "refill_rate": ...}``, errors naming ``where``."""
    if not isinstance(data, Mapping):
        raise TypeError(
            f"{where} must be an object with capacity and refill_rate, got {show(data)}"
        )
    if set(data) != {"capacity", "refill_rate"}:
        raise ValueError(
            f"{where} must have exactly 'capacity' and 'refill_rate', "
            f"got {sorted(map(str, data))!r}"
        )
    return Rule(
        check_capacity(data["capacity"], f"{where}.capacity"),
        check_rate(data["refill_rate"], f"{where}.refill_rate"),
    )


def parse_default(data: object, limits: Sequence[str], where: str = "default") -> Dict[str, Rule]:
    """Every limit's default rule from a document's ``default`` (see the module docstring)."""
    if tuple(limits) == ("default",):
        return {"default": parse_rule(data, where)}
    if not isinstance(data, Mapping) or set(data) != set(limits):
        raise ValueError(
            f"{where} must map every limit {list(limits)!r} to a rule, got {show(data)}"
        )
    return {name: parse_rule(data[name], f"{where}.{name}") for name in limits}


def parse_override(
    data: object, limits: Sequence[str], where: str, name: str = "key"
) -> Tuple[str, str, Rule]:
    """One override ``(key, limit, rule)``; ``name`` is the field naming the key."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be an object, got {show(data)}")
    unknown = set(data) - _OVERRIDE_FIELDS
    if unknown:
        raise ValueError(f"{where} has unknown fields {sorted(map(str, unknown))!r}")
    if name not in data:
        raise ValueError(f"{where} must name its {name!r}")
    try:
        key = check_key(data[name])
    except TypeError:
        raise TypeError(f"{where}.{name} must be a str, got {show(data[name])}") from None
    limit = data.get("limit")
    if limit is None and len(limits) == 1:
        limit = limits[0]
    if limit not in limits:
        raise ValueError(f"{where}.limit must be one of {list(limits)!r}, got {show(limit)}")
    rule = parse_rule({k: v for k, v in data.items() if k in ("capacity", "refill_rate")}, where)
    return key, str(limit), rule


def parse(
    document: object, limits: Sequence[str], name: str = "key", routes: bool = False
) -> Parsed:
    """Validate a whole document for a registry with ``limits``; see the module docstring.

    ``routes``: whether a ``routes`` field is allowed (and left to the caller to read).
    """
    if not isinstance(document, Mapping):
        raise TypeError(f"the rules document must be a JSON object, got {show(document)}")
    unknown = set(document) - (_FIELDS if routes else _FIELDS - {"routes"})
    if unknown:
        raise ValueError(f"the rules document has unknown fields {sorted(map(str, unknown))!r}")
    if document.get("version") != VERSION:
        raise ValueError(f"'version' must be {VERSION}, got {show(document.get('version'))}")
    defaults = parse_default(document.get("default"), limits)
    return defaults, parse_overrides(document.get("overrides", []), limits, name)


def parse_overrides(
    data: object, limits: Sequence[str], name: str = "key", where: str = "overrides"
) -> List[Tuple[str, str, Rule]]:
    """A document's ``overrides``: a list, each distinct by key and limit."""
    if not isinstance(data, list):
        raise TypeError(f"{where!r} must be a list, got {show(data)}")
    overrides = []
    seen: Dict[Tuple[str, str], int] = {}
    for index, entry in enumerate(data):
        key, limit, rule = parse_override(entry, limits, f"{where}[{index}]", name)
        first: Optional[int] = seen.setdefault((key, limit), index)
        if first != index:
            raise ValueError(
                f"{where}[{index}] repeats {where}[{first}] (key {show(key)}, limit {limit!r})"
            )
        overrides.append((key, limit, rule))
    return overrides
