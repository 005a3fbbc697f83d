"""SSRF guard for webhook URLs, shared by the API (refuse at submit: 422) and the webhook worker
(re-check on every attempt and connect to the checked address). Standard library only.

A URL passes when its scheme is `https` (or `http` to an allow-listed network), it carries no
credentials, and every address its host resolves to is globally routable, or inside one of the
networks in `LANTERN_WEBHOOK_ALLOWED_NETWORKS`. Refused: loopback, private (RFC 1918), link-local
(incl. the 169.254.169.254 metadata address), CGNAT 100.64/10, ULA fc00::/7, multicast,
unspecified, reserved, documentation ranges, and IPv6 forms that embed an IPv4 address
(IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, Teredo, NAT64 64:ff9b::/96) unless the embedded
address itself passes. Numeric hosts in odd notations (`0x7f.1`, `2130706433`) are resolved by
getaddrinfo like any name, so they are checked as the address they mean.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NAT64 = ipaddress.ip_network("64:ff9b::/96")
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class UnsafeURL(ValueError):
    """The URL may not be called; the message says why (shown to the caller in a 422)."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    address: str  # the checked address to connect to
    path: str  # path and query


def parse_networks(spec: str | None) -> list[IPNetwork]:
    """`"10.0.0.0/8, 127.0.0.1/32"` -> networks; an empty or missing spec allows none."""
    out: list[IPNetwork] = []
    for part in (spec or "").replace(";", ",").split(","):
        if part.strip():
            out.append(ipaddress.ip_network(part.strip(), strict=False))
    return out


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    # IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks)
    if int(addr) >> 32 == 0 and int(addr) > 1:
        return ipaddress.IPv4Address(int(addr))
    return None


def is_public(addr: IPAddress) -> bool:
    """Globally routable, and so is any IPv4 address embedded in it."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_v4(addr)
        if inner is not None:
            return is_public(inner)
        if addr.scope_id:
            return False
    if addr in CGNAT:
        return False
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_link_local
                                   or addr.is_loopback or addr.is_private or addr.is_unspecified)


def _allowed(addr: IPAddress, networks: list[IPNetwork]) -> bool:
    return any(addr.version == n.version and addr in n for n in networks)


def check_url(url: str, allowed_networks: list[IPNetwork], resolve=socket.getaddrinfo) -> Target:
    """Resolve and check `url`; the Target to connect to, or UnsafeURL saying why not."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise UnsafeURL(f"scheme {scheme!r} is not allowed; use https")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in the URL are not allowed")
    host = parts.hostname
    if not host:
        raise UnsafeURL("the URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("the port is invalid") from None
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise UnsafeURL(f"the host {host!r} does not resolve ({e})") from None
    addresses = []
    for info in infos:
        raw = str(info[4][0]).split("%", 1)[0]
        addresses.append(ipaddress.ip_address(raw))
    if not addresses:
        raise UnsafeURL(f"the host {host!r} has no address")
    for addr in addresses:
        if _allowed(addr, allowed_networks):
            continue
        if scheme == "http":
            raise UnsafeURL(f"http is allowed only to allow-listed networks; {host} is {addr}; use https")
        if not is_public(addr):
            raise UnsafeURL(f"{host} resolves to {addr}, which is not a public address")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme=scheme, host=host, port=port, address=str(addresses[0]), path=path)
