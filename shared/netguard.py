"""Webhook URL safety: refuse private, loopback and link-local targets unless allowed."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeUrl(ValueError):
    """The URL may not be called: bad scheme, unresolvable, or a non-public address."""


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs, e.g. ``127.0.0.0/8,10.0.0.0/8``."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def check_url(url: str, allowed: Iterable[Network] = ()) -> None:
    """Raise :class:`UnsafeUrl` unless every address the host resolves to is public or allowed.

    Called when an endpoint is saved and again before each delivery (DNS may change).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeUrl("url: must be an http or https URL with a host")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"url: host {parts.hostname!r} does not resolve") from exc
    networks = tuple(allowed)
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if any(address in n for n in networks):
            continue
        if not address.is_global or address.is_multicast:
            raise UnsafeUrl(
                f"url: {parts.hostname} resolves to {address}, a non-public address "
                "(allow it with WEBHOOK_ALLOWED_NETWORKS)"
            )
