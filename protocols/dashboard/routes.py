"""Serving the dashboard: ``/`` and ``/dashboard/`` give the page, ``/dashboard/<file>`` its modules and styles.

The files ship inside the package (``protocols/dashboard/static``) and are read
once when the app is built. Only GET and HEAD are routed, so other methods on
``/`` stay free for other front-ends. Every answer carries a Content-Security-
Policy without inline scripts, ``frame-ancestors 'none'`` and ``nosniff``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/dashboard"

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(root: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under ``root`` by its path relative to it (``pages/keys.js``)."""
    assets = {}
    for path in sorted(root.rglob("*")):
        media_type = TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            assets[path.relative_to(root).as_posix()] = Asset(body, media_type, etag)
    return assets


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**HEADERS, "ETag": asset.etag}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def routes(assets: dict[str, Asset] | None = None) -> list[BaseRoute]:
    """The dashboard's routes (GET and HEAD only)."""
    files = load_assets() if assets is None else assets
    index = files["index.html"]

    async def page(request: Request) -> Response:
        return _answer(request, index)

    async def to_page(request: Request) -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308, headers=HEADERS)

    async def asset(request: Request) -> Response:
        found = files.get(request.path_params["path"])
        if found is None:
            return Response(b"no such dashboard file\n", status_code=404, media_type="text/plain", headers=HEADERS)
        return _answer(request, found)

    return [
        Route("/", page, methods=["GET"], include_in_schema=False),
        Route(PREFIX, to_page, methods=["GET"], include_in_schema=False),
        Route(PREFIX + "/", page, methods=["GET"], include_in_schema=False),
        Route(PREFIX + "/{path:path}", asset, methods=["GET"], include_in_schema=False),
    ]
