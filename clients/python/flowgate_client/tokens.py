"""Where a client's JWT comes from, and its refresh before it expires.

Either an API key exchanged at ``POST /token`` for an app, or a ``get_token``
callback the application provides (returning a JWT string or a ``Token``).
Concurrent callers share one refresh.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flowgate_client.models import Token
from flowgate_client.transport import Transport

GetToken = Callable[[], Awaitable["str | Token"]]


def token_from_jwt(jwt: str) -> Token:
    """A ``Token`` for a bare JWT, from its (unverified) claims: expiry and namespace."""
    try:
        payload = jwt.split(".")[1]
        claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        claims = {}
    user, app = str(claims.get("sub", "")), str(claims.get("app", ""))
    expires = float(claims.get("exp", time.time() + 60))
    return Token(jwt, expires, user, app, f"{user}_{app}_" if user and app else "")


class TokenSource:
    def __init__(
        self,
        transport: Transport,
        *,
        api_key: str | None,
        app: str | None,
        ttl: int | None,
        permissions: dict[str, Any] | None,
        get_token: GetToken | None,
        refresh_margin: float,
    ) -> None:
        if (api_key is None) == (get_token is None):
            raise ValueError("give either api_key (with app) or get_token")
        self._transport = transport
        self._api_key = api_key
        self._app = app
        self._ttl = ttl
        self._permissions = permissions
        self._get_token = get_token
        self._margin = refresh_margin
        self._current: Token | None = None
        self._lock = asyncio.Lock()

    async def get(self, force: bool = False) -> Token:
        """A token with life left in it; a new one when ``force`` or close to expiry."""
        current = self._current
        if not force and current is not None and current.expires_at - time.time() > self._margin_for(current):
            return current
        async with self._lock:
            if self._current is not current and self._current is not None:
                return self._current  # someone else refreshed while we waited
            self._current = await self._fetch()
            return self._current

    def _margin_for(self, token: Token) -> float:
        """Refresh ``refresh_margin`` seconds before expiry, or at half-life for tokens shorter than twice that."""
        return min(self._margin, (token.expires_at - token_issued(token)) / 2)

    async def bearer(self, force: bool) -> str:
        return (await self.get(force)).token

    async def _fetch(self) -> Token:
        if self._get_token is not None:
            value = await self._get_token()
            return value if isinstance(value, Token) else token_from_jwt(value)
        body: dict[str, Any] = {"app": self._app or "default"}
        if self._ttl is not None:
            body["ttl"] = self._ttl
        if self._permissions is not None:
            body["permissions"] = self._permissions
        answer = await self._transport.request(
            "POST", "/token", json=body, headers={"Authorization": f"Bearer {self._api_key}"}
        )
        return Token.from_json(answer)


def token_issued(token: Token) -> float:
    """When a token was issued (its ``iat``), or 60 s before expiry when unknown."""
    try:
        payload = token.token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["iat"])
    except (IndexError, ValueError, KeyError, TypeError):
        return token.expires_at - 60
