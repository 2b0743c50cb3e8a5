"""Request-scoped access to the services, the caller's credentials and the request body."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import ClientDisconnect, HTTPConnection, Request

from auth.tokens import Claims, bearer
from gateway.errors import PayloadTooLarge, Unauthorized
from protocols.services import Services


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


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


def claims_of(conn: HTTPConnection, *, allow_query: bool = False) -> Claims:
    """The verified token of a request: ``Authorization: Bearer`` or, where allowed, ``?token=``."""
    token = bearer(header(conn, b"authorization"))
    if token is None and allow_query:
        token = conn.query_params.get("token")
    if not token:
        raise Unauthorized("missing token: send Authorization: Bearer <JWT>")
    return services_of(conn).tokens.verify(token)


def require_admin(conn: HTTPConnection) -> None:
    key = bearer(conn.headers.get("authorization"))
    if key is None or not services_of(conn).secrets.is_admin_key(key):
        raise Unauthorized("admin key required: send Authorization: Bearer <admin key>")


def _token_claims(conn: HTTPConnection) -> Claims:
    return claims_of(conn)


ServicesDep = Annotated[Services, Depends(services_of)]
ClaimsDep = Annotated[Claims, Depends(_token_claims)]
AdminDep = Depends(require_admin)
