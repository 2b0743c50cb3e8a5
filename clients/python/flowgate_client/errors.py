"""The client's one error tree, built from the gateway's JSON error bodies.

::

    FlowGateError
    ├── ConnectionFailed          the gateway could not be reached
    └── ApiError                  the gateway answered {"error": {"code", "message", ...}}
        ├── BadRequest (400)
        ├── Unauthorized (401)
        ├── PaymentRequired (402)  .limit, .used, .quota, .balance, .resets_at
        ├── Forbidden (403)
        ├── NotFound (404)
        ├── Conflict (409)
        ├── PayloadTooLarge (413)
        ├── RateLimited (429)      .retry_after
        ├── Unavailable (503)      .retry_after
        └── ServerError (other 5xx)

WebSocket error frames (``{"action": "error", "code": 402, ...}``) map onto the
same classes through ``error_from_body``.
"""

from __future__ import annotations

from typing import Any


class FlowGateError(Exception):
    """Base of every error this client raises."""


class ConnectionFailed(FlowGateError):
    """The gateway could not be reached (refused, reset, timed out)."""


class ApiError(FlowGateError):
    """The gateway answered with an error status and body."""

    status: int = 0

    def __init__(self, message: str, *, status: int = 0, code: str = "", details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status or type(self).status
        self.code = code
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}" if self.code else f"{self.status}: {self.message}"


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class PaymentRequired(ApiError):
    """Quota, balance or connection limit reached: ``limit`` says which, ``resets_at`` when the period ends."""

    status = 402

    @property
    def limit(self) -> str | None:
        value = self.details.get("limit")
        return str(value) if value is not None else None

    @property
    def used(self) -> int | None:
        return _int(self.details.get("used"))

    @property
    def quota(self) -> int | None:
        return _int(self.details.get("quota"))

    @property
    def balance(self) -> int | None:
        return _int(self.details.get("balance"))

    @property
    def resets_at(self) -> str | None:
        value = self.details.get("resets_at")
        return str(value) if value is not None else None


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class _RetryAfter(ApiError):
    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        try:
            return None if value is None else float(value)
        except (TypeError, ValueError):
            return None


class RateLimited(_RetryAfter):
    """Too fast: wait ``retry_after`` seconds."""

    status = 429


class Unavailable(_RetryAfter):
    """The gateway's message bus is unreachable right now; retry shortly."""

    status = 503


class ServerError(ApiError):
    status = 500


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls
    for cls in (BadRequest, Unauthorized, PaymentRequired, Forbidden, NotFound, Conflict, PayloadTooLarge, RateLimited)
}
_BY_STATUS[503] = Unavailable


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_from_body(status: int, body: Any, retry_after: str | None = None) -> ApiError:
    """The typed error of an HTTP error answer or a WebSocket error frame."""
    details: dict[str, Any] = {}
    code = ""
    message = f"HTTP {status}"
    if isinstance(body, dict):
        inner = body["error"] if isinstance(body.get("error"), dict) else body  # HTTP body, or a WS frame
        if isinstance(inner, dict):
            details = {k: v for k, v in inner.items() if k not in ("code", "message", "action", "error")}
            code = str(inner.get("code", "")) if not isinstance(inner.get("code"), int) else ""
            if not code and isinstance(inner.get("error"), str):
                code = inner["error"]  # a WebSocket error frame: "code" is the status, "error" the name
            message = str(inner.get("message", message))
    if retry_after is not None and "retry_after" not in details:
        details["retry_after"] = retry_after
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
    return cls(message, status=status, code=code, details=details)
