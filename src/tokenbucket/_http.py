"""The HTTP decisions both middlewares share, written once and free of I/O (sans-IO).

What belongs here: the request view that key, ``exempt`` and ``cost`` callables receive; option
validation; how a request is counted (exemption, route, key, cost: `Options.limit_for`) and the
``on_decision`` hook; the rate-limit header fields; the 429 response; and the admin API, from an
HTTP request (method, query, ``Authorization``, body bytes) to a response (status, headers, JSON
body). What must not: sockets, asyncio, ASGI or WSGI messages, or any web framework, nor the
registry call itself, which is synchronous under WSGI and may be awaited under ASGI.
``asgi.py`` and ``wsgi.py`` translate their protocol to and from what is here.

Header fields follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026; section 3 for
``RateLimit-Policy``, section 4 for ``RateLimit``): both are Structured Field Lists (RFC 9651)
of Items whose value is the policy name as a String, with Integer parameters::

    RateLimit-Policy: "default";q=10
    RateLimit: "default";r=7;t=3

``q`` is the bucket's capacity (floored to an integer), ``r`` the tokens left (floored) and ``t``
the whole seconds (ceiling) until the bucket is full again; on a denial ``t`` is the wait until
the request could pass, equal to ``Retry-After``, as the draft asks that ``Retry-After`` never
end before the effective window. The draft's optional ``w`` (window) is left out: a token bucket
has no fixed window, and the refill rate of a per-client override is not known to the adapter
without a second store call. ``t`` is omitted when the bucket never refills.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
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
    Generic,
    Iterable,
    List,
    Literal,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    TypeVar,
    Union,
    overload,
)
from urllib.parse import parse_qsl

from ._decision import Decision
from ._keys import bucket_key, escape_key
from ._registry import BucketRegistry
from ._rule import Rule
from ._validate import Number, check_capacity, check_rate, check_rule_fields, show

#: The key used for a request whose client address the server did not report (``scope["client"]``
#: is None or has an empty host, or ``REMOTE_ADDR`` is missing or empty: a Unix socket, some test
#: clients). All such requests share this one bucket; behind a proxy on a Unix socket, pass a key
#: function.
UNKNOWN_CLIENT = "unknown"

#: Response header fields: name/value pairs, as both middlewares exchange them with this module.
HeaderList = List[Tuple[str, str]]
#: The same as ASGI carries them: bytes, lower-case names.
RawHeaderList = List[Tuple[bytes, bytes]]

#: A key function: the request view in, the bucket key out.
KeyFunc = Callable[["RequestView"], str]

#: What ``on_decision`` is called with: the request view, its key and the decision.
DecisionHook = Callable[["RequestView", str, Decision], None]

DEFAULT_ADMIN_PATH = "/admin/update-rule"
DEFAULT_MAX_BODY = 4096

_HEADER_MODES = {"draft": 1, "legacy": 2, "both": 3, None: 0}
_DRAFT = 1
_LEGACY = 2

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
_V = TypeVar("_V")
_ADMIN_FIELDS = ("client_id", "capacity", "refill_rate", "route")
_ADMIN_METHODS = "GET, POST, DELETE"


#: How many leading bits of an IPv6 client address make its key by default: a /56, what many
#: providers give one subscriber (RIPE-690 recommends /56 for residential customers; some give
#: a /48, none less than a /64), and the default of express-rate-limit v8. /64 would leave a
#: /56 subscriber 256 buckets. 128 keys each address alone.
DEFAULT_IPV6_PREFIX = 56


def client_key(address: Optional[str], ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The default bucket key: the client ``address``, or `UNKNOWN_CLIENT` if there is none.

    No address is None or ``""``, whichever the server reports (an ASGI ``("", port)``, an empty
    ``REMOTE_ADDR``): both middlewares and every path through them key such requests alike.
    An IPv6 address is keyed by its network of ``ipv6_prefix`` bits (`ipv6_key`); IPv4 and
    IPv4-mapped addresses, and anything that is not an address, are keys as they are.
    """
    if not address:
        return UNKNOWN_CLIENT
    if ipv6_prefix == 128 or ":" not in address:  # IPv4 needs no parsing: the hot path
        return address
    return _ipv6_text_key(address, ipv6_prefix)


def default_bucket(address: Optional[str], ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The store key of ``client_key(address)`` in the default namespace (the fast path's key)."""
    return escape_key(client_key(address, ipv6_prefix))


@functools.lru_cache(maxsize=4096)
def _ipv6_text_key(address: str, ipv6_prefix: int) -> str:
    # Cached: a client's requests parse its address once (about 3 us), not on every request.
    try:
        parsed = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    if parsed.ipv4_mapped is not None:
        return address
    return ipv6_key(parsed, ipv6_prefix)


def ipv6_key(address: ipaddress.IPv6Address, ipv6_prefix: int) -> str:
    """The key of an IPv6 client: its network of ``ipv6_prefix`` bits, ``2001:db8:0:100::/56``.

    One subscriber usually holds a whole /56 (or a /64, at least), and can send from any of its
    addresses: keying each address alone would multiply its limit by as many as it cares to
    use. At 128 the key is the address itself (``2001:db8::1``), as before 0.2.0.
    """
    if ipv6_prefix == 128:
        return str(address)
    shift = 128 - ipv6_prefix
    return str(ipaddress.IPv6Network(((int(address) >> shift) << shift, ipv6_prefix)))


def check_ipv6_prefix(value: object) -> int:
    """Return ``value`` if it is a valid ``ipv6_prefix`` (an int from 0 to 128), else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"'ipv6_prefix' must be an int from 0 to 128, got {show(value)}")
    if not 0 <= value <= 128:
        raise ValueError(f"'ipv6_prefix' must be an int from 0 to 128, got {show(value)}")
    return value


class RequestView:
    """The parts of an HTTP request that key, ``exempt`` and ``cost`` callables see.

    Both middlewares build the same view, so one key function serves ASGI and WSGI apps alike::

        def api_key(request: RequestView) -> str:
            return request.header("x-api-key") or request.client or "unknown"

    Attributes:
        method: the request method, upper case (``"GET"`` for a WebSocket handshake).
        scheme: ``"http"``, ``"https"``, ``"ws"`` or ``"wss"``.
        path: the decoded path, without the query string (under WSGI, ``SCRIPT_NAME`` followed
            by ``PATH_INFO``).
        query_string: the raw query string, without the ``?``.
        client: the peer's address as the server reports it, or None if it reports none (an
            empty address is none). It is the proxy's address behind a proxy; see
            [`TrustedProxyKey`][tokenbucket.proxies.TrustedProxyKey].
        raw: the ASGI scope or the WSGI environ, for anything the view does not cover.
    """

    __slots__ = ("_decode", "_headers", "client", "method", "path", "query_string", "raw", "scheme")

    def __init__(
        self,
        method: str,
        scheme: str,
        path: str,
        query_string: str,
        client: Optional[str],
        raw: Any,
        decode_headers: Callable[[Any], Dict[str, str]],
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.path = path
        self.query_string = query_string
        self.client = client or None
        self.raw = raw
        self._decode = decode_headers
        self._headers: Optional[Dict[str, str]] = None

    @property
    def headers(self) -> Mapping[str, str]:
        """Request header fields by lower-case name; repeated fields are joined with ``", "``."""
        headers = self._headers
        if headers is None:
            headers = self._headers = self._decode(self.raw)
        return headers

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """Return the header field ``name`` (any case), or ``default`` if it is absent."""
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        return (
            f"RequestView(method={self.method!r}, path={self.path!r}, "
            f"query_string={self.query_string!r}, client={self.client!r})"
        )


class Response(NamedTuple):
    """A complete response produced by this module: the middleware sends it as it is."""

    status: int
    headers: HeaderList
    body: bytes


def status_line(status: int) -> str:
    """Return the WSGI status line for ``status``, e.g. ``"429 Too Many Requests"``."""
    return f"{status} {HTTPStatus(status).phrase}"


class Policy:
    """One limiter the middleware applies: a registry, a key namespace and a header name.

    The default policy uses the middleware's registry as it is. A route's policy is a
    registry of its own sharing that registry's store, with keys namespaced by the route
    pattern, so route buckets and overrides never mix with the default ones.
    """

    __slots__ = ("_values", "field_name", "field_names", "name", "prefix", "registry")

    def __init__(self, name: str, registry: BucketRegistry, prefix: str) -> None:
        self.name = name
        self.registry = registry
        self.prefix = prefix
        self.field_name = _sf_string(name)
        #: The name as a Structured Field String in each form (`TEXT`, `RAW`).
        self.field_names = (self.field_name, self.field_name.encode("ascii"))
        # RateLimit-Policy values (str, bytes) by capacity. Few capacities are in use (the
        # default and the overrides), so this stays small; entries are immutable and dict
        # operations atomic, so concurrent requests never see each other's value.
        self._values: Dict[float, Tuple[str, bytes]] = {}

    def policy_value(self, limit: float) -> Tuple[str, bytes]:
        """The ``RateLimit-Policy`` value for a bucket of capacity ``limit``, as str and bytes."""
        values = self._values.get(limit)
        if values is None:
            if len(self._values) >= 1024:  # overrides are unbounded in principle
                self._values.clear()
            # The capacity floored, but at least 1: below 1, q=0 would say that nothing ever
            # passes, while requests costing up to the capacity do. At most 1e12 (Rule's
            # bound), so always an RFC 9651 Integer.
            text = f"{self.field_name};q={int(limit) or 1}"
            values = self._values[limit] = (text, text.encode("ascii"))
        return values


#: How one request is counted, as `Options.limit_for` decides it: ``(policy, key, bucket, cost)``.
#: ``policy`` is the limiter (the default one or the request's route); ``key`` the key function's
#: answer (by default the client address), which ``on_decision`` gets; ``bucket`` that key in the
#: policy's namespace, the key to consume from ``policy.registry``; ``cost`` the tokens the
#: request takes. A plain tuple: it is built for every request, and a NamedTuple costs 10 times
#: as much to build.
Limit = Tuple["Policy", str, str, Number]


def _sf_string(text: str) -> str:
    """Serialise ``text`` as a Structured Field String (RFC 9651, section 4.1.6)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: The largest RFC 9651 Integer (15 digits). Header fields that count seconds are clamped to it
#: (about 31.7 million years); larger counts come from absurdly slow refill rates.
SF_INTEGER_MAX: Final = 999_999_999_999_999


@overload
def rate_limit_headers(
    decision: Decision, policy: Policy, mode: int, form: Literal[0]
) -> HeaderList: ...


@overload
def rate_limit_headers(
    decision: Decision, policy: Policy, mode: int, form: Literal[1]
) -> RawHeaderList: ...


def rate_limit_headers(
    decision: Decision, policy: Policy, mode: int, form: int
) -> List[Tuple[Any, Any]]:
    """Return the rate-limit header fields for ``decision`` in header ``mode`` (bit set).

    ``form`` is `TEXT` (str, as WSGI wants them) or `RAW` (bytes with lower-case names, as ASGI
    carries them): the same fields, written by the same code in one pass, for every request.
    Every number is an RFC 9651 Integer (0 to `SF_INTEGER_MAX`): counts of seconds are clamped
    to it, and a capacity below 1 is reported as 1 (see `Policy.policy_value`).
    """
    allowed, remaining, retry_after, reset_after, limit = decision
    left = int(remaining)
    names, number, state, timed_state = _FORMS[form]
    if mode & _DRAFT:
        window = reset_after if allowed else retry_after
        name = policy.field_names[form]
        if window == math.inf:
            value = state % (name, left)
        else:
            seconds = math.ceil(window) if window < SF_INTEGER_MAX else SF_INTEGER_MAX
            value = timed_state % (name, left, seconds)
        fields = [(names[0], policy.policy_value(limit)[form]), (names[1], value)]
        if not mode & _LEGACY:
            return fields
    elif mode & _LEGACY:
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


def denial(decision: Decision, fields: HeaderList) -> Response:
    """Return the 429 response for a denied ``decision``, carrying the rate-limit ``fields``.

    The JSON body is ``{"error": "Rate limit exceeded", "retry_after": s, "limit": n,
    "remaining": n}``. ``retry_after`` equals the ``Retry-After`` header; both are absent (the
    body says ``null``) when the request can never pass: a bucket that does not refill, or a
    request costing more than the capacity.
    """
    wait = retry_after_seconds(decision)
    body = (
        f'{{"error": "Rate limit exceeded", "retry_after": {"null" if wait is None else wait}, '
        f'"limit": {int(decision.limit)}, "remaining": {int(decision.remaining)}}}'
    ).encode()
    headers = [_JSON, ("Content-Length", str(len(body)))]
    if wait is not None:
        headers.append(("Retry-After", str(wait)))
    headers.extend(fields)
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


def _error(status: int, message: str, extra: Optional[HeaderList] = None) -> Response:
    return json_response(status, {"error": message}, extra)


class Paths(Generic[_V]):
    """Path patterns, each with a value: exact paths, and prefixes written with a trailing ``*``.

    ``exempt`` and ``routes`` both match through this class, so they agree on what a path is.
    Paths are compared as decoded, case-sensitively, and trailing slashes never matter:
    ``/login``, ``/login/`` and ``/login//`` are one path (most frameworks serve them as one,
    or redirect one to the other), and a prefix ``/static/*`` covers ``/static`` as well as
    everything under ``/static/``. Both paths and patterns are compared with exactly one
    trailing slash. An exact pattern wins over a prefix, and a longer prefix over a shorter.
    """

    __slots__ = ("_exact", "_prefix_tuple", "_prefixes")

    def __init__(self, option: str, patterns: Iterable[Tuple[str, _V]]) -> None:
        exact: Dict[str, Tuple[str, _V]] = {}
        prefixes: Dict[str, Tuple[str, _V]] = {}
        for pattern, value in patterns:
            if pattern.endswith("*"):
                prefix = pattern[:-1]
                form, table = (_slashed(prefix) if prefix.endswith("/") else prefix), prefixes
            else:
                form, table = _slashed(pattern), exact
            other = table.get(form)
            if other is not None and other[1] != value:
                raise ValueError(
                    f"{option!r} paths {show(other[0])} and {show(pattern)} are the same route: "
                    "trailing slashes do not make another one"
                )
            table[form] = (pattern, value)
        self._exact = {form: value for form, (_, value) in exact.items()}
        # Longest first, so that the most specific prefix matches first.
        self._prefixes = tuple(
            sorted(
                ((form, value) for form, (_, value) in prefixes.items()),
                key=lambda item: len(item[0]),
                reverse=True,
            )
        )
        self._prefix_tuple = tuple(form for form, _ in self._prefixes)

    def get(self, path: str) -> Optional[_V]:
        """Return the value of the pattern ``path`` matches, or None if it matches none."""
        form = path.rstrip("/") + "/"
        value = self._exact.get(form)
        if value is not None:
            return value
        for prefix, value in self._prefixes:
            if form.startswith(prefix):
                return value
        return None

    def __contains__(self, path: str) -> bool:
        form = path.rstrip("/") + "/"
        prefixes = self._prefix_tuple
        return form in self._exact or (bool(prefixes) and form.startswith(prefixes))


def _slashed(path: str) -> str:
    """``path`` with exactly one trailing slash: the form in which paths are compared."""
    return path.rstrip("/") + "/"


def _check_pattern(option: str, pattern: object) -> str:
    if not isinstance(pattern, str):
        raise TypeError(f"{option!r} paths must be str, got {show(pattern)}")
    if not pattern.startswith("/"):
        raise ValueError(f"{option!r} paths must start with '/', got {show(pattern)}")
    return pattern


def _paths(option: str, patterns: Iterable[object]) -> Paths[bool]:
    if isinstance(patterns, (str, bytes)):
        raise TypeError(f"{option!r} must be a list of paths, not a single path: {show(patterns)}")
    return Paths(option, ((_check_pattern(option, pattern), True) for pattern in patterns))


class Options:
    """Every middleware option, validated once; both middlewares hold one of these.

    Invalid options raise ``TypeError`` (wrong type) or ``ValueError`` (bad value), naming the
    option and the value. See the middlewares' docstrings for what each option means.
    """

    __slots__ = (
        "admin",
        "cost",
        "cost_func",
        "default",
        "dry_run",
        "exempt_func",
        "exempt_paths",
        "header_mode",
        "ipv6_prefix",
        "is_async",
        "key_func",
        "on_decision",
        "route_paths",
        "routes",
    )

    def __init__(
        self,
        *,
        registry: BucketRegistry,
        key: Optional[KeyFunc],
        cost: Union[float, Callable[[RequestView], float]],
        exempt: Union[Iterable[str], Callable[[RequestView], bool], None],
        routes: Optional[Mapping[str, Rule]],
        dry_run: bool,
        headers: Optional[str],
        on_decision: Optional[DecisionHook],
        admin_token: Optional[str],
        admin_path: str,
        max_body: int,
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        if not isinstance(registry, BucketRegistry):
            raise TypeError(f"'registry' must be a BucketRegistry, got {show(registry)}")
        if key is not None and not callable(key):
            raise TypeError(f"'key' must be a callable taking a RequestView, got {show(key)}")
        self.key_func = key
        self.ipv6_prefix = check_ipv6_prefix(ipv6_prefix)
        self.cost: Number = 1
        self.cost_func: Optional[Callable[[RequestView], float]] = None
        if callable(cost):
            self.cost_func = cost
        else:
            self.cost = _check_cost(cost)
        self.exempt_func: Optional[Callable[[RequestView], bool]] = None
        self.exempt_paths: Optional[Paths[bool]] = None
        if callable(exempt):
            self.exempt_func = exempt
        elif exempt is not None:
            try:
                self.exempt_paths = _paths("exempt", exempt)
            except TypeError as exc:
                if not isinstance(exempt, Iterable):
                    raise TypeError(
                        f"'exempt' must be a list of paths or a callable, got {show(exempt)}"
                    ) from None
                raise exc
        if not isinstance(dry_run, bool):
            raise TypeError(f"'dry_run' must be a bool, got {show(dry_run)}")
        self.dry_run = dry_run
        if headers not in _HEADER_MODES:
            raise ValueError(
                f"'headers' must be 'draft', 'legacy', 'both' or None, got {show(headers)}"
            )
        self.header_mode = _HEADER_MODES[headers]
        if on_decision is not None and not callable(on_decision):
            raise TypeError(f"'on_decision' must be a callable or None, got {show(on_decision)}")
        self.on_decision = on_decision
        self.is_async = registry.is_async
        self.default = Policy("default", registry, "")
        self.routes: Dict[str, Policy] = {}
        self.route_paths: Paths[Policy] = Paths("routes", ())
        if routes is not None:
            self._set_routes(registry, routes)
        self.admin: Optional[AdminAPI] = None
        if admin_token is not None:
            self.admin = AdminAPI(admin_token, admin_path, max_body, self)
        else:
            _check_admin_path(admin_path)
            _check_max_body(max_body)

    def _set_routes(self, registry: BucketRegistry, routes: Mapping[str, Rule]) -> None:
        if not isinstance(routes, Mapping):
            raise TypeError(f"'routes' must be a mapping of path to Rule, got {show(routes)}")
        for pattern, rule in routes.items():
            _check_pattern("routes", pattern)
            if not all(" " <= char <= "~" for char in pattern):
                raise ValueError(f"'routes' paths must be printable ASCII, got {show(pattern)}")
            if not isinstance(rule, Rule):
                raise TypeError(
                    f"'routes' values must be Rule objects, got {show(rule)} for {show(pattern)}"
                )
            policy = Policy(pattern, BucketRegistry(rule, store=registry.store), pattern + "\0")
            self.routes[pattern] = policy
        self.route_paths = Paths("routes", self.routes.items())

    @property
    def is_plain(self) -> bool:
        """Whether requests need nothing but the default key, cost and registry (a fast path).

        Then no request is exempt and `limit_for` is always the default policy, the key
        ``client_key(client)`` and the fixed cost, with no hook to call: a middleware may count
        the request with those without building a `RequestView`.
        """
        return (
            self.exempt_paths is None
            and self.exempt_func is None
            and not self.routes
            and self.key_func is None
            and self.cost_func is None
            and self.on_decision is None
            and not self.is_async
        )

    def policy_for(self, path: str) -> Policy:
        """Return the policy for ``path``: an exact route, else the longest prefix, else default.

        Trailing slashes do not matter (see `Paths`).
        """
        policy = self.route_paths.get(path)
        return self.default if policy is None else policy

    def is_exempt(self, view: RequestView) -> bool:
        """Whether the request is exempt (neither limited nor counted): by path or predicate."""
        paths = self.exempt_paths
        if paths is not None and view.path in paths:
            return True
        predicate = self.exempt_func
        return predicate is not None and bool(predicate(view))

    def limit_for(self, view: RequestView) -> Limit:
        """Return how the request is counted: ``(policy, key, bucket, cost)`` (see `Limit`).

        The caller takes ``cost`` tokens from ``bucket`` in ``policy.registry`` (synchronously
        or awaited, as its protocol allows), then passes ``key`` and the decision to `report`.
        """
        policy = self.policy_for(view.path) if self.routes else self.default
        key_func = self.key_func
        key = client_key(view.client, self.ipv6_prefix) if key_func is None else key_func(view)
        cost_func = self.cost_func
        cost = self.cost if cost_func is None else cost_func(view)
        return policy, key, bucket_key(policy.prefix, key), cost

    def report(self, view: RequestView, key: str, decision: Decision) -> None:
        """Call ``on_decision(view, key, decision)`` for a counted request, if there is a hook."""
        hook = self.on_decision
        if hook is not None:
            hook(view, key, decision)

    def headers_for(self, decision: Decision, policy: Policy) -> HeaderList:
        """Return the rate-limit header fields to add to a response, in the configured mode."""
        return rate_limit_headers(decision, policy, self.header_mode, TEXT)

    def denial(self, decision: Decision, policy: Policy) -> Response:
        """Return the 429 response to a denied request, with the configured header fields."""
        return denial(decision, self.headers_for(decision, policy))


def _check_cost(cost: object) -> Number:
    if isinstance(cost, bool) or not isinstance(cost, (int, float)):
        raise TypeError(f"'cost' must be a number > 0 or a callable, got {show(cost)}")
    if not cost > 0 or not math.isfinite(cost):
        raise ValueError(f"'cost' must be a finite number > 0, got {show(cost)}")
    return cost


def _check_admin_path(path: object) -> str:
    if not isinstance(path, str):
        raise TypeError(f"'admin_path' must be a str, got {show(path)}")
    if not path.startswith("/"):
        raise ValueError(f"'admin_path' must start with '/', got {show(path)}")
    return path


def _check_max_body(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"'max_body' must be an int, got {show(size)}")
    if size < 1:
        raise ValueError(f"'max_body' must be >= 1, got {show(size)}")
    return size


class AdminOp(NamedTuple):
    """A validated, authorised admin request, ready to run against its policy's registry."""

    action: str  # "get", "update" or "remove"
    client_id: str
    policy: Policy
    capacity: Optional[Number] = None
    refill_rate: Optional[Number] = None

    @property
    def key(self) -> str:
        """The bucket key of ``client_id`` in its policy's namespace (escaped: see `bucket_key`)."""
        return bucket_key(self.policy.prefix, self.client_id)


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
    """

    __slots__ = ("_expected", "_options", "max_body", "path")

    def __init__(self, token: object, path: object, max_body: object, options: Options) -> None:
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
        self.path = _check_admin_path(path)
        self.max_body = _check_max_body(max_body)
        self._options = options

    def authorize(self, authorization: Optional[str]) -> int:
        """Return 0 if ``authorization`` carries the token, else 401 (no bearer token) or 403."""
        if not authorization:
            return 401
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return 401
        offered = credentials.strip().encode("latin-1", "replace")
        return 0 if hmac.compare_digest(offered, self._expected) else 403

    def refusal(self, status: int, policy: Policy, decision: Decision) -> Response:
        """Return the response to an unauthorised request, counted with ``decision``.

        ``status`` is what `authorize` returned. A denied request gets the 429 (whatever
        ``dry_run`` says); an allowed one the 401 or 403. Both carry the rate-limit fields.
        """
        fields = self._options.headers_for(decision, policy)
        if not decision.allowed:
            return denial(decision, fields)
        if status == 401:
            fields = [("WWW-Authenticate", 'Bearer realm="tokenbucket admin"'), *fields]
            return _error(401, "missing bearer token", fields)
        return _error(403, "invalid admin token", fields)

    def wants_body(self, method: str) -> bool:
        """Whether an authorised request with ``method`` needs its body read (POST)."""
        return method == "POST"

    def body_too_large(self, content_length: Optional[str]) -> Optional[Response]:
        """Check a declared ``Content-Length`` before reading: a 400 or 413 response, or None."""
        if content_length is None:
            return None
        text = content_length.strip()
        if not text.isdigit() or not text.isascii():
            return _error(400, f"invalid Content-Length: {show(content_length)}")
        if int(text) > self.max_body:
            return self.too_large()
        return None

    def too_large(self) -> Response:
        """Return the 413 response for a body over ``max_body`` bytes."""
        return _error(413, f"request body is larger than {self.max_body} bytes")

    def incomplete(self) -> Response:
        """Return the 400 response for a body cut short: it is never acted on."""
        return _error(400, "request body incomplete: the client disconnected")

    def parse(self, method: str, query_string: str, body: bytes) -> Union[Response, AdminOp]:
        """Turn an authorised request into an operation, or into the 4xx that refuses it."""
        if method == "POST":
            return self._parse_update(body)
        if method in ("GET", "DELETE"):
            return self._parse_query("get" if method == "GET" else "remove", query_string)
        return _error(405, f"method {show(method)} not allowed", [("Allow", _ADMIN_METHODS)])

    def _route(self, route: object) -> Union[Response, Policy]:
        if route is None:
            return self._options.default
        if not isinstance(route, str):
            return _error(400, f"'route' must be a string, got {show(route)}")
        policy = self._options.routes.get(route)
        if policy is None:
            known = ", ".join(show(name) for name in self._options.routes) or "none"
            return _error(400, f"'route' must be a configured route ({known}), got {show(route)}")
        return policy

    def _parse_query(self, action: str, query_string: str) -> Union[Response, AdminOp]:
        try:
            pairs = parse_qsl(
                query_string, keep_blank_values=True, strict_parsing=False, max_num_fields=8
            )
        except ValueError:
            return _error(400, "too many query parameters")
        params: Dict[str, str] = {}
        for name, value in pairs:
            if name not in ("client_id", "route"):
                return _error(400, f"unknown query parameter {show(name)}")
            if name in params:
                return _error(400, f"query parameter {name!r} given more than once")
            params[name] = value
        client_id = params.get("client_id")
        if not client_id:
            return _error(400, "query parameter 'client_id' is required and must be non-empty")
        policy = self._route(params.get("route"))
        if isinstance(policy, Response):
            return policy
        return AdminOp(action, client_id, policy)

    def _parse_update(self, body: bytes) -> Union[Response, AdminOp]:
        try:
            # JSON is UTF-8 (RFC 8259, section 8.1), which json.loads would not check: it takes
            # UTF-16 and UTF-32 bytes too. A leading byte order mark is ignored, as the RFC allows.
            text = body.decode("utf-8-sig")
            data = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_repeats)
        except _Repeated as exc:
            return _error(400, f"field {show(exc.args[0])} given more than once")
        except (ValueError, RecursionError):
            return _error(400, "body must be valid JSON (UTF-8)")
        if not isinstance(data, dict):
            return _error(400, f"body must be a JSON object, got {type(data).__name__}")
        unknown = [name for name in data if name not in _ADMIN_FIELDS]
        if unknown:
            return _error(
                400,
                f"unknown field {show(unknown[0])}; expected 'client_id', 'capacity', "
                f"'refill_rate' and optionally 'route'",
            )
        client_id = data.get("client_id")
        if "client_id" not in data:
            return _error(400, "field 'client_id' is required")
        if not isinstance(client_id, str) or not client_id:
            return _error(400, f"'client_id' must be a non-empty string, got {show(client_id)}")
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
            return _error(400, str(exc))
        policy = self._route(data.get("route"))
        if isinstance(policy, Response):
            return policy
        return AdminOp("update", client_id, policy, numbers["capacity"], numbers["refill_rate"])


def _admin_number(name: str, value: object) -> Union[Response, Number]:
    """Check a rule field from the admin API with the core's own check, never a bool.

    The admin API takes exactly what `Rule` takes: a capacity in (0, 1e12] and a refill rate
    in [0, 1e12] (0: the bucket never refills).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _error(400, f"{name!r} must be a number, got {show(value)}")
    try:
        return check_capacity(value, name) if name == "capacity" else check_rate(value, name)
    except (TypeError, ValueError) as exc:
        return _error(400, str(exc))


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


def _admin_result(op: AdminOp, rule: Rule, tokens: float, removed: Optional[bool]) -> Response:
    registry = op.policy.registry
    payload: Dict[str, Any] = {
        "client_id": op.client_id,
        "route": None if op.policy.prefix == "" else op.policy.name,
        "capacity": rule.capacity,
        "refill_rate": rule.refill_rate,
        "tokens": tokens,
        # rule_for returns the registry's default object itself when there is no override.
        "override": rule is not registry.default,
    }
    if removed is not None:
        payload["removed"] = removed
    return json_response(200, payload)


def run_admin(op: AdminOp) -> Response:
    """Carry out ``op`` on a synchronous registry; return the 200 (or 503) response."""
    registry = op.policy.registry
    key = op.key
    removed: Optional[bool] = None
    try:
        if op.action == "update":
            registry.update_rule(key, capacity=op.capacity, refill_rate=op.refill_rate)
        elif op.action == "remove":
            removed = registry.remove_rule(key) is not None
        return _admin_result(op, registry.rule_for(key), registry.tokens(key), removed)
    except ConnectionError as exc:
        return _unavailable(exc)


async def arun_admin(op: AdminOp) -> Response:
    """Carry out ``op`` through the registry's awaitable methods; return the 200 (or 503)."""
    registry = op.policy.registry
    key = op.key
    removed: Optional[bool] = None
    try:
        if op.action == "update":
            await registry.aupdate_rule(key, capacity=op.capacity, refill_rate=op.refill_rate)
        elif op.action == "remove":
            removed = (await registry.aremove_rule(key)) is not None
        rule = await registry.arule_for(key)
        return _admin_result(op, rule, await registry.atokens(key), removed)
    except ConnectionError as exc:
        return _unavailable(exc)


def _unavailable(error: ConnectionError) -> Response:
    """A shared store (Redis) did not answer an admin call: 503, and nothing is claimed done.

    An update may or may not have reached the store before the connection failed; the client
    retries (updates are idempotent) or reads the rule back with GET.
    """
    return _error(
        503, f"the rate-limit store is unavailable: {show(str(error))}", [("Retry-After", "1")]
    )
