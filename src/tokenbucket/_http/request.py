"""The request as key, ``exempt`` and ``cost`` callables see it, and the default client key.

Knows: the `RequestView` both middlewares build, the client address to key (`client_key`,
IPv6 networks) and its store key in the default namespace (`default_bucket`). Must not know:
ASGI scopes or WSGI environs beyond holding one as ``raw`` (each middleware passes its own
header decoder), header writing, options or registries.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Callable, Dict, Mapping, Optional

from .._core.decision import Decision
from .._core.keys import escape_key
from .._core.validate import show

#: The key used for a request whose client address the server did not report (``scope["client"]``
#: is None or has an empty host, or ``REMOTE_ADDR`` is missing or empty: a Unix socket, some test
#: clients). All such requests share this one bucket; behind a proxy on a Unix socket, pass a key
#: function.
UNKNOWN_CLIENT = "unknown"

#: A key function: the request view in, the bucket key out.
KeyFunc = Callable[["RequestView"], str]

#: What ``on_decision`` is called with: the request view, its key and the decision.
DecisionHook = Callable[["RequestView", str, Decision], None]

#: How many leading bits of an IPv6 client address make its key by default: a /56, what many
#: providers give one subscriber (RIPE-690 recommends /56 for residential customers; some give
#: a /48, none less than a /64), and the default of express-rate-limit v8. /64 would leave a
#: /56 subscriber 256 buckets. 128 keys each address alone.
DEFAULT_IPV6_PREFIX = 56


def client_key(address: Optional[str], ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The default bucket key: the client ``address``, or `UNKNOWN_CLIENT` if there is none.

    No address is None or ``""``, whichever the server reports (an ASGI ``("", port)``, an empty
    ``REMOTE_ADDR``): both middlewares and every path through them key such requests alike.
    An IPv6 address is keyed by its network of ``ipv6_prefix`` bits (`ipv6_key`), an
    IPv4-mapped one (``::ffff:1.2.3.4``, in any spelling) by its IPv4 address (``1.2.3.4``, as
    `TrustedProxyKey` keys it); IPv4 addresses, and anything that is not an address, are keys as
    they are.
    """
    if not address:
        return UNKNOWN_CLIENT
    if ":" not in address:  # IPv4 needs no parsing: the hot path
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
    if parsed.ipv4_mapped is not None:  # one client, one bucket, however its address is spelled
        return str(parsed.ipv4_mapped)
    if ipv6_prefix == 128:
        return address  # as the server wrote it, as before 0.2.0
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

    Both middlewares build the same view, so one key function serves ASGI and WSGI apps alike:

        API_KEYS = {"demo-key-alice": "alice"}  # issued key -> customer

        def customer_or_ip(request: RequestView) -> str:
            customer = API_KEYS.get(request.header("x-api-key"))
            return f"customer:{customer}" if customer else f"ip:{request.client or 'unknown'}"

    Headers are written by the client: accept only keys you issued, and prefix each kind, or a
    client could send a new key per request (a fresh bucket each time) or name another
    client's key or address and empty that bucket.

    Attributes:
        method: the request method, upper case (``"GET"`` for a WebSocket handshake).
        scheme: ``"http"``, ``"https"``, ``"ws"`` or ``"wss"``.
        path: the decoded path within the app, without the query string: under ASGI without
            ``root_path``, under WSGI ``PATH_INFO`` (without the mount point ``SCRIPT_NAME``).
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
