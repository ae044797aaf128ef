"""The SSRF guard: which addresses a tool URL (HTTP tool or MCP server) may reach.

A tool URL comes from an agent's owner, not from the operator, so by default it may only reach
public addresses. Refused: loopback, private (RFC 1918, ULA ``fc00::/7``), link-local
(``169.254.0.0/16``, which holds the cloud metadata address ``169.254.169.254``, and
``fe80::/10``), shared/CGNAT ``100.64.0.0/10``, unspecified, multicast, reserved, IPv6
site-local, and the IPv4 address embedded in IPv4-mapped (``::ffff:a.b.c.d``), NAT64
(``64:ff9b::/96``) and 6to4 (``2002::/16``) addresses is judged as itself. The stdlib
``ipaddress`` flags (``is_global``, ``is_private`` ...) decide; the only range written here is the
NAT64 prefix, which ``ipaddress`` does not unwrap.

The operator lifts the rule with PARLEY_TOOLS_ALLOWED_HOSTS: exact hostnames (``tools.internal``,
compared case-insensitively without a trailing dot) and CIDR ranges or single addresses, IPv4 or
IPv6 (``10.1.0.0/16``, ``fd00::/8``, ``127.0.0.1``). A host is allowed if its name is listed (then
every address it resolves to may be used), or address by address if the address is in a listed
range.

The check is only sound if the connection goes to the address that was checked: see
``parley.tools.transport``, whose network backend calls :meth:`AddressGuard.resolve` for every new
connection and connects to one of the addresses it returned (so a DNS answer that changes between
check and connect, "DNS rebinding", cannot slip a private address in).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import httpx2

__all__ = ["AddressGuard", "ToolRefused", "is_public_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The NAT64 well-known prefix (RFC 6052): the low 32 bits are an IPv4 address.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

#: URL schemes a tool may use.
_SCHEMES = ("http", "https")


class ToolRefused(Exception):
    """A tool URL the guard will not connect to; ``str(exc)`` says why, for the model and logs."""


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 address stands for, else None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` is a public unicast address (see the module docstring for the rule)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return is_public_address(inner)
        if address.is_site_local:
            return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _kind(address: IPAddress) -> str:
    """What sort of non-public address ``address`` is, for messages."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        return f"{_kind(inner)} (IPv4 {inner})"
    for kind in ("loopback", "link_local", "multicast", "unspecified", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return "non-public"


def _normalize_host(host: str) -> str:
    return host.strip().removeprefix("[").removesuffix("]").rstrip(".").lower()


class AddressGuard:
    """Resolves tool hosts and keeps only the addresses a tool may connect to.

    ``allowed`` is PARLEY_TOOLS_ALLOWED_HOSTS split into entries: each is parsed as an IP network
    (``ipaddress.ip_network(entry, strict=False)``, so a bare address is a /32 or /128) and
    otherwise taken as a hostname. An entry that is neither (``http://x``, ``a b``) raises
    ``ValueError`` here, so a typo fails at start-up rather than refusing tools at run time.
    """

    def __init__(self, allowed: Sequence[str] = ()) -> None:
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        hostnames: set[str] = set()
        for entry in (e.strip() for e in allowed):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                name = _normalize_host(entry)
                if not name or any(c in name for c in "/:@ ") or name.startswith("*"):
                    raise ValueError(f"not a hostname or CIDR range: {entry!r}") from None
                hostnames.add(name)
        self._networks = tuple(networks)
        self._hostnames = frozenset(hostnames)

    def _address_allowed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
            candidates.append(inner)
        return any(candidate in network for candidate in candidates for network in self._networks)

    def check_url(self, url: str) -> None:
        """Refuse a URL that is not ``http``/``https`` or has no host, before any connection.

        Raises:
            ToolRefused: with the reason. (Addresses are checked at connect time, by
                :meth:`resolve`, for every connection.)
        """
        try:
            parsed = httpx2.URL(url)
        except httpx2.InvalidURL as exc:
            raise ToolRefused(f"invalid tool URL: {exc}") from None
        if parsed.scheme not in _SCHEMES:
            raise ToolRefused(f"tool URLs must be http or https, not {parsed.scheme or 'relative'!r}")
        if not parsed.host:
            raise ToolRefused("the tool URL has no host")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` that a connection to ``port`` may use, in resolver order.

        ``host`` is a DNS name or an IP literal (IPv6 with or without brackets). Resolution is
        ``loop.getaddrinfo`` (a worker thread, so the event loop never blocks on DNS); addresses
        are returned as text, IPv6 scope ids kept (``fe80::1%eth0``), duplicates dropped.

        Raises:
            ToolRefused: if the host is empty, or if it resolves only to refused addresses and
                neither it nor those addresses are allowed.
            OSError: (``socket.gaierror``) if the name does not resolve at all.
        """
        name = _normalize_host(host)
        if not name:
            raise ToolRefused("the tool URL has no host")
        infos = await asyncio.get_running_loop().getaddrinfo(
            name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if name in self._hostnames:
            return addresses
        usable: list[str] = []
        refused: list[str] = []
        for text in addresses:
            address = ipaddress.ip_address(text)
            if self._address_allowed(address) or is_public_address(address):
                usable.append(text)
            else:
                refused.append(text)
        if not usable:
            if refused == [name]:
                kind = _kind(ipaddress.ip_address(name))
                where = f"{name} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} address"
            else:
                kinds = ", ".join(f"{text} ({_kind(ipaddress.ip_address(text))})" for text in refused)
                where = f"{host} resolves to {kinds or 'no address'}"
            raise ToolRefused(
                f"{where}: tools may only reach public addresses unless the operator allows the host "
                "in PARLEY_TOOLS_ALLOWED_HOSTS"
            )
        return usable
