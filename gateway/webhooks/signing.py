"""Standard Webhooks signatures (https://www.standardwebhooks.com), both ways.

A secret is ``whsec_<base64 key>``. A request carries ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: space-separated
``v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>``. No I/O, no clock
of its own: callers pass the time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from gateway.errors import BadRequest, Unauthorized

PREFIX = "whsec_"
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (a bare base64 key is accepted too)."""
    encoded = secret[len(PREFIX) :] if secret.startswith(PREFIX) else secret
    try:
        key = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise BadRequest("secret must be whsec_ followed by base64") from None
    if not 16 <= len(key) <= 64:
        raise BadRequest("secret must hold 16 to 64 bytes (whsec_ followed by base64)")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed request."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }


def verify(key: bytes, headers: dict[str, str], body: bytes, now: float) -> None:
    """Raise ``Unauthorized`` unless ``headers`` (lower-case names) sign ``body`` within the tolerance."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise Unauthorized("missing webhook-id, webhook-timestamp or webhook-signature")
    if not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_SECONDS:
        raise Unauthorized("webhook-timestamp is missing or too far from now")
    expected = signature(key, msg_id, int(stamp), body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures.split()):
        raise Unauthorized("webhook-signature does not match")
