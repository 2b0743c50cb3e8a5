"""A lean HTTP/1.1 client for webhook POSTs: one keep-alive connection per webhook, httptools to parse.

httpx costs about a millisecond of CPU per request (sniffio, anyio, its
models); a webhook delivers one request at a time to one origin, which needs
far less: write the request, parse the answer (status, headers, body of any
framing: length, chunked, or until close) and keep the connection for the
next one. A request that fails on a reused connection before any answer came
is sent once more on a new one (the server may have closed an idle
connection). Redirects are not followed; TLS is verified with the system's CA
store.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

MAX_RESPONSE_BYTES = 1024 * 1024  # the body is read (to keep the connection usable), not kept beyond this


class ClientError(Exception):
    """The request got no HTTP answer: connection refused or lost, timeout, malformed answer."""


class _Unanswered(ClientError):
    """Not a byte came back: on a reused connection, the server had closed it (safe to send again)."""


@dataclass(slots=True)
class Response:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names


class _Parser:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.size = 0
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        self.complete = True


class WebhookClient:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._origin: tuple[str, str, int] | None = None
        self._tls: ssl.SSLContext | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Response:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        origin = (parts.scheme, host, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = host if parts.port is None else f"{host}:{port}"
        if ":" in host:
            authority = f"[{host}]" if parts.port is None else f"[{host}]:{port}"
        head = [f"POST {path} HTTP/1.1", f"host: {authority}", f"content-length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self._timeout):
                reused = self._writer is not None and self._origin == origin
                if not reused:
                    await self._connect(origin)
                try:
                    return await self._exchange(request)
                except _Unanswered:
                    if not reused:
                        raise
                await self._connect(origin)  # the idle connection was gone: once more on a new one
                return await self._exchange(request)
        except TimeoutError:
            await self.close()
            raise ClientError("timeout") from None
        except OSError as exc:
            await self.close()
            raise ClientError(f"{type(exc).__name__}: {exc}") from None
        except ClientError:
            await self.close()
            raise

    async def _connect(self, origin: tuple[str, str, int]) -> None:
        await self.close()
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self._tls is None:
                self._tls = ssl.create_default_context()
            tls = self._tls
        self._reader, self._writer = await asyncio.open_connection(host, port, ssl=tls)
        self._origin = origin

    async def _exchange(self, request: bytes) -> Response:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        try:
            writer.write(request)
            await writer.drain()
        except OSError as exc:
            raise _Unanswered(f"connection lost: {exc}") from None
        received = False
        collected = _Parser()
        parser = httptools.HttpResponseParser(collected)
        while not collected.complete:
            try:
                chunk = await reader.read(65536)
            except OSError as exc:
                raise (ClientError if received else _Unanswered)(f"connection lost: {exc}") from None
            if not chunk:
                if not received:
                    raise _Unanswered("connection closed before an answer")
                if parser.get_status_code() and not collected.headers.get("content-length"):
                    try:
                        parser.feed_data(b"")  # a body that ends with the connection
                    except httptools.HttpParserError:
                        pass
                    collected.complete = True
                    break
                raise ClientError("connection closed before an answer")
            received = True
            try:
                parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise ClientError(f"malformed answer: {exc}") from None
            if collected.size > MAX_RESPONSE_BYTES:
                raise ClientError("answer body too large")
        if not parser.should_keep_alive():
            await self.close()
        return Response(parser.get_status_code(), collected.headers)

    async def close(self) -> None:
        writer, self._writer, self._reader, self._origin = self._writer, None, None, None
        if writer is not None:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, TimeoutError):
                pass
