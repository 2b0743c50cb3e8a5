"""Which webhook URLs the gateway may call: http(s) to public addresses only (an SSRF guard).

A URL whose host resolves to a loopback, private, link-local (cloud metadata at
169.254.169.254 included), shared, multicast or otherwise non-global address
is refused, unless the operator allows private targets
(``FLOWGATE_WEBHOOK_ALLOW_PRIVATE``). Checked when a webhook is created or
changed and again before each delivery (the name may resolve elsewhere later).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from gateway.errors import BadRequest, Forbidden

MAX_URL = 2048


def parse_url(url: object) -> tuple[str, int]:
    """Check the form of a webhook URL; its host and port."""
    if not isinstance(url, str) or not 1 <= len(url) <= MAX_URL:
        raise BadRequest(f"url must be an http(s) URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadRequest("url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise BadRequest("url must not carry credentials; use headers")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_target(url: str, *, allow_private: bool) -> None:
    """``Forbidden`` when ``url``'s host resolves to an address the gateway must not call."""
    host, port = parse_url(url)
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise BadRequest(f"url host {host!r} does not resolve") from None
    for info in infos:
        if not _public(str(info[4][0])):
            raise Forbidden(
                f"url host {host!r} resolves to a private, loopback or link-local address "
                "(FLOWGATE_WEBHOOK_ALLOW_PRIVATE=true allows it)"
            )
