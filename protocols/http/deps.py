"""Request-scoped access to the services and the caller's credentials."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from auth.tokens import Claims, bearer
from gateway.errors import Unauthorized
from gateway.services import Services


def services_of(conn: HTTPConnection) -> Services:
    services: Services = conn.app.state.services
    return services


def claims_of(conn: HTTPConnection, *, allow_query: bool = False) -> Claims:
    """The verified token of a request: ``Authorization: Bearer`` or, where allowed, ``?token=``."""
    token = bearer(conn.headers.get("authorization"))
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
