"""How each ``FLOWGATE_*`` value is read: one parser per kind of value, raising ``ValueError`` with what is wanted.

``gateway.settings`` names the parser of every setting and turns the error into a ``SettingsError``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

N = TypeVar("N", int, float)


def between(kind: Callable[[str], N], lo: N, hi: N) -> Callable[[str], N]:
    """A number of ``kind`` (``int`` or ``float``) from ``lo`` to ``hi``."""

    def parse(raw: str) -> N:
        value = kind(raw)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def int_between(lo: int, hi: int) -> Callable[[str], int]:
    return between(int, lo, hi)


def float_between(lo: float, hi: float) -> Callable[[str], float]:
    return between(float, lo, hi)


def host(raw: str) -> str:
    if raw in ("localhost", "0.0.0.0", "::"):
        return raw
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        if not raw or any(c.isspace() for c in raw):
            raise ValueError("must be an IP address or host name") from None
    return raw


def nats_url(raw: str) -> str | None:
    if not raw:
        return None
    for url in raw.split(","):
        if not url.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError("must be nats://host:port (comma-separated for a cluster)")
    return raw


def secret(raw: str) -> str | None:
    if not raw:
        return None
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters")
    return raw


def log_level(raw: str) -> str:
    value = raw.lower()
    if value not in ("debug", "info", "warning", "error"):
        raise ValueError("must be one of debug, info, warning, error")
    return value


def plans_file(raw: str) -> Path | None:
    if not raw:
        return None
    from gateway.billing.plans import Catalog  # checked at start-up, so a broken file stops it with one line

    Catalog.load(Path(raw), server_max_bytes=2**31)
    return Path(raw)


def exporter(raw: str) -> str:
    value = raw.lower() or "none"
    if value not in ("none", "otlp", "console", "memory"):
        raise ValueError("must be none, otlp, console or memory")
    return value


def workers(raw: str) -> int:
    if raw.lower() == "auto":
        return os.cpu_count() or 1
    return int_between(1, 256)(raw)


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def origins(raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("`*` allows every origin and cannot be combined with others")
        return origins
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest or any(c.isspace() for c in rest):
            raise ValueError(f"{origin!r} is not an origin like https://app.example.com[:port]")
    return origins


def networks(raw: str) -> tuple[str, ...]:
    networks = []
    for item in raw.split(","):
        if item.strip():
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item.strip()!r} is not an IP address or CIDR") from None
    return tuple(networks)
