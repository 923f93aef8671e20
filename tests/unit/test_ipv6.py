"""IPv6 clients are keyed by network (a /56 by default), so rotating addresses gains nothing."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenbucket._http import DEFAULT_IPV6_PREFIX, client_key
from tokenbucket.proxies import TrustedProxyKey


def _network(address: str, bits: int) -> str:
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


@pytest.mark.parametrize("hook", [False, True], ids=["fast-path", "full-path"])
def test_rotating_addresses_within_a_56_share_one_bucket(make, hook):
    """Issue 9, item 3: each IPv6 address had its own bucket; a subscriber with a /56 could
    send from 2**72 of them. Now 8 requests from 8 addresses of one /56 get the limit, 3."""
    options = {"on_decision": lambda view, key, decision: None} if hook else {}
    h = make(**options)
    statuses = [h.request(client=f"2001:db8:0:1{i:x}{i:x}::{i + 1}").status for i in range(8)]
    assert statuses == [200, 200, 200] + [429] * 5
    assert h.registry.tokens("2001:db8:0:100::/56") == 0.0
    # Another /56 is another subscriber; IPv4 addresses are keyed as before.
    assert h.request(client="2001:db8:0:200::1").status == 200
    assert h.request(client="203.0.113.7").status == 200
    assert h.registry.tokens("203.0.113.7") == 2.0
    assert h.request(client="203.0.113.8").status == 200
    assert h.registry.tokens("203.0.113.8") == 2.0


@pytest.mark.parametrize("hook", [False, True], ids=["fast-path", "full-path"])
@pytest.mark.parametrize("bits", [56, 128])
def test_ipv4_mapped_addresses_share_the_ipv4_bucket(make, hook, bits):
    """Review item 6: ``::ffff:1.2.3.4``, ``::FFFF:1.2.3.4``, ``::ffff:0102:0304`` and
    ``1.2.3.4`` were four buckets under the default key (TrustedProxyKey gave ``1.2.3.4``)."""
    options = {"on_decision": lambda view, key, decision: None} if hook else {}
    h = make(ipv6_prefix=bits, **options)
    spellings = ["::ffff:1.2.3.4", "::FFFF:1.2.3.4", "::ffff:0102:0304", "1.2.3.4"]
    assert [h.request(client=text).status for text in spellings] == [200, 200, 200, 429]
    assert h.registry.tokens("1.2.3.4") == 0.0
    assert client_key("::ffff:0102:0304", bits) == "1.2.3.4"


@pytest.mark.parametrize("bits", [128, 64])
def test_the_prefix_is_an_option(make, bits):
    """ipv6_prefix=128 keeps one bucket per address (the old behaviour); 64 groups by /64."""
    h = make(ipv6_prefix=bits)
    for _ in range(3):
        assert h.request(client="2001:db8::1").status == 200
    assert h.request(client="2001:db8::1").status == 429
    assert h.request(client="2001:db8::2").status == (200 if bits == 128 else 429)
    expected = "2001:db8::1" if bits == 128 else "2001:db8::/64"
    assert h.registry.tokens(expected) == 0.0


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("56", TypeError),
        (56.0, TypeError),
        (True, TypeError),
        (None, TypeError),
        (-1, ValueError),
        (129, ValueError),
    ],
)
def test_bad_prefix_is_refused(make, value, error):
    """The option is an int from 0 to 128; anything else raises, naming it and the value."""
    message = rf"^'ipv6_prefix' must be an int from 0 to 128, got {value!r}$"
    with pytest.raises(error, match=message.replace("(", r"\(").replace(".", r"\.")):
        make(ipv6_prefix=value)
    with pytest.raises(error, match=r"^'ipv6_prefix' must be an int from 0 to 128"):
        TrustedProxyKey(["10.0.0.0/8"], ipv6_prefix=value)


@given(address=st.ip_addresses(v=6), bits=st.integers(0, 128))
def test_key_is_the_network(address: ipaddress.IPv6Address, bits: int) -> None:
    """Any IPv6 address is keyed by its network of `bits` bits, by the default key and by
    TrustedProxyKey alike (at 128, by the address as the server wrote it); an IPv4-mapped one
    by its IPv4 address."""
    text = address.exploded if bits % 2 else str(address)
    key = TrustedProxyKey(["10.0.0.0/8"], ipv6_prefix=bits)
    if address.ipv4_mapped is not None:
        assert client_key(text, bits) == str(address.ipv4_mapped)
        assert client_key(text.upper(), bits) == str(address.ipv4_mapped)
        assert key.client_address("10.0.0.1", text) == str(address.ipv4_mapped)
    elif bits == 128:
        assert client_key(text, bits) == text
        assert key.client_address("10.0.0.1", text) == str(address)
    else:
        assert client_key(text, bits) == _network(str(address), bits)
        assert key.client_address("10.0.0.1", text) == _network(str(address), bits)
        assert key.client_address(text, None) == _network(str(address), bits)  # as the peer


@given(address=st.ip_addresses(v=4))
def test_ipv4_keys_are_unchanged(address: ipaddress.IPv4Address) -> None:
    assert client_key(str(address)) == str(address)
    assert client_key(str(address), 0) == str(address)
    assert DEFAULT_IPV6_PREFIX == 56


def test_non_addresses_are_keys_as_they_are() -> None:
    assert client_key("testclient") == "testclient"
    assert client_key("not:an:address") == "not:an:address"
    assert client_key(None) == client_key("") == "unknown"
