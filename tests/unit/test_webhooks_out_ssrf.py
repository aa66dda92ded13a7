"""The SSRF guard: which addresses a webhook may reach, URL rules, and checks after name resolution."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from orderstream.webhooks_out.ssrf import TargetRefused, blocked_reason, check_url_syntax, resolve_target


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "169.254.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "192.0.0.8",
        "192.0.2.10",  # documentation ranges
        "198.51.100.7",
        "203.0.113.5",
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",  # link-local
        "fc00::1",  # unique-local
        "fd12:3456::1",
        "ff02::1",  # multicast
        "2001:db8::1",  # documentation
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "fd00:ec2::254",  # AWS IPv6 metadata
    ],
)
def test_blocked(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "151.101.1.69", "2606:4700:4700::1111", "2a00:1450:4001::200e"],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_metadata_reason_is_named() -> None:
    assert blocked_reason(ipaddress.ip_address("169.254.169.254")) == "cloud metadata address"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http:///nohost",
        "https://user:pass@example.com/hook",
        "https://example.com/hook#frag",
        "not a url",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(TargetRefused) as err:
        check_url_syntax(url)
    assert err.value.code == "bad_url"


def resolver_for(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    """A resolver seam: names mapped without DNS; unknown names do not resolve."""
    calls: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://internal.pos.test/hook",  # resolves to a private address
        "https://mixed.pos.test/hook",  # one public and one private address: refused
    ],
)
def test_private_targets_are_refused_including_after_resolution(url: str) -> None:
    resolve = resolver_for({"internal.pos.test": ["10.0.0.7"], "mixed.pos.test": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(TargetRefused) as err:
        resolve_target(url, allow_private=False, resolver=resolve)
    assert err.value.code == "blocked_address"


def test_unresolvable_names_are_refused() -> None:
    with pytest.raises(TargetRefused) as err:
        resolve_target("https://nowhere.pos.test/hook", allow_private=False, resolver=resolver_for({}))
    assert err.value.code == "unresolvable"


def test_public_target_is_pinned_to_the_checked_address_keeping_the_host() -> None:
    resolve = resolver_for({"pos.example.com": ["93.184.216.34"]})
    target = resolve_target("https://pos.example.com/hooks?x=1", allow_private=False, resolver=resolve)
    assert resolve.calls == ["pos.example.com"]  # type: ignore[attr-defined]  # one lookup, no second for the connect
    assert target.addresses == ("93.184.216.34",)
    assert target.pinned_url("93.184.216.34") == httpx.URL("https://93.184.216.34/hooks?x=1")
    assert target.host_header == "pos.example.com"


def test_host_header_keeps_a_non_default_port_and_ipv6_brackets() -> None:
    target = resolve_target("http://[::1]:8443/h", allow_private=True)
    assert target.host_header == "[::1]:8443"
    assert str(target.pinned_url("::1")) == "http://[::1]:8443/h"


def test_allow_private_lets_development_targets_through() -> None:
    target = resolve_target(
        "http://localhost:9000/h", allow_private=True, resolver=resolver_for({"localhost": ["127.0.0.1"]})
    )
    assert target.addresses == ("127.0.0.1",)
