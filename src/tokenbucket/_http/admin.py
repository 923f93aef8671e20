"""The runtime rule API: an authorised HTTP request in, an operation or a refusal out.

Knows: the token check, the admin request's method, query and JSON body (bytes in), every 4xx
refusal, the operation a valid request asks for (`AdminOp`), the JSON that answers it, and what
the audit log (`audit`) is told about each request. Must not know: sockets, ASGI or WSGI
messages, or how the body is read.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union
from urllib.parse import parse_qsl

from .._decision import Decision
from .._keys import bucket_key
from .._rule import Rule
from .._validate import Number, check_capacity, check_rate, check_rule_fields, show
from .audit import AuditLog, quote
from .headers import Response, denial, error, json_response
from .request import client_key
from .rules import DEFAULT_MAX_IMPORT_BODY, RulesOp
from .rules import parse as parse_rules
from .shadow import apply_switch, parse_switch

if TYPE_CHECKING:
    from .._registry import BucketRegistry
    from .options import Options, Policy
    from .request import RequestView

DEFAULT_ADMIN_PATH = "/admin/update-rule"
DEFAULT_MAX_BODY = 4096
_ADMIN_FIELDS = ("client_id", "capacity", "refill_rate", "route", "limit")
_ADMIN_METHODS = "GET, POST, DELETE"


def check_admin_path(path: object) -> str:
    """Return ``path`` if it is a valid ``admin_path`` (a str starting with ``/``), else raise."""
    if not isinstance(path, str):
        raise TypeError(f"'admin_path' must be a str, got {show(path)}")
    if not path.startswith("/"):
        raise ValueError(f"'admin_path' must start with '/', got {show(path)}")
    return path


def check_max_body(size: object, name: str = "max_body") -> int:
    """Return ``size`` if it is a valid ``max_body`` (an int >= 1), else raise."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"{name!r} must be an int, got {show(size)}")
    if size < 1:
        raise ValueError(f"{name!r} must be >= 1, got {show(size)}")
    return size


#: One registry call of an admin operation: the `BucketRegistry` method's name and its keyword
#: arguments after the key. Its awaitable twin is the same name with an ``a`` in front
#: (``update_rule``, ``aupdate_rule``): the middleware calls one or awaits the other.
RegistryCall = Tuple[str, Dict[str, Any]]


class AdminOp(NamedTuple):
    """A validated, authorised admin request: a plan of registry calls and how to answer them.

    The middleware makes the calls of `calls` on ``policy.registry`` with `key`, in order
    (synchronously, or awaiting the ``a``-named methods), and sends `AdminAPI.outcome` of
    their results, or of the ``ConnectionError`` one raised (a 503).
    """

    action: str  # "read", "update", "remove"; "shadow" or "enforce" (see _http.shadow)
    client_id: str
    policy: Policy
    capacity: Optional[Number] = None
    refill_rate: Optional[Number] = None
    #: The named limit addressed; None for the only one, or (a read) for every limit.
    limit: Optional[str] = None

    @property
    def every_limit(self) -> Tuple[str, ...]:
        """The limits a read without ``limit`` reports, when the policy has several; else ()."""
        names: Tuple[str, ...] = self.policy.registry.limits
        return names if self.limit is None and len(names) > 1 else ()

    @property
    def key(self) -> str:
        """The bucket key of ``client_id`` in its policy's namespace (escaped: see `bucket_key`)."""
        return bucket_key(self.policy.prefix, self.client_id)

    @property
    def route(self) -> Optional[str]:
        """The route the operation addresses, None for the default limiter (as JSON shows it)."""
        return None if self.policy.prefix == "" else self.policy.name

    def calls(self) -> List[RegistryCall]:
        """The registry calls that carry the operation out, then two reads: rule and level.

        A change (update, remove) is preceded by a read of the rule before it, for the audit
        log (another change between the two calls would not show in its ``before``).
        """
        every = self.every_limit
        if self.action in ("shadow", "enforce"):  # no registry call: see AdminAPI.outcome
            return []
        if every:  # a read of every limit: rule and level of each, in order
            return [(call, {"limit": name}) for name in every for call in ("rule_for", "tokens")]
        which: Dict[str, Any] = {} if self.limit is None else {"limit": self.limit}
        reads: List[RegistryCall] = [("rule_for", which), ("tokens", which)]
        if self.action == "update":
            change = {"capacity": self.capacity, "refill_rate": self.refill_rate, **which}
            return [("rule_for", which), ("update_rule", change), *reads]
        if self.action == "remove":
            return [("rule_for", which), ("remove_rule", which), *reads]
        return reads

    def steps(self) -> List[Tuple[Any, str, Tuple[Any, ...], Dict[str, Any]]]:
        """`calls` as the middleware makes them: ``(registry, method, args, kwargs)``."""
        registry = self.policy.registry
        return [(registry, name, (self.key,), kwargs) for name, kwargs in self.calls()]

    def answer(self, results: Sequence[Any]) -> Response:
        """The 200 response, from the results of `calls` in their order."""
        registry = self.policy.registry
        every = self.every_limit
        if every:
            limits = {
                name: {
                    "capacity": rule.capacity,
                    "refill_rate": rule.refill_rate,
                    "tokens": tokens,
                    "override": _is_override(rule, registry, name),
                }
                for name, rule, tokens in zip(every, results[::2], results[1::2])
            }
            return json_response(
                200, {"client_id": self.client_id, "route": self.route, "limits": limits}
            )
        rule, tokens = results[-2:]
        payload: Dict[str, Any] = {
            "client_id": self.client_id,
            "route": self.route,
            "capacity": rule.capacity,
            "refill_rate": rule.refill_rate,
            "tokens": tokens,
            "override": _is_override(rule, registry, self.limit),
        }
        if self.limit is not None:
            payload["limit"] = self.limit
        if self.action == "remove":
            payload["removed"] = results[1] is not None
        return json_response(200, payload)


class AdminAPI:
    """The runtime rule API served at ``path`` when the middleware has an admin token.

    Endpoints (all answer JSON, and ``Cache-Control: no-store``):

    * ``POST {path}`` with ``{"client_id": "203.0.113.7", "capacity": 50, "refill_rate": 10.0}``
      gives that client its own rule now; either number may be omitted (it keeps its current
      value), not both. Add ``"route": "/login"`` to change the client's rule of a route
      (``null``, as responses write it, is the default limiter).
    * ``GET {path}?client_id=203.0.113.7[&route=/login]`` reads the client's rule and level.
    * ``DELETE {path}?client_id=...[&route=...]`` removes the client's override: it is back
      on the default rule. Removing an override that does not exist is not an error.
    * ``POST {path}`` with ``{"shadow": true, "limit": "daily"}`` (no ``client_id``) puts a
      named limit in shadow for every client, ``false`` enforces it; without ``"limit"`` it
      switches the whole policy (``"route"``, or the default one). See ``_http.shadow``.

    Each answers ``200`` with ``{"client_id", "route", "capacity", "refill_rate", "tokens",
    "override"}`` (DELETE adds ``"removed"``, whether there was an override). ``tokens`` is the
    level now and ``override`` whether the client has its own rule.

    Requests need ``Authorization: Bearer <token>``, compared in constant time. A request with a
    valid token is not counted against any bucket. A request to ``path`` without one is counted
    against the caller's own bucket first, so the token cannot be guessed faster than the limit
    allows (even in dry-run mode): it gets ``429`` once that bucket is empty, else ``401`` if it
    had no bearer token and ``403`` if the token was wrong. With a valid token, bad input gets
    ``400`` (invalid JSON, JSON not in UTF-8, not an object, missing, unknown or repeated fields,
    wrong types, values out of range: zero, negative, NaN, infinite or above 1e12; a body cut
    short by a disconnect), ``413`` for a body over ``max_body`` bytes and ``405`` (with
    ``Allow``) for another method, and changes nothing.

    Every request ends in one record of the audit log `audit` (logger ``tokenbucket.admin``):
    the middleware's last call is `refusal`, `rejected` or `outcome`, each of which reports it.
    """

    __slots__ = ("_expected", "_options", "audit", "max_body", "max_import_body", "path")

    def __init__(
        self,
        token: object,
        path: object,
        max_body: object,
        options: Options,
        max_import_body: object = DEFAULT_MAX_IMPORT_BODY,
    ) -> None:
        if not isinstance(token, str):
            raise TypeError(f"'admin_token' must be a str or None, got {show(token)}")
        if not token:
            raise ValueError("'admin_token' must be a non-empty str (or None to disable the API)")
        if not all("!" <= char <= "~" for char in token):
            raise ValueError(
                "'admin_token' must be printable ASCII without spaces "
                "(for example secrets.token_urlsafe(32))"
            )
        self._expected = token.encode("ascii")
        self.path = check_admin_path(path)
        self.max_body = check_max_body(max_body)
        #: The largest body of ``POST {path}/import`` (see ``_http.rules``).
        self.max_import_body = check_max_body(max_import_body, "max_import_body")
        self._options = options
        #: The audit log every request is reported to (see `AuditLog`).
        self.audit = AuditLog()

    def authorize(self, authorization: Optional[str]) -> int:
        """Return 0 if ``authorization`` carries the token, else 401 (no bearer token) or 403."""
        if not authorization:
            return 401
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return 401
        offered = credentials.strip().encode("latin-1", "replace")
        return 0 if hmac.compare_digest(offered, self._expected) else 403

    def refusal(
        self, status: int, policy: Policy, decision: Decision, view: RequestView
    ) -> Response:
        """Return the response to an unauthorised request, counted with ``decision``; audited.

        ``status`` is what `authorize` returned. A denied request gets the 429 (whatever
        ``dry_run`` says); an allowed one the 401 or 403. Both carry the rate-limit fields.
        The audit log gets the status, the method, path and caller, never the credentials.
        """
        fields = self._options.headers_for(decision, policy)
        reason = "missing bearer token" if status == 401 else "invalid admin token"
        if not decision.allowed:
            response = denial(decision, fields)
        elif status == 401:
            fields = [("WWW-Authenticate", 'Bearer realm="tokenbucket admin"'), *fields]
            response = error(401, reason, fields)
        else:
            response = error(403, reason, fields)
        self.audit.refused(response.status, reason, view.method, view.path, view.client)
        return response

    def rejected(self, response: Response, view: RequestView) -> Response:
        """Report an authorised request refused for its input (a 4xx); return ``response``.

        Logged at DEBUG: it changed nothing.
        """
        message = json.loads(response.body).get("error", "")
        self.audit.done(
            logging.DEBUG,
            f"admin request rejected ({response.status}): {quote(view.method)} "
            f"by {quote(view.client)}: {quote(message)}",
            "invalid",
            response.status,
            view.client,
            {"method": view.method, "error": message},
        )
        return response

    def outcome(
        self,
        op: Union[AdminOp, RulesOp],
        results: Union[Sequence[Any], Exception],
        view: RequestView,
    ) -> Response:
        """The response to ``op``, from its `calls`' results or the failure that stopped them.

        A ``ConnectionError`` gets the 503 of `unavailable`. Every outcome is audited:
        a change (update, remove) is logged at INFO with the rule before and after it, a read
        at DEBUG. A change the store did not confirm is logged at WARNING: it may or may not
        have been applied.
        """
        if isinstance(op, RulesOp):
            return op.outcome(results, view, self.audit)
        if isinstance(results, Exception) and not isinstance(results, ConnectionError):
            raise results  # a registry call of an AdminOp is validated: never a ValueError
        action = op.action
        if action in ("shadow", "enforce"):
            return apply_switch(self._options, op, view, self.audit)
        where = "the default limiter" if op.route is None else f"route {quote(op.route)}"
        subject = (
            f"admin {action} of client {quote(op.client_id)} on {where} by {quote(view.client)}"
        )
        fields: Dict[str, Any] = {"client_id": op.client_id, "route": op.route}
        if action == "update":
            fields["requested"] = {"capacity": op.capacity, "refill_rate": op.refill_rate}
        if isinstance(results, ConnectionError):
            fields["error"] = problem = f"{type(results).__name__}: {results}"
            if action == "read":
                level, message = logging.DEBUG, f"{subject}: nothing read, the store is unavailable"
            else:
                level = logging.WARNING
                message = (
                    f"{subject}: the store is unavailable, the change may or may not have "
                    "been applied"
                )
            self.audit.done(
                level, f"{message} ({quote(problem)})", action, 503, view.client, fields
            )
            return unavailable(results)
        response = op.answer(results)
        registry = op.policy.registry
        if op.every_limit:
            fields["limits"] = rules = {
                name: _rule_fields(rule, registry, name)
                for name, rule in zip(op.every_limit, results[::2])
            }
            described = ", ".join(f"{name}: {_describe(each)}" for name, each in rules.items())
            self.audit.done(
                logging.DEBUG, f"{subject}: {described}", action, 200, view.client, fields
            )
            return response
        if op.limit is not None:
            fields["limit"] = op.limit
            subject += f" (limit {quote(op.limit)})"
        after = _rule_fields(results[-2], registry, op.limit)
        if action == "read":
            fields["rule"] = after
            level, message = logging.DEBUG, f"{subject}: {_describe(after)}"
        else:
            before = _rule_fields(results[0], registry, op.limit)
            fields["before"], fields["after"] = before, after
            level, message = logging.INFO, f"{subject}: {_describe(before)} -> {_describe(after)}"
            if action == "remove":
                fields["removed"] = results[1] is not None
                message += "" if fields["removed"] else " (there was no override)"
        self.audit.done(level, message, action, response.status, view.client, fields)
        return response

    def wants_body(self, method: str) -> bool:
        """Whether an authorised request with ``method`` needs its body read (POST)."""
        return method == "POST"

    def limit_for(self, path: str) -> int:
        """The largest body a request to ``path`` may have (``max_import_body`` for imports)."""
        return self.max_import_body if path == self.path + "/import" else self.max_body

    def body_too_large(
        self, content_length: Optional[str], limit: Optional[int] = None
    ) -> Optional[Response]:
        """Check a declared ``Content-Length`` before reading: a 400 or 413 response, or None."""
        if content_length is None:
            return None
        text = content_length.strip()
        if not text.isdigit() or not text.isascii():
            return error(400, f"invalid Content-Length: {show(content_length)}")
        if int(text) > (self.max_body if limit is None else limit):
            return self.too_large(limit)
        return None

    def too_large(self, limit: Optional[int] = None) -> Response:
        """Return the 413 response for a body over ``max_body`` (or ``limit``) bytes."""
        return error(413, f"request body is larger than {limit or self.max_body} bytes")

    def incomplete(self) -> Response:
        """Return the 400 response for a body cut short: it is never acted on."""
        return error(400, "request body incomplete: the client disconnected")

    def parse(
        self, method: str, query_string: str, body: bytes, path: Optional[str] = None
    ) -> Union[Response, AdminOp, RulesOp]:
        """Turn an authorised request into an operation, or into the 4xx that refuses it.

        ``path``: the request's, when it may be one of the endpoints under the admin path.
        """
        if path is not None and path != self.path:
            return parse_rules(
                self._options, path[len(self.path) + 1 :], method, query_string, body
            )
        if method == "POST":
            return self._parse_update(body)
        if method in ("GET", "DELETE"):
            return self._parse_query("read" if method == "GET" else "remove", query_string)
        return error(405, f"method {show(method)} not allowed", [("Allow", _ADMIN_METHODS)])

    def _route(self, route: object) -> Union[Response, Policy]:
        if route is None:
            return self._options.default
        if not isinstance(route, str):
            return error(400, f"'route' must be a string, got {show(route)}")
        policy = self._options.routes.get(route)
        if policy is None:
            known = ", ".join(show(name) for name in self._options.routes) or "none"
            return error(400, f"'route' must be a configured route ({known}), got {show(route)}")
        return policy

    def _parse_query(self, action: str, query_string: str) -> Union[Response, AdminOp]:
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
        unreachable = self._unreachable(client_id)
        if unreachable is not None:
            return unreachable
        policy = self._route(params.get("route"))
        if isinstance(policy, Response):
            return policy
        limit = _limit(params.get("limit"), policy, action)
        if isinstance(limit, Response):
            return limit
        return AdminOp(action, client_id, policy, limit=limit)

    def _unreachable(self, client_id: str) -> Optional[Response]:
        """The 400 for a ``client_id`` the default key never returns, naming the one it does.

        Under the default key (no ``key=``), an IPv6 address is keyed by its network
        (``2001:db8::/56``) and an IPv4-mapped one by its IPv4 address: a rule for the address
        itself would be accepted and never apply.
        """
        options = self._options
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
            f"'client_id' {show(client_id)} is {kind}; clients are keyed by {keyed}: "
            f"use {show(live)}",
        )

    def _parse_update(self, body: bytes) -> Union[Response, AdminOp]:
        try:
            # JSON is UTF-8 (RFC 8259, section 8.1), which json.loads would not check: it takes
            # UTF-16 and UTF-32 bytes too. A leading byte order mark is ignored, as the RFC allows.
            text = body.decode("utf-8-sig")
            data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_repeats)
        except _Repeated as exc:
            return error(400, f"field {show(exc.args[0])} given more than once")
        except (ValueError, RecursionError):
            return error(400, "body must be valid JSON (UTF-8)")
        if not isinstance(data, dict):
            return error(400, f"body must be a JSON object, got {type(data).__name__}")
        if "shadow" in data:
            return parse_switch(data, self._route)
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
        unreachable = self._unreachable(client_id)
        if unreachable is not None:
            return unreachable
        numbers: Dict[str, Optional[Number]] = {"capacity": None, "refill_rate": None}
        for name in numbers:
            if name in data:
                checked = _admin_number(name, data[name])
                if isinstance(checked, Response):
                    return checked
                numbers[name] = checked
        try:
            # Neither number given (JSON null was refused above): the core's check and message.
            check_rule_fields(numbers["capacity"], numbers["refill_rate"])
        except ValueError as exc:
            return error(400, str(exc))
        policy = self._route(data.get("route"))
        if isinstance(policy, Response):
            return policy
        limit = _limit(data.get("limit"), policy, "update")
        if isinstance(limit, Response):
            return limit
        return AdminOp(
            "update", client_id, policy, numbers["capacity"], numbers["refill_rate"], limit
        )


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


def _is_override(rule: Rule, registry: BucketRegistry, limit: Optional[str] = None) -> bool:
    # rule_for returns the limit's default object itself when there is no override.
    return rule is not registry.defaults[registry.limits[0] if limit is None else limit]


def _rule_fields(
    rule: Rule, registry: BucketRegistry, limit: Optional[str] = None
) -> Dict[str, Any]:
    """A rule as the audit log's fields: its numbers and whether it is an override."""
    return {
        "capacity": rule.capacity,
        "refill_rate": rule.refill_rate,
        "override": _is_override(rule, registry, limit),
    }


def _describe(fields: Dict[str, Any]) -> str:
    kind = "override" if fields["override"] else "default"
    return f"capacity={fields['capacity']!r} refill_rate={fields['refill_rate']!r} ({kind})"


def _admin_number(name: str, value: object) -> Union[Response, Number]:
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


class _Repeated(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_repeats(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result: Dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise _Repeated(name)
        result[name] = value
    return result


def unavailable(failure: ConnectionError) -> Response:
    """A shared store (Redis) did not answer an admin call: 503, and nothing is claimed done.

    An update may or may not have reached the store before the connection failed; the client
    retries (updates are idempotent) or reads the rule back with GET.
    """
    return error(
        503, f"the rate-limit store is unavailable: {show(str(failure))}", [("Retry-After", "1")]
    )
