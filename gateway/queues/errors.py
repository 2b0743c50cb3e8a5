"""Queue-specific branches of the gateway's one error hierarchy (``gateway.errors``).

They keep their parent's HTTP status and add a precise ``code``, so that the
HTTP API and a later SQS wire front-end can tell them apart::

    BadRequest (400)
    ├── InvalidReceiptHandle (400 invalid_receipt_handle)
    ├── MissingGroupId (400 missing_group_id)
    └── TooManyEntries (400 too_many_entries)
    NotFound (404)
    └── QueueNotFound (404 queue_not_found)
    Conflict (409)
    └── StaleReceiptHandle (409 stale_receipt_handle)
"""

from __future__ import annotations

from gateway.errors import BadRequest, Conflict, NotFound


class InvalidReceiptHandle(BadRequest):
    """The receipt handle is malformed, forged, or from another namespace or queue."""

    code = "invalid_receipt_handle"


class MissingGroupId(BadRequest):
    """A message for a FIFO queue has no message group id."""

    code = "missing_group_id"


class TooManyEntries(BadRequest):
    """A batch has more entries than allowed."""

    code = "too_many_entries"


class QueueNotFound(NotFound):
    """No such queue."""

    code = "queue_not_found"


class StaleReceiptHandle(Conflict):
    """The message was received again since this receipt handle was issued."""

    code = "stale_receipt_handle"
