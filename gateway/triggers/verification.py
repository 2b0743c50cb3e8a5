"""Signature checks of incoming triggers, one per scheme; pure functions (the caller passes the time).

- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``.
- ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` within a
  tolerance of the current time (a replay after it is refused).
- ``standard-webhooks``: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` (``gateway.webhooks.signing``).

Each returns the delivery's id when the scheme has one (GitHub's ``X-GitHub-Delivery``,
Stripe's event ``id``, ``webhook-id``): a replay within the deduplication window is
then stored only once.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

import orjson

from gateway.errors import Unauthorized
from gateway.webhooks import signing

STRIPE_TOLERANCE_SECONDS = 300


class Scheme(StrEnum):
    NONE = "none"
    GITHUB = "github"
    STRIPE = "stripe"
    STANDARD_WEBHOOKS = "standard-webhooks"


def _hex_hmac(secret: bytes, data: bytes) -> str:
    return hmac.new(secret, data, hashlib.sha256).hexdigest()


def github(secret: str, headers: dict[str, str], body: bytes) -> str | None:
    given = headers.get("x-hub-signature-256", "")
    expected = "sha256=" + _hex_hmac(secret.encode(), body)
    if not given or not hmac.compare_digest(expected, given.strip()):
        raise Unauthorized("X-Hub-Signature-256 is missing or does not match")
    return headers.get("x-github-delivery") or None


def stripe(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    stamp = ""
    candidates: list[str] = []
    for item in headers.get("stripe-signature", "").split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            stamp = value
        elif name == "v1":
            candidates.append(value)
    if not stamp.isdigit() or not candidates:
        raise Unauthorized("Stripe-Signature is missing or malformed")
    if abs(now - int(stamp)) > STRIPE_TOLERANCE_SECONDS:
        raise Unauthorized("Stripe-Signature timestamp is outside the tolerance (a replay?)")
    expected = _hex_hmac(secret.encode(), stamp.encode() + b"." + body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise Unauthorized("Stripe-Signature does not match")
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    event_id = event.get("id") if isinstance(event, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


def standard_webhooks(secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    signing.verify(signing.secret_key(secret), headers, body, now)
    return headers["webhook-id"]


def verify(scheme: Scheme, secret: str, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """Raise ``Unauthorized`` unless the request is signed under ``scheme``; the delivery id, if any."""
    if scheme is Scheme.GITHUB:
        return github(secret, headers, body)
    if scheme is Scheme.STRIPE:
        return stripe(secret, headers, body, now)
    if scheme is Scheme.STANDARD_WEBHOOKS:
        return standard_webhooks(secret, headers, body, now)
    return None
