"""The runtime rule API: an authorised HTTP request in, an operation or a refusal out.

Knows: the token check and the refusal of a request without it; an authorised request as its
edge carries it out (`AdminRequest`: the body to read, its size and declared length, which
parser it goes to, its answer); and what the audit log (`audit`) is told about each request.
The parsing of a query or JSON body is in `admin_parse`; the operation a valid request asks for
(`AdminOp`) and the JSON that answers it in `admin_op`. Must not know: sockets, ASGI or WSGI
messages, or how the body is read.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence, Union

from .._core.decision import Decision
from .._core.validate import show
from .admin_op import AdminOp, _describe, _rule_fields, unavailable
from .admin_options import DEFAULT_ADMIN_PATH as DEFAULT_ADMIN_PATH
from .admin_options import DEFAULT_MAX_BODY as DEFAULT_MAX_BODY
from .admin_parse import parse_query, parse_update
from .audit import AuditLog, quote
from .headers import Response, denial, error
from .options import Options
from .rules import RulesOp
from .rules import parse as parse_rules
from .shadow import apply_switch

if TYPE_CHECKING:
    from .policy import Policy
    from .request import RequestView

_ADMIN_METHODS = "GET, POST, DELETE"


def admin_api(options: Options) -> Optional[AdminAPI]:
    """The admin API of a middleware with these ``options``; None without an ``admin_token``."""
    token = options.admin_token
    return None if token is None else AdminAPI(options, token)


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

    def __init__(self, options: Options, token: str) -> None:
        self._expected = token.encode("ascii")
        self.path = options.admin_path
        self.max_body = options.max_body
        #: The largest body of ``POST {path}/import`` (see ``_http.rules``).
        self.max_import_body = options.max_import_body
        self._options = options
        #: The audit log every request is reported to (see `AuditLog`); the metrics, if any,
        #: count each request.
        self.audit = AuditLog()
        if options.metrics is not None:
            self.audit.on_admin = options.metrics.admin

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
            return apply_switch(op, view, self.audit, self._options.dry_run)
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

    def too_large(self, limit: int) -> Response:
        """Return the 413 response for a body over ``limit`` bytes."""
        return error(413, f"request body is larger than {limit} bytes")

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
            return parse_update(self._options, body)
        if method in ("GET", "DELETE"):
            return parse_query(self._options, "read" if method == "GET" else "remove", query_string)
        return error(405, f"method {show(method)} not allowed", [("Allow", _ADMIN_METHODS)])


class AdminRequest:
    """One authorised admin request, as its edge carries it out without being called back.

    The edge reads the body when ``limit`` says so (at most ``limit`` bytes, ``length`` of them
    when the client declared a ``Content-Length``), hands it to `operation`, makes the
    operation's registry calls (``op.steps()``) and sends `answer` of their results; an
    operation that is a `Response` (a 4xx, already audited) is sent as it is.
    """

    __slots__ = ("_api", "_refused", "length", "limit", "view")

    def __init__(self, api: AdminAPI, view: RequestView) -> None:
        self._api = api
        self.view = view
        #: The largest body to read (``max_import_body`` for imports); 0: read none.
        self.limit = 0
        #: The body's declared length, or None (then read until the body ends).
        self.length: Optional[int] = None
        #: The 4xx refusing a declared length (not a number, over the limit), or None.
        self._refused: Optional[Response] = None
        if view.method == "POST":
            limit = api.max_import_body if view.path == api.path + "/import" else api.max_body
            declared = view.header("content-length")
            text = "0" if declared is None else declared.strip()
            # (Leading zeros dropped, a length longer than the limit's is over it: int() of
            # more than 4300 digits raises.)
            digits = text.lstrip("0") or "0"
            if not text.isdigit() or not text.isascii():
                self._refused = error(400, f"invalid Content-Length: {show(declared)}")
            elif len(digits) > len(str(limit)) or int(digits) > limit:
                self._refused = api.too_large(limit)
            else:
                self.limit = limit
                self.length = None if declared is None else int(digits)

    def operation(self, body: Optional[bytes]) -> Union[Response, AdminOp, RulesOp]:
        """The request's operation, or the audited 4xx refusing it.

        ``body``: what the edge read (more than ``limit`` bytes is refused with 413), or
        None if the client disconnected before the end of it; a body shorter than its declared
        ``length`` is cut short too (400: never act on part of a request), and one longer than
        it (which only a server that does not frame requests by it delivers) is refused (400).
        """
        api, view = self._api, self.view
        if self._refused is not None:
            return api.rejected(self._refused, view)
        if body is None or (self.length is not None and len(body) < self.length):
            refused = error(400, "request body incomplete: the client disconnected")
            return api.rejected(refused, view)
        if self.length is not None and len(body) > self.length:
            refused = error(400, f"request body is longer than its Content-Length ({self.length})")
            return api.rejected(refused, view)
        if len(body) > self.limit:
            return api.rejected(api.too_large(self.limit), view)
        op = api.parse(view.method, view.query_string, body, view.path)
        return api.rejected(op, view) if isinstance(op, Response) else op

    def answer(
        self, op: Union[AdminOp, RulesOp], results: Union[Sequence[Any], Exception]
    ) -> Response:
        """The audited response to ``op``, from its registry calls' results (see `outcome`)."""
        return self._api.outcome(op, results, self.view)
