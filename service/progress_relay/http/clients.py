"""Who a request comes from, for the limits that count per client.

The client is the connection's peer address, or, only when the peer is one of
``server.trusted_proxies``, the last address of ``X-Forwarded-For``: the one that proxy appended
for the connection it took (nginx's ``$proxy_add_x_forwarded_for``). Entries to its left were
written by whoever sent the request and are never believed. An IPv6 client is its /64: one
host usually holds a whole /64, so counting single addresses would count nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from aiohttp import web

_IPV6_NETWORK = 64
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Clients:
    __slots__ = ("_proxies",)

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

    def of(self, request: web.Request) -> str:
        """The client of ``request``, as a key for counting (an address, an IPv6 /64, or the
        peer as aiohttp names it when it is no IP address, e.g. a Unix socket)."""
        peer = request.remote or ""
        address = _address(peer)
        if address is None:
            return peer
        if self._proxies and self._trusted(address):
            forwarded = request.headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
            appended = _address(forwarded)
            if appended is not None:
                address = appended
        return _key(address)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self._proxies)


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: Address) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, _IPV6_NETWORK), strict=False))
    return str(address)
