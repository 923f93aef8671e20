"""TrustedProxyKey: forwarded headers believed only as far as trusted proxies vouch for them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import List, Optional, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket.proxies import TrustedProxyKey

CLIENT = "203.0.113.7"


class TestXForwardedFor:
    key = TrustedProxyKey(["10.0.0.0/8", "127.0.0.1"])

    @pytest.mark.parametrize(
        ("peer", "field", "expected"),
        [
            # From an untrusted peer the header is ignored, whatever it says.
            ("192.0.2.1", "198.51.100.1", "192.0.2.1"),
            ("192.0.2.1", None, "192.0.2.1"),
            # From a trusted proxy: the rightmost entry that is not a trusted proxy.
            ("10.0.0.2", CLIENT, CLIENT),
            ("10.0.0.2", f"{CLIENT}, 10.0.0.1", CLIENT),
            ("10.0.0.2", f"{CLIENT},10.0.0.1,10.9.9.9", CLIENT),
            ("127.0.0.1", f"{CLIENT}", CLIENT),
            # Spoofed entries to the left of the real client are never read.
            ("10.0.0.2", f"1.1.1.1, 10.0.0.5, {CLIENT}, 10.0.0.1", CLIENT),
            ("10.0.0.2", f"spoofed, {CLIENT}", CLIENT),
            # A trusted proxy without the header, or with an empty one, is itself the client.
            ("10.0.0.2", None, "10.0.0.2"),
            ("10.0.0.2", "", "10.0.0.2"),
            # Every entry trusted: the leftmost one.
            ("10.0.0.2", "10.0.0.7, 10.0.0.1", "10.0.0.7"),
            # Garbage reported by a trusted proxy: the proxy that reported it.
            ("10.0.0.2", "unknown", "10.0.0.2"),
            ("10.0.0.2", f"{CLIENT}, garbage, 10.0.0.3", "10.0.0.3"),
            ("10.0.0.2", " , ", "10.0.0.2"),
            # Ports and IPv6, normalised.
            ("10.0.0.2", f"{CLIENT}:4711", CLIENT),
            ("10.0.0.2", "[2001:db8::1]:4711", "2001:db8::/56"),
            ("10.0.0.2", "2001:DB8:0:0::1", "2001:db8::/56"),
            ("10.0.0.2", "2001:db8:0:1ff:a:b:c:d", "2001:db8:0:100::/56"),
            ("10.0.0.2", "[2001:db8::1", "10.0.0.2"),
            ("::ffff:10.0.0.2", CLIENT, CLIENT),
            ("10.0.0.2", "::ffff:203.0.113.7", CLIENT),
        ],
    )
    def test_walk_right_to_left(self, peer, field, expected):
        """Entries are read right to left, skipping trusted proxies, only from a trusted peer."""
        assert self.key.client_address(peer, field) == expected

    def test_untrusted_non_ip_peer_is_returned_as_is(self):
        """A peer that is not an address (a test client name) is the key, untouched."""
        assert self.key.client_address("testclient", CLIENT) == "testclient"

    def test_missing_peer(self):
        """Without a peer address (None or "") the key is 'unknown' unless 'unix' is trusted."""
        unix = TrustedProxyKey(["unix"])
        for peer in (None, ""):
            assert self.key.client_address(peer, CLIENT) == "unknown"
            assert unix.client_address(peer, f"1.1.1.1, {CLIENT}") == CLIENT
            assert unix.client_address(peer, None) == "unknown"
        assert unix.client_address("192.0.2.1", CLIENT) == "192.0.2.1"


class TestForwarded:
    key = TrustedProxyKey(["10.0.0.0/8"], header="forwarded")

    @pytest.mark.parametrize(
        ("field", "expected"),
        [
            (f"for={CLIENT}", CLIENT),
            (f"for={CLIENT};proto=https;by=10.0.0.2", CLIENT),
            (f'for="{CLIENT}:4711"', CLIENT),
            ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::/56"),
            (f"for=1.1.1.1, for={CLIENT}, for=10.0.0.1", CLIENT),
            (f"For={CLIENT}", CLIENT),
            (f'for={CLIENT};ext="a,b;c", for=10.0.0.1', CLIENT),
            ("for=unknown", "10.0.0.2"),
            ("for=_hidden", "10.0.0.2"),
            (f"proto=https, for={CLIENT}", CLIENT),
            (f"for={CLIENT}, proto=https", "10.0.0.2"),
            ('for="\\"x"', "10.0.0.2"),
            # Bare addresses (RFC 7239 wants them quoted; naive proxy set-ups write them so).
            ("for=2001:db8:cafe::17", "2001:db8:cafe::/56"),
            ("for=[2001:db8:cafe::17]", "2001:db8:cafe::/56"),
            ("for=[2001:db8:cafe::17]:4711", "2001:db8:cafe::/56"),
            (f"for={CLIENT}:4711", CLIENT),
            (f"for={CLIENT}:4711;proto=https", CLIENT),
            (f"for=1.1.1.1, for={CLIENT}:80, for=[::ffff:10.0.0.1]", CLIENT),
            ("by=2001:db8::1", "10.0.0.2"),  # bare only as a for= value
            ("for=_gw:80", "10.0.0.2"),
            ("for=[2001:db8::1", "10.0.0.2"),
        ],
    )
    def test_forwarded_elements(self, field, expected):
        """RFC 7239 'for=' values: quoted, with ports, IPv6, other parameters ignored."""
        assert self.key.client_address("10.0.0.2", field) == expected


class TestClientTextCannotChangeTheProxiesElements:
    """Issue 9, item 1: an unclosed quote in the client's own element swallowed the element the
    trusted proxy appended, so the client chose its bucket. The field is now read from the
    right, and the walk stops before it reaches anything the client wrote."""

    key = TrustedProxyKey(["127.0.0.1"], header="forwarded")

    @pytest.mark.parametrize(
        "client_part",
        [
            'for=1.2.3.4;x="',
            'for="1.2.3.4',
            'for=1.2.3.4;x="\\',
            "for=1.2.3.4;x=\\",
            '"',
            ";,;=",
            "for=1.2.3.4, for=127.0.0.1",
        ],
    )
    def test_reported_examples(self, client_part):
        for joint in (", ", ","):
            field = f"{client_part}{joint}for=127.0.0.5"
            assert self.key.client_address("127.0.0.1", field) == "127.0.0.5"

    def test_a_client_no_longer_picks_its_bucket(self, make):
        """6 requests through the trusted proxy: 3 pass (the limit), not 6."""
        h = make(key=self.key)
        statuses = [
            h.request(
                client="127.0.0.1", headers={"Forwarded": f'for={i}.2.3.4;x=", for=127.0.0.5'}
            ).status
            for i in range(6)
        ]
        assert statuses == [200, 200, 200, 429, 429, 429]
        assert h.registry.tokens("127.0.0.5") == 0.0

    @pytest.mark.parametrize("form", ["{}", "[{}]", "[{}]:4711"])
    def test_bare_ipv6_clients_are_not_one_bucket(self, make, form):
        """Review item 5: ``proxy_set_header Forwarded "for=$remote_addr"`` writes IPv6 clients
        bare, which was malformed: every IPv6 client got the proxy's bucket. Now each its own."""
        h = make(key=self.key)
        for network in range(3):
            for _ in range(3):
                address = form.format(f"2001:db8:{network}::1")
                response = h.request(client="127.0.0.1", headers={"Forwarded": f"for={address}"})
                assert response.status == 200
        assert h.registry.tokens("127.0.0.1") == 3.0
        assert h.registry.tokens("2001:db8:2::/56") == 0.0

    def test_malformed_element_written_by_a_trusted_hop(self):
        """Every hop trusted up to the client's own element, and that one malformed: the key is
        the last trusted hop, the one that forwarded the malformed element (nearest hop whose
        report could be read). Nothing to its left is read."""
        key = TrustedProxyKey(["10.0.0.0/8"], header="forwarded")
        field = 'for=203.0.113.9, for="10.0.0.7, for=10.0.0.1'
        assert key.client_address("10.0.0.2", field) == "10.0.0.1"


_TRUSTED = ["10.0.0.0/8", "127.0.0.1", "2001:db8:ffff::/48"]
_TRUSTED_NETS = [ipaddress.ip_network(net) for net in _TRUSTED]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _untrusted(address: _Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False  # keys normalise it to IPv4: covered by the examples
    return not any(address in net for net in _TRUSTED_NETS)


_clients = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).filter(_untrusted)
_proxies = st.lists(
    st.one_of(
        st.integers(0, 2**24 - 1).map(lambda n: ipaddress.ip_address(0x0A000000 + n)),
        st.just(ipaddress.ip_address("127.0.0.1")),
        st.integers(0, 2**80 - 1).map(
            lambda n: ipaddress.ip_address(int(ipaddress.ip_address("2001:db8:ffff::")) + n)
        ),
    ),
    min_size=1,
    max_size=4,
)
# Anything a client may write, weighted towards the characters that structure the fields.
_client_text = st.text(alphabet=st.sampled_from('",;=\\[]: \tfor1.2a_')) | st.text()


@st.composite
def _forwarded_element(draw: st.DrawFn, address: _Address) -> str:
    """An element as a proxy writes it: for= the address (quoted if it needs to be, or bare as
    naive set-ups write it), maybe a port, maybe other parameters."""
    port = draw(st.none() | st.integers(1, 65535))
    if draw(st.booleans()):  # bare, as proxy_set_header Forwarded "for=$remote_addr" writes it
        if address.version == 6:
            value = draw(st.sampled_from([str(address), f"[{address}]"]))
            value += "" if port is None else f":{port}" if value.startswith("[") else ""
        else:
            value = str(address) if port is None else f"{address}:{port}"
    elif address.version == 6:
        value = f'"[{address}]{"" if port is None else f":{port}"}"'
    elif port is None:
        value = draw(st.sampled_from([str(address), f'"{address}"']))
    else:
        value = f'"{address}:{port}"'
    pairs = [f"for={value}"]
    others = st.sampled_from(["proto=https", "by=_gw", 'host="a.example"'])
    pairs += draw(st.lists(others, max_size=2, unique=True))
    return ";".join(draw(st.permutations(pairs)))


def _xff_element(address: _Address, port: Optional[int]) -> str:
    if port is None:
        return str(address)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@given(
    client=_clients,
    proxies=_proxies,
    prefix=st.none() | _client_text,
    joints=st.lists(st.sampled_from([", ", ",", " , "]), min_size=5, max_size=5),
    ports=st.lists(st.none() | st.integers(1, 65535), min_size=5, max_size=5),
    data=st.data(),
)
def test_the_key_is_what_the_nearest_untrusted_hop_reported(
    client: _Address,
    proxies: List[_Address],
    prefix: Optional[str],
    joints: List[str],
    ports: List[Optional[int]],
    data: st.DataObject,
) -> None:
    """Whatever the client writes first, when trusted proxies append well-formed elements
    (joined in one field or in separate ones, which the server joins), the key is the address
    the first proxy saw: the nearest untrusted hop. Both headers."""
    # proxies[0] saw the client, each next proxy saw the one before; the last is the peer.
    hops = [client, *proxies[:-1]]
    peer = str(proxies[-1])
    forwarded = [data.draw(_forwarded_element(hop)) for hop in hops]
    xff = [_xff_element(hop, port) for hop, port in zip(hops, ports)]
    for header, elements in (("forwarded", forwarded), ("x-forwarded-for", xff)):
        field = "" if prefix is None else prefix + joints[-1]
        for element, joint in zip(elements, joints):
            field += element + (joint if element is not elements[-1] else "")
        key = TrustedProxyKey(_TRUSTED, header=header, ipv6_prefix=128)
        assert key.client_address(peer, field) == str(client), (header, field)
        grouped = TrustedProxyKey(_TRUSTED, header=header).client_address(peer, field)
        if client.version == 6:
            assert grouped == str(ipaddress.ip_network(f"{client}/56", strict=False))
        else:
            assert grouped == str(client)


class TestAsKeyFunction:
    def test_both_middlewares_use_it(self, make):
        """As key=, it reads the header from the request view under ASGI and WSGI."""
        h = make(key=TrustedProxyKey(["10.0.0.0/8"]))
        headers = {"X-Forwarded-For": f"6.6.6.6, {CLIENT}"}
        for _ in range(3):
            assert h.request(client="10.0.0.2", headers=headers).status == 200
        assert h.request(client="10.0.0.3", headers=headers).status == 429
        assert h.registry.tokens(CLIENT) == 0.0
        # A client connecting directly cannot pick a bucket with the header.
        assert h.request(client=CLIENT, headers={"X-Forwarded-For": "8.8.8.8"}).status == 429
        assert h.registry.tokens("8.8.8.8") == 3.0

    def test_repeated_header_fields_are_joined(self):
        """Two X-Forwarded-For fields (ASGI keeps both; WSGI servers join them) form one list."""
        from tokenbucket._http import RequestView

        view = RequestView(
            "GET",
            "http",
            "/",
            "",
            "10.0.0.2",
            [(b"x-forwarded-for", b"6.6.6.6"), (b"X-Forwarded-For", CLIENT.encode())],
            lambda raw: _join(raw),
        )
        assert TrustedProxyKey(["10.0.0.0/8"])(view) == CLIENT


def _join(raw):
    from tokenbucket._edges.asgi_io import _decode_headers

    return _decode_headers({"headers": raw})


class TestValidation:
    @pytest.mark.parametrize(
        ("trusted", "header", "error", "message"),
        [
            ("10.0.0.0/8", "x-forwarded-for", TypeError, r"^'trusted' must be a list"),
            ([], "x-forwarded-for", ValueError, r"^'trusted' must name at least one proxy"),
            (["10.0.0.1/8"], "x-forwarded-for", ValueError, r"^'trusted' entries must be IP"),
            (["proxy.local"], "x-forwarded-for", ValueError, r"got 'proxy.local'$"),
            ([10], "x-forwarded-for", TypeError, r"^'trusted' entries must be str or ipaddress"),
            (["10.0.0.1"], "x-real-ip", ValueError, r"^'header' must be 'x-forwarded-for' or"),
        ],
    )
    def test_bad_arguments(self, trusted, header, error, message):
        """Bad arguments raise at construction, naming the argument and the value."""
        with pytest.raises(error, match=message):
            TrustedProxyKey(trusted, header=header)

    @pytest.mark.parametrize(
        ("trusted", "header"),
        [
            ("t" * 500, "x-forwarded-for"),
            (["p" * 500], "x-forwarded-for"),
            ([b"1" * 500], "x-forwarded-for"),
            (["10.0.0.1"], "h" * 500),
        ],
    )
    def test_long_values_are_shortened_in_messages(self, trusted, header):
        """A long argument is quoted shortened (as show() does), never whole."""
        with pytest.raises((TypeError, ValueError)) as raised:
            TrustedProxyKey(trusted, header=header)
        assert "..." in str(raised.value)
        assert len(str(raised.value)) < 150

    def test_ipaddress_objects_and_repr(self):
        """ipaddress objects are accepted; the repr lists what is trusted."""
        key = TrustedProxyKey(
            [ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network("fd00::/8"), "unix"],
            header="Forwarded",
        )
        assert (
            repr(key) == "TrustedProxyKey(['10.0.0.1/32', 'fd00::/8', 'unix'], header='forwarded')"
        )
        assert key.client_address("fd00::5", f"for={CLIENT}") == CLIENT


def _keys_seen_by_wsgiref(key: TrustedProxyKey, headers: List[tuple]) -> List[str]:
    """Send one request with ``headers`` (in order) to a real wsgiref server on 127.0.0.1
    behind the WSGI middleware keyed by ``key``; return the keys the middleware used."""
    import http.client
    import threading
    import wsgiref.simple_server

    from tokenbucket import BucketRegistry, Rule
    from tokenbucket.wsgi import RateLimitMiddleware

    keys: List[str] = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    class Quiet(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, *args):
            pass

    limited = RateLimitMiddleware(
        app,
        registry=BucketRegistry(Rule(10, 1.0)),
        key=key,
        on_decision=lambda request, used, decision: keys.append(used),
    )
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, limited, handler_class=Quiet)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
        connection.putrequest("GET", "/")
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        assert connection.getresponse().status == 200
        connection.close()
        thread.join(10)
    finally:
        server.server_close()
    return keys


def test_wsgiref_joins_underscore_headers_into_x_forwarded_for():
    """Review item 2: wsgiref maps ``X_Forwarded_For`` to ``HTTP_X_FORWARDED_FOR`` too and
    appends it to the proxy's value, so behind a proxy that passes underscore headers the
    client writes the rightmost entry. Nothing in WSGI can tell the two apart: the docs warn,
    and ``header="forwarded"`` (no dash, no underscore twin) is not affected."""
    forged = [("X-Forwarded-For", CLIENT), ("X_Forwarded_For", "6.6.6.6")]
    assert _keys_seen_by_wsgiref(TrustedProxyKey(["127.0.0.1"]), forged) == ["6.6.6.6"]
    forwarded = [("Forwarded", f"for={CLIENT}"), ("X_Forwarded_For", "6.6.6.6")]
    key = TrustedProxyKey(["127.0.0.1"], header="forwarded")
    assert _keys_seen_by_wsgiref(key, forwarded) == [CLIENT]
    # The warning is where a reader of either will see it.
    page = (Path(__file__).resolve().parents[2] / "docs" / "proxies.md").read_text()
    for text in (page, TrustedProxyKey.__doc__ or ""):
        assert "X_Forwarded_For" in text
        assert "underscores_in_headers" in text
        assert "wsgiref" in text
