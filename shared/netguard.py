"""Webhook target safety: parse the URL strictly, resolve once, refuse non-public addresses.

The sender connects only to addresses returned by :func:`resolve`, so what was checked is
what is connected to (no second lookup between the check and the connection).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.special_addresses import refusal

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses the name resolves to, as text; OSError if it does not.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_NETLOC = re.compile(r"(\[[^\[\]]*\]|[^\[\]:]*)(:[0-9]*)?")
_ALLOW_HINT = "(allow it with WEBHOOK_ALLOWED_NETWORKS)"


class UnsafeUrl(ValueError):
    """The URL may not be called: malformed, bad scheme, or a non-public address."""


class Unresolvable(UnsafeUrl):
    """The host name does not resolve (now): refused when saved, retried when delivering."""


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL; ``host`` is lower-case ASCII, an IPv6 literal without brackets."""

    scheme: str
    host: str
    port: int
    target: str  # path and query, as sent on the request line

    @property
    def authority(self) -> str:
        """The Host header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs, e.g. ``127.0.0.0/8,10.0.0.0/8``."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def parse_url(url: str) -> Target:
    """The URL's parts, or :class:`UnsafeUrl` naming what is wrong (never another error)."""
    if not isinstance(url, str) or not url.isascii() or re.search(r"[\x00-\x20\x7f\\]", url):
        raise UnsafeUrl(
            "url: must be ASCII without spaces, control characters or backslashes "
            "(percent-encode them; write international host names in their xn-- form)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"url: not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("url: must be an http or https URL")
    if "@" in parts.netloc:
        raise UnsafeUrl("url: must not contain a user name or password (user@host)")
    if not _NETLOC.fullmatch(parts.netloc):
        raise UnsafeUrl("url: the host must be a name, an IPv4 address or [an IPv6 address]")
    if port == 0:
        raise UnsafeUrl("url: port must be a number from 1 to 65535")
    host = _host(parts.netloc, parts.hostname or "")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


def _host(netloc: str, host: str) -> str:
    if not host:
        raise UnsafeUrl("url: has no host")
    if netloc.startswith("["):
        if "%" in host:
            raise UnsafeUrl("url: IPv6 zone ids are not allowed")
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError as exc:
            raise UnsafeUrl(f"url: [{host}] is not an IPv6 address") from exc
    name = host.removesuffix(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise UnsafeUrl(f"url: {host!r} is not a valid host name")
    return host


def checked(host: str, found: Iterable[str], allowed: Sequence[Network]) -> tuple[Address, ...]:
    """The distinct addresses ``host`` resolved to, if every one may be called."""
    addresses: list[Address] = []
    for text in found:
        try:
            address = ipaddress.ip_address(text)
        except ValueError as exc:
            raise Unresolvable(f"url: {host} resolved to {text!r}, not an address") from exc
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise Unresolvable(f"url: host {host} does not resolve")
    for address in addresses:
        why = refusal(address, allowed)
        if why is not None:
            subject = f"{host} is" if host == str(address) else f"{host} resolves to {address},"
            raise UnsafeUrl(f"url: {subject} {why} {_ALLOW_HINT}")
    return tuple(addresses)


async def resolve(
    host: str, port: int, allowed: Sequence[Network], resolver: Resolver
) -> tuple[Address, ...]:
    """Resolve ``host`` once and check every address: what to connect to, in order."""
    if _literal(host):
        return checked(host, [host], allowed)
    try:
        found = await resolver(host, port)
    except (OSError, UnicodeError) as exc:
        raise Unresolvable(f"url: host {host} does not resolve ({exc})") from exc
    return checked(host, found, allowed)


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), run off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url(url: str, allowed: Iterable[Network] = ()) -> None:
    """Raise :class:`UnsafeUrl` unless the URL is well-formed and every address is allowed.

    Blocking (it resolves the name): run it in a thread. Delivery does not rely on this
    check; the sender resolves and checks again for every connection it opens.
    """
    target = parse_url(url)
    found = [target.host]
    if not _literal(target.host):
        try:
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise Unresolvable(f"url: host {target.host} does not resolve ({exc})") from exc
        found = [str(info[4][0]) for info in infos]
    checked(target.host, found, tuple(allowed))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
