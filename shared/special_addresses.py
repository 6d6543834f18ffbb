"""Which IP addresses a webhook may not reach: IANA special-purpose blocks, explicitly.

The tables follow the IANA IPv4 and IPv6 Special-Purpose Address Registries: every block
that is not globally reachable, plus multicast, broadcast, reserved space and everything
outside IPv6 global unicast (2000::/3). ``ipaddress.is_global`` is not used: on Python 3.11 it
calls NAT64, 6to4 and IPv4-translated/compatible forms of 127.0.0.1 global, as well as
multicast, site-local, 3fff::/20 and unallocated IPv6 space. A few globally reachable
anycast entries inside refused blocks (192.0.0.9, 192.0.0.10, 2001:1::1-3, AMT, ORCHIDv2) are
refused too: no webhook receiver lives there.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _table(*rows: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(cidr), name) for cidr, name in rows)


IPV4_REFUSED = _table(
    ("0.0.0.0/8", "'this network'"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast (deprecated)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)

# Checked before the embedded IPv4 forms: these are refused whatever they embed.
IPV6_REFUSED_FIRST = _table(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b::/96", "NAT64"),
    ("64:ff9b:1::/48", "local-use NAT64"),
)

IPV6_REFUSED = _table(
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignment"),  # benchmarking, ORCHID, AMT, anycast
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 SID"),
    ("fc00::/7", "unique local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local (deprecated)"),
    ("ff00::/8", "multicast"),
)

_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")


def refusal(address: Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why a webhook may not connect to ``address`` (e.g. "a loopback (127.0.0.0/8) address").

    None when it may: a public address, or one inside an ``allowed`` network.
    """
    if any(address in network for network in allowed):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _named(address, IPV4_REFUSED)
    first = _named(address, IPV6_REFUSED_FIRST)
    if first is not None:
        return first
    embedded = _embedded(address)
    if embedded is not None:
        kind, ipv4s = embedded
        for ipv4 in ipv4s:
            why = refusal(ipv4, allowed)
            if why is not None:
                return f"{kind} address embedding {ipv4}, {why}"
        return None
    named = _named(address, IPV6_REFUSED)
    if named is not None:
        return named
    if address not in _GLOBAL_UNICAST:
        return "a reserved (outside global unicast 2000::/3) address"
    return None


def _named(address: Address, table: tuple[tuple[Network, str], ...]) -> str | None:
    for network, name in table:
        if address in network:
            return f"a {name} ({network}) address"
    return None


def _embedded(
    address: ipaddress.IPv6Address,
) -> tuple[str, tuple[ipaddress.IPv4Address, ...]] | None:
    """The kind of IPv4-embedding address this is and the IPv4 addresses it carries.

    These reach (mapped, translated, compatible) or are routed through (6to4 router,
    Teredo server and client) the embedded IPv4 addresses, so those decide.
    """
    value = int(address)
    low = ipaddress.IPv4Address(value & 0xFFFF_FFFF)
    if address in _MAPPED:
        return "an IPv4-mapped", (low,)
    if address in _TRANSLATED:
        return "an IPv4-translated", (low,)
    if address in _COMPATIBLE:
        return "an IPv4-compatible", (low,)
    if address.sixtofour is not None:
        return "a 6to4", (address.sixtofour,)
    if address.teredo is not None:
        return "a Teredo", address.teredo
    return None
