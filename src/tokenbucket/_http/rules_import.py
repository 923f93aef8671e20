"""The admin API's import of every rule at once, and what its audit record says it replaced.

Knows: the document ``POST {admin_path}/import`` takes (the admin export's: ``default``,
``routes``, ``overrides`` by ``client_id`` and ``route``), its validation before anything is
applied, the registry calls that carry it out (one ``import_rules`` per policy it touches,
after one ``rule_for`` per override, which read what the import replaces), the refusal of a
default capacity no request fits in, and a rules file (`load_rules`, the demo's ``--rules``).
Must not know: requests, the token, the answer's JSON, ASGI or WSGI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .._core.keys import escape_key
from .._core.rule import Rule
from .._core.validate import show
from .._registry.export import VERSION, default_data, parse_default, parse_override, rule_data
from .._registry.listing import unescape
from .admin_parse import loads
from .headers import Response, error
from .policy import Policy

if TYPE_CHECKING:
    from .options import Options

#: One registry call: the registry, the method's name (``a`` + name awaited), its arguments.
Step = Tuple[Any, str, Tuple[Any, ...], Dict[str, Any]]
#: An audit record's ``before`` and ``after`` fields.
Change = Tuple[Dict[str, Any], Dict[str, Any]]


def route_name(policy: Policy) -> Optional[str]:
    """The route a policy limits, as JSON writes it: None for the default limiter."""
    return None if policy.prefix == "" else policy.name


def below_cost(
    options: Options, policy: Policy, defaults: Mapping[str, Rule]
) -> Optional[Response]:
    """The 400 for a default capacity below the cost of every request (a fixed ``cost``).

    No request would ever fit in such a bucket: everyone would be refused for good.
    """
    if options.cost_func is not None:  # costs vary: no smallest one is known
        return None
    for name, rule in defaults.items():
        if rule.capacity < options.cost:
            where = "the default limiter" if policy.prefix == "" else f"route {show(policy.name)}"
            return error(
                400,
                f"capacity {rule.capacity!r} of limit {name!r} of {where} is below the cost "
                f"of a request ({options.cost!r}): every request would be refused",
            )
    return None


class DefaultChange:
    """What ``POST {admin_path}/default`` replaces: the limit's default rule, read at parsing."""

    __slots__ = ("rule",)

    #: No registry call reads it (the defaults are the registry's own).
    reads: Sequence[Step] = ()

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def fields(self, results: Sequence[Any], payload: Mapping[str, Any]) -> Change:
        """The record's ``before`` and ``after`` (from the answer's ``payload``)."""
        return rule_data(self.rule), {k: payload[k] for k in ("capacity", "refill_rate")}


class ImportChange:
    """What an import replaces: the defaults it sets and the overrides it sets, before.

    The defaults are read when the request is parsed; each override by a ``rule_for`` step
    before the import (another change in between would not show). ``before`` lists only the
    overrides that existed: one of ``after`` missing from it had none (the default applied).
    """

    __slots__ = ("defaults", "given", "plan", "reads")

    def __init__(self, plan: Mapping[Policy, Dict[str, Any]], routes: Sequence[str]) -> None:
        #: Each policy's document, in order.
        self.plan = plan
        #: Each policy's default rules before (the objects `rule_for` returns without override).
        self.defaults = {policy: policy.registry.defaults for policy in plan}
        #: The policies whose defaults the document gives (the others' are set as they were).
        self.given = [p for p in plan if p.prefix == "" or p.name in routes]
        self.reads: List[Step] = [
            (policy.registry, "rule_for", (entry["key"],), {"limit": entry["limit"]})
            for policy, document in plan.items()
            for entry in document["overrides"]
        ]

    def steps(self) -> List[Step]:
        """The reads, then one ``import_rules`` per policy."""
        return self.reads + [
            (policy.registry, "import_rules", (document,), {"namespace": policy.prefix})
            for policy, document in self.plan.items()
        ]

    def fields(self, results: Sequence[Any], payload: Mapping[str, Any]) -> Change:
        """The record's ``before`` and ``after``; ``results``: the reads' (rules), in order."""
        before: Dict[str, Any] = {"default": None, "routes": {}, "overrides": []}
        after: Dict[str, Any] = {"default": None, "routes": {}, "overrides": []}
        rules = iter(results)
        for policy, document in self.plan.items():
            route = route_name(policy)
            defaults = self.defaults[policy]
            if policy in self.given:
                was, now = default_data(defaults), document["default"]
                if route is None:
                    before["default"], after["default"] = was, now
                else:
                    before["routes"][route], after["routes"][route] = was, now
            for entry in document["overrides"]:
                rule, limit = next(rules), entry["limit"]
                named = {"client_id": unescape(entry["key"]), "route": route, "limit": limit}
                if rule is not defaults[limit]:  # rule_for gives the default itself, else
                    before["overrides"].append({**named, **rule_data(rule)})
                after["overrides"].append({**named, **rule_data(Rule(*_numbers(entry)))})
        return before, after


def parse_import(options: Options, data: Any) -> Union[Response, ImportChange]:
    """Validate a whole import for the middleware's policies: its plan, or the 400."""
    try:
        plan = import_documents(options.default, options.routes, data)
    except (TypeError, ValueError, RecursionError) as exc:
        return error(400, f"invalid rules document: {exc}")
    change = ImportChange(plan, list(data.get("routes", {})))
    for policy in change.given:
        default = plan[policy]["default"]
        limits = policy.registry.limits
        given = {limits[0]: default} if len(limits) == 1 else default
        locked = below_cost(options, policy, {n: Rule(*_numbers(d)) for n, d in given.items()})
        if locked is not None:
            return locked
    return change


def _numbers(data: Mapping[str, Any]) -> Tuple[Any, Any]:
    return data["capacity"], data["refill_rate"]


def import_documents(
    default: Policy, routes: Mapping[str, Policy], data: Any
) -> Dict[Policy, Dict[str, Any]]:
    """Validate a whole import (the admin export's format); each policy's registry document.

    Raises ValueError (TypeError for a wrong type) naming the first bad entry.
    """
    if not isinstance(data, dict):
        raise TypeError(f"it must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - {"version", "default", "routes", "overrides"}
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)!r}")
    if data.get("version") != VERSION:
        raise ValueError(f"'version' must be {VERSION}, got {show(data.get('version'))}")
    documents: Dict[Policy, Dict[str, Any]] = {}
    parse_default(data.get("default"), default.registry.limits)
    documents[default] = _document(data["default"])
    given = data.get("routes", {})
    if not isinstance(given, dict):
        raise TypeError(f"'routes' must be an object, got {show(given)}")
    for name, rules in given.items():
        policy = routes.get(name)
        if policy is None:
            raise ValueError(f"routes[{name!r}] is not a configured route")
        parse_default(rules, policy.registry.limits, f"routes[{name!r}]")
        documents[policy] = _document(rules)
    overrides = data.get("overrides", [])
    if not isinstance(overrides, list):
        raise TypeError(f"'overrides' must be a list, got {show(overrides)}")
    seen: Dict[Tuple[Optional[str], str, str], int] = {}
    for index, entry in enumerate(overrides):
        where = f"overrides[{index}]"
        route = entry.get("route") if isinstance(entry, dict) else None
        policy = default if route is None else routes.get(route)
        if policy is None:
            raise ValueError(f"{where}.route is not a configured route: {show(route)}")
        key, limit, rule = parse_override(entry, policy.registry.limits, where, "client_id")
        first = seen.setdefault((route, key, limit), index)
        if first != index:
            raise ValueError(f"{where} repeats overrides[{first}]")
        if policy not in documents:
            documents[policy] = _document(default_data(policy.registry.defaults))
        documents[policy]["overrides"].append(
            {"key": escape_key(key), "limit": limit, **rule_data(rule)}
        )
    return documents


def _document(default: Any) -> Dict[str, Any]:
    return {"version": VERSION, "default": default, "overrides": []}


def load_rules(path: str, registry: Any) -> Dict[str, Any]:
    """Read a rules file (an export of the admin API, without routes) for ``registry``.

    Returns the registry's document for `BucketRegistry.import_rules`; raises OSError, or
    ValueError/TypeError naming the file's first bad entry (a repeated field too).
    """
    with open(path, encoding="utf-8-sig") as file:
        try:
            data = loads(file.read())
        except (ValueError, RecursionError) as exc:
            raise ValueError(f"not valid JSON ({exc})") from None
    policy = Policy("default", registry, "")
    return import_documents(policy, {}, data)[policy]
