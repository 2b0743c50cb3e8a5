"""HTTP requests with retries, and the mapping of error answers onto ``flowgate_client.errors``.

One place decides what is retried: connection errors and the statuses in
``Retry.statuses`` (429 and 503 by default), waiting ``Retry-After`` when the
gateway sends it and an exponential backoff with jitter otherwise.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from flowgate_client.errors import ConnectionFailed, error_from_body

BearerSource = Callable[[bool], Awaitable[str]]  # force_refresh -> bearer value


@dataclass(frozen=True, kw_only=True, slots=True)
class Retry:
    """How requests are retried. ``Retry(max_retries=0)`` (or ``retry=None`` on a client) turns retries off."""

    max_retries: int = 4
    delay: float = 0.2  # the first backoff; doubled each attempt, with full jitter
    max_delay: float = 10.0  # cap of one wait, including a Retry-After
    statuses: frozenset[int] = frozenset({429, 503})
    connection_errors: bool = True

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.delay * 2**attempt))

    def wait_for(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(self.max_delay, max(0.0, float(retry_after)))
            except ValueError:
                pass
        return self.backoff(attempt)


NO_RETRY = Retry(max_retries=0)


class Transport:
    """An ``httpx.AsyncClient`` for one gateway, with the retry policy and error mapping."""

    def __init__(self, base_url: str, *, retry: Retry | None, timeout: float, user_agent: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or NO_RETRY
        self.http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, headers={"User-Agent": user_agent}, follow_redirects=False
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        bearer: BearerSource | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """The decoded JSON answer (``None`` for an empty one); a typed error otherwise."""
        attempt = 0
        refreshed = False
        while True:
            all_headers = dict(headers or {})
            if bearer is not None:
                all_headers["Authorization"] = "Bearer " + await bearer(False)
            try:
                response = await self.http.request(
                    method,
                    path,
                    json=json,
                    params=params,
                    headers=all_headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                if self.retry.connection_errors and attempt < self.retry.max_retries:
                    await asyncio.sleep(self.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise ConnectionFailed(f"{method} {self.base_url}{path}: {exc!r}") from exc
            if response.is_success:
                return response.json() if response.content else None
            retry_after = response.headers.get("Retry-After")
            if response.status_code == 401 and bearer is not None and not refreshed:
                refreshed = True  # the token may have expired or been revoked: get a new one once
                await bearer(True)
                continue
            if response.status_code in self.retry.statuses and attempt < self.retry.max_retries:
                await asyncio.sleep(self.retry.wait_for(attempt, retry_after))
                attempt += 1
                continue
            try:
                body = response.json()
            except ValueError:
                body = {"error": {"code": "", "message": response.text[:200] or response.reason_phrase}}
            raise error_from_body(response.status_code, body, retry_after)
