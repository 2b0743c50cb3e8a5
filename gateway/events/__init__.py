"""Connection events on reserved topics (``$events/...``) and presence (``$presence/...``, ``GET /api/v1/presence``)."""

from gateway.events.service import RESERVED, ConnectionEvents, Session

__all__ = ["RESERVED", "ConnectionEvents", "Session"]
