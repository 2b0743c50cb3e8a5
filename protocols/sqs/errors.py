"""The SQS edge of the gateway's error hierarchy: every error as Amazon SQS spells it.

``AwsError`` is a ``BadRequest`` (so nothing else needs to know it) carrying the
AWS error code (the Query protocol's ``<Code>`` and the ``x-amzn-query-error``
header), the JSON protocol's ``__type`` (the modelled shape's name, e.g.
``QueueDoesNotExist`` for ``AWS.SimpleQueueService.NonExistentQueue``) and the
HTTP status. ``to_aws`` maps any ``FlowGateError`` once, here: rate limits
become ``RequestThrottled`` (botocore's standard and legacy retries treat it as
throttling and retry it), an exhausted quota ``OverLimit`` (403, not retried).
"""

from __future__ import annotations

from gateway.errors import (
    BadRequest,
    Conflict,
    FlowGateError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from gateway.queues.errors import (
    InvalidReceiptHandle,
    MissingGroupId,
    QueueNotFound,
    StaleReceiptHandle,
    TooManyEntries,
)


class AwsError(BadRequest):
    """An error in Amazon SQS's terms."""

    def __init__(
        self, aws_code: str, message: str, *, status: int = 400, shape: str | None = None, sender: bool = True
    ) -> None:
        super().__init__(message)
        self.aws_code = aws_code
        self.aws_status = status
        self.shape = shape or aws_code
        self.sender = sender

    @property
    def fault(self) -> str:
        return "Sender" if self.sender else "Receiver"


def queue_does_not_exist(message: str = "The specified queue does not exist.") -> AwsError:
    return AwsError("AWS.SimpleQueueService.NonExistentQueue", message, shape="QueueDoesNotExist")


def invalid_parameter(message: str) -> AwsError:
    return AwsError("InvalidParameterValue", message)


def missing_parameter(name: str) -> AwsError:
    return AwsError("MissingParameter", f"The request must contain the parameter {name}.")


def invalid_attribute_name(message: str) -> AwsError:
    return AwsError("InvalidAttributeName", message)


def invalid_attribute_value(message: str) -> AwsError:
    return AwsError("InvalidAttributeValue", message)


def receipt_handle_invalid(message: str) -> AwsError:
    return AwsError("ReceiptHandleIsInvalid", message)


def batch_error(kind: str, message: str) -> AwsError:
    """``EmptyBatchRequest``, ``TooManyEntriesInBatchRequest``, ``BatchEntryIdsNotDistinct``, ..."""
    return AwsError(f"AWS.SimpleQueueService.{kind}", message, shape=kind)


def to_aws(exc: FlowGateError) -> AwsError:
    """The one mapping of the gateway's errors to SQS's codes and statuses."""
    if isinstance(exc, AwsError):
        return exc
    message = exc.message
    if isinstance(exc, QueueNotFound):
        return queue_does_not_exist()
    if isinstance(exc, InvalidReceiptHandle | StaleReceiptHandle):
        return receipt_handle_invalid(f"The input receipt handle is invalid: {message}")
    if isinstance(exc, MissingGroupId):
        return missing_parameter("MessageGroupId")
    if isinstance(exc, TooManyEntries):
        return batch_error("TooManyEntriesInBatchRequest", message)
    if isinstance(exc, PayloadTooLarge):
        return invalid_parameter(f"One or more parameters are invalid. Reason: {message}")
    if isinstance(exc, RateLimited):
        error = AwsError("RequestThrottled", message)
        error.headers.update(exc.headers)
        return error
    if isinstance(exc, PaymentRequired):
        return AwsError("OverLimit", message, status=403)
    if isinstance(exc, Unauthorized):
        return AwsError("InvalidClientTokenId", message, status=403)
    if isinstance(exc, Forbidden):
        return AwsError("AccessDenied", message, status=403, shape="AccessDeniedException")
    if isinstance(exc, BadRequest | NotFound):
        return invalid_parameter(message)
    if isinstance(exc, Unavailable | Conflict):  # a concurrent change: retry
        return AwsError("ServiceUnavailable", message, status=503, sender=False)
    return AwsError("InternalFailure", "internal error", status=500, sender=False)
