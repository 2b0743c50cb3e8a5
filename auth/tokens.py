"""Short-lived JWTs (HS256) that scope a client to one namespace.

Claims: ``sub`` (user id), ``app``, ``iat``, ``exp``, ``jti``, ``perm`` (the
permissions), ``iat_ms`` (the issue time in milliseconds, so that "every token
issued before now" is exact) and ``kid`` (the API key it was issued from; older
tokens without it keep working until they expire). Only HS256 is accepted, so ``alg: none`` and algorithm confusion
fail like a wrong key or a tampered token: 401. Verified tokens are cached by
their exact text; expiry and revocation (``auth.revocations``, in memory) are
still checked on every use.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from auth.permissions import Permissions
from auth.revocations import Revocations
from gateway.errors import BadRequest, FlowGateError, Unauthorized
from gateway.topics import Namespace

ALGORITHM = "HS256"
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Claims:
    namespace: Namespace
    issued_at: int
    expires_at: int
    jti: str
    permissions: Permissions
    key_id: str | None = None  # the API key the token was issued from
    key_limit: tuple[float, int] | None = None  # that key's (rate, burst), when it has its own rate limit
    issued_ms: int = 0  # the issue time in milliseconds (``issued_at * 1000`` for tokens without ``iat_ms``)

    @property
    def user_id(self) -> str:
        return self.namespace.user_id

    @property
    def app(self) -> str:
        return self.namespace.app


class TokenService:
    def __init__(
        self,
        key: bytes,
        *,
        default_ttl: int,
        max_ttl: int,
        clock: Callable[[], float] = time.time,
        revocations: Revocations | None = None,
    ) -> None:
        self._key = key
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self._clock = clock
        self._cache: dict[str, Claims] = {}
        self.revocations = revocations or Revocations(max_ttl, clock=clock)

    def issue(
        self,
        namespace: Namespace,
        *,
        ttl: int | None = None,
        permissions: Permissions | None = None,
        key_id: str | None = None,
        key_limit: tuple[float, int] | None = None,
    ) -> tuple[str, Claims]:
        ttl = self.default_ttl if ttl is None else ttl
        if not 1 <= ttl <= self.max_ttl:
            raise BadRequest(f"ttl must be between 1 and {self.max_ttl} seconds")
        now_ms = int(self._clock() * 1000)
        now = now_ms // 1000
        claims = Claims(
            namespace, now, now + ttl, secrets.token_hex(12), permissions or Permissions(), key_id, key_limit, now_ms
        )
        payload: dict[str, Any] = {
            "sub": namespace.user_id,
            "app": namespace.app,
            "iat": claims.issued_at,
            "iat_ms": now_ms,
            "exp": claims.expires_at,
            "jti": claims.jti,
            "perm": claims.permissions.to_json(),
        }
        if key_id is not None:
            payload["kid"] = key_id
        if key_id is not None and key_limit is not None:
            payload["key"] = key_id
            payload["klim"] = [key_limit[0], key_limit[1]]
        return jwt.encode(payload, self._key, algorithm=ALGORITHM), claims

    def verify(self, token: str) -> Claims:
        """The claims of a valid, unexpired, unrevoked token; ``Unauthorized`` (``Forbidden``: user disabled) otherwise."""
        claims = self._cache.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = claims
        if claims.expires_at <= self._clock():
            self._cache.pop(token, None)
            raise Unauthorized("token expired")
        self.revocations.check(claims)
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            payload = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "app", "iat", "exp", "jti"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        try:
            issued_at = int(payload["iat"])
            issued_ms = payload.get("iat_ms", issued_at * 1000)
            if not isinstance(issued_ms, int) or isinstance(issued_ms, bool):
                raise ValueError("invalid iat_ms")
            return Claims(
                Namespace(payload["sub"], payload["app"]),
                issued_at,
                int(payload["exp"]),
                str(payload["jti"]),
                Permissions.from_json(payload.get("perm")),
                *_key_limit(payload),
                issued_ms,
            )
        except (FlowGateError, TypeError, ValueError):
            raise Unauthorized("invalid token claims") from None


def _key_limit(payload: dict[str, Any]) -> tuple[str | None, tuple[float, int] | None]:
    """The issuing key (``kid``, or ``key`` in older tokens) and its own rate limit (``klim``), if it has one."""
    key_id, limit = payload.get("kid", payload.get("key")), payload.get("klim")
    if key_id is not None and not isinstance(key_id, str):
        raise ValueError("invalid key id")
    if key_id is None or limit is None:
        return key_id, None
    if not isinstance(limit, list) or len(limit) != 2:
        raise ValueError("invalid key limit")
    rate, burst = float(limit[0]), int(limit[1])
    if not isinstance(key_id, str) or rate <= 0 or burst < 1:
        raise ValueError("invalid key limit")
    return key_id, (rate, burst)


def bearer(header: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header."""
    if not header:
        return None
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()
