"""``/sdk/flowgate.js`` (and ``.d.ts``): the JavaScript client, served so a page can import it directly.

The files are package data (``protocols/http/sdk_files``), copies of ``clients/js``
(tests/test_client_js.py checks they are identical). Read once when the routes are
built; answered with an ETag, a short cache lifetime and CORS open to any origin
(module scripts from another origin need it).
"""

from __future__ import annotations

import hashlib
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FILES = {"flowgate.js": "text/javascript; charset=utf-8", "flowgate.d.ts": "application/typescript; charset=utf-8"}


def _endpoint(body: bytes, media_type: str) -> Route:
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"}

    async def serve(request: Request) -> Response:
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    return serve  # type: ignore[return-value]


def routes() -> list[Route]:
    folder = files("protocols.http") / "sdk_files"
    return [
        Route(f"/sdk/{name}", _endpoint(folder.joinpath(name).read_bytes(), media_type), methods=["GET", "HEAD"])
        for name, media_type in FILES.items()
    ]
