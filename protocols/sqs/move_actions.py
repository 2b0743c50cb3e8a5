"""SQS's dead-letter queue redrive: StartMessageMoveTask, ListMessageMoveTasks, CancelMessageMoveTask.

Queues are named by ARN (``arn:aws:sqs:<app>:<user id>:<queue>``); without a
``DestinationArn`` each message goes back to the queue it was dead-lettered from.
The work is the engine's (``gateway.queues.moves``), so the REST API has it too.
"""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequest, Conflict, NotFound
from gateway.queues import QueueEngine
from gateway.queues.moves import MoveStatus, MoveTask
from protocols.sqs.errors import AwsError, invalid_parameter
from protocols.sqs.params import Call
from protocols.sqs.queue_attributes import Arn, arn

Result = dict[str, Any] | None


def _not_found(message: str) -> AwsError:
    return AwsError("ResourceNotFoundException", message)


def _queue_of(call: Call, name: str) -> str:
    value = call.required(name)
    try:
        parsed = Arn.parse(value, name)
    except AwsError:
        raise invalid_parameter(f"Value {value[:120]!r} for parameter {name} is not a valid SQS queue ARN.") from None
    if parsed.account != call.claims.user_id or parsed.region != call.claims.app:
        raise _not_found(f"The resource {value[:120]} does not exist.")
    return parsed.name


def task_view(task: MoveTask) -> dict[str, Any]:
    view: dict[str, Any] = {
        "Status": task.status.value,
        "SourceArn": str(arn(task.source.namespace, task.source.name)),
        "ApproximateNumberOfMessagesMoved": task.moved,
        "ApproximateNumberOfMessagesToMove": task.to_move,
        "StartedTimestamp": task.started_ms,
    }
    if task.status is MoveStatus.RUNNING:
        view["TaskHandle"] = task.handle
    if task.destination is not None:
        view["DestinationArn"] = str(arn(task.destination.namespace, task.destination.name))
    if task.rate is not None:
        view["MaxNumberOfMessagesPerSecond"] = task.rate
    if task.failure is not None:
        view["FailureReason"] = task.failure
    return view


async def start_message_move_task(engine: QueueEngine, call: Call) -> Result:
    source = _queue_of(call, "SourceArn")
    destination = _queue_of(call, "DestinationArn") if call.params.get("DestinationArn") is not None else None
    rate = call.integer("MaxNumberOfMessagesPerSecond", 1, 500)
    try:
        task = await engine.start_move(call.claims, source, destination, rate)
    except NotFound as exc:
        raise _not_found(exc.message) from None
    except (BadRequest, Conflict) as exc:
        raise invalid_parameter(exc.message) from None
    return {"TaskHandle": task.handle}


async def list_message_move_tasks(engine: QueueEngine, call: Call) -> Result:
    source = _queue_of(call, "SourceArn")
    limit = call.integer("MaxResults", 1, 10) or 1
    try:
        tasks = await engine.list_moves(call.claims, source)
    except NotFound as exc:
        raise _not_found(exc.message) from None
    return {"Results": [task_view(t) for t in tasks[:limit]]}


async def cancel_message_move_task(engine: QueueEngine, call: Call) -> Result:
    handle = call.required("TaskHandle")
    try:
        task = engine.cancel_move(call.claims, handle)
    except NotFound as exc:
        raise _not_found(exc.message) from None
    return {"ApproximateNumberOfMessagesMoved": task.moved}
