"""The gateway's one error hierarchy.

Every failure a client can be told about is a ``FlowGateError``. Each class knows
its HTTP status and a stable machine-readable ``code``; each front-end maps the
hierarchy to its own wire form in one place (HTTP JSON body, WebSocket error
frame, MQTT CONNACK or disconnect)::

    FlowGateError (500 internal)
    ├── BadRequest (400 bad_request)
    │   └── InvalidName (400 invalid_name)
    ├── Unauthorized (401 unauthorized)
    ├── PaymentRequired (402 payment_required)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── RateLimited (429 rate_limited)
    └── Unavailable (503 unavailable)

Dependencies' exceptions are translated at the boundary that owns them
(``raise Ours(...) from exc``); nats-py's only inside ``gateway.bus``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FlowGateError(Exception):
    """Base of every error the gateway reports to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(
        self, message: str = "", *, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details or {}
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return body


class BadRequest(FlowGateError):
    """Invalid parameters or malformed request body."""

    status = 400
    code = "bad_request"


class InvalidName(BadRequest):
    """A topic, queue, user or app name breaks the naming rules."""

    code = "invalid_name"


class Unauthorized(FlowGateError):
    """Missing or invalid credentials."""

    status = 401
    code = "unauthorized"


class PaymentRequired(FlowGateError):
    """Limit reached or insufficient balance."""

    status = 402
    code = "payment_required"


class Forbidden(FlowGateError):
    """Insufficient permissions for the requested topic or queue."""

    status = 403
    code = "forbidden"


class NotFound(FlowGateError):
    """No such resource."""

    status = 404
    code = "not_found"


class Conflict(FlowGateError):
    """The resource already exists or changed concurrently."""

    status = 409
    code = "conflict"


class PayloadTooLarge(FlowGateError):
    """The message is larger than the configured maximum."""

    status = 413
    code = "payload_too_large"


class RateLimited(FlowGateError):
    """Rate limit exceeded."""

    status = 429
    code = "rate_limited"


class Unavailable(FlowGateError):
    """The message bus is unreachable; retry shortly."""

    status = 503
    code = "unavailable"
