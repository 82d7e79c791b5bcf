"""Who is calling, by network address: the one resolver every part of the portal uses.

Behind a reverse proxy REMOTE_ADDR is the proxy, and the client's address is in
X-Forwarded-For, which every hop may append to and which the client itself can pre-fill with
anything. So the header is read only when the peer is one of TRUSTED_PROXIES, and from the
right: each trusted proxy appended the address of whoever connected to it, so the first hop
(from the right) that is not a trusted proxy is the client. Entries to its left were written by
the client and are never believed.

Audit addresses, the API's and /metrics' trusted networks, django-axes
(AXES_CLIENT_IP_CALLABLE) and the API's rate limits all call `client_ip`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ADDRESS_CHARS = 45  # the longest textual IPv6 address (with an IPv4 tail)


@lru_cache(maxsize=16)
def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse addresses/networks (`10.0.0.0/8`, `192.0.2.7`, `fd00::/8`); ValueError if bad."""
    return _networks(tuple(values))


def _parse(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _within(address: Address, nets: Iterable[Network]) -> bool:
    return any(address.version == net.version and address in net for net in nets)


def client_address(request: HttpRequest) -> Address | None:
    """The client's address, or None when the peer's own address is unusable."""
    peer = _parse(request.META.get("REMOTE_ADDR", ""))
    proxies = networks(settings.TRUSTED_PROXIES)
    if peer is None or not proxies or not _within(peer, proxies):
        return peer
    current = peer
    forwarded = request.headers.get("X-Forwarded-For", "")
    for hop in reversed([entry for entry in forwarded.split(",") if entry.strip()]):
        address = _parse(hop)
        if address is None:
            # A trusted proxy passed on something that is not an address: we cannot tell who
            # is behind it, so the last hop we can vouch for stands for the client.
            return current
        current = address
        if not _within(address, proxies):
            return address
    return current  # every hop is a trusted proxy (an internal caller)


def client_ip(request: HttpRequest) -> str:
    """The client's address as text ('' when unknown); AXES_CLIENT_IP_CALLABLE points here."""
    address = client_address(request)
    if address is None:
        return request.META.get("REMOTE_ADDR", "")[:MAX_ADDRESS_CHARS]
    return str(address)


def in_networks(request: HttpRequest, values: Iterable[str]) -> bool:
    address = client_address(request)
    return address is not None and _within(address, networks(values))


def from_api_trusted_network(request: HttpRequest) -> bool:
    """May this caller read the metrics without a token (API_TRUSTED_NETWORKS)?"""
    return in_networks(request, settings.API_TRUSTED_NETWORKS)
