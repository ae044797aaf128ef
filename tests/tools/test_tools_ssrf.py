"""The SSRF guard: which addresses tool URLs may reach (parley.tools.ssrf).

Every host here is an IP literal or ``localhost`` (from /etc/hosts), so ``getaddrinfo`` answers
without a DNS query and nothing is sent anywhere: the guard only resolves.
"""

from __future__ import annotations

import ipaddress

import pytest
from parley.tools.ssrf import AddressGuard, ToolRefused, is_public_address

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # the cloud metadata service
    "169.254.1.1",
    "100.64.0.1",  # shared address space (CGNAT)
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::1",
    "[::1]",
    "::",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",  # site-local, deprecated
    "ff02::1",
    "ff0e::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "::127.0.0.1",  # IPv4-compatible, deprecated
    "2130706433",  # 127.0.0.1 as one number
    "0177.0.0.1",  # 127.0.0.1 in octal
    "0x7f.0.0.1",  # and in hex
]

PUBLIC = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("host", REFUSED)
async def test_non_public_addresses_are_refused(host: str) -> None:
    with pytest.raises(ToolRefused, match="PARLEY_TOOLS_ALLOWED_HOSTS"):
        await AddressGuard().resolve(host, 80)


@pytest.mark.parametrize("host", PUBLIC)
async def test_public_addresses_are_accepted(host: str) -> None:
    assert await AddressGuard().resolve(host, 443) == [host]


async def test_the_refusal_says_what_the_address_is() -> None:
    with pytest.raises(ToolRefused, match=r"^169\.254\.169\.254 is a link-local address"):
        await AddressGuard().resolve("169.254.169.254", 80)
    with pytest.raises(ToolRefused, match=r"^localhost resolves to 127\.0\.0\.1 \(loopback\)"):
        await AddressGuard().resolve("localhost", 80)
    with pytest.raises(ToolRefused, match=r"loopback \(IPv4 127\.0\.0\.1\)"):
        await AddressGuard().resolve("::ffff:127.0.0.1", 80)


async def test_a_name_that_resolves_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(ToolRefused):
        await AddressGuard().resolve("localhost", 8080)
    assert await AddressGuard(["localhost"]).resolve("localhost", 8080) == ["127.0.0.1"]
    assert await AddressGuard(["LocalHost."]).resolve("LOCALHOST.", 8080) == ["127.0.0.1"]


async def test_an_allowed_name_does_not_allow_its_address() -> None:
    with pytest.raises(ToolRefused):
        await AddressGuard(["localhost"]).resolve("127.0.0.1", 8080)


@pytest.mark.parametrize(
    ("allowed", "host"),
    [
        ("10.0.0.0/8", "10.1.2.3"),
        ("10.1.2.3", "10.1.2.3"),
        ("127.0.0.0/8", "localhost"),  # the name's address is in the range
        ("127.0.0.0/8", "::ffff:127.0.0.1"),  # the mapped address's IPv4 is in the range
        ("fd00::/8", "fd12:3456::1"),
        ("fe80::/10", "fe80::1"),
        ("::1/128", "[::1]"),
    ],
)
async def test_an_allowed_range_admits_its_addresses(allowed: str, host: str) -> None:
    assert await AddressGuard([allowed]).resolve(host, 80)


async def test_an_allowed_range_admits_nothing_else() -> None:
    guard = AddressGuard(["10.0.0.0/8", "fd00::/8"])
    for host in ("192.168.0.1", "11.0.0.0", "fc00::1", "127.0.0.1"):
        if not is_public_address(ipaddress.ip_address(host)):
            with pytest.raises(ToolRefused):
                await guard.resolve(host, 80)


@pytest.mark.parametrize("entry", ["http://tools.internal", "a b", "*.internal", "10.0.0.0/33/1"])
def test_malformed_allow_list_entries_fail_at_construction(entry: str) -> None:
    with pytest.raises(ValueError, match="not a hostname or CIDR range"):
        AddressGuard([entry])


def test_blank_allow_list_entries_are_ignored() -> None:
    AddressGuard(["", "  ", "tools.internal", " 10.0.0.0/8 "])


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://example.com/", "/relative/path", "http://"],
)
def test_only_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(ToolRefused):
        AddressGuard().check_url(url)


def test_http_and_https_urls_pass_the_url_check() -> None:
    AddressGuard().check_url("https://example.com/tool?x=1")
    AddressGuard().check_url("http://[2606:4700:4700::1111]:8080/")
