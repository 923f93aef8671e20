"""The admin API's parsing: an authorised request's query or JSON body to an `AdminOp` or a 400.

What belongs here: the fields and parameters of ``GET``/``DELETE``/``POST {admin_path}``, their
checks (with the core's own for the rule's numbers), the route and named limit they address,
and the refusal of a client id the default key never returns. It must not know the token, the
body's reading or size, the registry calls, the JSON answer or the audit log (`admin` and
`admin_op` hold those).
"""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union
from urllib.parse import parse_qsl

from .._core.validate import Number, check_capacity, check_rate, check_rule_fields, show
from .admin_op import AdminOp
from .headers import Response, error
from .request import client_key
from .shadow import parse_switch

if TYPE_CHECKING:
    from .options import Options
    from .policy import Policy

_ADMIN_FIELDS = ("client_id", "capacity", "refill_rate", "route", "limit")


def route_policy(options: Options, route: object) -> Union[Response, Policy]:
    """The policy a request's ``route`` names (None: the default one), or the 400 refusing it."""
    if route is None:
        return options.default
    if not isinstance(route, str):
        return error(400, f"'route' must be a string, got {show(route)}")
    policy = options.routes.get(route)
    if policy is None:
        known = ", ".join(show(name) for name in options.routes) or "none"
        return error(400, f"'route' must be a configured route ({known}), got {show(route)}")
    return policy


def parse_query(options: Options, action: str, query_string: str) -> Union[Response, AdminOp]:
    """The operation of a GET or DELETE (``action``: "read" or "remove"), or the 400."""
    try:
        pairs = parse_qsl(
            query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=8
        )
    except ValueError:
        return error(400, "too many query parameters")
    params: Dict[str, str] = {}
    for name, value in pairs:
        if name not in ("client_id", "route", "limit"):
            return error(400, f"unknown query parameter {show(name)}")
        if name in params:
            return error(400, f"query parameter {name!r} given more than once")
        params[name] = value
    client_id = params.get("client_id")
    if not client_id:
        return error(400, "query parameter 'client_id' is required and must be non-empty")
    unreachable = _unreachable(options, client_id)
    if unreachable is not None:
        return unreachable
    policy = route_policy(options, params.get("route"))
    if isinstance(policy, Response):
        return policy
    limit = _limit(params.get("limit"), policy, action)
    if isinstance(limit, Response):
        return limit
    return AdminOp(action, client_id, policy, limit=limit)


def _unreachable(options: Options, client_id: str) -> Optional[Response]:
    """The 400 for a ``client_id`` the default key never returns, naming the one it does.

    Under the default key (no ``key=``), an IPv6 address is keyed by its network
    (``2001:db8::/56``) and an IPv4-mapped one by its IPv4 address: a rule for the address
    itself would be accepted and never apply.
    """
    if options.key_func is not None or ":" not in client_id:
        return None
    live = client_key(client_id, options.ipv6_prefix)
    if live == client_id:
        return None
    if "/" in live:
        kind, keyed = "an IPv6 address", f"their /{options.ipv6_prefix} network"
    else:
        kind, keyed = "an IPv4-mapped IPv6 address", "their IPv4 address"
    return error(
        400,
        f"'client_id' {show(client_id)} is {kind}; clients are keyed by {keyed}: use {show(live)}",
    )


def load_json(body: bytes) -> Any:
    """The JSON value of an admin body, or the 400 `Response` refusing it.

    Every endpoint reads its body here, so all refuse the same things: bytes that are not
    UTF-8 (RFC 8259, section 8.1; json.loads would take UTF-16 and UTF-32 too; a leading byte
    order mark is ignored, as the RFC allows), NaN and Infinity, and a field repeated in any
    object (which would otherwise leave the last one in force, unseen).
    """
    try:
        return loads(body.decode("utf-8-sig"))
    except Repeated as exc:
        return error(400, str(exc))
    except (ValueError, RecursionError):
        return error(400, "body must be valid JSON (UTF-8)")


def loads(text: str) -> Any:
    """``json.loads`` refusing NaN, Infinity and repeated fields (`Repeated`, a ValueError)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_repeats)


def parse_update(options: Options, body: bytes) -> Union[Response, AdminOp]:
    """The operation of a POST body (an update, or a shadow switch), or the 400 refusing it."""
    data = load_json(body)
    if isinstance(data, Response):
        return data
    if not isinstance(data, dict):
        return error(400, f"body must be a JSON object, got {type(data).__name__}")
    if "shadow" in data:
        return parse_switch(data, partial(route_policy, options))
    unknown = [name for name in data if name not in _ADMIN_FIELDS]
    if unknown:
        return error(
            400,
            f"unknown field {show(unknown[0])}; expected 'client_id', 'capacity', "
            f"'refill_rate' and optionally 'route' and 'limit'",
        )
    client_id = data.get("client_id")
    if "client_id" not in data:
        return error(400, "field 'client_id' is required")
    if not isinstance(client_id, str) or not client_id:
        return error(400, f"'client_id' must be a non-empty string, got {show(client_id)}")
    unreachable = _unreachable(options, client_id)
    if unreachable is not None:
        return unreachable
    numbers: Dict[str, Optional[Number]] = {"capacity": None, "refill_rate": None}
    for name in numbers:
        if name in data:
            checked = admin_number(name, data[name])
            if isinstance(checked, Response):
                return checked
            numbers[name] = checked
    try:
        # Neither number given (JSON null was refused above): the core's check and message.
        check_rule_fields(numbers["capacity"], numbers["refill_rate"])
    except ValueError as exc:
        return error(400, str(exc))
    policy = route_policy(options, data.get("route"))
    if isinstance(policy, Response):
        return policy
    limit = _limit(data.get("limit"), policy, "update")
    if isinstance(limit, Response):
        return limit
    return AdminOp("update", client_id, policy, numbers["capacity"], numbers["refill_rate"], limit)


def _limit(limit: object, policy: Policy, action: str) -> Union[Response, Optional[str]]:
    """The named limit a request addresses: required to change one of several limits."""
    names = policy.registry.limits
    if limit is None:
        if len(names) > 1 and action != "read":
            return error(400, f"'limit' is required: the limits are {', '.join(names)}")
        return None
    if not isinstance(limit, str) or limit not in names:
        return error(400, f"'limit' must be one of {', '.join(names)}, got {show(limit)}")
    return limit


def admin_number(name: str, value: object) -> Union[Response, Number]:
    """Check a rule field from the admin API with the core's own check, never a bool.

    The admin API takes exactly what `Rule` takes: a capacity in (0, 1e12] and a refill rate
    in [0, 1e12] (0: the bucket never refills).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return error(400, f"{name!r} must be a number, got {show(value)}")
    try:
        return check_capacity(value, name) if name == "capacity" else check_rate(value, name)
    except (TypeError, ValueError) as exc:
        return error(400, str(exc))


class Repeated(ValueError):
    """A JSON object gave a field more than once (the message names it)."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_repeats(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise Repeated(f"field {show(name)} given more than once")
        result[name] = value
    return result
