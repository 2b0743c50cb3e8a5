"""Python client of the Flow-Gate messaging gateway: publish, subscribe with resume, queues, admin.

::

    from flowgate_client import Client

    async with Client("http://localhost:8080", api_key="fgk_...", app="myapp") as client:
        seq = await client.publish("sensors/1", {"t": 21.5})
"""

from __future__ import annotations

__version__ = "0.1.0"

from flowgate_client.client import AdminClient, Client
from flowgate_client.errors import (
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    FlowGateError,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)
from flowgate_client.models import Gap, Message, PublishResult, Token
from flowgate_client.queues import Queue, QueueMessage, SentMessage
from flowgate_client.subscription import Reconnect, Subscription
from flowgate_client.transport import NO_RETRY, Retry

__all__ = [
    "NO_RETRY",
    "AdminClient",
    "ApiError",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "FlowGateError",
    "Forbidden",
    "Gap",
    "Message",
    "NotFound",
    "PayloadTooLarge",
    "PaymentRequired",
    "PublishResult",
    "Queue",
    "QueueMessage",
    "RateLimited",
    "Reconnect",
    "Retry",
    "SentMessage",
    "ServerError",
    "Subscription",
    "Token",
    "Unauthorized",
    "Unavailable",
    "__version__",
]
