"""``/api/v1/queues``: the HTTP face of the queue engine, as lean Starlette endpoints with orjson.

Each handler parses JSON or query parameters (``protocols.http.queue_views``),
calls one ``QueueEngine`` operation and renders the answer; all semantics live
in ``gateway.queues``. Queue names may contain ``/`` (they follow topic naming),
so the queue is a path parameter that can span segments; the more specific
routes come first. The OpenAPI paths are in ``protocols.http.queue_docs``.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth.tokens import Claims, TokenService
from gateway.errors import BadRequest, FlowGateError
from gateway.queues import QueueEngine, SendEntry
from gateway.queues.attributes import int_in
from gateway.queues.messages import MAX_BATCH
from protocols.http.deps import claims_of, read_body
from protocols.http.queue_views import (
    batch_entries,
    failed_view,
    json_response,
    message_view,
    move_view,
    query_int,
    queue_info_view,
    queue_view,
    send_entry,
    sent_view,
)

JSON_OVERHEAD = 64 * 1024
PREFIX = "/api/v1/queues"


class QueueApi:
    """The queue handlers, answering with the queue engine and token verifier they are given."""

    def __init__(self, engine: QueueEngine, tokens: TokenService, max_message_bytes: int) -> None:
        self._engine = engine
        self._tokens = tokens
        self._body_limit = max_message_bytes * 6 + JSON_OVERHEAD

    def _context(self, request: Request) -> tuple[QueueEngine, Claims]:
        return self._engine, claims_of(self._tokens, request)

    async def _body(self, request: Request, *, batch: int = 1, optional: bool = False) -> dict[str, Any]:
        """The request's JSON object, refusing oversized bodies before reading them."""
        raw = await read_body(request, self._body_limit * batch)
        if optional and not raw.strip():
            return {}
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("body must be a JSON object") from None
        if not isinstance(document, dict):
            raise BadRequest("body must be a JSON object")
        return document

    # -- messages ------------------------------------------------------------------------------------

    async def send_message(self, request: Request) -> Response:
        engine, claims = self._context(request)
        entry = send_entry(await self._body(request))
        [result] = await engine.send_messages(claims, request.path_params["queue"], [entry])
        if isinstance(result, FlowGateError):
            raise result
        return json_response(sent_view(result))

    async def send_batch(self, request: Request) -> Response:
        engine, claims = self._context(request)
        entries = batch_entries(await self._body(request, batch=MAX_BATCH))
        parsed: list[SendEntry | FlowGateError] = []
        for document in entries:
            try:
                parsed.append(send_entry(document))
            except FlowGateError as exc:
                parsed.append(exc)
        valid = [p for p in parsed if isinstance(p, SendEntry)]
        results = iter(await engine.send_messages(claims, request.path_params["queue"], valid) if valid else [])
        successful, failed = [], []
        for document, item in zip(entries, parsed, strict=True):
            outcome = item if isinstance(item, FlowGateError) else next(results)
            if isinstance(outcome, FlowGateError):
                failed.append(failed_view(document["id"], outcome))
            else:
                successful.append({"id": document["id"], **sent_view(outcome)})
        return json_response({"successful": successful, "failed": failed})

    async def _receive(self, request: Request, max_messages: Any, wait: Any, visibility: Any) -> Response:
        engine, claims = self._context(request)
        name = request.path_params["queue"]
        for label, value in (("max", max_messages), ("wait", wait), ("visibility_timeout", visibility)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise BadRequest(f"{label} must be an integer")
        messages = await engine.receive(
            claims,
            name,
            max_messages=1 if max_messages is None else max_messages,
            wait_seconds=wait,
            visibility_timeout=visibility,
        )
        if messages and await request.is_disconnected():
            await engine.release(claims, name, messages)  # nobody is there to get them
            return Response(status_code=499)
        if messages:
            try:
                self._tokens.revocations.check(claims)  # revoked during a long poll (auth.revocations)
            except FlowGateError:
                await engine.release(claims, name, messages)
                raise
        return json_response({"messages": [message_view(m) for m in messages]})

    async def receive_messages(self, request: Request) -> Response:
        return await self._receive(
            request, query_int(request, "max"), query_int(request, "wait"), query_int(request, "visibility_timeout")
        )

    async def receive_messages_post(self, request: Request) -> Response:
        document = await self._body(request, optional=True)
        unknown = set(document) - {"max", "wait", "visibility_timeout"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        return await self._receive(
            request, document.get("max"), document.get("wait"), document.get("visibility_timeout")
        )

    async def delete_message(self, request: Request) -> Response:
        engine, claims = self._context(request)
        [error] = await engine.delete_messages(
            claims, request.path_params["queue"], [request.path_params["receipt_handle"]]
        )
        if error is not None:
            raise error
        return Response(status_code=204)

    async def delete_batch(self, request: Request) -> Response:
        engine, claims = self._context(request)
        entries = batch_entries(await self._body(request))
        handles = [e.get("receipt_handle") for e in entries]
        if not all(isinstance(h, str) and h for h in handles):
            raise BadRequest("each batch entry needs a receipt_handle")
        errors = await engine.delete_messages(claims, request.path_params["queue"], handles)
        successful = [{"id": e["id"]} for e, err in zip(entries, errors, strict=True) if err is None]
        failed = [failed_view(e["id"], err) for e, err in zip(entries, errors, strict=True) if err is not None]
        return json_response({"successful": successful, "failed": failed})

    async def change_visibility(self, request: Request) -> Response:
        engine, claims = self._context(request)
        document = await self._body(request)
        if set(document) != {"visibility_timeout"}:
            raise BadRequest('body must be {"visibility_timeout": <seconds>}')
        await engine.change_visibility(
            claims, request.path_params["queue"], request.path_params["receipt_handle"], document["visibility_timeout"]
        )
        return Response(status_code=204)

    # -- queues --------------------------------------------------------------------------------------

    async def list_queues(self, request: Request) -> Response:
        engine, claims = self._context(request)
        return json_response(
            {"queues": [{"queue": r.full_name, "name": r.name} for r in await engine.list_queues(claims)]}
        )

    async def put_queue(self, request: Request) -> Response:
        engine, claims = self._context(request)
        document = await self._body(request, optional=True)
        record, created = await engine.set_attributes(claims, request.path_params["queue"], document)
        return json_response(queue_view(record), status=201 if created else 200)

    async def get_queue(self, request: Request) -> Response:
        engine, claims = self._context(request)
        return json_response(queue_info_view(await engine.get_queue(claims, request.path_params["queue"])))

    async def delete_queue(self, request: Request) -> Response:
        engine, claims = self._context(request)
        await engine.delete_queue(claims, request.path_params["queue"])
        return Response(status_code=204)

    async def purge_queue(self, request: Request) -> Response:
        engine, claims = self._context(request)
        await engine.purge(claims, request.path_params["queue"])
        return Response(status_code=204)

    async def start_move(self, request: Request) -> Response:
        """Move a dead-letter queue's messages back to their source queue (or to ``destination``)."""
        engine, claims = self._context(request)
        document = await self._body(request, optional=True)
        unknown = set(document) - {"destination", "rate"}
        if unknown:
            raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
        destination, rate = document.get("destination"), document.get("rate")
        if destination is not None and not isinstance(destination, str):
            raise BadRequest("destination must be a queue name")
        if rate is not None:
            rate = int_in(rate, "rate", 1, 500)
        task = await engine.start_move(claims, request.path_params["queue"], destination, rate)
        return json_response(move_view(task), status=201)

    async def list_moves(self, request: Request) -> Response:
        engine, claims = self._context(request)
        return json_response(
            {"tasks": [move_view(t) for t in await engine.list_moves(claims, request.path_params["queue"])]}
        )

    async def cancel_move(self, request: Request) -> Response:
        engine, claims = self._context(request)
        return json_response(move_view(engine.cancel_move(claims, request.path_params["handle"])))


def routes(api: QueueApi) -> list[Route]:
    """The queue routes, most specific first."""
    table = (
        ("", "GET", api.list_queues),
        ("/{queue:path}/move-tasks", "POST", api.start_move),
        ("/{queue:path}/move-tasks", "GET", api.list_moves),
        ("/{queue:path}/move-tasks/{handle}", "DELETE", api.cancel_move),
        ("/{queue:path}/messages/batch", "POST", api.send_batch),
        ("/{queue:path}/messages/batch-delete", "POST", api.delete_batch),
        ("/{queue:path}/messages/receive", "POST", api.receive_messages_post),
        ("/{queue:path}/messages", "POST", api.send_message),
        ("/{queue:path}/messages", "GET", api.receive_messages),
        ("/{queue:path}/messages/{receipt_handle}", "DELETE", api.delete_message),
        ("/{queue:path}/messages/{receipt_handle}", "PATCH", api.change_visibility),
        ("/{queue:path}/purge", "POST", api.purge_queue),
        ("/{queue:path}", "PUT", api.put_queue),
        ("/{queue:path}", "GET", api.get_queue),
        ("/{queue:path}", "DELETE", api.delete_queue),
    )
    return [Route(PREFIX + path, handler, methods=[method], include_in_schema=False) for path, method, handler in table]
