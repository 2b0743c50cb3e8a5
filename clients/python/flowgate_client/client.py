"""``Client``: one gateway, one namespace (user and app); ``AdminClient``: the admin API."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

from flowgate_client import __version__
from flowgate_client.models import Gap, PublishResult, Token
from flowgate_client.queues import Queue
from flowgate_client.subscription import Reconnect, Subscription
from flowgate_client.tokens import GetToken, TokenSource
from flowgate_client.transport import Retry, Transport

DEFAULT_RETRY = Retry()
USER_AGENT = f"flowgate-client-python/{__version__}"


class _Base:
    def __init__(self, base_url: str, *, retry: Retry | None, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.transport = Transport(self.base_url, retry=retry, timeout=timeout, user_agent=USER_AGENT)

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url[4:] if self.base_url.startswith("http") else self.base_url

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Any:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class Client(_Base):
    """A client of one namespace::

        async with Client("http://localhost:8080", api_key=KEY, app="myapp") as client:
            seq = await client.publish("sensors/1", {"t": 21.5})
            async with client.subscribe("sensors/+", since=0) as sub:
                async for msg in sub:
                    print(msg.topic, msg.data, msg.seq)

    ``get_token`` (an async callable returning a JWT or a ``Token``) replaces ``api_key`` when
    the application gets its tokens elsewhere. ``retry=None`` turns request retries off.
    Tokens are refreshed ``refresh_margin`` seconds before they expire (at half-life for short ones).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        app: str | None = None,
        get_token: GetToken | None = None,
        ttl: int | None = None,
        permissions: dict[str, Any] | None = None,
        retry: Retry | None = DEFAULT_RETRY,
        reconnect: Reconnect | None = None,
        timeout: float = 10.0,
        refresh_margin: float = 60.0,
    ) -> None:
        super().__init__(base_url, retry=retry, timeout=timeout)
        self.tokens = TokenSource(
            self.transport,
            api_key=api_key,
            app=app,
            ttl=ttl,
            permissions=permissions,
            get_token=get_token,
            refresh_margin=refresh_margin,
        )
        self.reconnect = reconnect or Reconnect()

    async def __aenter__(self) -> Client:
        return self

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.transport.request(method, path, bearer=self.tokens.bearer, **kwargs)

    async def token(self) -> Token:
        """The current token (exchanged or refreshed when needed)."""
        return await self.tokens.get()

    async def publish(self, topic: str, message: Any, *, idempotency_key: str | None = None) -> int:
        """Publish and return the seq the gateway stored it under."""
        return (await self.publish_result(topic, message, idempotency_key=idempotency_key)).seq

    async def publish_result(self, topic: str, message: Any, *, idempotency_key: str | None = None) -> PublishResult:
        """Publish; the full answer (full topic name, seq, whether the key made it a duplicate).

        Without an ``idempotency_key`` one is generated, so that a retried request is stored once.
        """
        key = idempotency_key or uuid.uuid4().hex
        answer = await self._request(
            "POST", "/api/v1/publish", json={"topic": topic, "message": message}, headers={"Idempotency-Key": key}
        )
        return PublishResult(str(answer["topic"]), int(answer["seq"]), bool(answer.get("duplicate", False)))

    def subscribe(
        self,
        *filters: str,
        since: int | None = None,
        reconnect: Reconnect | None = None,
        buffer: int = 1000,
        on_gap: Callable[[Gap], None] | None = None,
    ) -> Subscription:
        """A WebSocket subscription to one or more filters (``+``/``#`` wildcards); ``since`` replays from there."""
        return Subscription(
            self.tokens,
            self.ws_url,
            filters,
            since=since,
            reconnect=reconnect or self.reconnect,
            buffer=buffer,
            on_gap=on_gap,
        )

    def queue(self, name: str) -> Queue:
        return Queue(self._request, name)

    async def queues(self) -> list[dict[str, Any]]:
        answer = await self._request("GET", "/api/v1/queues")
        return list(answer.get("queues", answer) if isinstance(answer, dict) else answer)

    async def usage(self) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", "/api/v1/usage")
        return answer

    async def create_key(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", "/api/v1/keys", json={"name": name})
        return answer

    async def keys(self) -> list[dict[str, Any]]:
        answer = await self._request("GET", "/api/v1/keys")
        return list(answer.get("keys", []))

    async def delete_key(self, key_id: str) -> None:
        await self._request("DELETE", f"/api/v1/keys/{quote(key_id, safe='')}")


class AdminClient(_Base):
    """The admin API (``Authorization: Bearer <admin key>``): users, their keys, plans, credits, usage."""

    def __init__(
        self, base_url: str, admin_key: str, *, retry: Retry | None = DEFAULT_RETRY, timeout: float = 10.0
    ) -> None:
        super().__init__(base_url, retry=retry, timeout=timeout)
        self._key = admin_key

    async def __aenter__(self) -> AdminClient:
        return self

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._key}"}  # a fixed key: nothing to refresh on 401
        return await self.transport.request(method, "/api/v1/admin" + path, headers=headers, **kwargs)

    async def create_user(self, user_id: str, plan: str = "free") -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("POST", "/users", json={"user_id": user_id, "plan": plan})
        return answer

    async def users(self) -> list[dict[str, Any]]:
        return list((await self._request("GET", "/users")).get("users", []))

    async def user(self, user_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"/users/{quote(user_id, safe='')}")
        return answer

    async def update_user(
        self,
        user_id: str,
        *,
        plan: str | None = None,
        disabled: bool | None = None,
        limits: dict[str, int | float | None] | None = None,
    ) -> dict[str, Any]:
        body = {k: v for k, v in {"plan": plan, "disabled": disabled, "limits": limits}.items() if v is not None}
        answer: dict[str, Any] = await self._request("PATCH", f"/users/{quote(user_id, safe='')}", json=body)
        return answer

    async def delete_user(self, user_id: str) -> None:
        await self._request("DELETE", f"/users/{quote(user_id, safe='')}")

    async def create_key(
        self, user_id: str, name: str = "default", *, rate: float | None = None, burst: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if rate is not None:
            body["rate_limit"] = {"rate": rate, **({"burst": burst} if burst is not None else {})}
        answer: dict[str, Any] = await self._request("POST", f"/users/{quote(user_id, safe='')}/keys", json=body)
        return answer

    async def keys(self, user_id: str) -> list[dict[str, Any]]:
        return list((await self._request("GET", f"/users/{quote(user_id, safe='')}/keys")).get("keys", []))

    async def delete_key(self, user_id: str, key_id: str) -> None:
        await self._request("DELETE", f"/users/{quote(user_id, safe='')}/keys/{quote(key_id, safe='')}")

    async def plans(self) -> dict[str, Any]:
        """``{"plans": [{"name", "quota", "rate", "burst", "max_connections", "max_message_bytes"}], "prices"}``."""
        answer: dict[str, Any] = await self._request("GET", "/plans")
        return answer

    async def add_credits(self, user_id: str, amount: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request(
            "POST", f"/users/{quote(user_id, safe='')}/credits", json={"amount": amount}
        )
        return answer

    async def usage(self, user_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request("GET", f"/users/{quote(user_id, safe='')}/usage")
        return answer
