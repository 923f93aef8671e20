"""The admin API's endpoints for every rule at once: list, default, export, import.

Served under the admin path (``{admin_path}/rules``, ``/default``, ``/export``, ``/import``),
authenticated like it (see `AdminAPI`). Like `AdminOp`, a `RulesOp` is a validated request: the
registry calls it needs (`steps`, made by the middleware, awaited with an async store) and how
to answer and audit their results (`outcome`). Nothing here knows ASGI or WSGI.

Keys over HTTP are client ids: the middleware stores a client's bucket under
``bucket_key(policy prefix, client_id)`` (escaped, see ``_core.keys``), so a listing unescapes them
and an import escapes them, and both name the route (``null``: the default limiter).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union
from urllib.parse import parse_qsl

from .._core.rule import Rule
from .._core.validate import Number, check_rule_fields, show
from .._registry.export import VERSION, default_data, rule_data
from .._registry.listing import MAX_COUNT, unescape
from .admin_parse import admin_number, load_json
from .audit import AuditLog, quote
from .headers import Response, error, json_response
from .rules_import import DefaultChange, ImportChange, Step, below_cost, parse_import, route_name
from .rules_import import load_rules as load_rules  # the demo's --rules

if TYPE_CHECKING:
    from .options import Options
    from .policy import Policy
    from .request import RequestView

#: The endpoints under the admin path, by name.
ENDPOINTS = ("rules", "default", "export", "import")


def sub_paths(admin_path: str) -> frozenset[str]:
    """The paths of the endpoints under ``admin_path``."""
    return frozenset(f"{admin_path}/{name}" for name in ENDPOINTS)


class RulesOp:
    """A validated request to one of the endpoints: its registry calls and its answer."""

    __slots__ = ("action", "change", "payload", "policies", "steps_")

    def __init__(
        self,
        action: str,
        policies: Sequence[Policy],
        steps: List[Step],
        payload: Dict[str, Any],
        change: Union[DefaultChange, ImportChange, None] = None,
    ) -> None:
        self.action = action  # "list", "read-default", "update-default", "export" or "import"
        self.policies = tuple(policies)
        self.steps_ = steps
        self.payload = payload
        #: What a change replaces, for its audit record's ``before`` and ``after``.
        self.change = change

    def steps(self) -> List[Step]:
        """The registry calls to make, in order."""
        return self.steps_

    def outcome(
        self, results: Union[Sequence[Any], Exception], view: RequestView, audit: AuditLog
    ) -> Response:
        """The response to the results (or the failure) of `steps`; the audit record."""
        action, caller = self.action, view.client
        changes = action in ("update-default", "import")
        if isinstance(results, Exception):
            status = 503 if isinstance(results, ConnectionError) else 400
            message = f"{type(results).__name__}: {results}"
            level = logging.WARNING if changes else logging.DEBUG
            audit.done(
                level,
                f"admin {action} by {quote(caller)} failed ({quote(message)})"
                + (": it may have been applied in part" if changes and status == 503 else ""),
                action,
                status,
                caller,
                {"error": message},
            )
            if status == 503:
                return error(
                    status,
                    f"the rate-limit store is unavailable: {show(str(results))}",
                    [("Retry-After", "1")],
                )
            return error(400, str(results))
        change = self.change
        reads = 0 if change is None else len(change.reads)
        payload = self._answer(results[reads:])
        fields = {k: v for k, v in payload.items() if k != "overrides"}
        level = logging.INFO if changes else logging.DEBUG
        summary = dict(fields)
        if change is not None:
            fields["before"], fields["after"] = change.fields(results[:reads], payload)
        audit.done(
            level, f"admin {action} by {quote(caller)}: {summary}", action, 200, caller, fields
        )
        return json_response(200, payload)

    def _answer(self, results: Sequence[Any]) -> Dict[str, Any]:
        action, payload = self.action, dict(self.payload)
        if action == "list":
            cursor, entries = results[0]
            payload["cursor"] = cursor
            payload["overrides"] = [
                {"client_id": unescape(key), "limit": limit, **rule_data(rule)}
                for key, limit, rule in entries
            ]
        elif action == "read-default":
            payload["default"] = default_data(self.policies[0].registry.defaults)
        elif action == "update-default":
            payload.update(rule_data(results[0]))
        elif action == "export":
            payload = {"version": VERSION, "default": results[0]["default"], "routes": {}}
            overrides = []
            for policy, document in zip(self.policies, results):
                route = route_name(policy)
                if route is not None:
                    payload["routes"][route] = document["default"]
                overrides += [
                    {"client_id": unescape(entry.pop("key")), "route": route, **entry}
                    for entry in document["overrides"]
                ]
            payload["overrides"] = overrides
        elif action == "import":
            payload["imported"] = sum(results)
        return payload


def parse(
    options: Options, endpoint: str, method: str, query: str, body: bytes
) -> Union[Response, RulesOp]:
    """Turn an authorised request to ``endpoint`` into an operation, or the 4xx refusing it."""
    allowed = {"rules": "GET", "default": "GET, POST", "export": "GET", "import": "POST"}[endpoint]
    if method not in allowed.split(", "):
        return error(405, f"method {show(method)} not allowed", [("Allow", allowed)])
    params = _query(
        query, {"rules": ("cursor", "count", "route"), "default": ("route",)}.get(endpoint, ())
    )
    if isinstance(params, Response):
        return params
    if endpoint == "rules":
        return _parse_list(options, params)
    if endpoint == "export":
        policies = _policies(options)
        steps = [(p.registry, "export_rules", (), {"namespace": p.prefix}) for p in policies]
        return RulesOp("export", policies, steps, {})
    if method == "GET":  # of the default
        policy = _route(options, params.get("route"))
        if isinstance(policy, Response):
            return policy
        return RulesOp("read-default", [policy], [], {"route": route_name(policy)})
    data = load_json(body)
    if isinstance(data, Response):
        return data
    if endpoint == "import":
        return _parse_import(options, data)
    return _parse_default(options, data)


def _parse_list(options: Options, params: Dict[str, str]) -> Union[Response, RulesOp]:
    count_text = params.get("count", "100")
    if (
        not count_text.isdigit()
        or not count_text.isascii()
        or not 1 <= int(count_text) <= MAX_COUNT
    ):
        return error(
            400, f"'count' must be an integer from 1 to {MAX_COUNT}, got {show(count_text)}"
        )
    policy = _route(options, params.get("route"))
    if isinstance(policy, Response):
        return policy
    cursor = params.get("cursor") or None
    kwargs = {"namespace": policy.prefix}
    step = (policy.registry, "list_rules", (cursor, int(count_text)), kwargs)
    return RulesOp("list", [policy], [step], {"route": route_name(policy)})


def _parse_default(options: Options, data: Any) -> Union[Response, RulesOp]:
    if not isinstance(data, dict):
        return error(400, f"body must be a JSON object, got {type(data).__name__}")
    unknown = [name for name in data if name not in ("capacity", "refill_rate", "route", "limit")]
    if unknown:
        return error(
            400,
            f"unknown field {show(unknown[0])}; expected 'capacity', "
            "'refill_rate' and optionally 'route' and 'limit'",
        )
    policy = _route(options, data.get("route"))
    if isinstance(policy, Response):
        return policy
    limits = policy.registry.limits
    limit = data.get("limit")
    if (limit is None and len(limits) > 1) or (limit is not None and limit not in limits):
        return error(400, f"'limit' must be one of {', '.join(limits)}, got {show(limit)}")
    numbers: Dict[str, Optional[Number]] = {"capacity": None, "refill_rate": None}
    for name in numbers:
        if name in data:  # JSON null too: refused, as by update-rule
            checked = admin_number(name, data[name])
            if isinstance(checked, Response):
                return checked
            numbers[name] = checked
    try:
        capacity, refill_rate = check_rule_fields(numbers["capacity"], numbers["refill_rate"])
    except ValueError as exc:
        return error(400, str(exc))
    name = limit or limits[0]
    default = policy.registry.defaults[name]
    locked = below_cost(options, policy, {name: Rule(capacity or default.capacity, 1)})
    if locked is not None:
        return locked
    change = {"capacity": capacity, "refill_rate": refill_rate, "limit": limit}
    step = (policy.registry, "update_default", (), change)
    payload = {"route": route_name(policy), "limit": name}
    return RulesOp("update-default", [policy], [step], payload, DefaultChange(default))


def _parse_import(options: Options, data: Any) -> Union[Response, RulesOp]:
    """Validate the whole document; then its reads and one ``import_rules`` per policy."""
    change = parse_import(options, data)
    if isinstance(change, Response):
        return change
    policies = list(change.plan)
    payload = {"routes": [route_name(p) for p in policies]}
    return RulesOp("import", policies, change.steps(), payload, change)


def _policies(options: Options) -> List[Policy]:
    return [options.default, *options.routes.values()]


def _route(options: Options, route: object) -> Union[Response, Policy]:
    if route is None:
        return options.default
    policy = options.routes.get(route) if isinstance(route, str) else None
    if policy is None:
        known = ", ".join(show(name) for name in options.routes) or "none"
        return error(400, f"'route' must be a configured route ({known}), got {show(route)}")
    return policy


def _query(query: str, names: Sequence[str]) -> Union[Response, Dict[str, str]]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=8)
    except ValueError:
        return error(400, "too many query parameters")
    params: Dict[str, str] = {}
    for name, value in pairs:
        if name not in names:
            return error(400, f"unknown query parameter {show(name)}")
        if name in params:
            return error(400, f"query parameter {name!r} given more than once")
        params[name] = value
    return params
