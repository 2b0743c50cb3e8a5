"""The HTTP edge of the error hierarchy: every error is ``{"error": {"code", "message"}}``.

FastAPI's request validation errors become 400 (not 422), and Starlette's own
HTTP errors (unknown route, wrong method) take the same shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FlowGateError

log = logging.getLogger("flowgate.http")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, **details: object
) -> Response:
    body = {"error": {"code": code, "message": message, **details}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def flowgate_error_response(exc: FlowGateError) -> Response:
    if exc.status >= 500:
        log.warning("%s: %s", exc.code, exc.message)
    body = exc.to_dict()
    return error_response(exc.status, body.pop("code"), body.pop("message"), exc.headers, **body)


def unexpected_error_response(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal server error")


async def _flowgate_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FlowGateError)
    return flowgate_error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}" for e in exc.errors()]
    return error_response(400, "bad_request", "; ".join(problems) or "invalid request")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, _CODES.get(exc.status_code, "error"), str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return unexpected_error_response(exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(FlowGateError, _flowgate_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
