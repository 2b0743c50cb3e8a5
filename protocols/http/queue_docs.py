"""The OpenAPI paths of ``/api/v1/queues`` (lean Starlette routes FastAPI does not document itself)."""

from __future__ import annotations

from typing import Any

from protocols.http.queues import PREFIX


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
