"""Outgoing webhooks: messages on a topic filter POSTed to the user's backend, signed, at least once, in order."""

from gateway.webhooks.records import Webhook
from gateway.webhooks.service import Webhooks

__all__ = ["Webhook", "Webhooks"]
