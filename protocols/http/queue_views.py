"""The queue API's JSON: a send entry and a batch read from a request, and the views of results, messages,
queues and move tasks (``protocols.http.queues`` calls these; the semantics live in ``gateway.queues``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import BadRequest, FlowGateError
from gateway.payload import Payload
from gateway.queues import QueueInfo, ReceivedMessage, SendEntry, Sent
from gateway.queues.attributes import MAX_DELAY_SECONDS, int_in
from gateway.queues.catalog import QueueRecord
from gateway.queues.errors import TooManyEntries
from gateway.queues.messages import MAX_BATCH, validate_attributes, validate_entry_ids
from gateway.queues.moves import MoveStatus, MoveTask


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def json_response(document: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


def send_entry(document: Any) -> SendEntry:
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


def sent_view(sent: Sent) -> dict[str, Any]:
    view: dict[str, Any] = {"message_id": sent.message_id, "md5_of_body": sent.md5_of_body, "seq": sent.seq}
    if sent.sequence_number is not None:
        view["sequence_number"] = sent.sequence_number
    return view


def failed_view(entry_id: str, error: FlowGateError) -> dict[str, Any]:
    return {"id": entry_id, "status": error.status, "code": error.code, "message": error.message}


def message_view(message: ReceivedMessage) -> dict[str, Any]:
    fields = message.payload.json_fields()
    view: dict[str, Any] = {
        "message_id": message.message_id,
        "receipt_handle": message.receipt_handle,
        "body": fields["data"],
        "md5_of_body": message.md5_of_body,
        "attributes": message.attributes,
        "receive_count": message.receive_count,
        "sent_at": iso_ms(message.sent_at_ms),
    }
    if "encoding" in fields:
        view["encoding"] = fields["encoding"]
    if message.group_id is not None:
        view["group_id"] = message.group_id
        view["sequence_number"] = message.sequence_number
    return view


def queue_view(record: QueueRecord) -> dict[str, Any]:
    return {
        "queue": record.full_name,
        "name": record.name,
        "attributes": record.attributes.to_json(),
        "created_at": iso_ms(record.created_at * 1000),
    }


def queue_info_view(info: QueueInfo) -> dict[str, Any]:
    return {
        **queue_view(info.record),
        "approximate_visible": info.counts.visible,
        "approximate_in_flight": info.counts.in_flight,
        "approximate_delayed": info.counts.delayed,
    }


def batch_entries(document: dict[str, Any]) -> list[Any]:
    entries = document.get("entries")
    if not isinstance(entries, list) or not entries:
        raise BadRequest('body must be {"entries": [...]} with 1-10 entries')
    if len(entries) > MAX_BATCH:
        raise TooManyEntries(f"a batch has at most {MAX_BATCH} entries, got {len(entries)}")
    if not all(isinstance(e, dict) for e in entries):
        raise BadRequest("each batch entry must be an object")
    validate_entry_ids([e.get("id") for e in entries])
    return entries


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(raw)


def move_view(task: MoveTask) -> dict[str, Any]:
    view: dict[str, Any] = {
        "status": task.status.value.lower(),
        "source": task.source.name,
        "destination": None if task.destination is None else task.destination.name,
        "moved": task.moved,
        "to_move": task.to_move,
        "rate": task.rate,
        "started_at": iso_ms(task.started_ms),
    }
    if task.status is MoveStatus.RUNNING:
        view["handle"] = task.handle
    if task.failure is not None:
        view["failure"] = task.failure
    return view
