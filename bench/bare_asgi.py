"""The bare baseline: a raw ASGI app on uvicorn that reads the body and answers fixed JSON."""

from __future__ import annotations

from typing import Any

ANSWER = b'{"topic":"u_app_bench","seq":1,"duplicate":false}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})
