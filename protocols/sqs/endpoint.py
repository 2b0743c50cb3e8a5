"""The SQS front end's HTTP edge: ``POST /`` and ``POST /<account>/<queue>`` on the HTTP port.

One handler reads the body (bounded), picks the protocol (JSON or Query),
authenticates the SigV4 signature, runs the action from ``ACTIONS`` on the
queue engine and renders the result, or maps the error once
(``errors.to_aws``) and renders it in the request's protocol. Only ``POST`` is
routed: ``GET /`` stays free for the dashboard.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.errors import FlowGateError
from gateway.queues import QueueEngine
from protocols.http.deps import read_body
from protocols.services import Services
from protocols.sqs import message_actions as messages
from protocols.sqs import move_actions as moves
from protocols.sqs import queue_actions as queues
from protocols.sqs import wire
from protocols.sqs.auth import authenticate
from protocols.sqs.errors import AwsError, to_aws
from protocols.sqs.params import Call

Action = Callable[[QueueEngine, Call], Awaitable[dict[str, Any] | None]]

ACTIONS: dict[str, Action] = {
    "CreateQueue": queues.create_queue,
    "GetQueueUrl": queues.get_queue_url,
    "ListQueues": queues.list_queues,
    "DeleteQueue": queues.delete_queue,
    "GetQueueAttributes": queues.get_queue_attributes,
    "SetQueueAttributes": queues.set_queue_attributes,
    "PurgeQueue": queues.purge_queue,
    "TagQueue": queues.tag_queue,
    "UntagQueue": queues.untag_queue,
    "ListQueueTags": queues.list_queue_tags,
    "ListDeadLetterSourceQueues": queues.list_dead_letter_source_queues,
    "SendMessage": messages.send_message,
    "SendMessageBatch": messages.send_message_batch,
    "ReceiveMessage": messages.receive_message,
    "DeleteMessage": messages.delete_message,
    "DeleteMessageBatch": messages.delete_message_batch,
    "ChangeMessageVisibility": messages.change_message_visibility,
    "ChangeMessageVisibilityBatch": messages.change_message_visibility_batch,
    "StartMessageMoveTask": moves.start_message_move_task,
    "ListMessageMoveTasks": moves.list_message_move_tasks,
    "CancelMessageMoveTask": moves.cancel_message_move_task,
}
UNSUPPORTED = ("AddPermission", "RemovePermission")
BODY_OVERHEAD = 64 * 1024


def _base_url(request: Request, headers: dict[str, str]) -> str:
    host = headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def routes(services: Services) -> list[Route]:
    """``POST /`` and ``POST /<account>/<queue>``, answering with the queue engine and accounts of ``services``."""

    async def handle(request: Request) -> Response:
        scope = request.scope
        raw_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(raw_headers)
        request_id = str(uuid.uuid4())
        protocol = wire.protocol_of(headers)
        try:
            body = await read_body(request, services.settings.max_message_bytes * 12 + BODY_OVERHEAD)
            raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").split("?", 1)[0]
            raw_query = scope.get("query_string", b"").decode("latin-1")
            claims = await authenticate(
                services.accounts,
                method=request.method,
                raw_path=raw_path,
                raw_query=raw_query,
                headers=raw_headers,
                header_map=headers,
                body=body,
            )
            parsed = wire.parse(headers, raw_query, body)
            action = ACTIONS.get(parsed.action)
            if action is None:
                if parsed.action in UNSUPPORTED:
                    raise AwsError(
                        "AWS.SimpleQueueService.UnsupportedOperation",
                        f"{parsed.action} is not supported: Flow-Gate permissions come from API keys and tokens",
                        shape="UnsupportedOperation",
                    )
                raise AwsError("InvalidAction", f"The action {parsed.action[:80]} is not valid for this endpoint.")
            path = request.path_params
            call = Call(
                claims,
                parsed.params,
                _base_url(request, headers),
                (path["account"], path["queue"]) if "queue" in path else None,
                request.is_disconnected,
            )
            rendered = wire.render(parsed.protocol, parsed.action, await action(services.queues, call), request_id)
        except FlowGateError as exc:
            rendered = wire.render_error(protocol, to_aws(exc), request_id)
        return Response(rendered.body, rendered.status, rendered.headers, media_type=rendered.content_type)

    return [
        Route("/", handle, methods=["POST"], include_in_schema=False),
        Route("/{account}/{queue}", handle, methods=["POST"], include_in_schema=False),
    ]
