"""``/api/v1/queues``: the HTTP face of the queue engine, as lean Starlette endpoints with orjson.

Each handler parses JSON or query parameters, calls one ``QueueEngine``
operation and renders the answer; all semantics live in ``gateway.queues``.
Queue names may contain ``/`` (they follow topic naming), so the queue is a
path parameter that can span segments; the more specific routes come first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auth.tokens import Claims
from gateway.errors import BadRequest, FlowGateError
from gateway.payload import Payload
from gateway.queues import QueueEngine, QueueInfo, ReceivedMessage, SendEntry, Sent
from gateway.queues.attributes import MAX_DELAY_SECONDS, int_in
from gateway.queues.catalog import QueueRecord
from gateway.queues.errors import TooManyEntries
from gateway.queues.messages import MAX_BATCH, validate_attributes, validate_entry_ids
from gateway.queues.moves import MoveStatus, MoveTask
from protocols.http.deps import claims_of, read_body, services_of

JSON_OVERHEAD = 64 * 1024
PREFIX = "/api/v1/queues"


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


def _context(request: Request) -> tuple[QueueEngine, Claims]:
    return services_of(request).queues, claims_of(request)


async def _body(request: Request, *, batch: int = 1, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, refusing oversized bodies before reading them."""
    raw = await read_body(request, (services_of(request).settings.max_message_bytes * 6 + JSON_OVERHEAD) * batch)
    if optional and not raw.strip():
        return {}
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(document, dict):
        raise BadRequest("body must be a JSON object")
    return document


def _entry(document: Any) -> SendEntry:
    if not isinstance(document, dict):
        raise BadRequest('a message must be {"body": ..., "delay_seconds": ..., "attributes": {...}}')
    unknown = set(document) - {"id", "body", "delay_seconds", "attributes", "group_id", "deduplication_id"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    value = document.get("body")
    if value is None or value == "":
        raise BadRequest('"body" is required: a non-empty string (or any JSON value)')
    delay = document.get("delay_seconds")
    if delay is not None:
        delay = int_in(delay, "delay_seconds", 0, MAX_DELAY_SECONDS)
    group, dedup = document.get("group_id"), document.get("deduplication_id")
    for label, item in (("group_id", group), ("deduplication_id", dedup)):
        if item is not None and (not isinstance(item, str) or not 1 <= len(item) <= 128):
            raise BadRequest(f"{label} must be a string of 1-128 characters")
    attributes = validate_attributes(document.get("attributes"))
    return SendEntry(Payload.from_value(value), delay, attributes, group_id=group, deduplication_id=dedup)


def _sent(sent: Sent) -> dict[str, Any]:
    view: dict[str, Any] = {"message_id": sent.message_id, "md5_of_body": sent.md5_of_body, "seq": sent.seq}
    if sent.sequence_number is not None:
        view["sequence_number"] = sent.sequence_number
    return view


def _failed(entry_id: str, error: FlowGateError) -> dict[str, Any]:
    return {"id": entry_id, "status": error.status, "code": error.code, "message": error.message}


def _message(message: ReceivedMessage) -> dict[str, Any]:
    fields = message.payload.json_fields()
    view: dict[str, Any] = {
        "message_id": message.message_id,
        "receipt_handle": message.receipt_handle,
        "body": fields["data"],
        "md5_of_body": message.md5_of_body,
        "attributes": message.attributes,
        "receive_count": message.receive_count,
        "sent_at": _iso_ms(message.sent_at_ms),
    }
    if "encoding" in fields:
        view["encoding"] = fields["encoding"]
    if message.group_id is not None:
        view["group_id"] = message.group_id
        view["sequence_number"] = message.sequence_number
    return view


def _queue(record: QueueRecord) -> dict[str, Any]:
    return {
        "queue": record.full_name,
        "name": record.name,
        "attributes": record.attributes.to_json(),
        "created_at": _iso_ms(record.created_at * 1000),
    }


def _queue_info(info: QueueInfo) -> dict[str, Any]:
    return {
        **_queue(info.record),
        "approximate_visible": info.counts.visible,
        "approximate_in_flight": info.counts.in_flight,
        "approximate_delayed": info.counts.delayed,
    }


def _entries(document: dict[str, Any]) -> list[Any]:
    entries = document.get("entries")
    if not isinstance(entries, list) or not entries:
        raise BadRequest('body must be {"entries": [...]} with 1-10 entries')
    if len(entries) > MAX_BATCH:
        raise TooManyEntries(f"a batch has at most {MAX_BATCH} entries, got {len(entries)}")
    if not all(isinstance(e, dict) for e in entries):
        raise BadRequest("each batch entry must be an object")
    validate_entry_ids([e.get("id") for e in entries])
    return entries


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


# -- messages ------------------------------------------------------------------------------------


async def send_message(request: Request) -> Response:
    engine, claims = _context(request)
    entry = _entry(await _body(request))
    [result] = await engine.send_messages(claims, request.path_params["queue"], [entry])
    if isinstance(result, FlowGateError):
        raise result
    return _json(_sent(result))


async def send_batch(request: Request) -> Response:
    engine, claims = _context(request)
    entries = _entries(await _body(request, batch=MAX_BATCH))
    parsed: list[SendEntry | FlowGateError] = []
    for document in entries:
        try:
            parsed.append(_entry(document))
        except FlowGateError as exc:
            parsed.append(exc)
    valid = [p for p in parsed if isinstance(p, SendEntry)]
    results = iter(await engine.send_messages(claims, request.path_params["queue"], valid) if valid else [])
    successful, failed = [], []
    for document, item in zip(entries, parsed, strict=True):
        outcome = item if isinstance(item, FlowGateError) else next(results)
        if isinstance(outcome, FlowGateError):
            failed.append(_failed(document["id"], outcome))
        else:
            successful.append({"id": document["id"], **_sent(outcome)})
    return _json({"successful": successful, "failed": failed})


async def _receive(request: Request, max_messages: Any, wait: Any, visibility: Any) -> Response:
    engine, claims = _context(request)
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
            services_of(request).tokens.revocations.check(claims)  # revoked during a long poll (auth.revocations)
        except FlowGateError:
            await engine.release(claims, name, messages)
            raise
    return _json({"messages": [_message(m) for m in messages]})


async def receive_messages(request: Request) -> Response:
    return await _receive(
        request, _query_int(request, "max"), _query_int(request, "wait"), _query_int(request, "visibility_timeout")
    )


async def receive_messages_post(request: Request) -> Response:
    document = await _body(request, optional=True)
    unknown = set(document) - {"max", "wait", "visibility_timeout"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    return await _receive(request, document.get("max"), document.get("wait"), document.get("visibility_timeout"))


async def delete_message(request: Request) -> Response:
    engine, claims = _context(request)
    [error] = await engine.delete_messages(
        claims, request.path_params["queue"], [request.path_params["receipt_handle"]]
    )
    if error is not None:
        raise error
    return Response(status_code=204)


async def delete_batch(request: Request) -> Response:
    engine, claims = _context(request)
    entries = _entries(await _body(request))
    handles = [e.get("receipt_handle") for e in entries]
    if not all(isinstance(h, str) and h for h in handles):
        raise BadRequest("each batch entry needs a receipt_handle")
    errors = await engine.delete_messages(claims, request.path_params["queue"], handles)
    successful = [{"id": e["id"]} for e, err in zip(entries, errors, strict=True) if err is None]
    failed = [_failed(e["id"], err) for e, err in zip(entries, errors, strict=True) if err is not None]
    return _json({"successful": successful, "failed": failed})


async def change_visibility(request: Request) -> Response:
    engine, claims = _context(request)
    document = await _body(request)
    if set(document) != {"visibility_timeout"}:
        raise BadRequest('body must be {"visibility_timeout": <seconds>}')
    await engine.change_visibility(
        claims, request.path_params["queue"], request.path_params["receipt_handle"], document["visibility_timeout"]
    )
    return Response(status_code=204)


# -- queues --------------------------------------------------------------------------------------


async def list_queues(request: Request) -> Response:
    engine, claims = _context(request)
    return _json({"queues": [{"queue": r.full_name, "name": r.name} for r in await engine.list_queues(claims)]})


async def put_queue(request: Request) -> Response:
    engine, claims = _context(request)
    document = await _body(request, optional=True)
    record, created = await engine.set_attributes(claims, request.path_params["queue"], document)
    return _json(_queue(record), status=201 if created else 200)


async def get_queue(request: Request) -> Response:
    engine, claims = _context(request)
    return _json(_queue_info(await engine.get_queue(claims, request.path_params["queue"])))


async def delete_queue(request: Request) -> Response:
    engine, claims = _context(request)
    await engine.delete_queue(claims, request.path_params["queue"])
    return Response(status_code=204)


async def purge_queue(request: Request) -> Response:
    engine, claims = _context(request)
    await engine.purge(claims, request.path_params["queue"])
    return Response(status_code=204)


def _move(task: MoveTask) -> dict[str, Any]:
    view: dict[str, Any] = {
        "status": task.status.value.lower(),
        "source": task.source.name,
        "destination": None if task.destination is None else task.destination.name,
        "moved": task.moved,
        "to_move": task.to_move,
        "rate": task.rate,
        "started_at": _iso_ms(task.started_ms),
    }
    if task.status is MoveStatus.RUNNING:
        view["handle"] = task.handle
    if task.failure is not None:
        view["failure"] = task.failure
    return view


async def start_move(request: Request) -> Response:
    """Move a dead-letter queue's messages back to their source queue (or to ``destination``)."""
    engine, claims = _context(request)
    document = await _body(request, optional=True)
    unknown = set(document) - {"destination", "rate"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    destination, rate = document.get("destination"), document.get("rate")
    if destination is not None and not isinstance(destination, str):
        raise BadRequest("destination must be a queue name")
    if rate is not None:
        rate = int_in(rate, "rate", 1, 500)
    task = await engine.start_move(claims, request.path_params["queue"], destination, rate)
    return _json(_move(task), status=201)


async def list_moves(request: Request) -> Response:
    engine, claims = _context(request)
    return _json({"tasks": [_move(t) for t in await engine.list_moves(claims, request.path_params["queue"])]})


async def cancel_move(request: Request) -> Response:
    engine, claims = _context(request)
    return _json(_move(engine.cancel_move(claims, request.path_params["handle"])))


ROUTES = [
    Route(PREFIX, list_queues, methods=["GET"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/move-tasks", start_move, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/move-tasks", list_moves, methods=["GET"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/move-tasks/{handle}", cancel_move, methods=["DELETE"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/messages/batch", send_batch, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/messages/batch-delete", delete_batch, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/messages/receive", receive_messages_post, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/messages", send_message, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}/messages", receive_messages, methods=["GET"], include_in_schema=False),
    Route(
        PREFIX + "/{queue:path}/messages/{receipt_handle}", delete_message, methods=["DELETE"], include_in_schema=False
    ),
    Route(
        PREFIX + "/{queue:path}/messages/{receipt_handle}",
        change_visibility,
        methods=["PATCH"],
        include_in_schema=False,
    ),
    Route(PREFIX + "/{queue:path}/purge", purge_queue, methods=["POST"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}", put_queue, methods=["PUT"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}", get_queue, methods=["GET"], include_in_schema=False),
    Route(PREFIX + "/{queue:path}", delete_queue, methods=["DELETE"], include_in_schema=False),
]


def _op(summary: str, *, body: Any = None, ok: str = "200", example: Any = None, params: Any = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["queues"],
        "summary": summary,
        "security": [{"bearer": []}],
        "parameters": [
            {"name": "queue", "in": "path", "required": True, "schema": {"type": "string"}},
            *params,
        ],
        "responses": {ok: {"description": "OK"}},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"example": body}}}
    if example is not None:
        op["responses"][ok]["content"] = {"application/json": {"example": example}}
    return op


_HANDLE = ({"name": "receipt_handle", "in": "path", "required": True, "schema": {"type": "string"}},)
_RECEIVE_PARAMS = tuple(
    {"name": n, "in": "query", "required": False, "schema": {"type": "integer"}}
    for n in ("max", "wait", "visibility_timeout")
)

OPENAPI: dict[str, dict[str, Any]] = {
    PREFIX: {
        "get": {
            "tags": ["queues"],
            "summary": "List the namespace's queues",
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "OK"}},
        }
    },
    PREFIX + "/{queue}": {
        "put": _op(
            "Create a queue or change its attributes",
            body={
                "visibility_timeout": 30,
                "redrive_policy": {"dead_letter_queue": "myqueue-dlq", "max_receive_count": 5},
            },
        ),
        "get": _op("A queue's attributes and approximate counts"),
        "delete": _op("Delete a queue and its messages", ok="204"),
    },
    PREFIX + "/{queue}/purge": {"post": _op("Delete every message of a queue", ok="204")},
    PREFIX + "/{queue}/move-tasks": {
        "post": _op(
            "Move a dead-letter queue's messages back to their source queue (or to destination)",
            body={"destination": None, "rate": 100},
            ok="201",
        ),
        "get": _op("The latest message move tasks from this queue"),
    },
    PREFIX + "/{queue}/move-tasks/{handle}": {
        "delete": _op(
            "Cancel a running message move task",
            params=({"name": "handle", "in": "path", "required": True, "schema": {"type": "string"}},),
        )
    },
    PREFIX + "/{queue}/messages": {
        "post": _op(
            "Send a message (creates the queue if needed)",
            body={"body": "Your message content", "delay_seconds": 0, "attributes": {"kind": "greeting"}},
            example={"message_id": "4f7b…", "md5_of_body": "…", "seq": 1},
        ),
        "get": _op("Receive messages (long poll with wait)", params=_RECEIVE_PARAMS),
    },
    PREFIX + "/{queue}/messages/receive": {
        "post": _op("Receive messages (POST form)", body={"max": 10, "wait": 20, "visibility_timeout": 30})
    },
    PREFIX + "/{queue}/messages/batch": {
        "post": _op(
            "Send up to 10 messages", body={"entries": [{"id": "a", "body": "one"}, {"id": "b", "body": "two"}]}
        )
    },
    PREFIX + "/{queue}/messages/batch-delete": {
        "post": _op("Delete up to 10 messages", body={"entries": [{"id": "a", "receipt_handle": "…"}]})
    },
    PREFIX + "/{queue}/messages/{receipt_handle}": {
        "delete": _op("Delete a received message", ok="204", params=_HANDLE),
        "patch": _op(
            "Change a received message's visibility timeout", body={"visibility_timeout": 0}, ok="204", params=_HANDLE
        ),
    },
}
