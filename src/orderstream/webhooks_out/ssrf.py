"""The SSRF guard for POS-configured webhook URLs: which targets are allowed, resolved once and pinned."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> every address the name resolves to (a seam: tests map names without DNS)
Resolver = Callable[[str, int], list[str]]

METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
# Not globally reachable, yet not all of them flagged by every Python's ipaddress tables.
_SPECIAL_V4 = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("192.88.99.0/24"),  # 6to4 relay anycast (deprecated)
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class TargetRefused(Exception):
    """A webhook URL that may not be called; `code` says why (bad_url, blocked_address, unresolvable)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def blocked_reason(ip: IPAddress) -> str | None:
    """Why an address may not be a webhook target, or None when it is a public unicast address."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"embeds {embedded} ({inner})" if inner else None
    checks = (
        (ip.is_unspecified, "unspecified address"),
        (ip.is_loopback, "loopback address"),
        (ip.is_link_local, "link-local address"),
        (ip.is_multicast, "multicast address"),
        (isinstance(ip, ipaddress.IPv4Address) and any(ip in n for n in _SPECIAL_V4), "special-purpose address"),
        (ip.is_private, "private address"),
        (ip.is_reserved, "reserved address"),
        (not ip.is_global, "non-public address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for host (IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 zone id
        if addr not in seen:
            seen.append(addr)
    return seen


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: the host as written and the addresses it resolved to (all allowed)."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The Host header the receiver expects (the port only when not the scheme's default)."""
        default = 443 if self.url.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: str) -> httpx.URL:
        """The URL with its host replaced by one checked address, so no second lookup can happen."""
        return self.url.copy_with(host=address)


def check_url_syntax(url: str) -> httpx.URL:
    """Parse a webhook URL: http(s) only, a host, no credentials, no fragment; else TargetRefused."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise TargetRefused("bad_url", f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused("bad_url", "only http and https URLs are allowed")
    if not parsed.host:
        raise TargetRefused("bad_url", "the URL has no host")
    if parsed.userinfo:
        raise TargetRefused("bad_url", "credentials in the URL are not allowed; use the signature")
    if parsed.fragment:
        raise TargetRefused("bad_url", "the URL must not have a fragment")
    if len(url) > 2048:
        raise TargetRefused("bad_url", "the URL is longer than 2048 characters")
    return parsed


def resolve_target(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> Target:
    """Check a URL and every address its host resolves to; the caller connects only to those addresses."""
    parsed = check_url_syntax(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        try:
            addresses = (resolver or system_resolver)(host, port)
        except (OSError, UnicodeError) as exc:
            raise TargetRefused("unresolvable", f"{host} does not resolve: {exc}") from exc
        if not addresses:
            raise TargetRefused("unresolvable", f"{host} does not resolve")
    if not allow_private:
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError as exc:
                raise TargetRefused("blocked_address", f"{host} resolved to a non-address {address!r}") from exc
            reason = blocked_reason(ip)
            if reason is not None:
                raise TargetRefused("blocked_address", f"{host} resolves to {address} ({reason})")
    return Target(url=parsed, host=host, port=port, addresses=tuple(addresses))
