"""What HTTP handlers share: the caller's credentials, a header and the request body.

Nothing here looks the services up: each router's factory is handed what it
needs and builds its dependencies from it (``token_claims``, ``admin_key``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response

from auth.secrets import ServerSecrets
from auth.tokens import Claims, TokenService, bearer
from gateway.errors import PayloadTooLarge, Unauthorized

Handler = Callable[[Request], Awaitable[Response]]  # a lean Starlette endpoint, as the fast path calls it


def header(conn: HTTPConnection, name: bytes) -> str | None:
    """A request header straight from the ASGI scope; ``name`` in lower case, as servers give them."""
    for key, value in conn.scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body; 413 from ``Content-Length`` before reading it, or as soon as it grows past ``limit``.

    It reads the ASGI messages itself: call it instead of ``request.body()``, once per request.
    """
    declared = header(request, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def claims_of(tokens: TokenService, conn: HTTPConnection, *, allow_query: bool = False) -> Claims:
    """The verified token of a request: ``Authorization: Bearer`` or, where allowed, ``?token=``."""
    token = bearer(header(conn, b"authorization"))
    if token is None and allow_query:
        token = conn.query_params.get("token")
    if not token:
        raise Unauthorized("missing token: send Authorization: Bearer <JWT>")
    return tokens.verify(token)


def token_claims(tokens: TokenService) -> Callable[[HTTPConnection], Claims]:
    """The FastAPI dependency that gives a request's verified token (``Authorization: Bearer``)."""

    def claims(conn: HTTPConnection) -> Claims:
        return claims_of(tokens, conn)

    return claims


def admin_key(secrets: ServerSecrets) -> Callable[[HTTPConnection], None]:
    """The FastAPI dependency that lets only the admin key through."""

    def require_admin(conn: HTTPConnection) -> None:
        key = bearer(conn.headers.get("authorization"))
        if key is None or not secrets.is_admin_key(key):
            raise Unauthorized("admin key required: send Authorization: Bearer <admin key>")

    return require_admin
