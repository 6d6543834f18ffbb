"""Webhook URL parsing and the address policy: what may be called, and why not."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.netguard import (
    Target,
    Unresolvable,
    UnsafeUrl,
    checked,
    parse_networks,
    parse_url,
    resolve,
)
from shared.special_addresses import IPV4_REFUSED, IPV6_REFUSED, IPV6_REFUSED_FIRST, refusal

# Every refused IANA block (and the gaps of Python 3.11's is_global, marked "gap").
REFUSED = [
    ("0.0.0.0", "'this network' (0.0.0.0/8)"),  # noqa: S104 - an address, not a bind
    ("0.1.2.3", "'this network'"),
    ("10.20.30.40", "private (10.0.0.0/8)"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("127.0.0.1", "loopback (127.0.0.0/8)"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local (169.254.0.0/16)"),
    ("172.31.255.255", "private (172.16.0.0/12)"),
    ("192.0.0.9", "IETF protocol assignment"),  # gap: PCP anycast is global in 3.11
    ("192.0.0.171", "IETF protocol assignment"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay anycast"),  # gap
    ("192.168.1.1", "private (192.168.0.0/16)"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.7", "documentation"),
    ("224.0.0.1", "multicast (224.0.0.0/4)"),  # gap: multicast is "global" in 3.11
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved (240.0.0.0/4)"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified (::/128)"),
    ("::1", "loopback (::1/128)"),
    ("64:ff9b::7f00:1", "NAT64 (64:ff9b::/96)"),  # gap
    ("64:ff9b::808:808", "NAT64"),  # refused whatever it embeds
    ("64:ff9b:1::a00:1", "local-use NAT64"),  # gap
    ("::ffff:127.0.0.1", "IPv4-mapped address embedding 127.0.0.1, a loopback"),
    ("::ffff:169.254.169.254", "IPv4-mapped address embedding 169.254.169.254"),
    ("::ffff:0:7f00:1", "IPv4-translated address embedding 127.0.0.1"),  # gap
    ("::127.0.0.1", "IPv4-compatible address embedding 127.0.0.1"),  # gap
    ("::10.0.0.1", "IPv4-compatible address embedding 10.0.0.1"),  # gap
    ("2002:7f00:1::1", "6to4 address embedding 127.0.0.1"),  # gap
    ("2002:a9fe:a9fe::", "6to4 address embedding 169.254.169.254"),  # gap
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo address embedding 192.0.2.45"),
    ("2001:0:7f00:1::ffff:ffff", "Teredo address embedding 127.0.0.1"),
    ("100::1", "discard-only (100::/64)"),
    ("100:0:0:1::1", "dummy (100:0:0:1::/64)"),  # gap
    ("2001:1::1", "IETF protocol assignment (2001::/23)"),
    ("2001:2::1", "IETF protocol assignment"),
    ("2001:20::1", "IETF protocol assignment"),
    ("2001:db8::1", "documentation (2001:db8::/32)"),
    ("3fff::1", "documentation (3fff::/20)"),  # gap
    ("5f00::1", "SRv6 SID"),  # gap
    ("fd00::1", "unique local (fc00::/7)"),
    ("fe80::1", "link-local (fe80::/10)"),
    ("fec0::1", "site-local"),  # gap
    ("ff02::1", "multicast (ff00::/8)"),  # gap
    ("4000::1", "reserved (outside global unicast 2000::/3)"),  # gap
    ("::1:0:0:0", "reserved (outside global unicast"),  # gap
]

PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "100.63.255.255",
    "100.128.0.0",
    "172.32.0.1",
    "192.0.1.1",
    "192.31.196.1",  # AS112
    "198.20.0.1",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2620:4f:8000::1",  # AS112
    "2001:200::1",  # just past 2001::/23
    "::ffff:8.8.8.8",  # mapped: the IPv4 address is what is reached
    "::ffff:0:808:808",
    "2002:808:808::1",  # 6to4 through a public router
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, server and client public
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_special_purpose_addresses_are_refused_with_their_block_named(address, reason):
    why = refusal(ipaddress.ip_address(address))
    assert why is not None
    assert reason in why


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_open_exactly_what_they_list():
    loopback = parse_networks("127.0.0.0/8")
    assert refusal(ipaddress.ip_address("127.0.0.1"), loopback) is None
    assert refusal(ipaddress.ip_address("::ffff:127.0.0.1"), loopback) is None  # same target
    assert refusal(ipaddress.ip_address("::1"), loopback) is not None
    assert refusal(ipaddress.ip_address("10.0.0.1"), loopback) is not None
    nat64 = parse_networks("64:ff9b::/96")
    assert refusal(ipaddress.ip_address("64:ff9b::7f00:1"), nat64) is None
    assert refusal(ipaddress.ip_address("64:ff9b:1::1"), nat64) is not None


def block_edges() -> list[str]:
    tables = (*IPV4_REFUSED, *IPV6_REFUSED_FIRST, *IPV6_REFUSED)
    edges = [str(a) for network, _ in tables for a in (network[0], network[-1])]
    return [*edges, *(a for a, _ in REFUSED), *PUBLIC]


@pytest.mark.parametrize("address", block_edges())
def test_whatever_this_python_calls_non_global_is_refused_apart_from_embedded_public_ipv4(
    address,
):
    parsed = ipaddress.ip_address(address)
    embeds_public = address in PUBLIC and isinstance(parsed, ipaddress.IPv6Address)
    if (not parsed.is_global or parsed.is_multicast) and not embeds_public:
        assert refusal(parsed) is not None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1/x", "url: not a valid URL (Invalid IPv6 URL)"),
        ("http://1.1.1.1:99999/", "url: not a valid URL (Port out of range 0-65535)"),
        ("http://1.1.1.1:http/", "url: not a valid URL (Port could not be cast"),
        ("http://1.1.1.1:0/", "url: port must be a number from 1 to 65535"),
        ("http:///hook", "url: has no host"),
        ("http://", "url: has no host"),
        ("http://:80/", "url: has no host"),
        ("", "url: must be an http or https URL"),
        ("ftp://example.com/", "url: must be an http or https URL"),
        ("file:///etc/passwd", "url: must be an http or https URL"),
        ("http://evil@127.0.0.1/", "url: must not contain a user name or password"),
        ("http://user:pw@example.com/", "url: must not contain a user name or password"),
        ("http://example.com\\@127.0.0.1/", "url: must be ASCII without spaces"),
        ("http://exa mple.com/", "url: must be ASCII without spaces"),
        ("http://example.com/\x00", "url: must be ASCII without spaces"),
        ("http://bücher.example/", "url: must be ASCII"),
        ("http://[::1]x/", "url: the host must be a name, an IPv4 address or [an IPv6"),
        ("http://[v1.fe]/", "url: [v1.fe] is not an IPv6 address"),
        ("http://[fe80::1%25eth0]/", "url: IPv6 zone ids are not allowed"),
        ("http://-bad-.example/", "url: '-bad-.example' is not a valid host name"),
        ("http://a..b/", "url: 'a..b' is not a valid host name"),
        ("http://%31%32%37.0.0.1/", "is not a valid host name"),
        (f"http://{'a' * 64}.example/", "is not a valid host name"),
    ],
)
def test_malformed_urls_are_unsafe_with_a_reason(url, reason):
    with pytest.raises(UnsafeUrl) as caught:
        parse_url(url)
    assert str(caught.value).startswith("url: ")
    assert reason in str(caught.value)


def test_a_url_keeps_its_name_port_path_and_query_for_the_request():
    assert parse_url("https://Hooks.Example.com:8443/a/b?x=1&y#frag") == Target(
        "https", "hooks.example.com", 8443, "/a/b?x=1&y"
    )
    assert parse_url("https://hooks.example.com:8443").authority == "hooks.example.com:8443"
    assert parse_url("https://hooks.example.com:443/").authority == "hooks.example.com"
    v6 = parse_url("http://[2606:4700:4700:0::1111]:8080")
    assert (v6.host, v6.target, v6.authority) == (
        "2606:4700:4700::1111",
        "/",
        "[2606:4700:4700::1111]:8080",
    )


@given(st.text(max_size=60) | st.builds(lambda s: "http://" + s, st.text(max_size=40)))
def test_any_string_parses_or_is_unsafe_never_another_error(text):
    with contextlib.suppress(UnsafeUrl):
        parse_url(text)


class Answers:
    def __init__(self, *found: str) -> None:
        self.found = found
        self.asked = 0

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked += 1
        return self.found


async def test_a_name_is_refused_when_any_of_its_addresses_is_refused():
    resolver = Answers("93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "::1")
    with pytest.raises(UnsafeUrl, match=r"example\.com resolves to ::1, a loopback"):
        await resolve("example.com", 443, (), resolver)
    assert resolver.asked == 1


async def test_the_checked_addresses_are_returned_once_each_in_the_resolvers_order():
    resolver = Answers("2606:4700::1", "1.1.1.1", "2606:4700::1")
    addresses = await resolve("one.example", 80, (), resolver)
    assert [str(a) for a in addresses] == ["2606:4700::1", "1.1.1.1"]


async def test_an_address_literal_is_checked_without_a_lookup():
    resolver = Answers("1.1.1.1")
    with pytest.raises(UnsafeUrl, match=r"url: 169\.254\.169\.254 is a link-local"):
        await resolve("169.254.169.254", 80, (), resolver)
    assert [str(a) for a in await resolve("8.8.8.8", 80, (), resolver)] == ["8.8.8.8"]
    assert resolver.asked == 0


async def test_a_lookup_that_fails_or_finds_nothing_is_unresolvable():
    async def failing(host: str, port: int) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(Unresolvable, match="does not resolve"):
        await resolve("nowhere.example", 80, (), failing)
    with pytest.raises(Unresolvable, match="does not resolve"):
        await resolve("nowhere.example", 80, (), Answers())
    with pytest.raises(Unresolvable, match="not an address"):
        checked("odd.example", ["not-an-ip"], ())
