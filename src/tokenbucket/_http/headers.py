"""The response side: rate-limit header fields, ``Retry-After``, the 429 and JSON responses.

Knows: how a `Decision` is written as header fields in either form (str for WSGI, bytes for
ASGI), how they join the app's own fields, and the complete responses the middleware sends
itself (`Response`: the 429, JSON bodies). Must not know: requests, options, registries or
protocol messages; a policy is seen only through its name (`PolicyFields`).

Header fields follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026; section 3 for
``RateLimit-Policy``, section 4 for ``RateLimit``): both are Structured Field Lists (RFC 9651)
of Items whose value is the policy name as a String, with Integer parameters:

    RateLimit-Policy: "default";q=10;w=10
    RateLimit: "default";r=7;t=3

``q`` is the bucket's capacity (floored to an integer), ``w`` the seconds its bucket takes to
refill from empty (``capacity / refill_rate``, rounded up), so that a client learns the rate
``q / w`` (never above the real one), ``r`` the tokens left (floored) and ``t`` the whole seconds
(ceiling) until the bucket is full again; on a denial ``t`` is the wait until the request could
pass, equal to ``Retry-After``, as the draft asks that ``Retry-After`` never end before the
effective window. ``w`` is left out when the bucket never refills, and for a per-client override
whose capacity differs from the default rule's (its refill rate is not known to the adapter
without a second store call). ``t`` is omitted when the bucket never refills.

With several limits (``{"burst": Rule(10, 1.0), "daily": Rule.per(1000, 86400)}``) the
``RateLimit-Policy`` field lists every limit in order, each with ``w``, the seconds its bucket
takes to refill from empty (``capacity / refill_rate``, rounded up; left out if it never
refills), and ``RateLimit`` names the binding limit (the decision's ``policy``):

    RateLimit-Policy: "burst";q=10;w=10, "daily";q=1000;w=86400
    RateLimit: "burst";r=0;t=1

The binding limit's ``q`` is the capacity that decided (a per-client override's), the others'
their default rule's. The binding limit's ``w`` is its own refill time: a decision that admitted
a request and left its bucket partly full tells its refill rate (``(q - r) / reset_after``),
else it is its default's when ``q`` is; otherwise (a denial under an overridden capacity) ``w``
is left out rather than guessed. A limit in shadow does not bind: it is not listed, and with
every limit in shadow no rate-limit field is sent at all (see `PolicyFields.limits`).
"""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import (
    Any,
    AnyStr,
    Callable,
    Dict,
    Final,
    FrozenSet,
    Iterable,
    List,
    Literal,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    overload,
)

from .._core.decision import Decision
from .._core.rule import Rule

#: Response header fields: name/value pairs, as both middlewares exchange them with this package.
HeaderList = List[Tuple[str, str]]
#: The same as ASGI carries them: bytes, lower-case names.
RawHeaderList = List[Tuple[bytes, bytes]]
#: Several limits' (name, default rule) pairs, in order.
Limited = Tuple[Tuple[str, Rule], ...]

#: The ``headers`` option's values and the fields each writes (a bit set of `DRAFT`, `LEGACY`).
HEADER_MODES = {"draft": 1, "legacy": 2, "both": 3, None: 0}
DRAFT = 1
LEGACY = 2

#: The ``form`` of `rate_limit_headers`: str fields as WSGI wants them...
TEXT: Final = 0
#: ...or bytes with lower-case names, as ASGI carries them.
RAW: Final = 1
_NAMES = (
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
)
#: Per form: the field names, then the formats of an integer (``%d`` floors the positive numbers
#: written), of a ``RateLimit`` value and of one with ``t``.
_FORMS: Tuple[Tuple[Tuple[Any, ...], Any, Any, Any], ...] = (
    (_NAMES, "%d", "%s;r=%d", "%s;r=%d;t=%d"),
    (tuple(name.lower().encode("ascii") for name in _NAMES), b"%d", b"%s;r=%d", b"%s;r=%d;t=%d"),
)
#: Lower-case names of every field this module may add, to leave alone those the app set itself.
OWN_FIELDS = frozenset(name.lower() for name in _NAMES)
#: Their first letters in either case: most names are ruled out without ``lower()``.
OWN_INITIALS = frozenset(name[:1] for name in OWN_FIELDS) | {
    name[:1].upper() for name in OWN_FIELDS
}
#: `OWN_FIELDS` and `OWN_INITIALS` as ASGI carries names: bytes.
RAW_OWN_FIELDS = frozenset(name.encode("ascii") for name in OWN_FIELDS)
RAW_OWN_INITIALS = frozenset(name.encode("ascii") for name in OWN_INITIALS)
_JSON = ("Content-Type", "application/json")


class Response(NamedTuple):
    """A complete response produced by this package: the middleware sends it as it is."""

    status: int
    headers: HeaderList
    body: bytes


def status_line(status: int) -> str:
    """Return the WSGI status line for ``status``, e.g. ``"429 Too Many Requests"``."""
    return f"{status} {HTTPStatus(status).phrase}"


class PolicyFields:
    """A policy as its header fields name it: ``name`` as an SF String, and its q values.

    ``options.Policy`` adds the registry and the key namespace to it.
    """

    __slots__ = ("_several", "_values", "default", "field_name", "field_names", "limits", "name")

    def __init__(
        self,
        name: str,
        limits: Optional[Callable[[], Mapping[str, Rule]]] = None,
        default: Optional[Callable[[], Rule]] = None,
    ) -> None:
        self.name = name
        #: With several limits: returns the enforced ones (name to default rule, in order;
        #: empty when every limit is in shadow); else None.
        self.limits = limits
        #: With one limit: returns its default rule, whose refill rate gives ``w``; else None.
        self.default = default
        self.field_name = sf_string(name)
        #: The name as a Structured Field String in each form (`TEXT`, `RAW`).
        self.field_names = (self.field_name, self.field_name.encode("ascii"))
        # RateLimit-Policy values (str, bytes) by capacity. Few capacities are in use (the
        # default and the overrides), so this stays small; entries are immutable and dict
        # operations atomic, so concurrent requests never see each other's value.
        self._values: Dict[Tuple[float, float], Tuple[str, bytes]] = {}
        # Several limits: by the binding limit's (name, capacity, rate), the enforced limits
        # and the RateLimit-Policy value with the binding name, (str, str) and (bytes, bytes);
        # rebuilt when the limits differ (new defaults or shadow). Immutable, as _values.
        self._several: Dict[Tuple[str, float, Optional[float]], Tuple[Limited, Any]] = {}

    def policy_value(self, limit: float) -> Tuple[str, bytes]:
        """The ``RateLimit-Policy`` value for a bucket of capacity ``limit``, as str and bytes.

        ``w`` is written when the default rule's capacity is ``limit`` (the rule that decided,
        unless an override of another capacity did) and it refills.
        """
        rule = None if self.default is None else self.default()
        rate = rule.refill_rate if rule is not None and rule.capacity == limit else 0.0
        values = self._values.get((limit, rate))
        if values is None:
            if len(self._values) >= 1024:  # overrides are unbounded in principle
                self._values.clear()
            # The capacity floored, but at least 1: below 1, q=0 would say that nothing ever
            # passes, while requests costing up to the capacity do. At most 1e12 (Rule's
            # bound), so always an RFC 9651 Integer.
            quota = int(limit) or 1
            text = f"{self.field_name};q={quota}"
            if rate:
                text += f";w={window_seconds(quota, rate)}"
            values = self._values[limit, rate] = (text, text.encode("ascii"))
        return values

    def several_values(
        self, decision: Decision, limits: Mapping[str, Rule], form: int
    ) -> Tuple[Any, Any]:
        """With several limits: the ``RateLimit-Policy`` value and the binding limit's name.

        ``limits``: the enforced limits' default rules (`limits`), in order. Built once per
        limits and binding limit's name, capacity and rate, and kept (see `_several`).
        """
        binding, capacity, rule = decision[5], decision[4], limits.get(decision[5])
        rate = None if rule is None else binding_rate(decision, rule)
        items = tuple(limits.items())
        entry = self._several.get((binding, capacity, rate))
        # Tuples compare item by item, identity first: the same rules (the registry's, until
        # a change replaces them) are recognised without comparing their numbers.
        if entry is None or entry[0] != items:
            value, name = several_value(items, binding, capacity, rate), sf_string(binding)
            entry = (items, ((value, name), (value.encode("ascii"), name.encode("ascii"))))
            if len(self._several) >= 1024:  # overrides' rates are unbounded in principle
                self._several.clear()
            self._several[binding, capacity, rate] = entry
        return entry[1][form]


def several_value(items: Limited, binding: str, capacity: float, rate: Optional[float]) -> str:
    """``RateLimit-Policy`` for several limits; ``binding`` with ``capacity`` and ``rate``."""
    parts = []
    for name, rule in items:
        if name == binding:
            quota, refill = capacity, rate
        else:
            quota, refill = rule.capacity, rule.refill_rate
        item = f"{sf_string(name)};q={int(quota) or 1}"
        if refill:  # rounded first: a derived rate may be an ulp off, not a second
            window = round(quota / refill, 6)
            item += f";w={math.ceil(window) if window < SF_INTEGER_MAX else SF_INTEGER_MAX}"
        parts.append(item)
    return ", ".join(parts)


def binding_rate(decision: Decision, default: Rule) -> Optional[float]:
    """The refill rate of the rule that made ``decision``, whose default is ``default``.

    An admission that left the bucket partly full tells it: ``remaining`` is then the bucket's
    own level and ``reset_after`` the time to refill the rest. Else it is the default's when
    the capacity is (an override's rate would show in the next admission), and None (unknown)
    under an overridden capacity.
    """
    allowed, remaining, _, reset_after, limit = decision[:5]
    if allowed and 0.0 < remaining < limit and 0.0 < reset_after < math.inf:
        rate = (limit - remaining) / reset_after
        return default.refill_rate if math.isclose(rate, default.refill_rate) else rate
    if reset_after == math.inf:  # a bucket that never refills
        return 0.0
    return default.refill_rate if limit == default.capacity else None


def window_seconds(capacity: float, rate: float) -> int:
    """``w`` for a quota ``q`` refilled at ``rate``: whole seconds, rounded up, at least 1.

    The seconds it takes to refill the quota, so that ``q / w`` never exceeds the rate; at most
    `SF_INTEGER_MAX`.
    """
    window = capacity / rate
    return max(1, math.ceil(window)) if window < SF_INTEGER_MAX else SF_INTEGER_MAX


def sf_string(text: str) -> str:
    """Serialise ``text`` as a Structured Field String (RFC 9651, section 4.1.6)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The largest RFC 9651 Integer (15 digits). Header fields that count seconds are clamped to it
#: (about 31.7 million years); larger counts come from absurdly slow refill rates.
SF_INTEGER_MAX: Final = 999_999_999_999_999


@overload
def rate_limit_headers(
    decision: Decision, policy: PolicyFields, mode: int, form: Literal[0]
) -> HeaderList: ...


@overload
def rate_limit_headers(
    decision: Decision, policy: PolicyFields, mode: int, form: Literal[1]
) -> RawHeaderList: ...


def rate_limit_headers(
    decision: Decision, policy: PolicyFields, mode: int, form: int
) -> List[Tuple[Any, Any]]:
    """Return the rate-limit header fields for ``decision`` in header ``mode`` (bit set).

    ``form`` is `TEXT` (str, as WSGI wants them) or `RAW` (bytes with lower-case names, as ASGI
    carries them): the same fields, written by the same code in one pass, for every request.
    Every number is an RFC 9651 Integer (0 to `SF_INTEGER_MAX`): counts of seconds are clamped
    to it, and a capacity below 1 is reported as 1 (see `PolicyFields.policy_value`).
    """
    allowed, remaining, retry_after, reset_after, limit = decision[:5]
    left = int(remaining)
    names, number, state, timed_state = _FORMS[form]
    limits = None if policy.limits is None else policy.limits()
    if limits is not None and not limits:  # every limit in shadow: none binds
        return []
    if mode & DRAFT:
        window = reset_after if allowed else retry_after
        if limits is None:
            name, policy_value = policy.field_names[form], policy.policy_value(limit)[form]
        else:
            policy_value, name = policy.several_values(decision, limits, form)
        if window == math.inf:
            value = state % (name, left)
        else:
            seconds = math.ceil(window) if window < SF_INTEGER_MAX else SF_INTEGER_MAX
            value = timed_state % (name, left, seconds)
        fields = [(names[0], policy_value), (names[1], value)]
        if not mode & LEGACY:
            return fields
    elif mode & LEGACY:
        fields = []
    else:
        return []
    fields.append((names[2], number % (int(limit) or 1)))
    fields.append((names[3], number % left))
    if reset_after != math.inf:
        seconds = math.ceil(reset_after) if reset_after < SF_INTEGER_MAX else SF_INTEGER_MAX
        fields.append((names[4], number % seconds))
    return fields


def add_fields(
    headers: Optional[Iterable[Tuple[AnyStr, AnyStr]]],
    extra: List[Tuple[AnyStr, AnyStr]],
    own: FrozenSet[AnyStr],
    initials: FrozenSet[AnyStr],
) -> List[Tuple[AnyStr, AnyStr]]:
    """Return the app's ``headers`` followed by the ``extra`` fields it did not set itself.

    ``headers`` is any iterable of name/value pairs (a list, a tuple, a generator; ASGI allows
    all of them), or None; it is read once. Names compare case-insensitively; ``own`` holds the
    lower-case names ``extra`` may contain and ``initials`` their first letters in both cases
    (`OWN_FIELDS` and `OWN_INITIALS` for str, `RAW_OWN_FIELDS` and `RAW_OWN_INITIALS` for bytes).
    """
    if headers is None:
        return extra
    fields: List[Tuple[AnyStr, AnyStr]] = headers if isinstance(headers, list) else list(headers)
    for name, _ in fields:
        if name[:1] in initials and name.lower() in own:
            present = {other.lower() for other, _ in fields}
            return fields + [field for field in extra if field[0].lower() not in present]
    return fields + extra


def retry_after_seconds(decision: Decision) -> Optional[int]:
    """Return ``Retry-After`` for a denial: whole seconds, rounded up, at least 1; None if never.

    At most `SF_INTEGER_MAX` (RFC 9110's delay-seconds has no bound, but the draft's ``t``, which
    equals it on a denial, is an RFC 9651 Integer).
    """
    wait = decision.retry_after
    if wait == math.inf:
        return None
    if wait >= SF_INTEGER_MAX:
        return SF_INTEGER_MAX
    return max(1, math.ceil(wait))


def denial(decision: Decision, fields: HeaderList, several: bool = False) -> Response:
    """Return the 429 response for a denied ``decision``, carrying the rate-limit ``fields``.

    The JSON body is ``{"error": "Rate limit exceeded", "retry_after": s, "limit": n,
    "remaining": n}``; with ``several`` limits it adds ``"policy"``, the binding limit's name.
    ``retry_after`` equals the ``Retry-After`` header; both are absent (the
    body says ``null``) when the request can never pass: a bucket that does not refill, or a
    request costing more than the capacity.
    """
    wait = retry_after_seconds(decision)
    body = (
        f'{{"error": "Rate limit exceeded", "retry_after": {"null" if wait is None else wait}, '
        f'"limit": {int(decision.limit)}, "remaining": {int(decision.remaining)}'
        + (f', "policy": {json.dumps(decision.policy)}}}' if several else "}")
    ).encode()
    headers = [_JSON, ("Content-Length", str(len(body)))]
    if wait is not None:
        headers.append(("Retry-After", str(wait)))
    headers.extend(fields)
    return Response(429, headers, body)


#: The in-flight limit's policy name in the draft's header fields.
IN_FLIGHT_POLICY = "in-flight"


def in_flight_refusal(limit: int, mode: int) -> Response:
    """Return the 429 for a request refused because its key has ``limit`` requests in flight.

    No ``Retry-After``: a slot frees when another request ends, which nothing here can predict.
    In the draft ``mode``, the fields name the policy with the draft's quota unit for it:

        RateLimit-Policy: "in-flight";q=4;qu="concurrent-requests"
        RateLimit: "in-flight";r=0

    The legacy fields count requests per window, which this limit is not: none are sent.
    The JSON body is ``{"error": "Too many requests in flight", "limit": 4}``.
    """
    body = f'{{"error": "Too many requests in flight", "limit": {limit}}}'.encode()
    headers = [_JSON, ("Content-Length", str(len(body)))]
    if mode & DRAFT:
        name = sf_string(IN_FLIGHT_POLICY)
        headers.append((_NAMES[0], f'{name};q={limit};qu="concurrent-requests"'))
        headers.append((_NAMES[1], f"{name};r=0"))
    return Response(429, headers, body)


def json_response(
    status: int, payload: Mapping[str, Any], extra: Optional[HeaderList] = None
) -> Response:
    """Return a JSON response with ``status``, ``payload`` and any ``extra`` header fields."""
    body = json.dumps(payload, allow_nan=False).encode()
    headers = [_JSON, ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
    if extra:
        headers.extend(extra)
    return Response(status, headers, body)


def error(status: int, message: str, extra: Optional[HeaderList] = None) -> Response:
    """Return a JSON error response: ``{"error": message}`` with ``status``."""
    return json_response(status, {"error": message}, extra)
