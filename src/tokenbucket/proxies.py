"""Client addresses behind reverse proxies: a key function that trusts only the proxies you name.

Behind a proxy or load balancer every request comes from the proxy's address, so the default key
(the peer address) would put all clients in one bucket. The proxy reports the real client in
``X-Forwarded-For`` or ``Forwarded`` (RFC 7239), and
[`TrustedProxyKey`][tokenbucket.proxies.TrustedProxyKey] reads it, safely.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Iterator, List, Optional, Union

from ._core.validate import show
from ._http.request import (
    DEFAULT_IPV6_PREFIX,
    UNKNOWN_CLIENT,
    RequestView,
    check_ipv6_prefix,
    ipv6_key,
)

__all__ = ["TrustedProxyKey"]

_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_HEADERS = ("x-forwarded-for", "forwarded")


class TrustedProxyKey:
    """A key function: the client address as reported by your own proxies.

    Warning:
        ``X-Forwarded-For`` and ``Forwarded`` are ordinary request header fields: any client can
        send them, with any value. Trusting them blindly lets every client choose its own bucket,
        to evade the limit or to exhaust someone else's. This key believes them only as far as
        your proxies vouch for them. If the peer is not one of the ``trusted`` proxies, the
        fields are ignored and the peer address is the key. If it is, the list is read from
        right to left (each proxy appends the address it saw): entries that are themselves
        trusted proxies are skipped, and the first one that is not is the client. Entries
        further left were written by the client and are never read. List every proxy in front
        of the app, and nothing else: a trusted network that includes client addresses lets
        those clients forge the header.

        Under WSGI, ``X-Forwarded-For`` and ``X_Forwarded_For`` are the same environ variable,
        ``HTTP_X_FORWARDED_FOR``, and wsgiref joins them: behind a proxy that forwards header
        names with underscores, a client's ``X_Forwarded_For`` can land to the right of the
        proxy's entry and choose the key. Prefer ``header="forwarded"`` (it has no underscore
        twin), serve behind a proxy that drops such names (nginx does by default:
        ``underscores_in_headers off``), and never use wsgiref in production.

    An entry that is not an IP address (``unknown``, an obfuscated ``_name``, garbage) stops the
    walk: the address of the trusted proxy that reported it is the key. ``Forwarded`` is parsed
    from the right as well, element by element and only as far as the walk goes, so nothing a
    client writes (an unclosed quote, a stray separator) changes how the proxies' elements
    read; a malformed element stops the walk like garbage. A proxy that reports a
    port (``203.0.113.7:4711``, ``"[2001:db8::1]:4711"``) is understood, and so is a ``for=``
    address left unquoted (``for=2001:db8::1``, ``for=192.0.2.1:80``, as
    ``proxy_set_header Forwarded "for=$remote_addr"`` writes it); keys are normalised
    addresses without ports, IPv4-mapped IPv6 addresses as IPv4, and an IPv6 client is keyed by
    its network of ``ipv6_prefix`` bits (``2001:db8:0:100::/56``), as the default key does.

    Args:
        trusted: addresses and networks of your proxies: ``"10.0.0.0/8"``, ``"127.0.0.1"``,
            ``"::1"``, or :mod:`ipaddress` objects. The string ``"unix"`` trusts requests that
            carry no peer address (a proxy on a Unix socket).
        header: ``"x-forwarded-for"`` (default) or ``"forwarded"``.
        ipv6_prefix: how many leading bits of an IPv6 client address make its key (default 56,
            as the middlewares' default key: one subscriber holds a whole /56 or /64); 128 keys
            each address alone. Trusted proxies are matched by their full address regardless.

    Examples:
        >>> from tokenbucket.proxies import TrustedProxyKey
        >>> key = TrustedProxyKey(["10.0.0.0/8"])
        >>> key.client_address("10.0.0.2", "198.51.100.9, 203.0.113.7, 10.0.0.1")
        '203.0.113.7'
        >>> key.client_address("192.0.2.1", "203.0.113.7")  # not from a trusted proxy
        '192.0.2.1'

    Pass it as ``key=`` to either middleware.
    """

    __slots__ = ("_header", "_ipv6_prefix", "_networks", "_unix")

    def __init__(
        self,
        trusted: Iterable[Union[str, _Address, _Network]],
        *,
        header: str = "x-forwarded-for",
        ipv6_prefix: int = DEFAULT_IPV6_PREFIX,
    ) -> None:
        if isinstance(trusted, (str, bytes)):
            raise TypeError(
                f"'trusted' must be a list of addresses or networks, got {show(trusted)}"
            )
        networks: List[_Network] = []
        unix = False
        for entry in trusted:
            if entry == "unix":
                unix = True
                continue
            if isinstance(entry, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
                networks.append(ipaddress.ip_network(entry))
            elif isinstance(entry, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                networks.append(entry)
            elif isinstance(entry, str):
                try:
                    networks.append(ipaddress.ip_network(entry.strip()))
                except ValueError:
                    raise ValueError(
                        f"'trusted' entries must be IP addresses or networks, got {show(entry)}"
                    ) from None
            else:
                raise TypeError(
                    f"'trusted' entries must be str or ipaddress objects, got {show(entry)}"
                )
        if not networks and not unix:
            raise ValueError("'trusted' must name at least one proxy address or network")
        if not isinstance(header, str) or header.lower() not in _HEADERS:
            raise ValueError(
                f"'header' must be 'x-forwarded-for' or 'forwarded', got {show(header)}"
            )
        self._networks = tuple(networks)
        self._unix = unix
        self._header = header.lower()
        self._ipv6_prefix = check_ipv6_prefix(ipv6_prefix)

    def __call__(self, request: RequestView) -> str:
        """Return the bucket key for ``request``: its client address."""
        return self.client_address(request.client, request.header(self._header))

    def client_address(self, peer: Optional[str], field: Optional[str]) -> str:
        """Return the client address for a request from ``peer`` carrying header value ``field``.

        ``peer`` is the address the server reports (None or ``""`` if none); ``field`` the value
        of the configured header (None if absent; repeated fields joined with commas).
        """
        if not peer:
            if not self._unix:
                return UNKNOWN_CLIENT
            current = UNKNOWN_CLIENT
        else:
            address = _parse(peer)
            if address is None:
                return peer
            current = self._key(address)
            if not self._trusts(address):
                return current
        if not field:
            return current
        hops = _forwarded_for(field) if self._header == "forwarded" else reversed(field.split(","))
        for hop in hops:
            address = _parse(hop) if hop is not None else None
            if address is None:
                return current  # the trusted proxy to the right reported no usable address
            current = self._key(address)
            if not self._trusts(address):
                return current
        return current  # every hop is a trusted proxy: the leftmost is the client

    def _key(self, address: _Address) -> str:
        if isinstance(address, ipaddress.IPv6Address):
            return ipv6_key(address, self._ipv6_prefix)
        return str(address)

    def _trusts(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def __repr__(self) -> str:
        trusted = [str(network) for network in self._networks] + (["unix"] if self._unix else [])
        prefix = (
            "" if self._ipv6_prefix == DEFAULT_IPV6_PREFIX else f", ipv6_prefix={self._ipv6_prefix}"
        )
        return f"TrustedProxyKey({trusted!r}, header={self._header!r}{prefix})"


def _parse(text: str) -> Optional[_Address]:
    """Parse one hop (``addr``, ``addr:port``, ``[v6]``, ``[v6]:port``), or None."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# One parameter of a Forwarded element, ``name=value``, spelled backwards (see `_forwarded_for`):
# the value (a token, or a quoted string without escapes, or an unquoted address with colons or
# brackets), "=", the name. Spaces around "=" and ";" are tolerated, as before.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# RFC 7239 wants ``for="[2001:db8::1]"`` and ``for="192.0.2.1:80"`` quoted, but a proxy set up as
# ``proxy_set_header Forwarded "for=$remote_addr"`` writes them bare. Accepted for ``for`` only:
# hex digits, ".", ":", "[" and "]" hold none of the field's separators, so such a value cannot
# change where an element or a pair ends.
_BARE_ADDRESS = r"[0-9A-Fa-f.:\[\]]+"
_PAIR_REVERSED = re.compile(
    rf'[ \t]*(?:({_TOKEN})|"([^"\\]*)"|({_BARE_ADDRESS}))[ \t]*=[ \t]*({_TOKEN})[ \t]*'
)


def _forwarded_for(field: str) -> Iterator[Optional[str]]:
    """Yield the ``for=`` value of each element of a ``Forwarded`` field, from the right.

    None for an element without one, and, last, for an element that is not well-formed. Only the
    elements the walk asks for are read: the text a client wrote to the left of what the trusted
    proxies appended is never parsed, so nothing in it (an unclosed quote, a stray separator)
    can change how their elements are read. The field is read backwards, element by element,
    which is exact for the elements proxies write: ``name=value`` pairs joined with ``;``, values
    tokens or quoted strings without backslash escapes (addresses, ports, ``_obfuscated`` names).
    An element outside that grammar (escapes included) is malformed: it ends the walk.
    """
    text = field[::-1]
    end = len(text)
    position = 0
    while True:
        value: Optional[str] = None
        while True:  # one element: pairs separated by ";" (empty ones allowed), up to "," or end
            while position < end and text[position] in " \t":
                position += 1
            if position == end or text[position] == ",":
                break
            if text[position] == ";":
                position += 1
                continue
            match = _PAIR_REVERSED.match(text, position)
            if match is None:
                yield None  # malformed: nothing to its left can be read reliably
                return
            position = match.end()
            is_for = match.group(4).lower() == "rof"  # "for", backwards
            if match.group(3) is not None and not is_for:
                yield None  # a bare address is only understood as a for= value
                return
            if value is None and is_for:
                value = (match.group(1) or match.group(2) or match.group(3) or "")[::-1]
            if position < end and text[position] not in ",;":
                yield None
                return
        yield value
        if position == end:
            return
        position += 1  # the ","
