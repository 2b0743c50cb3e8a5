"""Which peers are trusted proxies, and who the client behind them is.

``FLOWGATE_TRUSTED_PROXIES`` lists addresses and CIDRs. Only a connection from
one of them may name another client: in HTTP with ``Forwarded`` (RFC 7239) or
``X-Forwarded-For``, on MQTT with a PROXY protocol header. The proxy chain is
read from the nearest hop backwards while the hops are trusted; the first
untrusted hop is the client (what a client writes into the header itself sits
further left and is ignored). No I/O here: the HTTP middleware
(``protocols.http.client_address``) and the MQTT listener call it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Hop:
    """One address in a forwarding chain: host (an IP, or a name such as ``unknown``), port (0 if not given),
    and the scheme that hop used, when ``Forwarded: proto=`` says."""

    host: str
    port: int = 0
    proto: str | None = None


class TrustedProxies:
    """A set of networks; ``client`` resolves the real address of a request that came through them."""

    __slots__ = ("_networks",)

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def client(self, peer: str, forwarded: str | None, x_forwarded_for: str | None) -> Hop | None:
        """The client a trusted ``peer`` forwarded for, or None to keep the peer.

        ``Forwarded`` wins over ``X-Forwarded-For`` when both are present.
        """
        if not self.trusts(peer):
            return None
        if forwarded is not None:
            hops = forwarded_for(forwarded)
        elif x_forwarded_for is not None:
            hops = [Hop(h.strip()) for h in x_forwarded_for.split(",") if h.strip()]
        else:
            return None
        for hop in reversed(hops):
            if not self.trusts(hop.host):
                return hop
        return hops[0] if hops else None


def forwarded_for(value: str) -> list[Hop]:
    """Each element of a ``Forwarded`` header as a hop, nearest last (host ``unknown`` without ``for=``)."""
    hops: list[Hop] = []
    for element in _split_outside_quotes(value, ","):
        node, proto = "unknown", None
        for pair in _split_outside_quotes(element, ";"):
            key, _, raw = pair.strip().partition("=")
            key = key.strip().lower()
            if key == "for":
                node = raw.strip().strip('"')
            elif key == "proto":
                proto = raw.strip().strip('"').lower() or None
        host, port = _host_port(node)
        hops.append(Hop(host, port, proto))
    return hops


def _host_port(node: str) -> tuple[str, int]:
    """``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:80`` or an obfuscated name -> (host, port)."""
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif node.count(":") == 1:
        host, _, port = node.partition(":")
    else:
        host, port = node, ""
    return host, int(port) if port.isdigit() and int(port) < 65536 else 0


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]
